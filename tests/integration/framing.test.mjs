// framing.test.mjs - request framing is strict on both ports (issue 9, item
// 8): heads a lenient parser would read one way and a proxy another are
// answered 400 before anything acts on them, a declared body over the limit
// is 413 at once, and a valid pipelined request behind a rejected one is
// never served.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startServer } from './harness.mjs';
import { countResponses, exchange } from './rawhttp.mjs';

const BAD = [
  ['two different Content-Length headers', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x'],
  ['Content-Length with a sign', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}'],
  ['Content-Length with trailing junk', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length:  2x\r\n\r\n{}'],
  ['an empty Content-Length', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n'],
  ['a Content-Length list', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}'],
  ['whitespace before the colon', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}'],
  ['Transfer-Encoding with Content-Length', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n'],
  ['a Transfer-Encoding other than chunked', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
  ['two Transfer-Encoding headers', 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n'],
  ['a folded header line', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n'],
  ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost: x\r\nbroken line\r\n\r\n'],
  ['a bare CR in a header', 'GET /healthz HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n'],
];

for (const port of ['api', 'apps']) {
  describe(`request framing on the ${port} port`, () => {
    let server;
    let p;
    before(async () => {
      server = await startServer();
      p = port === 'api' ? server.port : server.appsPort;
    });
    after(async () => {
      await server?.stop();
    });

    for (const [what, head] of BAD) {
      test(`${what} is a 400 and the connection closes`, async () => {
        const res = await exchange(p, head);
        assert.equal(res.status, 400, res.raw);
        assert.equal(res.headers.connection, 'close');
        assert.equal(countResponses(res.raw), 1);
        if (port === 'api') assert.equal(JSON.parse(res.body).error.code, 'invalid_request');
      });
    }

    test('a pipelined request behind a rejected head is never served', async () => {
      const smuggled = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
      const res = await exchange(p, 'POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 39\r\n\r\n' + smuggled);
      assert.equal(res.status, 400);
      assert.equal(countResponses(res.raw), 1);
    });

    test('a valid request pipelined behind a valid one is served', async () => {
      const get = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
      const res = await exchange(p, get + get.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
      assert.equal(countResponses(res.raw), 2, res.raw);
    });

    test('a declared body over the limit is a 413 before any body is sent', async () => {
      const res = await exchange(p, 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048577\r\n\r\n');
      assert.equal(res.status, 413, res.raw);
      assert.equal(res.headers.connection, 'close');
      if (port === 'api') assert.equal(JSON.parse(res.body).error.code, 'payload_too_large');
    });

    test('an unknown method is a 501, a newer HTTP version a 505', async () => {
      assert.equal((await exchange(p, 'BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n')).status, 501);
      assert.equal((await exchange(p, 'TRACE /healthz HTTP/1.1\r\nHost: x\r\n\r\n')).status, 501);
      assert.equal((await exchange(p, 'GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n')).status, 505);
    });
  });
}

describe('request framing: what stays accepted', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('a chunked body is read, and its response closes the connection', async () => {
    const body = '{"email":"a@b.c","password":"x"}';
    const res = await exchange(
      server.port,
      `POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    assert.equal(res.status, 401, res.raw);
    assert.equal(res.headers.connection, 'close');
    assert.equal(countResponses(res.raw), 1);
  });

  test('identical duplicate Content-Length headers and empty lines before a request are fine', async () => {
    const res = await exchange(
      server.port,
      '\r\n\r\nPOST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    );
    assert.equal(res.status, 400, res.raw);
    assert.equal(JSON.parse(res.body).error.code, 'invalid_request'); /* the handler's own 400: missing fields */
  });
});
