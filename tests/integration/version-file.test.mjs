// version-file.test.mjs - one file of a version for reading its source (GET
// /v1/projects/{id}/versions/{n}/file?path=) and the manifests' sha256: the
// real server against the fake Anthropic API. Text is served as text/plain,
// other types with their own, always sandboxed and unsniffed; ETags are the
// sha256 (304); only the owner, only files of the manifest, only ready
// versions; a follow-up's carried-over file keeps its sha256.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';

const FILES = {
  'index.html': '<!doctype html><title>Files</title><h1>Été 😀</h1><script src="app.js"></script>',
  'app.js': "console.log('v1');",
  'data.json': '{"n": 1}',
  'icon.svg': '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
  'logo.png': 'not really a png',
};
const APP = `Files.\n${Object.entries(FILES).map(([p, c]) => `<file path="${p}">\n${c}\n</file>`).join('\n')}\n`;
const UPDATE = `Changed.\n<file path="app.js">\nconsole.log('v2');\n</file>\n`;
const TYPES = {
  'index.html': 'text/plain; charset=utf-8',
  'app.js': 'text/plain; charset=utf-8',
  'data.json': 'text/plain; charset=utf-8',
  'icon.svg': 'text/plain; charset=utf-8',
  'logo.png': 'image/png',
};

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

async function waitVersion(server, token, id, n) {
  for (let i = 0; i < 1200; i++) {
    const res = await api(server, 'GET', `/v1/projects/${id}`, { token });
    const v = res.json.versions.find((x) => x.n === n);
    if (v && v.status !== 'generating') return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`version ${n} of ${id} still generating`);
}

describe('a version file and the manifests sha256', () => {
  let fake;
  let server;
  let owner;
  let project;
  let v1;
  const file = (n, p, opts = {}) =>
    api(server, opts.method || 'GET', `/v1/projects/${project}/versions/${n}/file${p === undefined ? '' : `?path=${encodeURIComponent(p)}`}`, {
      token: owner.token,
      ...opts,
    });

  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario((rec) => {
      const last = JSON.stringify(rec.body?.messages?.at(-1) || '');
      if (last.includes('[[update]]')) return { type: 'text', text: UPDATE };
      if (last.includes('[[noindex]]')) return { type: 'text', text: '<file path="index.html">\n</file>\n<delete path="index.html"/>\n' };
      return { type: 'text', text: APP };
    });
    server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-test-key', ANTHROPIC_BASE_URL: fake.url } });
    owner = await signup(server);
    const res = await api(server, 'POST', '/v1/projects', { token: owner.token, body: { prompt: 'files' } });
    assert.equal(res.status, 202, res.text);
    project = res.json.id;
    v1 = await waitVersion(server, owner.token, project, 1);
    assert.equal(v1.status, 'ready');
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('the manifest gives each file its sha256, and the file route its bytes', async () => {
    assert.deepEqual(v1.files.map((f) => f.path), Object.keys(FILES).sort());
    for (const f of v1.files) {
      assert.equal(f.sha256, sha256(FILES[f.path]), f.path);
      assert.equal(f.size, Buffer.byteLength(FILES[f.path]), f.path);
      const res = await file(1, f.path);
      assert.equal(res.status, 200, `${f.path}: ${res.text}`);
      assert.equal(res.text, FILES[f.path], f.path);
      assert.equal(res.headers.get('content-type'), TYPES[f.path], f.path);
      assert.equal(res.headers.get('content-security-policy'), 'sandbox', f.path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', f.path);
      assert.equal(res.headers.get('cache-control'), 'private, no-cache', f.path);
      assert.equal(res.headers.get('etag'), `"${f.sha256}"`, f.path);
    }
  });

  test('If-None-Match with the sha256 is a 304; HEAD has no body', async () => {
    const etag = `"${sha256(FILES['app.js'])}"`;
    const again = await file(1, 'app.js', { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    assert.equal(again.text, '');
    assert.equal(again.headers.get('etag'), etag);
    assert.equal((await file(1, 'app.js', { headers: { 'If-None-Match': '"0"' } })).status, 200);
    const head = await file(1, 'index.html', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
    assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(FILES['index.html'])));
  });

  test('refusals: no path 400, a file the version lacks 404 file_not_found, no version 404, not the owner 404', async () => {
    for (const p of [undefined, '']) {
      const res = await file(1, p);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.error.code, 'invalid_request');
      assert.match(res.json.error.message, /path/);
    }
    for (const p of ['missing.js', '../app.js', '/index.html', 'INDEX.HTML']) {
      const res = await file(1, p);
      assert.equal(res.status, 404, `${p}: ${res.text}`);
      assert.equal(res.json.error.code, 'file_not_found');
      assert.ok(res.json.error.message.includes(p), res.json.error.message);
    }
    for (const n of ['9', '0', 'x']) {
      const res = await file(n, 'index.html');
      assert.equal(res.status, 404, res.text);
      assert.equal(res.json.error.code, 'not_found');
    }
    const other = await signup(server);
    const res = await file(1, 'index.html', { token: other.token });
    assert.equal(res.status, 404);
    assert.equal(res.json.error.code, 'not_found');
    assert.equal((await file(1, 'index.html', { token: undefined })).status, 401);
  });

  test('a follow-up: changed files get a new sha256, carried-over ones keep theirs; a failed version has no files', async () => {
    const res = await api(server, 'POST', `/v1/projects/${project}/versions`, { token: owner.token, body: { prompt: 'v2 [[update]]' } });
    assert.equal(res.status, 202, res.text);
    const v2 = await waitVersion(server, owner.token, project, 2);
    assert.equal(v2.status, 'ready');
    const by = Object.fromEntries(v2.files.map((f) => [f.path, f.sha256]));
    assert.equal(by['app.js'], sha256("console.log('v2');"));
    for (const p of ['index.html', 'data.json', 'icon.svg', 'logo.png']) assert.equal(by[p], sha256(FILES[p]), p);
    assert.equal((await file(2, 'app.js')).text, "console.log('v2');");
    assert.equal((await file(1, 'app.js')).text, FILES['app.js'], 'version 1 is unchanged');

    const bad = await api(server, 'POST', `/v1/projects/${project}/versions`, { token: owner.token, body: { prompt: 'v3 [[noindex]]' } });
    assert.equal(bad.status, 202, bad.text);
    assert.equal((await waitVersion(server, owner.token, project, 3)).status, 'failed');
    const refused = await file(3, 'index.html');
    assert.equal(refused.status, 409, refused.text);
    assert.equal(refused.json.error.code, 'version_not_ready');
  });
});
