// health.test.mjs - smoke tests of the HTTP host: health, errors, request ids,
// body limits, HEAD, metrics, and a clean shutdown.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, startServer } from './harness.mjs';

describe('http host', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('GET /healthz answers 200 {"status":"ok"} with a request id', async () => {
    const res = await api(server, 'GET', '/healthz');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { status: 'ok' });
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.match(res.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
  });

  test('request ids are unique per request', async () => {
    const ids = new Set();
    for (let i = 0; i < 20; i++) ids.add((await api(server, 'GET', '/healthz')).headers.get('x-request-id'));
    assert.equal(ids.size, 20);
  });

  test('a sane incoming X-Request-Id is kept, an odd one replaced', async () => {
    const kept = await api(server, 'GET', '/healthz', { headers: { 'X-Request-Id': 'trace-42.a_b' } });
    assert.equal(kept.headers.get('x-request-id'), 'trace-42.a_b');
    const replaced = await api(server, 'GET', '/healthz', { headers: { 'X-Request-Id': 'no spaces<>' } });
    assert.match(replaced.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
    const tooLong = await api(server, 'GET', '/healthz', { headers: { 'X-Request-Id': 'a'.repeat(65) } });
    assert.match(tooLong.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
  });

  test('an unknown path is a JSON 404', async () => {
    const res = await api(server, 'GET', '/no/such/thing');
    assert.equal(res.status, 404);
    assert.equal(res.json.error.code, 'not_found');
    assert.equal(typeof res.json.error.message, 'string');
    assert.ok(res.headers.get('x-request-id'));
  });

  test('a known path with another method is a 405 with Allow (PATCH reaches the router)', async () => {
    const res = await api(server, 'PATCH', '/healthz');
    assert.equal(res.status, 405);
    assert.match(res.headers.get('allow'), /GET/);
    assert.equal(res.json.error.code, 'method_not_allowed');
  });

  test('HEAD answers like GET without a body', async () => {
    const get = await api(server, 'GET', '/healthz');
    const head = await api(server, 'HEAD', '/healthz');
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
    assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(get.text)));
  });

  test('a 2 MiB body is refused with a JSON 413, and the connection still works', async () => {
    const big = Buffer.alloc(2 * 1024 * 1024, 0x61);
    const res = await api(server, 'POST', '/v1/auth/signup', {
      body: big,
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(res.status, 413);
    assert.deepEqual(res.json, {
      error: { code: 'payload_too_large', message: 'request body exceeds 1 MiB' },
    });
    assert.equal((await api(server, 'GET', '/healthz')).status, 200);
  });

  test('a body just under 1 MiB is accepted by the host (the handler judges it)', async () => {
    const body = `{"email":"${'a'.repeat(1024 * 1024 - 64)}","password":"x"}`;
    const res = await api(server, 'POST', '/v1/auth/signup', {
      body,
      headers: { 'Content-Type': 'application/json' },
    });
    assert.notEqual(res.status, 413);
    assert.ok(res.status >= 400 && res.status < 500, `status ${res.status}`);
  });

  test('GET /metrics is Prometheus text with request counters', async () => {
    await api(server, 'GET', '/healthz');
    await api(server, 'GET', '/nope');
    const res = await api(server, 'GET', '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain/);
    assert.match(res.text, /^# TYPE koumpa_http_requests_total counter$/m);
    assert.match(res.text, /^koumpa_http_requests_total\{route="\/healthz",status="200"\} \d+$/m);
    assert.match(res.text, /^koumpa_http_requests_total\{route="unmatched",status="404"\} \d+$/m);
    assert.match(res.text, /^koumpa_http_request_duration_seconds_bucket\{route="\/healthz",le="\+Inf"\} \d+$/m);
  });

  test('many concurrent requests are all answered', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, () => api(server, 'GET', '/healthz')));
    assert.ok(results.every((r) => r.status === 200));
  });
});

test('a second server cannot take a port already in use', async () => {
  const first = await startServer();
  try {
    const res = await first.run(['serve'], { env: { KOUMPA_APPS_ADDR: '127.0.0.1:0' }, timeoutMs: 20_000 });
    assert.equal(res.timedOut, false, 'the second server kept running on a port in use');
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, new RegExp(first.env.KOUMPA_ADDR.replace(/\./g, '\\.')));
  } finally {
    await first.stop();
  }
});
