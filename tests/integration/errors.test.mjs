// errors.test.mjs - the documented answers to bad requests: malformed JSON,
// wrong media type, oversized bodies, unknown routes and methods; HEAD, the
// dashboard's page, metrics by route and status; one error shape everywhere; and
// a 500 that says nothing about the server's internals.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { api, signup, sqliteOnly, startServer } from './harness.mjs';

const JSON_CT = { 'Content-Type': 'application/json' };

/** The one error shape: {"error": {"code", "message"}} and nothing else, as JSON, with a request id. */
function assertErrorShape(res, status, code) {
  assert.equal(res.status, status, res.text);
  assert.match(res.headers.get('content-type') || '', /^application\/json/, `${status}: content-type`);
  assert.ok(res.headers.get('x-request-id'), `${status}: no X-Request-Id`);
  assert.ok(res.json, `${status}: body is not JSON: ${res.text}`);
  assert.deepEqual(Object.keys(res.json), ['error']);
  assert.deepEqual(Object.keys(res.json.error).sort(), ['code', 'message']);
  assert.equal(res.json.error.code, code, res.text);
  assert.equal(typeof res.json.error.message, 'string');
  assert.ok(res.json.error.message.length > 0);
}

/** Reads one counter of koumpa_http_requests_total (0 when absent). */
function counter(metrics, route, status) {
  const escaped = route.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const m = metrics.match(new RegExp(`^koumpa_http_requests_total\\{route="${escaped}",status="${status}"\\} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

describe('errors and the HTTP surface', () => {
  let server;
  let user;
  before(async () => {
    server = await startServer();
    user = await signup(server);
  });
  after(async () => {
    await server?.stop();
  });

  test('malformed JSON is a 400 invalid_json giving the position', async () => {
    for (const body of ['{"email": "a@example.com", ', '{"email" "x"}', '{,}', 'nul', '{"a":1}}']) {
      const res = await api(server, 'POST', '/v1/auth/signup', { body, headers: JSON_CT });
      assertErrorShape(res, 400, 'invalid_json');
      assert.match(res.json.error.message, /position \d+/, res.json.error.message);
    }
    // the position is where the parser stopped: after the 13 good bytes here
    const res = await api(server, 'POST', '/v1/auth/login', { body: '{"email": 12,,}', headers: JSON_CT });
    assert.match(res.json.error.message, /position 1[2-4]\b/, res.json.error.message);
  });

  test('an empty body or a JSON value that is not an object is a 400 invalid_json', async () => {
    for (const body of ['', '[]', '"text"', '42', 'null']) {
      const res = await api(server, 'POST', '/v1/auth/login', { body, headers: JSON_CT });
      assertErrorShape(res, 400, 'invalid_json');
    }
  });

  test('a body that is not declared as JSON is a 415', async () => {
    const json = JSON.stringify({ email: 'a@example.com', password: 'whatever123' });
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', 'multipart/form-data; boundary=x']) {
      const res = await api(server, 'POST', '/v1/auth/login', { body: json, headers: { 'Content-Type': ct } });
      assertErrorShape(res, 415, 'unsupported_media_type');
    }
    // no Content-Type at all
    const res = await fetch(`${server.url}/v1/auth/login`, { method: 'POST', body: Buffer.from(json) });
    assert.equal(res.status, 415);
    // parameters and case are fine
    for (const ct of ['application/json; charset=utf-8', 'Application/JSON']) {
      const ok = await api(server, 'POST', '/v1/auth/login', {
        body: JSON.stringify({ email: user.email, password: user.password }),
        headers: { 'Content-Type': ct },
      });
      assert.equal(ok.status, 200, `${ct}: ${ok.text}`);
    }
  });

  test('a body over 1 MiB is a 413, also on endpoints that take no body', async () => {
    const body = Buffer.alloc(1024 * 1024 + 1, 0x20);
    const res = await api(server, 'POST', '/v1/auth/signup', { body, headers: JSON_CT });
    assertErrorShape(res, 413, 'payload_too_large');
    const onPut = await api(server, 'PUT', '/v1/admin/plans/pro', { token: user.token, body, headers: JSON_CT });
    assertErrorShape(onPut, 413, 'payload_too_large');
    assert.equal((await api(server, 'GET', '/healthz')).status, 200);
  });

  test('an unknown route is a JSON 404', async () => {
    for (const p of ['/nope', '/v1', '/v1/me/', '/v1/admin/plans/', '/v1/plans/free', '/V1/ME', '/v1/me/ledger/extra']) {
      const res = await api(server, 'GET', p, { token: user.token });
      assertErrorShape(res, 404, 'not_found');
    }
  });

  test('a known route with another method is a 405 with Allow', async () => {
    for (const [method, p, allowed] of [
      ['DELETE', '/v1/me', ['GET', 'HEAD']],
      ['POST', '/v1/plans', ['GET', 'HEAD']],
      ['GET', '/v1/auth/login', ['POST']],
      ['PUT', '/v1/auth/signup', ['POST']],
      ['GET', '/v1/admin/plans/pro', ['PUT']],
      ['POST', '/v1/admin/users', ['GET', 'HEAD']],
      ['PATCH', '/v1/admin/users/usr_x/plan', ['PUT']],
    ]) {
      const res = await api(server, method, p, { token: user.token });
      assertErrorShape(res, 405, 'method_not_allowed');
      const allow = (res.headers.get('allow') || '').split(',').map((s) => s.trim()).filter(Boolean);
      assert.deepEqual(allow.sort(), [...allowed].sort(), `${method} ${p}: Allow ${res.headers.get('allow')}`);
    }
  });

  test('HEAD answers like GET without a body', async () => {
    for (const p of ['/healthz', '/v1/plans', '/']) {
      const get = await api(server, 'GET', p);
      const head = await api(server, 'HEAD', p);
      assert.equal(head.status, 200, p);
      assert.equal(head.text, '', p);
      assert.equal(head.headers.get('content-type'), get.headers.get('content-type'), p);
    }
    const unauth = await api(server, 'HEAD', '/v1/me');
    assert.equal(unauth.status, 401);
    assert.equal(unauth.text, '');
  });

  test('GET / is the dashboard (tests/integration/dashboard.test.mjs has the rest)', async () => {
    const res = await api(server, 'GET', '/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.match(res.text, /<html/i);
    assert.ok(res.text.includes('js/main.js'), 'the page loads the dashboard script');
  });

  test('/metrics counts requests by route pattern and status', async () => {
    const first = (await api(server, 'GET', '/metrics')).text;
    for (let i = 0; i < 3; i++) await api(server, 'GET', '/v1/plans');
    for (let i = 0; i < 2; i++) await api(server, 'GET', '/v1/me');
    await api(server, 'GET', '/v1/me', { token: user.token });
    await api(server, 'PUT', '/v1/admin/plans/some-plan', { token: user.token, body: {} });
    await api(server, 'PUT', '/v1/admin/users/usr_abc/plan', { body: {} });
    await api(server, 'GET', '/definitely/not/here');
    const res = await api(server, 'GET', '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain/);
    const second = res.text;
    const delta = (route, status) => counter(second, route, status) - counter(first, route, status);
    assert.equal(delta('/v1/plans', 200), 3);
    assert.equal(delta('/v1/me', 401), 2);
    assert.equal(delta('/v1/me', 200), 1);
    assert.equal(delta('/v1/admin/plans/{id}', 403), 1, 'the route label is the pattern, not the path');
    assert.equal(delta('/v1/admin/users/{id}/plan', 401), 1);
    assert.equal(delta('unmatched', 404), 1);
    assert.equal(delta('/metrics', 200), 1, 'the first scrape is counted by the second');
    assert.doesNotMatch(second, /some-plan|usr_abc|definitely/, 'raw paths must not become labels');
    assert.match(second, /^# TYPE koumpa_http_request_duration_seconds histogram$/m);
    assert.match(second, /^koumpa_http_request_duration_seconds_count\{route="\/v1\/plans"\} \d+$/m);
  });

  test('every error answer has the same shape', async () => {
    const cases = [
      [400, 'invalid_json', () => api(server, 'POST', '/v1/auth/login', { body: '{', headers: JSON_CT })],
      [400, 'invalid_request', () => api(server, 'POST', '/v1/auth/signup', { body: { email: 'x', password: 'y' } })],
      [400, 'invalid_request', () => api(server, 'GET', '/v1/me/ledger?limit=0', { token: user.token })],
      [401, 'unauthorized', () => api(server, 'GET', '/v1/me')],
      [401, 'unauthorized', () => api(server, 'GET', '/v1/me', { token: 'a.b.c' })],
      [401, 'unauthorized', () => api(server, 'POST', '/v1/auth/login', { body: { email: user.email, password: 'nope-nope' } })],
      [403, 'forbidden', () => api(server, 'GET', '/v1/admin/users?email=a@example.com', { token: user.token })],
      [404, 'not_found', () => api(server, 'GET', '/missing')],
      [405, 'method_not_allowed', () => api(server, 'DELETE', '/healthz')],
      [409, 'conflict', () => api(server, 'POST', '/v1/auth/signup', { body: { email: user.email, password: user.password } })],
      [413, 'payload_too_large', () => api(server, 'POST', '/v1/auth/login', { body: Buffer.alloc(1024 * 1024 + 10, 0x20), headers: JSON_CT })],
      [415, 'unsupported_media_type', () => api(server, 'POST', '/v1/auth/login', { body: '{}', headers: { 'Content-Type': 'text/plain' } })],
    ];
    for (const [status, code, call] of cases) assertErrorShape(await call(), status, code);
  });
});

/** Runs SQL on the server's database with whichever SQLite client is installed; false if none. */
function runSql(dbPath, sql) {
  const clients = [
    ['sqlite3', [dbPath, sql]],
    ['python3', ['-c', 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.close()', dbPath, sql]],
  ];
  for (const [file, args] of clients) {
    try {
      execFileSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
      return true;
    } catch (e) {
      if (e.code !== 'ENOENT' && !/No module named/.test(String(e.stderr))) throw e;
    }
  }
  return false;
}

const breaksSqlite = sqliteOnly('breaks the SQLite file under the server');
test('a 500 says "internal error" with the request id, and the details go to the log only', { skip: breaksSqlite }, async (t) => {
  const server = await startServer();
  let stopped = false;
  try {
    const u = await signup(server);
    assert.equal((await api(server, 'GET', '/v1/me/ledger', { token: u.token })).status, 200);
    // break the database under the running server: the ledger table disappears
    if (!runSql(path.join(server.dataDir, 'koumpa.db'), 'ALTER TABLE ledger RENAME TO ledger_moved_away;')) {
      t.skip('no SQLite client (sqlite3 or python3) to break the database with');
      return;
    }
    const res = await api(server, 'GET', '/v1/me/ledger', { token: u.token, headers: { 'X-Request-Id': 'boom-500' } });
    assertErrorShape(res, 500, 'internal_error');
    assert.match(res.json.error.message, /boom-500/, 'the message gives the request id to quote');
    for (const leak of [/sqlite/i, /ledger/i, /no such/i, /table/i, /select/i, /\.c\b/, /\//, /database/i]) {
      assert.doesNotMatch(res.text, leak, `the 500 body leaks ${leak}: ${res.text}`);
    }
    // the rest of the server still works
    assert.equal((await api(server, 'GET', '/healthz')).status, 200);
    await server.stop();
    stopped = true;
    const line = server
      .logs()
      .split('\n')
      .find((l) => l.includes('"boom-500"') && /"level":"error"/.test(l));
    assert.ok(line, `no error log line for request boom-500:\n${server.logs()}`);
    const logged = JSON.parse(line);
    assert.equal(logged.error, 'database_error', 'the log line says what failed');
    assert.ok(logged.detail, 'the log line has the detail');
  } finally {
    if (!stopped) await server.stop();
  }
});
