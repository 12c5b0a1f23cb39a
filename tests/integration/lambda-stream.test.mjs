// lambda-stream.test.mjs - generate-app's function URL (RESPONSE_STREAM) end to end: the real `bootstrap` on the
// fake Runtime API (fake-lambda-runtime.mjs, streamed responses: prelude, chunks, trailers), SQLite and local files,
// the fake Anthropic API, and Cognito-like RS256 tokens minted by `jose` with a JWKS served here (a function URL has
// no authorizer: the function verifies the token itself).
//
// A streamed generation: the prelude (200, text/event-stream), events arriving before the end, the version ready and
// charged once; GET .../events replayed, after Last-Event-ID too; a provider failure mid-stream: the SSE error event
// and the error trailers; a 401 without a token or with one of another issuer / audience, or expired; a route of
// another function (a complete body in streaming mode); the HTTP API still answers a stream with 501. A second
// generate-app with a short deadline: a reader following a generation that outlasts the invocation gets the
// interrupted trailers before the deadline; a Runtime API that stops reading does not wedge the function (the next
// invocation is served). With KOUMPA_TEST_BACKEND=aws the functions run on DynamoDB + S3 (aws-backend.mjs).
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SignJWT, exportJWK } from 'jose';

import { awsBackendEnv, awsSecretsEnv } from './aws-backend.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { BACKEND, runKoumpa, uniqueEmail } from './harness.mjs';
import {
  assertError,
  call,
  callStream,
  CLIENT_ID,
  claimsFor,
  functionEnv,
  functionUrlEvent,
  httpEvent,
  ISSUER,
  openStream,
  startFunction,
  WRAPPED,
} from './lambda-harness.mjs';

const INDEX = '<!doctype html><title>Streamed</title><p>streamed through a function URL</p>';
const APP = `A page.\n<file path="index.html">\n${INDEX}\n</file>\n${'It says hello. '.repeat(20)}\n`;
const SHORT_TIMEOUT_MS = WRAPPED ? 60_000 : 6_000; // the second function's invocations

/** The fake model's answer, by the [[marker]] in the prompt: held (the end waits for a gate), fail (overloaded
 * mid-stream), else the app at once. */
function scenario(rec) {
  const text = JSON.stringify(rec.body?.messages ?? []);
  if (text.includes('[[held]]')) return { type: 'text', text: APP, gate: 'held', delayMs: 2 };
  if (text.includes('[[follow]]')) return { type: 'text', text: APP, gate: 'follow', delayMs: 2 };
  if (text.includes('[[fail]]')) return { type: 'error_event', errorType: 'overloaded_error', message: 'Overloaded' };
  return { type: 'text', text: APP };
}

/** Parses SSE text into events ({id, event, data}); comments are skipped. */
function parseEvents(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    const ev = {};
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) ev.id = Number(line.slice(4));
      else if (line.startsWith('event: ')) ev.event = line.slice(7);
      else if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6));
    }
    if (ev.event) events.push(ev);
  }
  return events;
}

/** An identity provider: an RSA key, its JWKS served on 127.0.0.1, and tokens shaped like Cognito's ID tokens. */
async function startIdentityProvider() {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `kid-${randomUUID()}`;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] });
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(jwks);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    jwksUrl: `http://127.0.0.1:${srv.address().port}/.well-known/jwks.json`,
    token(user, { issuer = ISSUER, audience = CLIENT_ID, expiresAt } = {}) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ email: user.email, email_verified: true, token_use: 'id', 'cognito:username': user.sub })
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(user.sub)
        .setIssuedAt(now - 5)
        .setExpirationTime(expiresAt ?? now + 3600)
        .sign(privateKey);
    },
    close: () =>
      new Promise((resolve) => {
        srv.closeAllConnections?.();
        srv.close(resolve);
      }),
  };
}

const WAIT_MS = WRAPPED ? 240_000 : 30_000; // a bound, not a measure

/** Polls until pred(value of get()) holds. */
async function waitFor(get, pred, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await get();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('generate-app\'s function URL streams', () => {
  let dataDir;
  let fake;
  let idp;
  const fns = {};
  const user = { sub: randomUUID(), email: uniqueEmail('stream') };
  let token;
  let generated; // the first test's project and its events

  const post = (prompt, tok = token) =>
    functionUrlEvent('POST', '/v1/projects', {
      token: tok,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt }),
    });
  const credits = async () => (await call(fns['get-user'], httpEvent('GET', '/v1/me', { claims: claimsFor(user) }))).json.credits.total;
  const project = async (id) => (await call(fns['list-projects'], httpEvent('GET', `/v1/projects/${id}`, { claims: claimsFor(user) }))).json;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-lambda-stream-'));
    fake = await startFakeAnthropic();
    fake.setScenario(scenario);
    idp = await startIdentityProvider();
    let env = {
      ANTHROPIC_API_KEY: 'sk-any',
      ANTHROPIC_BASE_URL: fake.url,
      KOUMPA_LLM_RETRY_BASE_MS: '10',
      KOUMPA_JWKS_URL: idp.jwksUrl,
      KOUMPA_GENERATION_SETTLE_MS: '2000', // of the 30 s invocations: a generation may run until 2 s before
    };
    if (BACKEND === 'aws') {
      // DynamoDB + S3 on moto behind the SigV4-verifying front, the Anthropic key in Secrets Manager
      const vars = await awsBackendEnv(dataDir, functionEnv('generate-app', '', dataDir), runKoumpa);
      env = await awsSecretsEnv({ ...env, ...vars });
    }
    // one after the other: the first migrates the SQLite database
    fns['generate-app'] = await startFunction('generate-app', dataDir, env);
    fns.short = await startFunction('generate-app', dataDir, env, { timeoutMs: SHORT_TIMEOUT_MS });
    fns['list-projects'] = await startFunction('list-projects', dataDir, env);
    fns['get-user'] = await startFunction('get-user', dataDir, env);
    token = await idp.token(user);
  });

  after(async () => {
    const exits = {};
    for (const [name, fn] of Object.entries(fns)) exits[name] = await fn.stop();
    await fake?.close();
    await idp?.close();
    await rm(dataDir, { recursive: true, force: true });
    for (const [name, res] of Object.entries(exits))
      assert.deepEqual(res, { code: 0, signal: null }, `${name} did not stop cleanly:\n${fns[name].stderr()}`);
  });

  test('a generation streams: the prelude, events before the end, the version ready and charged once', async () => {
    const before = await credits();
    const event = post('A page [[held]]');
    const res = await openStream(fns['generate-app'], event);
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'], /^text\/event-stream/);
    assert.equal(res.headers['cache-control'], 'no-cache, no-store');
    assert.equal(res.headers['x-request-id'], event.requestContext.requestId);
    assert.match(res.headers.location, /^\/v1\/projects\/prj_[0-9a-f]+$/);
    assert.deepEqual(res.cookies, []);

    // the model's end is held back: what came so far came while the invocation runs
    let over = false;
    res.stream.done.then(() => {
      over = true;
    });
    const early = await res.stream.until((t) => t.includes('event: file'));
    assert.equal(over, false, 'the stream is still open');
    assert.doesNotMatch(early, /event: done/);
    assert.equal(parseEvents(early)[0].event, 'project');

    fake.openGate('held');
    const done = await res.stream.done;
    assert.ok(done.complete);
    assert.equal(done.errorType, undefined, JSON.stringify(done.trailers));
    assert.ok(res.stream.chunks.length > 1, 'the payload came in several chunks');
    const events = parseEvents(done.body.toString('utf8'));
    assert.deepEqual(
      events.map((e) => e.id),
      events.map((_, i) => i + 1),
    );
    const id = events[0].data.project_id;
    assert.equal(`/v1/projects/${id}`, res.headers.location);
    assert.equal(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join(''), APP);
    const last = events.at(-1);
    assert.equal(last.event, 'done');
    assert.equal(last.data.credits_left, before - 1);

    const p = await project(id);
    assert.equal(p.status, 'ready');
    assert.equal(p.latest_ready_version, 1);
    assert.equal(await credits(), before - 1, 'charged once');
    generated = { id, events };

    // the log line of the request, with its status, once the stream is over
    const requestLine = () =>
      fns['generate-app']
        .stdout()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .find((l) => l.msg === 'request' && l.aws_request_id === res.requestId);
    const line = await waitFor(requestLine, Boolean, 'the request log line');
    assert.equal(line.status, 200);
    assert.equal(line.route, '/v1/projects');
  });

  test('GET .../events replays the version, after Last-Event-ID too', async () => {
    assert.ok(generated, 'needs the first test');
    const target = `/v1/projects/${generated.id}/events`;
    const all = await callStream(fns['generate-app'], functionUrlEvent('GET', target, { token }));
    assert.equal(all.statusCode, 200);
    assert.match(all.headers['content-type'], /^text\/event-stream/);
    assert.equal(all.done.errorType, undefined);
    assert.deepEqual(parseEvents(all.text), generated.events);

    const mid = Math.floor(generated.events.length / 2);
    const rest = await callStream(fns['generate-app'], functionUrlEvent('GET', target, { token, headers: { 'last-event-id': String(mid) } }));
    assert.equal(rest.statusCode, 200);
    assert.deepEqual(parseEvents(rest.text), generated.events.slice(mid));
  });

  test('a provider failure mid-stream: the SSE error event, then the error trailers', async () => {
    const before = await credits();
    const res = await callStream(fns['generate-app'], post('A page [[fail]]'));
    assert.equal(res.statusCode, 200);
    const events = parseEvents(res.text);
    assert.ok(events.some((e) => e.event === 'delta'), 'some output came before the failure');
    const last = events.at(-1);
    assert.equal(last.event, 'error');
    assert.equal(last.data.refunded, true);
    assert.equal(res.done.errorType, 'Koumpa.GenerationFailed');
    assert.equal(res.done.errorBody.errorType, 'Koumpa.GenerationFailed');
    assert.match(res.done.errorBody.errorMessage, new RegExp(`^the generation failed: ${last.data.code}: `));
    assert.deepEqual(res.done.errorBody.stackTrace, []);
    assert.equal(await credits(), before, 'refunded');

    // a reader replaying that version did its job: no trailers
    const replay = await callStream(fns['generate-app'], functionUrlEvent('GET', `/v1/projects/${events[0].data.project_id}/events`, { token }));
    assert.equal(parseEvents(replay.text).at(-1).event, 'error');
    assert.equal(replay.done.errorType, undefined);
  });

  test('the token is verified by the function: none, another issuer or audience, expired are 401s', async () => {
    const fn = fns['generate-app'];
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      [null, /missing bearer token/],
      [await idp.token(user, { issuer: 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other' }), /unknown token issuer/],
      [await idp.token(user, { audience: 'another-client' }), /wrong token audience/],
      [await idp.token(user, { expiresAt: now - 3600 }), /token expired/],
      ['not.a.token', /malformed token/],
    ];
    for (const [tok, pattern] of cases) {
      const res = await callStream(fn, post('A page', tok));
      assertError(res, 401, 'unauthorized', pattern);
      assert.match(res.headers['www-authenticate'], /^Bearer/);
      assert.equal(res.headers['content-type'], 'application/json');
      assert.equal(res.done.errorType, undefined, 'a refusal is an answer, not a failed invocation');
    }
    // claims in the event do not count on a function URL (it has no authorizer)
    const forged = functionUrlEvent('GET', '/v1/projects/prj_0/events');
    forged.requestContext.authorizer = { jwt: { claims: claimsFor(user), scopes: null } };
    assertError(await callStream(fn, forged), 401, 'unauthorized');
  });

  test('a route of another function: a 404 as a complete body in streaming mode', async () => {
    const res = await callStream(fns['generate-app'], functionUrlEvent('GET', '/v1/me', { token, headers: { 'x-request-id': 'caller.chosen-1' } }));
    assertError(res, 404, 'not_found', /served by the function get-user, not generate-app/);
    assert.equal(res.headers['x-request-id'], 'caller.chosen-1');
    assert.equal(res.headers['content-type'], 'application/json');
  });

  test('through the HTTP API a stream is still a 501 that names the function URL', async () => {
    assert.ok(generated, 'needs the first test');
    const res = await call(fns['generate-app'], httpEvent('GET', `/v1/projects/${generated.id}/events`, { claims: claimsFor(user) }));
    assertError(res, 501, 'streaming_not_available', /function URL/);
  });

  test('a reader still following at its deadline gets the interrupted trailers; the generation goes on', async () => {
    const before = await credits();
    const gen = await openStream(fns['generate-app'], post('A page [[follow]]'));
    const first = await gen.stream.until((t) => t.includes('event: project'));
    const id = parseEvents(first)[0].data.project_id;
    // the other instance follows it from the event store, past its own invocation's deadline
    const reader = await callStream(fns.short, functionUrlEvent('GET', `/v1/projects/${id}/events`, { token }));
    assert.equal(reader.statusCode, 200);
    assert.equal(reader.done.errorType, 'Koumpa.StreamInterrupted');
    assert.match(reader.done.errorBody.errorMessage, /deadline/);
    assert.ok(parseEvents(reader.text).every((e) => e.event !== 'done' && e.event !== 'error'));

    fake.openGate('follow');
    const done = await gen.stream.done;
    assert.equal(parseEvents(done.body.toString('utf8')).at(-1).event, 'done');
    assert.equal(done.errorType, undefined);
    assert.equal((await project(id)).status, 'ready');
    assert.equal(await credits(), before - 1);
  });

  test('a Runtime API that stops reading does not wedge the function', async () => {
    assert.ok(generated, 'needs the first test');
    const fn = fns.short;
    const target = `/v1/projects/${generated.id}/events`;
    const stalled = await openStream(fn, functionUrlEvent('GET', target, { token }), { pauseAfterPrelude: true });
    const end = await stalled.stream.done;
    assert.deepEqual([end.complete, end.reason], [false, 'timeout']);
    // the function gave that response up and takes the next invocation
    const next = await callStream(fn, functionUrlEvent('GET', target, { token }));
    assert.deepEqual(parseEvents(next.text), generated.events);
    await waitFor(
      () => fn.stdout(),
      (out) => out.includes('abandoned'),
      'the log line of the abandoned response',
    );
  });
});
