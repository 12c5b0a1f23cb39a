// headers.test.mjs - the headers every response carries (issue 9, item 17):
// API responses are never cached or sniffed, errors and 401s included; the
// apps origin's own error pages (limits, rejected heads, unknown methods)
// carry its sandboxing CSP and nosniff like its files do.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, startServer } from './harness.mjs';
import { exchange } from './rawhttp.mjs';

const CSP = 'sandbox allow-scripts allow-forms allow-popups allow-modals';

const RAW = {
  'a rejected head (400)': 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n',
  'a declared body over the limit (413)': 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n',
  'an unknown method (501)': 'BREW / HTTP/1.1\r\nHost: x\r\n\r\n',
};

describe('response headers', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('every API response says no-store and nosniff', async () => {
    const cases = [
      await api(server, 'GET', '/healthz'),
      await api(server, 'GET', '/v1/me'),
      await api(server, 'GET', '/v1/nothing-here'),
      await api(server, 'POST', '/v1/auth/login', { body: '{', headers: { 'content-type': 'application/json' } }),
      await api(server, 'DELETE', '/healthz'),
    ];
    assert.deepEqual(
      cases.map((r) => r.status),
      [200, 401, 404, 400, 405],
    );
    for (const r of cases) {
      assert.equal(r.headers.get('cache-control'), 'no-store', `status ${r.status}`);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff', `status ${r.status}`);
    }
  });

  for (const [what, head] of Object.entries(RAW)) {
    test(`the API's answer to ${what} says no-store and nosniff`, async () => {
      const r = await exchange(server.port, head);
      assert.ok(r.status >= 400, r.raw);
      assert.equal(r.headers['cache-control'], 'no-store');
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    });

    test(`the apps origin's answer to ${what} carries its CSP and nosniff`, async () => {
      const r = await exchange(server.appsPort, head);
      assert.ok(r.status >= 400, r.raw);
      assert.equal(r.headers['content-security-policy'], CSP);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.match(r.headers['content-type'], /^text\/plain/);
    });
  }

  test("the apps origin's 404 and 405 carry its CSP and nosniff", async () => {
    for (const method of ['GET', 'POST']) {
      const r = await fetch(`${server.appsUrl}/prj_nothing/`, { method });
      assert.equal(r.status, method === 'GET' ? 404 : 405);
      assert.equal(r.headers.get('content-security-policy'), CSP);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    }
  });
});
