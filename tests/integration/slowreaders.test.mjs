// slowreaders.test.mjs - clients that do not read cost bounded memory (issue
// 9, item 10, the host's part): an app file is sent from the file (sendfile),
// not copied per client, and an SSE stream is written only while the
// connection drains; a reader too far behind is dropped. The server's RSS is
// read from /proc/<pid>/status while such clients hang on.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, localOnly, RSS_UNMEASURABLE, signup, startServer } from './harness.mjs';

/** ASCII text of n bytes, lines of 64. */
const text = (n) => `${'a'.repeat(63)}\n`.repeat(Math.ceil(n / 64)).slice(0, n);
const BIG = text(1_500_000);
const APP = `A big file.\n<file path="index.html">\n<!doctype html><p>big</p>\n</file>\n<file path="big.txt">\n${BIG}\n</file>\n`;
const CLIENTS = 200;
const READERS = 30;
const SSE_TEXT = 8_000_000; /* model text streamed to each reader */

function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) / 1024;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** n sockets that send `request` and then never read. */
function stalled(port, request, n) {
  const socks = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.pause();
    s.on('error', () => {});
    s.on('connect', () => s.write(request));
    socks.push(s);
  }
  return socks;
}

async function waitReady(server, token, id) {
  for (let i = 0; i < 600; i++) {
    const r = await api(server, 'GET', `/v1/projects/${id}`, { token });
    const v = r.json?.versions?.[0] ?? r.json?.latest_version ?? r.json;
    if (r.json && !JSON.stringify(r.json).includes('"generating"')) return r.json;
    await sleep(v ? 100 : 100);
  }
  throw new Error('generation did not end');
}

describe('slow readers', { skip: RSS_UNMEASURABLE }, () => {
  let fake;
  let server;
  let user;
  before(async () => {
    fake = await startFakeAnthropic();
    server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url, KOUMPA_LOG_LEVEL: 'info' } });
    user = await signup(server);
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  // a local file's pages are shared by every response; from S3 each response holds its own body
  const skip = localOnly('the apps files are local files here');
  test(`${CLIENTS} clients not reading a 1.5 MB app file cost far less than a copy each`, { skip }, async (t) => {
    fake.setScenario({ type: 'text', text: APP, pieceChars: 65536, chunkSizes: [65536] });
    const r = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'a big app' } });
    assert.equal(r.status, 202);
    const id = r.json.id;
    await waitReady(server, user.token, id);
    const base = rssMiB(server.pid);
    const logBefore = server.logs().length;
    const socks = stalled(server.appsPort, `GET /${id}/big.txt HTTP/1.1\r\nHost: x\r\n\r\n`, CLIENTS);
    try {
      const served = () => (server.logs().slice(logBefore).match(/"route":"apps","status":200/g) || []).length;
      for (let i = 0; i < 400 && served() < CLIENTS; i++) await sleep(50);
      assert.equal(served(), CLIENTS);
      await sleep(300);
      const grew = rssMiB(server.pid) - base;
      t.diagnostic(`RSS grew by ${grew.toFixed(1)} MiB with ${CLIENTS} stalled clients`);
      assert.ok(grew < 60, `RSS grew by ${grew.toFixed(1)} MiB for ${CLIENTS} clients (a copy each would be ${((CLIENTS * BIG.length) / 2 ** 20).toFixed(0)} MiB)`);
    } finally {
      socks.forEach((s) => s.destroy());
    }
  });

  test(`${READERS} SSE readers that do not read a long generation stay bounded`, async (t) => {
    fake.setScenario({ type: 'text', text: text(SSE_TEXT), pieceChars: 16384, chunkSizes: [65536], durationMs: 6000 });
    const r = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'talk a lot' } });
    assert.equal(r.status, 202);
    const id = r.json.id;
    const base = rssMiB(server.pid);
    const socks = stalled(
      server.port,
      `GET /v1/projects/${id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${user.token}\r\nAccept: text/event-stream\r\n\r\n`,
      READERS,
    );
    let peak = 0;
    try {
      for (let i = 0; i < 600; i++) {
        peak = Math.max(peak, rssMiB(server.pid) - base);
        const p = await api(server, 'GET', `/v1/projects/${id}`, { token: user.token });
        if (!JSON.stringify(p.json).includes('"generating"')) break;
        await sleep(100);
      }
      peak = Math.max(peak, rssMiB(server.pid) - base);
      t.diagnostic(`RSS peaked ${peak.toFixed(1)} MiB over the start with ${READERS} stalled readers`);
      const unbounded = (READERS * SSE_TEXT) / 2 ** 20;
      assert.ok(peak < 120, `RSS peaked ${peak.toFixed(1)} MiB over the start (every reader buffered: ${unbounded.toFixed(0)} MiB)`);
    } finally {
      socks.forEach((s) => s.destroy());
    }
  });
});
