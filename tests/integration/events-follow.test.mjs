// events-follow.test.mjs - two `koumpa serve` processes on one data
// directory: a generation running on A is followed through B's
// GET /v1/projects/{id}/events (B polls the event store, where A stores its
// events as they happen), from the start and after a Last-Event-ID given
// mid-way; nothing is lost or repeated, the streams end with done, and they
// are exactly what A's own readers see. The fake model holds the end of its
// stream behind a gate, so B's readers join while A generates.
// Nothing here measures time: every wait polls for a state, with a deadline.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const TAIL = 'The page greets whoever opens it. '.repeat(12);
const APP = `An app.\n<file path="index.html">\n<!doctype html><p>followed</p>\n</file>\n${TAIL}\n`;
const WAIT_MS = 120_000; // a bound, not a measure (valgrind is slow)

/** Reads a response's SSE events one at a time: next() gives the next event, or null at the end. */
function eventReader(res) {
  const it = res.body[Symbol.asyncIterator]();
  const decoder = new TextDecoder();
  let buf = '';
  return async function next() {
    for (;;) {
      const i = buf.indexOf('\n\n');
      if (i >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = {};
        let comment = false;
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) comment = true;
          else if (line.startsWith('id: ')) ev.id = Number(line.slice(4));
          else if (line.startsWith('event: ')) ev.event = line.slice(7);
          else if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6));
        }
        if (!comment) return ev;
        continue;
      }
      const { value, done } = await it.next();
      if (done) return null;
      buf += decoder.decode(value, { stream: true });
    }
  };
}

async function readUntil(next, pred, got) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (Date.now() > deadline) throw new Error('timed out reading events');
    const ev = await next();
    if (!ev) return false;
    got.push(ev);
    if (pred(ev)) return true;
  }
}

async function readAll(next, got) {
  while (await readUntil(next, () => false, got));
  return got;
}

function assertContiguous(events, first) {
  events.forEach((e, i) => assert.equal(e.id, first + i, `event ${i} has id ${first + i}`));
}

describe('following a generation across instances', () => {
  let fake;
  let env;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario(() => ({ type: 'text', text: APP, gate: 'follow', delayMs: 2 }));
    env = { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url };
  });
  after(async () => {
    await fake?.close();
  });

  test('a generation on A is followed through B, from the start and after Last-Event-ID, ending with done', async () => {
    const a = await startServer({ env });
    let b;
    const controllers = [];
    try {
      b = await startServer({ env, dataDir: a.dataDir });
      const u = await signup(a);
      const r = await api(a, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app' } });
      assert.equal(r.status, 202);
      const id = r.json.id;
      const path = `/v1/projects/${id}/events`;
      const open = async (server, headers = {}) => {
        const c = new AbortController();
        controllers.push(c);
        const res = await sse(server, 'GET', path, { token: u.token, headers, signal: c.signal });
        assert.equal(res.status, 200);
        return eventReader(res);
      };

      // A's own reader (from memory) and B's from the start, both while A generates (the gate holds its end)
      const onA = await open(a);
      const fromStart = await open(b);
      const gotA = [];
      const gotB = [];
      assert.ok(await readUntil(fromStart, (e) => e.event === 'file', gotB), 'B sees the file while A generates');
      const p = await api(b, 'GET', `/v1/projects/${id}`, { token: u.token });
      assert.equal(p.json.status, 'generating');
      // B again, resuming after an id seen mid-way
      const mid = gotB[Math.floor(gotB.length / 2)].id;
      const resumed = await open(b, { 'Last-Event-ID': String(mid) });
      const gotResumed = [];
      assert.ok(await readUntil(resumed, (e) => e.event === 'file', gotResumed));

      fake.openGate('follow');
      await readAll(onA, gotA);
      await readAll(fromStart, gotB);
      await readAll(resumed, gotResumed);

      assert.equal(gotA.at(-1).event, 'done');
      assertContiguous(gotA, 1);
      assert.deepEqual(gotB, gotA, 'B from the start: every event once, as A sent it');
      assertContiguous(gotResumed, mid + 1);
      assert.deepEqual(gotResumed, gotA.slice(mid), 'B after Last-Event-ID: the rest, once');

      // the finished version replays the same on both
      for (const server of [a, b]) {
        const replay = await readEvents(await sse(server, 'GET', path, { token: u.token }));
        assert.deepEqual(replay, gotA.map((e) => ({ comment: false, ...e })));
      }
    } finally {
      for (const c of controllers) c.abort();
      if (b) await b.stop();
      await a.stop();
      await a.remove();
    }
  });
});
