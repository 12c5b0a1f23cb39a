// lambda.test.mjs - the Lambda functions' real `bootstrap` end to end, on the fake Runtime API
// (fake-lambda-runtime.mjs), SQLite and local files: API Gateway HTTP API events (payload format 2.0,
// written by hand in the documented format) with the claims of the JWT the gateway verified, the route
// -> function table (a route of another function is a 404), admin by cognito:groups, a Stripe webhook
// whose body arrives base64-encoded (signed by the official `stripe` package), the EventBridge schedule
// that runs the daily bonus, an invalid configuration reported to /runtime/init/error, JSON log lines on
// stdout carrying the invocation's request id, and the link check (no libevent HTTP in bootstrap).
// With KOUMPA_TEST_BACKEND=aws (`make integration-aws`) the same on DynamoDB + S3 + Secrets Manager
// (moto behind the SigV4-verifying front, aws-backend.mjs; the harness gives each function the variables).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MAX_RESPONSE_BYTES, startFakeRuntime } from './fake-lambda-runtime.mjs';
import { awsBackend } from './aws-backend.mjs';
import { BACKEND, uniqueEmail } from './harness.mjs';
import {
  assertError,
  BOOTSTRAP,
  call,
  claimsFor,
  functionEnv,
  httpEvent,
  startFunction,
  WEBHOOK_SECRET,
} from './lambda-harness.mjs';
import { nowSeconds, signatureHeader, stripeId } from './stripe-events.mjs';

describe('Lambda bootstrap', () => {
  let dataDir;
  const fns = {};
  const user = { sub: randomUUID(), email: uniqueEmail('lambda') };
  const admin = { sub: randomUUID(), email: uniqueEmail('lambda-admin') };

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-lambda-'));
    // one after the other: the first migrates the SQLite database
    for (const name of ['get-user', 'list-projects', 'generate-app', 'admin-update-plan', 'stripe-webhook', 'daily-bonus'])
      fns[name] = await startFunction(name, dataDir);
  });

  after(async () => {
    const exits = {};
    for (const [name, fn] of Object.entries(fns)) exits[name] = await fn.stop();
    await rm(dataDir, { recursive: true, force: true });
    for (const [name, res] of Object.entries(exits))
      assert.deepEqual(res, { code: 0, signal: null }, `${name} did not stop cleanly:\n${fns[name].stderr()}`);
  });

  test('bootstrap links no libevent HTTP code', () => {
    const ldd = execFileSync('ldd', [BOOTSTRAP], { encoding: 'utf8' });
    assert.doesNotMatch(ldd, /libevent-2\.1|libevent_extra|libevent\.so/, ldd);
    const symbols = execFileSync('nm', ['-D', '--undefined-only', BOOTSTRAP], { encoding: 'utf8' });
    assert.doesNotMatch(symbols, /\bevhttp_|\bevdns_|\bevrpc_/);
    const own = execFileSync('nm', [BOOTSTRAP], { encoding: 'utf8' });
    assert.doesNotMatch(own, /\bkp_host_start\b|\bkp_request_read\b/);
  });

  test('GET /v1/me with the verified claims: the caller, created on first sight, and the log line', async () => {
    const res = await call(fns['get-user'], httpEvent('GET', '/v1/me', { claims: claimsFor(user) }));
    assert.equal(res.statusCode, 200, res.text);
    assert.equal(res.isBase64Encoded, false);
    assert.equal(res.json.email, user.email);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers['content-type'], 'application/json');
    // the gateway's id ends in '=' (refused as a request id): the invocation's id is used, as in the logs
    assert.equal(res.headers['x-request-id'], res.requestId);
    const own = await call(
      fns['get-user'],
      httpEvent('GET', '/v1/plans', { headers: { 'x-request-id': 'client-chosen-id.1' } }),
    );
    assert.equal(own.headers['x-request-id'], 'client-chosen-id.1');
    const again = await call(fns['get-user'], httpEvent('GET', '/v1/me', { claims: claimsFor(user) }));
    assert.equal(again.json.id, res.json.id, 'the same Cognito sub is the same account');

    const lines = fns['get-user']
      .stdout()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const line = lines.find((l) => l.msg === 'request' && l.aws_request_id === res.requestId);
    assert.ok(line, `no request log line for ${res.requestId} on stdout:\n${fns['get-user'].stdout()}`);
    assert.equal(line.route, '/v1/me');
    assert.equal(line.status, 200);
    assert.equal(line.user_id, res.json.id);
    assert.equal(line.remote_addr, '203.0.113.7');
  });

  test('GET /v1/plans needs no token; /v1/me without claims or token is a 401', async () => {
    const plans = await call(fns['get-user'], httpEvent('GET', '/v1/plans'));
    assert.equal(plans.statusCode, 200, plans.text);
    assert.ok(Array.isArray(plans.json.plans) && plans.json.plans.length > 0);
    const anon = await call(fns['get-user'], httpEvent('GET', '/v1/me'));
    assertError(anon, 401, 'unauthorized', /bearer token/);
    assert.match(anon.headers['www-authenticate'], /^Bearer/);
  });

  test('claims of another issuer are refused', async () => {
    const claims = { ...claimsFor(user), iss: 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other' };
    assertError(await call(fns['get-user'], httpEvent('GET', '/v1/me', { claims })), 401, 'unauthorized', /issuer/);
  });

  test('a route of another function is a 404 naming its owner', async () => {
    const res = await call(fns['get-user'], httpEvent('GET', '/v1/projects', { claims: claimsFor(user) }));
    assertError(res, 404, 'not_found', /served by the function list-projects, not get-user/);
    const local = await call(fns['get-user'], httpEvent('POST', '/v1/auth/login', { body: '{}' }));
    assertError(local, 404, 'not_found', /no such endpoint on AWS/);
  });

  test('list-projects: the caller\'s projects, query parameters decoded', async () => {
    const res = await call(fns['list-projects'], httpEvent('GET', '/v1/projects?limit=5', { claims: claimsFor(user) }));
    assert.equal(res.statusCode, 200, res.text);
    assert.deepEqual(res.json.projects, []);
    const bad = await call(fns['list-projects'], httpEvent('GET', '/v1/projects?limit=x', { claims: claimsFor(user) }));
    assert.equal(bad.statusCode, 400, bad.text);
    const missing = await call(fns['list-projects'], httpEvent('GET', '/v1/projects/prj_nope', { claims: claimsFor(user) }));
    assertError(missing, 404, 'not_found');
  });

  test('generate-app: without an LLM provider creating answers 503; project reads are list-projects\'', async () => {
    const fn = fns['generate-app'];
    const body = JSON.stringify({ name: 'todo', prompt: 'a to-do list' });
    const headers = { 'content-type': 'application/json' };
    const res = await call(fn, httpEvent('POST', '/v1/projects', { claims: claimsFor(user), headers, body }));
    assertError(res, 503, 'llm_not_configured');
    const read = await call(fn, httpEvent('GET', '/v1/projects', { claims: claimsFor(user) }));
    assertError(read, 404, 'not_found', /served by the function list-projects, not generate-app/);
  });

  test('admin routes: cognito:groups "[admin users]" is an admin, "[users]" is not', async () => {
    const target = `/v1/admin/users?email=${encodeURIComponent(user.email)}`;
    const fn = fns['admin-update-plan'];
    const ok = await call(fn, httpEvent('GET', target, { claims: claimsFor(admin, { groups: '[admin users]' }) }));
    assert.equal(ok.statusCode, 200, ok.text);
    assert.equal(ok.json.users[0]?.email, user.email);
    const no = await call(fn, httpEvent('GET', target, { claims: claimsFor(admin, { groups: '[users]' }) }));
    assertError(no, 403, 'forbidden');
    const none = await call(fn, httpEvent('GET', target, { claims: claimsFor(admin) }));
    assertError(none, 403, 'forbidden');
  });

  test('stripe-webhook: a base64 body is verified on its exact bytes', async () => {
    const event = {
      id: stripeId('evt'),
      object: 'event',
      api_version: '2026-10-28.endive',
      created: nowSeconds(),
      data: { object: { id: stripeId('thing'), object: 'thing' } },
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type: 'koumpa.test.unknown_type',
    };
    const payload = `${JSON.stringify(event, null, 2)}\n`; // Stripe's own layout: the bytes matter
    const header = signatureHeader(payload, WEBHOOK_SECRET);
    const body = Buffer.from(payload).toString('base64');
    const fn = fns['stripe-webhook'];
    const headers = { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': header };
    const ok = await call(fn, httpEvent('POST', '/v1/webhooks/stripe', { headers, body, base64: true }));
    assert.equal(ok.statusCode, 200, ok.text);
    assert.deepEqual(ok.json, { received: true, outcome: 'ignored' });
    const compact = Buffer.from(JSON.stringify(event)).toString('base64'); // same JSON, other bytes
    const bad = await call(fn, httpEvent('POST', '/v1/webhooks/stripe', { headers, body: compact, base64: true }));
    assert.equal(bad.statusCode, 400, bad.text);
    const garbled = await call(fn, httpEvent('POST', '/v1/webhooks/stripe', { headers, body: '%%%', base64: true }));
    assertError(garbled, 400, 'invalid_request', /base64/);
  });

  test('daily-bonus: the EventBridge schedule grants once per date; an HTTP event is a 404', async () => {
    const scheduled = (time) => ({
      version: '0',
      id: randomUUID(),
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: '123456789012',
      time,
      region: 'eu-west-1',
      resources: ['arn:aws:events:eu-west-1:123456789012:rule/koumpa-daily-bonus'],
      detail: {},
    });
    const fn = fns['daily-bonus'];
    const first = await fn.rt.invoke(scheduled('2099-01-01T00:00:00Z'));
    assert.equal(first.kind, 'response', JSON.stringify(first.json));
    assert.equal(first.json.date, '2099-01-01');
    assert.ok(first.json.granted >= 1, JSON.stringify(first.json));
    assert.equal(typeof first.json.recovered, 'number');
    const second = await fn.rt.invoke(scheduled('2099-01-01T00:00:05Z'));
    assert.equal(second.json.granted, 0, 'the same date again grants nothing');
    const http = await call(fn, httpEvent('GET', '/v1/plans'));
    assertError(http, 404, 'not_found', /served by the function get-user, not daily-bonus/);
  });

  test('on the AWS backend: DynamoDB, S3 and Secrets Manager, no local database', { skip: BACKEND !== 'aws' && 'KOUMPA_TEST_BACKEND=aws only' }, async () => {
    const { front } = await awsBackend();
    assert.equal(existsSync(path.join(dataDir, 'koumpa.db')), false, 'a function opened SQLite');
    assert.ok(front.stats.byService.dynamodb > 0, JSON.stringify(front.stats.byService));
    assert.ok(front.stats.byService.s3 > 0, JSON.stringify(front.stats.byService)); // the bucket checked at start
    assert.ok(front.stats.byService.secretsmanager > 0, JSON.stringify(front.stats.byService));
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
    const ready = (name) => fns[name].stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    for (const name of Object.keys(fns))
      assert.ok(ready(name).some((l) => l.msg === 'koumpa lambda ready' && l.db === 'dynamodb'), fns[name].stdout());
  });

  test('daily-bonus: the recovery schedule\'s {"koumpa":"recover"} runs the recovery alone', async () => {
    const res = await fns['daily-bonus'].rt.invoke({ koumpa: 'recover' });
    assert.equal(res.kind, 'response', JSON.stringify(res.json ?? res));
    assert.deepEqual(Object.keys(res.json), ['recovered'], 'no bonus granted');
    assert.equal(typeof res.json.recovered, 'number');
    const other = await fns['get-user'].rt.invoke({ koumpa: 'recover' });
    assert.equal(other.kind, 'error', 'only daily-bonus takes it');
    assert.equal(other.errorType, 'Runtime.InvalidEvent');
  });

  test('every routed API route reaches its handler on the function that owns it (bootstrap routes --json)', async () => {
    const routes = JSON.parse(execFileSync(BOOTSTRAP, ['routes', '--json'], { encoding: 'utf8' }));
    assert.equal(routes.length, 19, 'the route table changed: check this test and terraform/modules/api/routes.tf');
    const caller = { sub: randomUUID(), email: uniqueEmail('lambda-routes') };
    const claims = claimsFor(caller, { groups: '[admin]' });
    for (const r of routes) {
      const target = r.path.replace('{id}', 'prj_0000000000000000000000000000').replace('{n}', '1');
      const body = r.method === 'GET' || r.method === 'DELETE' ? undefined : '{}';
      const headers = body ? { 'content-type': 'application/json' } : {};
      const res = await call(fns[r.function], httpEvent(r.method, target, { routeKey: r.route_key, claims, headers, body }));
      const what = `${r.route_key} on ${r.function}: ${res.statusCode} ${res.text}`;
      // the host's own refusals: another function's route, no such route, a stream it cannot carry
      assert.doesNotMatch(res.json?.error?.message ?? '', /is served by the function|no such endpoint on AWS/, what);
      assert.notEqual(res.statusCode, 501, what);
      // a handler's own answer: here without a model or Stripe, the 503 that names what to configure
      assert.ok(res.statusCode < 500 || /_not_configured$/.test(res.json?.error?.code ?? ''), what);
    }
  });

  test('an event the function does not take is an invocation error', async () => {
    const res = await fns['get-user'].rt.invoke({ hello: 'world' });
    assert.equal(res.kind, 'error');
    assert.equal(res.errorType, 'Runtime.InvalidEvent');
    assert.match(res.json.errorMessage, /API Gateway payload format 2\.0/);
    const sched = await fns['get-user'].rt.invoke({ source: 'aws.events', 'detail-type': 'Scheduled Event' });
    assert.equal(sched.kind, 'error');
  });

  test('a bad configuration is reported to /runtime/init/error', async () => {
    for (const [handler, env, pattern] of [
      ['no-such-function', {}, /_HANDLER is "no-such-function"/],
      ['get-user', { KOUMPA_DB: 'mongodb' }, /KOUMPA_DB/],
    ]) {
      const fn = await startFunction(handler, dataDir, env);
      const init = await fn.rt.initError;
      assert.equal(init.errorType, 'Runtime.InitError');
      assert.match(init.json.errorMessage, pattern);
      const exit = await fn.exited;
      assert.equal(exit.code, 1, fn.stderr());
      await fn.rt.close();
    }
  });

  test('the fake runtime refuses a response over 6 MB with 413', async () => {
    const rt = await startFakeRuntime();
    const pending = rt.invoke({});
    const next = await fetch(`http://${rt.api}/2018-06-01/runtime/invocation/next`);
    const id = next.headers.get('lambda-runtime-aws-request-id');
    assert.ok(Number(next.headers.get('lambda-runtime-deadline-ms')) > Date.now());
    await next.text();
    const big = await fetch(`http://${rt.api}/2018-06-01/runtime/invocation/${id}/response`, {
      method: 'POST',
      body: 'x'.repeat(MAX_RESPONSE_BYTES + 1),
    });
    assert.equal(big.status, 413);
    assert.equal((await big.json()).errorType, 'RequestEntityTooLarge');
    const small = await fetch(`http://${rt.api}/2018-06-01/runtime/invocation/${id}/response`, {
      method: 'POST',
      body: '{"ok":true}',
    });
    assert.equal(small.status, 202);
    assert.deepEqual((await pending).json, { ok: true });
    await rt.close();
  });
});
