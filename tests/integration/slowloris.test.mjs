// slowloris.test.mjs - a request must arrive whole within its deadlines
// (issue 9, item 7): a head trickling in one line at a time is answered 408
// and closed once KOUMPA_HEADER_TIMEOUT_S has passed since its first byte,
// a socket that sends nothing is answered 408 too, and a body trickling in is
// cut off after KOUMPA_BODY_TIMEOUT_S. Each client would keep going far
// longer than the deadline; the test checks that the server ended it first.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startServer } from './harness.mjs';
import { exchange } from './rawhttp.mjs';

const LINES = 12; /* sent 500 ms apart: 6 s, three times the deadline */

function trickle(prefix) {
  const parts = [prefix];
  for (let i = 0; i < LINES; i++) parts.push(`X-Slow-${i}: ${'a'.repeat(10)}\r\n`);
  parts.push('\r\n');
  return parts;
}

for (const which of ['api', 'apps']) {
  describe(`deadlines on the ${which} port`, () => {
    let server;
    let port;
    before(async () => {
      server = await startServer({ env: { KOUMPA_HEADER_TIMEOUT_S: '2', KOUMPA_BODY_TIMEOUT_S: '2' } });
      port = which === 'api' ? server.port : server.appsPort;
    });
    after(async () => {
      await server?.stop();
    });

    test('a head sent one line at a time gets 408 and is closed before it ends', async () => {
      const parts = trickle('GET /healthz HTTP/1.1\r\nHost: x\r\n');
      const res = await exchange(port, parts, { gapMs: 500, timeoutMs: 20_000 });
      assert.equal(res.status, 408, res.raw);
      assert.equal(res.headers.connection, 'close');
      assert.equal((res.raw.match(/HTTP\/1\.1 /g) || []).length, 1); /* the head was never served */
    });

    test('a connection that sends nothing gets 408 and is closed', async () => {
      const res = await exchange(port, [], { timeoutMs: 20_000 });
      assert.equal(res.status, 408, res.raw);
      assert.equal(res.closed, true);
    });

    test('a body sent a byte at a time is cut off', async () => {
      const parts = ['POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n'];
      for (let i = 0; i < 20; i++) parts.push(' ');
      const res = await exchange(port, parts, { gapMs: 500, timeoutMs: 20_000 });
      assert.equal(res.raw, ''); /* closed without a response: the request never completed */
    });

    test('a prompt client is served as before', async () => {
      const res = await exchange(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.ok(res.status === 200 || res.status === 404, res.raw);
    });
  });
}
