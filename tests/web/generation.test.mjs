// generation.test.mjs - js/generation.js with a fake fetch and sessionStorage: a generation's
// streamed POST that drops is resumed at GET /events with Last-Event-ID; a reload resumes from what
// sessionStorage kept; the text is never applied twice; the kept state is dropped at the end.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { configure } from '../../src/web/js/api.js';

const store = new Map();
globalThis.sessionStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
};
const { startGeneration, liveFor } = await import('../../src/web/js/generation.js');
const { sseResponse: stream } = await import('./streams.mjs');

const ev = (id, name, data) => `id: ${id}\nevent: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
function finished(live) {
  return new Promise((resolve) => live.subscribe((kind, payload) => kind === 'finished' && resolve(payload.how)));
}

test('a streamed POST that drops resumes at /events after the last id, nothing applied twice', async () => {
  const asked = [];
  globalThis.fetch = async (url, init) => {
    asked.push([init.method, url, init.headers['Last-Event-ID'] || '', init.headers.Authorization]);
    if (init.method === 'POST') {
      return stream([ev(1, 'project', { project_id: 'prj_a', version: 1 }), ev(2, 'delta', { text: 'Hel' }), ev(3, 'delta', { text: 'lo' })], {
        fail: true,
      });
    }
    // the server may send again what the client had: it must not be applied twice
    return stream([ev(3, 'delta', { text: 'lo' }), ev(4, 'file', { path: 'index.html', bytes: 5 }), ev(5, 'done', { version: 1 })]);
  };
  configure({ base: 'http://api.test', getToken: () => 'tok' });
  const { projectId } = await startGeneration({}, '/v1/projects', 'a prompt');
  assert.equal(projectId, 'prj_a');
  const live = liveFor('prj_a', 1);
  const how = await finished(live);
  assert.equal(how, 'final');
  assert.equal(live.state.text, 'Hello');
  assert.deepEqual(live.state.files, [{ path: 'index.html', bytes: 5 }]);
  assert.deepEqual(asked, [
    ['POST', 'http://api.test/v1/projects', '', 'Bearer tok'],
    ['GET', 'http://api.test/v1/projects/prj_a/events', '3', 'Bearer tok'],
  ]);
  assert.equal(store.has('koumpa.live.prj_a'), false, 'the kept state is dropped once the generation has ended');
});

test('a reload resumes from the state sessionStorage kept (same version), after its last id', async () => {
  store.set('koumpa.live.prj_b', JSON.stringify({ version: 2, lastId: '2', text: 'ab', chars: 2, files: [], end: null }));
  const asked = [];
  globalThis.fetch = async (url, init) => {
    asked.push(init.headers['Last-Event-ID'] || '');
    return stream([ev(3, 'delta', { text: 'c' }), ev(4, 'error', { code: 'canceled', message: 'm', refunded: true })]);
  };
  const live = liveFor('prj_b', 2);
  assert.equal(live.state.text, 'ab', 'what was shown before the reload is shown again at once');
  const seen = [];
  live.subscribe((kind, p) => kind === 'event' && seen.push(p.event));
  assert.equal(await finished(live), 'final');
  assert.deepEqual(asked, ['2']);
  assert.equal(live.state.text, 'abc');
  assert.deepEqual(seen, ['delta', 'error']);
});

test('a kept state of another version is not used: the new version is followed from its start', async () => {
  store.set('koumpa.live.prj_c', JSON.stringify({ version: 1, lastId: '9', text: 'old', chars: 3, files: [], end: null }));
  const asked = [];
  globalThis.fetch = async (url, init) => {
    asked.push(init.headers['Last-Event-ID'] || '');
    return stream([ev(1, 'project', { project_id: 'prj_c', version: 2 }), ev(2, 'delta', { text: 'new' }), ev(3, 'done', { version: 2 })]);
  };
  const live = liveFor('prj_c', 2);
  assert.equal(await finished(live), 'final');
  assert.deepEqual(asked, ['']);
  assert.equal(live.state.text, 'new');
});
