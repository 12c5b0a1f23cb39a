// lambda-invoke.test.mjs - the 202 path on AWS end to end: generate-app admits a generation, answers 202 and
// starts it by invoking itself asynchronously (Lambda Invoke, InvocationType Event, SigV4); the worker
// invocation takes the lease over and runs it. Real `bootstrap` processes on the fake Runtime API
// (fake-lambda-runtime.mjs), the fake Invoke API in front of it (fake-lambda-invoke.mjs, which verifies the
// signature with @smithy/signature-v4), the fake Anthropic API, SQLite and local files: the event arrives
// signed; the version becomes ready, charged once; an Invoke refused fails the version, refunded, with a 503;
// the same event delivered again, or to two processes at once, runs the generation once; a worker arriving
// after the lease ran out does nothing and recovery refunds the version once; a cancel through the HTTP API
// while the worker runs the generation is stored (202) and ends it canceled in the worker. With KOUMPA_TEST_BACKEND=aws
// (make integration-aws) the functions keep their data in DynamoDB and S3 and read the Anthropic key from
// Secrets Manager, on moto behind the verifying front (aws-backend.mjs).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { awsBackendEnv, awsSecretsEnv } from './aws-backend.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { startFakeLambdaInvoke } from './fake-lambda-invoke.mjs';
import { BACKEND, runKoumpa, uniqueEmail } from './harness.mjs';
import { assertError, call, claimsFor, httpEvent, startFunction, WRAPPED } from './lambda-harness.mjs';

const FUNCTION = 'koumpa-generate-app';
const SESSION_TOKEN = 'session-token-1';
const APP = 'A counter.\n<file path="index.html">\n<!doctype html><button>0</button>\n</file>\nDone.\n';
const JSON_HEADERS = { 'content-type': 'application/json' };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('generate-app on AWS: the 202 path through an asynchronous self-invocation', () => {
  let dataDir;
  let anthropic;
  let invoke;
  let env;
  let key;
  const fns = {};
  const functions = {}; // the fake Invoke API's function name -> fake runtime

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-lambda-invoke-'));
    anthropic = await startFakeAnthropic();
    anthropic.setScenario(() => ({ type: 'text', text: APP }));
    // KOUMPA_TEST_BACKEND=aws: DynamoDB, S3 and Secrets Manager on moto behind the verifying front (whose
    // keys the functions then use, for Invoke too); else SQLite and files
    let backend = { AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIDLAMBDAINVOKE', AWS_SECRET_ACCESS_KEY: 'invoke/test+secret' };
    if (BACKEND === 'aws') {
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(KOUMPA_|AWS_)/.test(k)));
      backend = await awsBackendEnv(dataDir, clean, runKoumpa);
    }
    key = { accessKeyId: backend.AWS_ACCESS_KEY_ID, secretAccessKey: backend.AWS_SECRET_ACCESS_KEY, sessionToken: SESSION_TOKEN };
    invoke = await startFakeLambdaInvoke({ credentials: [key], functions });
    env = {
      ...backend,
      ANTHROPIC_API_KEY: 'sk-any',
      ANTHROPIC_BASE_URL: anthropic.url,
      AWS_SESSION_TOKEN: SESSION_TOKEN,
      AWS_ENDPOINT_URL_LAMBDA: invoke.url,
      AWS_LAMBDA_FUNCTION_NAME: FUNCTION,
      // the fake runtime's invocations last 30 s: keep a little of it for settling (not the default 30 s)
      KOUMPA_GENERATION_SETTLE_MS: '1000',
    };
    if (BACKEND === 'aws') env = await awsSecretsEnv(env);
    // one after the other: the first migrates the SQLite database. "api" answers the HTTP API's events,
    // "worker" is the instance Lambda runs the asynchronous invocations on
    fns.api = await startFunction('generate-app', dataDir, env);
    fns.worker = await startFunction('generate-app', dataDir, env);
    fns.reads = await startFunction('list-projects', dataDir, env);
    fns.me = await startFunction('get-user', dataDir, env);
    functions[FUNCTION] = fns.worker.rt;
  });

  after(async () => {
    const exits = {};
    for (const [name, fn] of Object.entries(fns)) exits[name] = await fn.stop();
    await invoke?.close();
    await anthropic?.close();
    await rm(dataDir, { recursive: true, force: true });
    for (const [name, res] of Object.entries(exits))
      assert.deepEqual(res, { code: 0, signal: null }, `${name} did not stop cleanly:\n${fns[name].stderr()}`);
  });

  const newUser = () => ({ sub: randomUUID(), email: uniqueEmail('invoke') });
  const credits = async (user) => (await call(fns.me, httpEvent('GET', '/v1/me', { claims: claimsFor(user) }))).json.credits.total;
  const project = async (user, id) => {
    const res = await call(fns.reads, httpEvent('GET', `/v1/projects/${id}`, { claims: claimsFor(user) }));
    assert.equal(res.statusCode, 200, res.text);
    return res.json;
  };
  const create = (user, prompt, fn = fns.api) =>
    call(fn, httpEvent('POST', '/v1/projects', { claims: claimsFor(user), headers: JSON_HEADERS, body: JSON.stringify({ prompt }) }));
  const llmCalls = () => anthropic.requests.length;

  test('POST /v1/projects: 202, a signed Event invocation, the worker runs it: ready, charged once', async () => {
    const user = newUser();
    const before = await credits(user);
    const calls = llmCalls();
    const seen = invoke.invocations.length;
    const res = await create(user, 'a counter');
    assert.equal(res.statusCode, 202, res.text);
    assert.equal(res.json.versions[0].status, 'generating');
    assert.equal(res.headers.location, `/v1/projects/${res.json.id}`);

    assert.equal(invoke.invocations.length, seen + 1, 'one Invoke call');
    assert.deepEqual(invoke.rejected, [], 'every Invoke call was signed right');
    const inv = invoke.invocations.at(-1);
    assert.equal(inv.functionName, FUNCTION);
    assert.equal(inv.headers['x-amz-invocation-type'], 'Event');
    const scope = `Credential=${key.accessKeyId}/\\d{8}/${env.AWS_REGION}/lambda/aws4_request`;
    assert.match(inv.headers.authorization, new RegExp(`^AWS4-HMAC-SHA256 ${scope}`));
    assert.equal(inv.headers['x-amz-security-token'], SESSION_TOKEN);
    assert.equal(inv.event.koumpa, 'generation');
    assert.equal(inv.event.project_id, res.json.id);
    assert.equal(inv.event.version, 1);
    assert.match(inv.event.owner, /^dsp_/);

    const done = await inv.delivered;
    assert.equal(done.kind, 'response', JSON.stringify(done.json));
    assert.deepEqual(done.json, { project_id: res.json.id, version: 1, outcome: 'ran', status: 'ready' });
    assert.equal(llmCalls(), calls + 1, 'the model was called once');

    const p = await project(user, res.json.id);
    assert.equal(p.status, 'ready');
    assert.equal(p.versions[0].status, 'ready');
    assert.equal(await credits(user), before - 1, 'charged once');

    // Lambda delivers an event at least once: the same one again does nothing
    const again = await invoke.deliver(inv);
    assert.deepEqual(again.json, { project_id: res.json.id, version: 1, outcome: 'ended', status: 'ready' });
    assert.equal(llmCalls(), calls + 1);
    assert.equal(await credits(user), before - 1, 'still charged once');

    // the worker took the lease over: its log names the project, on the worker's stdout only
    assert.match(fns.worker.stdout(), new RegExp(`dispatched generation ended here.*${res.json.id}`));
    assert.doesNotMatch(fns.api.stdout(), new RegExp(`dispatched generation ended here.*${res.json.id}`));
  });

  test('a stream asked for through the HTTP API (which cannot carry one) is dispatched and answered 202', async () => {
    const user = newUser();
    const seen = invoke.invocations.length;
    const res = await call(
      fns.api,
      httpEvent('POST', '/v1/projects', {
        claims: claimsFor(user),
        headers: { ...JSON_HEADERS, accept: 'text/event-stream' },
        body: JSON.stringify({ prompt: 'a clock' }),
      }),
    );
    assert.equal(res.statusCode, 202, res.text);
    assert.equal(res.json.versions[0].status, 'generating');
    assert.equal(invoke.invocations.length, seen + 1, 'one Invoke call');
    const done = await invoke.invocations.at(-1).delivered;
    assert.equal(done.json.status, 'ready', JSON.stringify(done.json));
  });

  test('a follow-up is dispatched too; the worker rebuilds the prompt from the project\'s history', async () => {
    const user = newUser();
    const first = await create(user, 'a counter [[first prompt]]');
    assert.equal(first.statusCode, 202, first.text);
    assert.equal((await invoke.invocations.at(-1).delivered).json.status, 'ready');
    const res = await call(fns.api, httpEvent('POST', `/v1/projects/${first.json.id}/versions`, {
      claims: claimsFor(user), headers: JSON_HEADERS, body: JSON.stringify({ prompt: 'count down instead' }),
    }));
    assert.equal(res.statusCode, 202, res.text);
    const inv = invoke.invocations.at(-1);
    assert.equal(inv.event.version, 2);
    const done = await inv.delivered;
    assert.deepEqual(done.json, { project_id: first.json.id, version: 2, outcome: 'ran', status: 'ready' });
    const sent = JSON.stringify(anthropic.requests.at(-1).body);
    assert.match(sent, /first prompt/, 'the conversation so far was sent');
    assert.match(sent, /count down instead/);
    assert.match(sent, /index\.html/, 'with the files of version 1');
  });

  test('Invoke refused: the version fails, refunded, and the client gets a 503 naming why', async () => {
    const user = newUser();
    const before = await credits(user);
    const calls = llmCalls();
    invoke.fail({ status: 403, code: 'AccessDeniedException', message: 'not authorized to perform: lambda:InvokeFunction' });
    const res = await create(user, 'a counter');
    assertError(res, 503, 'unavailable', /^version 1 could not be started and was refunded, nothing charged/);
    assert.match(res.json.error.message, /lambda: the credentials were refused \(HTTP 403 AccessDeniedException/);
    const list = await call(fns.reads, httpEvent('GET', '/v1/projects', { claims: claimsFor(user) }));
    assert.equal(list.json.projects.length, 1, list.text);
    const p = await project(user, list.json.projects[0].id);
    assert.equal(p.versions[0].status, 'failed');
    assert.equal(p.versions[0].error.code, 'not_started');
    assert.match(p.versions[0].error.message, /^the generation could not be started: lambda: .*AccessDeniedException/);
    assert.equal(p.versions[0].error.refunded, true);
    assert.equal(await credits(user), before, 'nothing charged');
    assert.equal(llmCalls(), calls, 'the model was never called');
  });

  test('Invoke answering a 5xx once is retried: the generation starts', async () => {
    const user = newUser();
    const seen = invoke.invocations.length;
    invoke.fail({ status: 500, code: 'ServiceException', message: 'internal' });
    const res = await create(user, 'a counter');
    assert.equal(res.statusCode, 202, res.text);
    assert.equal(invoke.invocations.length, seen + 1);
    assert.equal((await invoke.invocations.at(-1).delivered).json.status, 'ready');
  });

  test('the same event delivered to two instances at once runs once', async () => {
    const user = newUser();
    const before = await credits(user);
    const calls = llmCalls();
    invoke.holding = true;
    let res;
    try {
      res = await create(user, 'a counter');
    } finally {
      invoke.holding = false;
    }
    assert.equal(res.statusCode, 202, res.text);
    const inv = invoke.invocations.at(-1);
    assert.equal(inv.delivered, null, 'held');
    // one copy to the worker, one to the api instance (also generate-app), at once
    const [a, b] = await Promise.all([fns.worker.rt.invoke(inv.event), fns.api.rt.invoke(inv.event)]);
    const outcomes = [a.json?.outcome, b.json?.outcome].sort();
    assert.equal(outcomes.filter((o) => o === 'ran').length, 1, JSON.stringify([a, b]));
    assert.ok(['ended', 'not_ours'].includes(outcomes.find((o) => o !== 'ran')), JSON.stringify([a, b]));
    assert.equal(llmCalls(), calls + 1, 'the model was called once');
    assert.equal((await project(user, res.json.id)).status, 'ready');
    assert.equal(await credits(user), before - 1, 'charged once');
  });

  test('a worker arriving after the lease ran out does nothing; recovery refunds the version once', async () => {
    const user = newUser();
    const before = await credits(user);
    const calls = llmCalls();
    // an instance whose leases last 1 s (its recovery also runs every second)
    const short = await startFunction('generate-app', dataDir, { ...env, KOUMPA_GENERATION_LEASE_S: '1' });
    try {
      invoke.holding = true;
      let res;
      try {
        res = await create(user, 'a counter', short);
      } finally {
        invoke.holding = false;
      }
      assert.equal(res.statusCode, 202, res.text);
      const admitted = Date.now();
      const inv = invoke.invocations.at(-1);
      while (Date.now() < admitted + 1500) await sleep(100); // past the lease's end
      const late = await invoke.deliver(inv);
      assert.equal(late.kind, 'response', JSON.stringify(late));
      assert.ok(['not_ours', 'ended'].includes(late.json.outcome), JSON.stringify(late.json));
      assert.equal(llmCalls(), calls, 'the model was never called');

      // recovery (every lease, in every instance) fails it "interrupted" and refunds it, once
      let p;
      for (const end = Date.now() + (WRAPPED ? 120_000 : 20_000); Date.now() < end; await sleep(100)) {
        p = await project(user, res.json.id);
        if (p.versions[0].status !== 'generating') break;
      }
      assert.equal(p.versions[0].status, 'failed', JSON.stringify(p));
      assert.equal(p.versions[0].error.code, 'interrupted');
      assert.equal(p.versions[0].error.refunded, true);
      assert.equal(await credits(user), before, 'refunded');
      await sleep(1500); // more recovery rounds: nothing is refunded twice
      assert.equal(await credits(user), before, 'refunded once');
    } finally {
      const exit = await short.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, short.stderr());
    }
  });

  // Two generate-app instances leasing for 1 s (recovery runs every lease; under valgrind 10 s, time for the
  // worker to take the lease over), the worker's invocations ending after timeoutMs; the model never
  // finishes (a gate of its own: an opened gate stays open, so each setup names a new one), so only the
  // deadline ends the generation.
  let deadlineGates = 0;
  async function deadlineSetup(workerEnv, runtime) {
    const gate = `deadline-${++deadlineGates}`;
    const shortEnv = { ...env, KOUMPA_GENERATION_LEASE_S: WRAPPED ? '10' : '1' };
    const api = await startFunction('generate-app', dataDir, shortEnv);
    const worker = await startFunction('generate-app', dataDir, { ...shortEnv, ...workerEnv }, runtime);
    const saved = functions[FUNCTION];
    functions[FUNCTION] = worker.rt;
    anthropic.setScenario(() => ({ type: 'text', text: APP, gate }));
    return {
      api,
      worker,
      async done() {
        functions[FUNCTION] = saved;
        anthropic.openGate(gate);
        anthropic.setScenario(() => ({ type: 'text', text: APP }));
        const exit = await worker.stop();
        assert.deepEqual(await api.stop(), { code: 0, signal: null }, api.stderr());
        return exit;
      },
    };
  }

  const settled = async (user, id) => {
    let p;
    for (const until = Date.now() + (WRAPPED ? 120_000 : 20_000); Date.now() < until; await sleep(100)) {
      p = await project(user, id);
      if (p.versions[0].status !== 'generating') break;
    }
    return p;
  };

  test('the worker\'s deadline reached mid-generation: timed_out, refunded once, answered in time', async () => {
    const user = newUser();
    const before = await credits(user);
    const settle = WRAPPED ? 20_000 : 1000;
    const d = await deadlineSetup({ KOUMPA_GENERATION_SETTLE_MS: String(settle) },
      { timeoutMs: settle + (WRAPPED ? 40_000 : 2500), killAtDeadline: true });
    try {
      const res = await create(user, 'a counter', d.api);
      assert.equal(res.statusCode, 202, res.text);
      const end = await invoke.invocations.at(-1).delivered;
      assert.equal(end.kind, 'response', JSON.stringify(end));
      assert.deepEqual(end.json, { project_id: res.json.id, version: 1, outcome: 'ran', status: 'failed', error_code: 'timed_out' });
      const p = await project(user, res.json.id);
      assert.equal(p.versions[0].error.code, 'timed_out');
      assert.equal(p.versions[0].error.refunded, true);
      assert.equal(await credits(user), before, 'refunded');
      await sleep(WRAPPED ? 12_000 : 1500); // recovery rounds in both instances: nothing is refunded twice
      assert.equal(await credits(user), before, 'refunded once');
    } finally {
      assert.deepEqual(await d.done(), { code: 0, signal: null });
    }
  });

  test('a worker killed at its deadline mid-generation: the lease runs out, recovery refunds once', async () => {
    const user = newUser();
    const before = await credits(user);
    // a worker that cannot answer (stopped mid-generation) is killed at its deadline, as Lambda does
    const d = await deadlineSetup({}, { timeoutMs: WRAPPED ? 20_000 : 2000, killAtDeadline: true });
    try {
      const calls = llmCalls();
      const res = await create(user, 'a counter', d.api);
      assert.equal(res.statusCode, 202, res.text);
      const inv = invoke.invocations.at(-1);
      // the worker took the lease and called the model (whose answer the gate holds): stop it there
      for (const until = Date.now() + (WRAPPED ? 60_000 : 10_000); llmCalls() === calls && Date.now() < until; ) await sleep(20);
      assert.equal(llmCalls(), calls + 1, 'the worker called the model');
      d.worker.kill('SIGSTOP');
      const end = await inv.delivered;
      assert.equal(end.kind, 'timeout', JSON.stringify(end));
      assert.deepEqual(await d.worker.exited, { code: null, signal: 'SIGKILL' });
      const p = await settled(user, res.json.id);
      assert.equal(p.versions[0].status, 'failed', JSON.stringify(p));
      assert.equal(p.versions[0].error.code, 'interrupted');
      assert.equal(p.versions[0].error.refunded, true);
      assert.equal(await credits(user), before, 'refunded');
      await sleep(WRAPPED ? 12_000 : 1500); // more recovery rounds: nothing is refunded twice
      assert.equal(await credits(user), before, 'refunded once');
    } finally {
      await d.done();
    }
  });

  test('a cancel through the HTTP API while the worker runs it: 202, the worker ends it canceled, refunded once', async () => {
    const user = newUser();
    const before = await credits(user);
    const d = await deadlineSetup({}, {});
    anthropic.setScenario(() => ({ type: 'text', text: APP, gate: 'cancel' })); // a gate of its own: only the cancel ends it
    try {
      const calls = llmCalls();
      const res = await create(user, 'a counter', d.api);
      assert.equal(res.statusCode, 202, res.text);
      const inv = invoke.invocations.at(-1);
      for (const until = Date.now() + (WRAPPED ? 60_000 : 10_000); llmCalls() === calls && Date.now() < until; ) await sleep(20);
      assert.equal(llmCalls(), calls + 1, 'the worker called the model');
      // an API invocation gets the cancel; the worker invocation runs the generation: the request is stored
      const cancel = (fn) => call(fn, httpEvent('POST', `/v1/projects/${res.json.id}/cancel`, { claims: claimsFor(user) }));
      const c = await cancel(d.api);
      assert.equal(c.statusCode, 202, c.text);
      assert.equal(c.json.cancel, 'requested');
      assert.equal(c.json.version, 1);
      // the worker reads it at its next lease renewal and ends the version as a local cancel would
      const end = await inv.delivered;
      assert.equal(end.kind, 'response', JSON.stringify(end));
      assert.deepEqual(end.json, { project_id: res.json.id, version: 1, outcome: 'ran', status: 'failed', error_code: 'canceled' });
      const p = await project(user, res.json.id);
      assert.equal(p.versions[0].error.code, 'canceled');
      assert.equal(p.versions[0].error.refunded, true, 'refunded: less than KOUMPA_CANCEL_REFUND_CHARS written');
      assert.equal(await credits(user), before, 'refunded');
      const again = await cancel(d.api);
      assertError(again, 409, 'not_generating');
      await sleep(WRAPPED ? 12_000 : 1500); // recovery rounds in both instances: nothing is refunded twice
      assert.equal(await credits(user), before, 'refunded once');
    } finally {
      anthropic.openGate('cancel');
      assert.deepEqual(await d.done(), { code: 0, signal: null });
    }
  });

  test('the worker event is refused by the other functions and checked', async () => {
    const ev = { koumpa: 'generation', project_id: 'prj_nope', version: 1, owner: 'dsp_x' };
    const other = await fns.reads.rt.invoke(ev);
    assert.equal(other.kind, 'error');
    assert.equal(other.errorType, 'Runtime.InvalidEvent');
    const bad = await fns.worker.rt.invoke({ koumpa: 'generation', project_id: 'prj_nope' });
    assert.equal(bad.kind, 'error');
    assert.equal(bad.errorType, 'Runtime.InvalidEvent');
    const gone = await fns.worker.rt.invoke(ev);
    assert.deepEqual(gone.json, { project_id: 'prj_nope', version: 1, outcome: 'not_found', status: 'none' });
  });
});
