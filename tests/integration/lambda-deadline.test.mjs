// lambda-deadline.test.mjs - the invocation's deadline on the real `bootstrap` (fake Runtime API, SQLite and
// local files): a generation started by generate-app stops KOUMPA_GENERATION_SETTLE_MS before its
// invocation's deadline (Lambda-Runtime-Deadline-Ms), failing `timed_out`, refunded, while the function still
// runs; an invocation with too little time left is refused (503 deadline_too_close) and charges nothing; and
// the fake runtime's killAtDeadline hook stops a function that did not answer by its deadline, as Lambda does.
// The fake Anthropic API holds the end of its stream (a gate never opened), so only the deadline ends it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { uniqueEmail } from './harness.mjs';
import { assertError, call, claimsFor, httpEvent, startFunction, WRAPPED } from './lambda-harness.mjs';

const APP = '<file path="index.html">\n<!doctype html><p>never finished</p>\n</file>\nDone.\n';
// generate-app's timeout and settling margin: the generation gets (timeout - margin) minus the request's own time
const TIMEOUT_MS = WRAPPED ? 60_000 : 5_000;
const SETTLE_MS = WRAPPED ? 45_000 : 3_000;
const JSON_HEADERS = { 'content-type': 'application/json' };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function newUser() {
  return { sub: randomUUID(), email: uniqueEmail('deadline') };
}

function create(fn, user, prompt) {
  return call(fn, httpEvent('POST', '/v1/projects', { claims: claimsFor(user), headers: JSON_HEADERS, body: JSON.stringify({ prompt }) }));
}

describe('Lambda: the invocation deadline', () => {
  let dataDir;
  let fake;
  const fns = {};

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-lambda-deadline-'));
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario({ type: 'text', text: APP, gate: 'never' });
    const llm = { ANTHROPIC_API_KEY: 'sk-test-key', ANTHROPIC_BASE_URL: fake.url };
    // one after the other: the first migrates the SQLite database
    fns.user = await startFunction('get-user', dataDir);
    fns.list = await startFunction('list-projects', dataDir);
    fns.gen = await startFunction('generate-app', dataDir, { ...llm, KOUMPA_GENERATION_SETTLE_MS: String(SETTLE_MS) }, { timeoutMs: TIMEOUT_MS });
    // more kept for settling than an invocation ever has
    fns.tight = await startFunction('generate-app', dataDir, { ...llm, KOUMPA_GENERATION_SETTLE_MS: '600000' });
  });

  after(async () => {
    const exits = {};
    for (const [name, fn] of Object.entries(fns)) exits[name] = await fn.stop();
    fake?.openGate('never');
    await fake?.close();
    await rm(dataDir, { recursive: true, force: true });
    for (const [name, res] of Object.entries(exits))
      assert.deepEqual(res, { code: 0, signal: null }, `${name} did not stop cleanly:\n${fns[name].stderr()}`);
  });

  async function credits(user) {
    const me = await call(fns.user, httpEvent('GET', '/v1/me', { claims: claimsFor(user) }));
    assert.equal(me.statusCode, 200, me.text);
    return me.json.credits.total;
  }

  test('a generation stops KOUMPA_GENERATION_SETTLE_MS before the deadline: timed_out, refunded in time', async () => {
    const user = newUser();
    const before = await credits(user);
    const res = await create(fns.gen, user, 'an app that never ends');
    assert.equal(res.statusCode, 202, res.text);
    const id = res.json.id;
    let version;
    for (let i = 0; i < (TIMEOUT_MS + 30_000) / 100; i++) {
      const p = await call(fns.list, httpEvent('GET', `/v1/projects/${id}`, { claims: claimsFor(user) }));
      assert.equal(p.statusCode, 200, p.text);
      version = p.json.versions[0];
      if (version.status !== 'generating') break;
      await sleep(100);
    }
    assert.equal(version.status, 'failed', JSON.stringify(version));
    assert.equal(version.error.code, 'timed_out');
    assert.match(version.error.message, new RegExp(`end of the function's invocation \\(its deadline, less ${SETTLE_MS} ms`));
    assert.equal(version.error.refunded, true);
    assert.equal(version.error.refund_reason, 'time_limit');
    assert.equal(await credits(user), before);
    const ledger = await call(fns.user, httpEvent('GET', '/v1/me/ledger', { claims: claimsFor(user) }));
    assert.equal(ledger.json.entries.filter((e) => e.reason === 'refund:time_limit').length, 1, ledger.text);
    // the model's stream was abandoned
    const llmCall = fake.requests[fake.requests.length - 1];
    for (let i = 0; i < 200 && llmCall.closedByClient === undefined; i++) await sleep(10);
    assert.equal(llmCall.closedByClient, true);
  });

  test('an invocation with too little time left is refused: 503 deadline_too_close, nothing charged', async () => {
    const user = newUser();
    const before = await credits(user);
    const calls = fake.requests.length;
    const res = await create(fns.tight, user, 'an app');
    assertError(res, 503, 'deadline_too_close', /too little time to generate \(600000 ms are kept to settle/);
    const list = await call(fns.list, httpEvent('GET', '/v1/projects', { claims: claimsFor(user) }));
    assert.equal(list.statusCode, 200, list.text);
    assert.deepEqual(list.json.projects, []);
    assert.equal(await credits(user), before);
    assert.equal(fake.requests.length, calls, 'the model was not called');
  });

  test('killAtDeadline: a function that does not answer by its deadline is killed, as Lambda stops it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-lambda-kill-'));
    const fn = await startFunction('get-user', dir, {}, { timeoutMs: 1000, killAtDeadline: true });
    try {
      // once it waits for its next invocation, stop it so that it cannot answer
      for (let i = 0; i < 1200 && fn.rt.polls === 0; i++) await sleep(100);
      assert.ok(fn.rt.polls > 0, `the function never asked for an invocation:\n${fn.stderr()}`);
      fn.kill('SIGSTOP');
      const res = await fn.rt.invoke(httpEvent('GET', '/v1/plans'));
      assert.equal(res.kind, 'timeout');
      assert.deepEqual(await fn.exited, { code: null, signal: 'SIGKILL' });
    } finally {
      await fn.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
