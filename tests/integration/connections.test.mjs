// connections.test.mjs - descriptor exhaustion (issue 9, item 6): under a low
// descriptor limit, a thousand idle connections to both ports reach the
// connection cap instead of the limit; each new connection evicts the oldest
// one that never completed a request, so the API and the apps origin keep
// answering, and nothing floods the log.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startServer } from './harness.mjs';

const NOFILE = 1024;
const IDLE = 1100; /* over the limit itself */

/** Opens n idle sockets spread over the ports; counts those the server closes. */
function openIdle(ports, n) {
  const socks = [];
  const state = { closedByServer: 0, errors: 0 };
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host: '127.0.0.1', port: ports[i % ports.length] });
    s.on('error', () => state.errors++);
    s.on('end', () => {
      state.closedByServer++;
      s.destroy();
    });
    socks.push(s);
  }
  return { socks, state, destroy: () => socks.forEach((s) => s.destroy()) };
}

async function waitFor(cond, ms = 20_000) {
  for (let waited = 0; waited < ms && !cond(); waited += 50) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

async function status(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

describe('connection cap under a low descriptor limit', () => {
  let server;
  before(async () => {
    server = await startServer({
      prefix: ['prlimit', `--nofile=${NOFILE}`, '--'],
      env: { KOUMPA_HEADER_TIMEOUT_S: '120', KOUMPA_LOG_LEVEL: 'info' },
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('a thousand idle sockets on both ports leave both answering, with a quiet log', async () => {
    const logBefore = server.logs().length;
    const idle = openIdle([server.port, server.appsPort], IDLE);
    try {
      /* the cap is the limit minus a quarter: at least IDLE - 768 are evicted */
      assert.ok(await waitFor(() => idle.state.closedByServer >= IDLE - (NOFILE - NOFILE / 4)), `evicted ${idle.state.closedByServer}`);
      assert.equal(await status(`${server.url}/healthz`), 200);
      assert.equal(await status(`${server.appsUrl}/healthz`), 404); /* answered: the apps origin serves no API */
      const log = server.logs().slice(logBefore);
      assert.ok(log.length < 64 * 1024, `log grew by ${log.length} bytes`);
      assert.ok((log.match(/accept failed/g) || []).length <= 30);
    } finally {
      idle.destroy();
    }
  });
});

describe('KOUMPA_MAX_CONNECTIONS', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { KOUMPA_MAX_CONNECTIONS: '40', KOUMPA_HEADER_TIMEOUT_S: '120' } });
  });
  after(async () => {
    await server?.stop();
  });

  test('over the cap the oldest idle connections go, and requests are still served', async () => {
    const idle = openIdle([server.port, server.appsPort], 60);
    try {
      assert.ok(await waitFor(() => idle.state.closedByServer >= 20), `evicted ${idle.state.closedByServer}`);
      for (let i = 0; i < 5; i++) {
        assert.equal(await status(`${server.url}/healthz`), 200);
        assert.equal(await status(`${server.appsUrl}/healthz`), 404); /* answered: the apps origin serves no API */
      }
    } finally {
      idle.destroy();
    }
  });
});

describe('accept errors', () => {
  let server;
  before(async () => {
    /* a cap above the limit: accept() itself fails with EMFILE */
    server = await startServer({
      prefix: ['prlimit', '--nofile=256', '--'],
      env: { KOUMPA_MAX_CONNECTIONS: '100000', KOUMPA_HEADER_TIMEOUT_S: '120' },
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('EMFILE pauses the listener and is logged about once a second, then serving resumes', async () => {
    const logBefore = server.logs().length;
    const idle = openIdle([server.port], 400);
    let log = '';
    try {
      assert.ok(await waitFor(() => /accept failed/.test(server.logs().slice(logBefore))));
      await new Promise((r) => setTimeout(r, 2000)); /* let a flood show, if there were one */
      log = server.logs().slice(logBefore);
    } finally {
      idle.destroy();
    }
    assert.ok(log.length < 16 * 1024, `log grew by ${log.length} bytes`);
    assert.ok((log.match(/accept failed/g) || []).length <= 6, log);
    assert.doesNotMatch(log, /Error from accept/);
    let ok = false;
    for (let i = 0; i < 100 && !ok; i++) {
      ok = await status(`${server.url}/healthz`).then((s) => s === 200, () => false);
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(ok);
  });
});
