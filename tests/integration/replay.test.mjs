// replay.test.mjs - GET /v1/projects/{id}/events at scale: a generating
// version has at most KOUMPA_MAX_READERS_PER_GENERATION live readers (the
// next one gets 429 too_many_readers until one leaves), and replays of an
// ended version share one rendering and are sent a piece at a time as each
// client reads, so many replays of a large version by clients that do not
// read keep the server's memory (VmRSS from /proc) bounded.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, RSS_UNMEASURABLE, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const APP = 'A page.\n<file path="index.html">\n<p>hello</p>\n</file>\n';
// a large log: a small app and 8 MiB of text around it (the model may talk at length;
// every delta is kept in the version's events)
const BIG = 8 * 1024 * 1024;
const BIG_APP = `A big page.\n<file path="index.html">\n<p>x</p>\n</file>\n${'And some more words about it.\n'.repeat(BIG / 30)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssKiB(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
}

function scenarios(rec) {
  const last = rec.body?.messages?.at(-1)?.content ?? '';
  if (last.includes('[[held]]')) return { type: 'text', text: APP, gate: 'held' };
  if (last.includes('[[big]]')) return { type: 'text', text: BIG_APP, pieceChars: 60000, chunkSizes: [65536] };
  return { type: 'text', text: APP };
}

/** A raw HTTP/1.1 GET that reads the first bytes of the answer and then stops reading. */
function stalledReader(server, urlPath, token) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1');
    sock.once('error', reject);
    sock.once('data', (d) => {
      sock.pause(); // read no more: the server must not buffer the rest for us
      resolve({ sock, head: d.toString('latin1', 0, 64) });
    });
    sock.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nAccept: text/event-stream\r\n\r\n`);
  });
}

describe('event readers', () => {
  let fake;
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario(scenarios);
  });
  after(async () => {
    fake?.openGate('held');
    await fake?.close();
  });

  test('a generating version takes KOUMPA_MAX_READERS_PER_GENERATION live readers; the next gets 429', async () => {
    const server = await startServer({
      env: { ANTHROPIC_API_KEY: 'sk-test-key', ANTHROPIC_BASE_URL: fake.url, KOUMPA_MAX_READERS_PER_GENERATION: '2' },
    });
    try {
      const u = await signup(server);
      const creator = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: '[[held]]' } });
      assert.equal(creator.status, 200);
      const id = creator.headers.get('location').split('/').at(-1);
      const events = `/v1/projects/${id}/events`;
      const second = new AbortController();
      const reader2 = await sse(server, 'GET', events, { token: u.token, signal: second.signal });
      assert.equal(reader2.status, 200);
      const third = await api(server, 'GET', events, { token: u.token, headers: { Accept: 'text/event-stream' } });
      assert.equal(third.status, 429, third.text);
      assert.equal(third.json.error.code, 'too_many_readers');
      assert.match(third.json.error.message, /2 readers/);

      second.abort(); // a reader leaving gives its slot back
      let again = null;
      for (let i = 0; i < 200 && !again; i++) {
        const res = await sse(server, 'GET', events, { token: u.token });
        if (res.status === 200) again = res;
        else {
          assert.equal(res.status, 429);
          await res.arrayBuffer();
          await sleep(25);
        }
      }
      assert.ok(again, 'the slot of the reader that left never came back');

      fake.openGate('held');
      const [mine, theirs] = await Promise.all([readEvents(creator), readEvents(again)]);
      assert.equal(mine.at(-1).event, 'done');
      assert.deepEqual(theirs, mine);
      // an ended version is replayed, not followed: no cap
      const replays = await Promise.all([1, 2, 3, 4].map(() => sse(server, 'GET', events, { token: u.token })));
      for (const r of replays) assert.deepEqual(await readEvents(r), mine);
    } finally {
      await server.stop();
    }
  });

  test('many replays of a large version by clients that do not read keep the memory bounded', { skip: RSS_UNMEASURABLE }, async () => {
    const server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-test-key', ANTHROPIC_BASE_URL: fake.url } });
    const readers = [];
    try {
      const u = await signup(server);
      const done = await readEvents(await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: '[[big]]' } }));
      assert.equal(done.at(-1).event, 'done', JSON.stringify(done.at(-1)).slice(0, 300));
      const id = done[0].data.project_id;
      const whole = await sse(server, 'GET', `/v1/projects/${id}/events`, { token: u.token });
      const replayBytes = (await whole.arrayBuffer()).byteLength;
      assert.ok(replayBytes > BIG, `the replay is ${replayBytes} bytes`);

      const base = rssKiB(server.pid);
      const K = 40;
      for (let i = 0; i < K; i++) readers.push(await stalledReader(server, `/v1/projects/${id}/events`, u.token));
      for (const r of readers) assert.match(r.head, /^HTTP\/1\.1 200/);
      let peak = base;
      for (let i = 0; i < 20; i++) {
        peak = Math.max(peak, rssKiB(server.pid));
        await sleep(50);
      }
      const grewMiB = (peak - base) / 1024;
      const wouldBeMiB = (K * replayBytes) / (1024 * 1024);
      // each reader holds at most a piece (64 KiB) in the server, not its replay
      assert.ok(grewMiB < 48, `RSS grew ${grewMiB.toFixed(1)} MiB for ${K} replays of ${wouldBeMiB.toFixed(0)} MiB in all`);
      const me = await api(server, 'GET', '/v1/me', { token: u.token });
      assert.equal(me.status, 200);
    } finally {
      for (const r of readers) r.sock.destroy();
      await server.stop();
    }
  });
});
