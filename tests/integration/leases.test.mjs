// leases.test.mjs - two `koumpa serve` processes on one database (one data directory; on
// KOUMPA_TEST_BACKEND=aws one DynamoDB table, served one request at a time, and one bucket):
// 15 simultaneous generations of one user spread over both: exactly the plan's limit start, charged
// once each, the others get 429 and cost nothing.
// Generations run on both; one is killed with kill -9 while both generate.
// The survivor's generations finish untouched (held by a gate in the fake
// model until the dead one's are recovered, and across a third server's
// start-up recovery); the dead one's are failed `interrupted` and refunded
// exactly once after their lease ran out (2 s here, 10 s under valgrind), although several
// recoverers run. `koumpa daily-bonus` recovers them too, with no server up.
// Nothing here measures time: every wait polls for a state, with a deadline.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, BACKEND_DB, signup, startServer } from './harness.mjs';

// short leases so that a dead server's generations are recovered soon; longer under valgrind and on
// DynamoDB (moto answers one request at a time: a burst of requests delays a renewal by seconds)
const LEASE_S = process.env.KOUMPA_TEST_WRAPPER ? '10' : BACKEND_DB === 'dynamodb' ? '8' : '2';
const APP = 'An app.\n<file path="index.html">\n<!doctype html><p>leased</p>\n</file>\n';
const WAIT_MS = 120_000; // a bound, not a measure (valgrind is slow)

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what, pred, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** [[dies]]: streams for a minute (its server is killed first); [[gated]]: held before its end until the gate opens. */
function scenario(rec) {
  const msgs = rec.body.messages;
  const last = JSON.stringify(msgs[msgs.length - 1].content);
  if (last.includes('[[dies]]')) return { type: 'slow', text: APP, durationMs: 60000 };
  if (last.includes('[[gated]]')) return { type: 'text', text: APP, gate: 'survivor', delayMs: 2 };
  if (last.includes('[[limit]]')) return { type: 'text', text: APP, gate: 'limit', delayMs: 2 };
  return { type: 'text', text: APP };
}

async function ledger(server, token) {
  const entries = [];
  let cursor = null;
  do {
    const r = await api(server, 'GET', `/v1/me/ledger?limit=100${cursor ? `&cursor=${cursor}` : ''}`, { token });
    assert.equal(r.status, 200);
    entries.push(...r.json.entries);
    cursor = r.json.next_cursor;
  } while (cursor);
  return entries;
}

async function project(server, token, id) {
  const r = await api(server, 'GET', `/v1/projects/${id}`, { token });
  assert.equal(r.status, 200);
  return r.json;
}

/** Balance equals the ledger; returns the balance and the ledger. */
async function account(server, token) {
  const me = await api(server, 'GET', '/v1/me', { token });
  const entries = await ledger(server, token);
  const daily = entries.reduce((a, e) => a + e.delta_daily, 0);
  const monthly = entries.reduce((a, e) => a + e.delta_monthly, 0);
  assert.equal(me.json.credits.daily, daily, 'daily balance equals the ledger');
  assert.equal(me.json.credits.monthly, monthly, 'monthly balance equals the ledger');
  return { total: me.json.credits.total, entries };
}

const refunds = (entries) => entries.filter((e) => e.reason.startsWith('refund')).length;

describe('two servers on one database', () => {
  let fake;
  let env;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario(scenario);
    env = { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url, KOUMPA_GENERATION_LEASE_S: LEASE_S };
  });
  after(async () => {
    await fake?.close();
  });

  test('15 simultaneous generations over both: exactly the plan\'s limit start, each charged once', async () => {
    fake.reset();
    fake.setScenario(scenario);
    // no lease runs out here: a lost lease would end a generation and free its slot
    const held = { ...env, KOUMPA_GENERATION_LEASE_S: '600' };
    const a = await startServer({ env: held });
    let b;
    try {
      b = await startServer({ env: held, dataDir: a.dataDir });
      const u = await signup(b);
      const moved = await a.run(['admin', 'set-plan', u.email, 'pro']); // Pro: 3 generations at a time
      assert.equal(moved.code, 0, moved.stderr);
      const before = await account(a, u.token);
      const attempts = await Promise.all(Array.from({ length: 15 }, (_, i) =>
        api(i % 2 ? b : a, 'POST', '/v1/projects', { token: u.token, body: { prompt: `app ${i} [[limit]]` } })));
      const started = attempts.filter((r) => r.status === 202);
      assert.equal(started.length, 3, attempts.map((r) => `${r.status} ${r.text}`).join('\n'));
      for (const r of attempts.filter((x) => x.status !== 202)) {
        assert.equal(r.status, 429, r.text);
        assert.equal(r.json.error.code, 'too_many_generations');
      }
      const during = await account(b, u.token);
      assert.equal(during.total, before.total - 3, 'the three that started are charged, the others not');
      assert.equal(during.entries.filter((e) => e.reason === 'generation').length, 3);

      fake.openGate('limit');
      for (const r of started) {
        await waitFor('a generation to end', async () => (await project(a, u.token, r.json.id)).status !== 'generating');
        assert.equal((await project(b, u.token, r.json.id)).status, 'ready');
      }
      const listed = await api(a, 'GET', '/v1/projects', { token: u.token });
      assert.deepEqual(listed.json.projects.map((p) => p.id).sort(), started.map((r) => r.json.id).sort(),
        'a refused generation leaves no project');
      const end = await account(a, u.token);
      assert.equal(end.total, before.total - 3);
      assert.equal(refunds(end.entries), 0);
      assert.equal(fake.requests.length, 3, 'the provider saw the three that started');
    } finally {
      if (b) await b.stop();
      await a.stop();
      await a.remove();
    }
  });

  test('kill -9 of one while both generate: the survivor finishes, the dead one is refunded once', async () => {
    fake.reset();
    fake.setScenario(scenario);
    const a = await startServer({ env });
    let b;
    let c;
    try {
      b = await startServer({ env, dataDir: a.dataDir });
      const users = [];
      for (let i = 0; i < 4; i++) users.push(await signup(i % 2 ? b : a)); // one database: either server
      // users 0 and 1 generate on a (which dies), 2 and 3 on b (which survives)
      const dying = [];
      for (const u of users.slice(0, 2)) {
        const r = await api(a, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app [[dies]]' } });
        assert.equal(r.status, 202);
        dying.push(r.json.id);
      }
      const surviving = [];
      const r2 = await api(b, 'POST', '/v1/projects', { token: users[2].token, body: { prompt: 'an app [[gated]]' } });
      assert.equal(r2.status, 202);
      surviving.push(r2.json.id);
      // the other one with a live reader on b
      const stream = await fetch(`${b.url}/v1/projects`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${users[3].token}`, Accept: 'text/event-stream', 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'another app [[gated]]' }),
      });
      assert.equal(stream.status, 200);
      const reading = stream.text();
      await waitFor('the four provider calls', () => fake.requests.length >= 4);
      const listed = await api(b, 'GET', '/v1/projects', { token: users[3].token });
      surviving.push(listed.json.projects[0].id);
      for (const u of users) assert.equal((await account(b, u.token)).total, 4);

      await a.kill('SIGKILL');
      // a third server starts on the same data: its start-up recovery runs while b generates
      c = await startServer({ env, dataDir: a.dataDir });

      // the dead server's versions: failed `interrupted` and refunded once their lease ran out
      for (const [i, id] of dying.entries()) {
        try {
          await waitFor('the recovery of a dead server\'s version', async () => (await project(c, users[i].token, id)).status === 'failed');
        } catch (e) { // say what the two live servers logged meanwhile
          const p = await project(c, users[i].token, id);
          throw new Error(`${e.message}: ${JSON.stringify(p)}\n--- b ---\n${b.logs().slice(-6000)}\n--- c ---\n${c.logs().slice(-6000)}`);
        }
        const p = await project(b, users[i].token, id);
        assert.equal(p.versions[0].error.code, 'interrupted');
        assert.equal(p.versions[0].error.refunded, true);
      }
      // the survivor's are untouched: still generating, held by the gate
      for (const [k, id] of surviving.entries()) {
        const p = await project(c, users[2 + k].token, id);
        assert.equal(p.status, 'generating', 'a live lease is never recovered');
      }
      // another recoverer (the job command) while b still generates
      const job = await c.run(['daily-bonus']);
      assert.equal(job.code, 0, job.stderr);
      for (const [k, id] of surviving.entries()) assert.equal((await project(c, users[2 + k].token, id)).status, 'generating');

      fake.openGate('survivor');
      for (const [k, id] of surviving.entries())
        await waitFor('the survivor\'s generation', async () => (await project(b, users[2 + k].token, id)).status === 'ready');
      const body = await reading;
      assert.match(body, /event: done\n/);
      assert.doesNotMatch(body, /event: error\n/);
      const page = await fetch(`${b.appsUrl}/${surviving[0]}/@v1/`);
      assert.equal(page.status, 200);
      assert.equal(await page.text(), '<!doctype html><p>leased</p>');

      // exactly once: one refund each for the dead server's users, none for the survivor's
      for (const [i, u] of users.entries()) {
        const { total, entries } = await account(c, u.token);
        assert.equal(entries.filter((e) => e.reason === 'generation').length, 1);
        if (i < 2) {
          assert.equal(refunds(entries), 1, `user ${i}: refunded once`);
          assert.equal(total, 5);
        } else {
          assert.equal(refunds(entries), 0, `user ${i}: charged`);
          assert.equal(total, 4);
        }
      }
    } finally {
      if (c) await c.stop();
      if (b) await b.stop();
      await a.kill('SIGKILL');
      await a.remove();
    }
  });

  test('`koumpa daily-bonus` recovers a dead server\'s generation, with no server up', async () => {
    fake.reset();
    fake.setScenario(scenario);
    const a = await startServer({ env });
    let b;
    try {
      const u = await signup(a);
      const r = await api(a, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app [[dies]]' } });
      assert.equal(r.status, 202);
      await waitFor('the provider call', () => fake.requests.length >= 1);
      await a.kill('SIGKILL');
      // the lease runs out 2 s after the last renewal: run the job until it takes the version
      await waitFor('the job to recover the version', async () => {
        const job = await a.run(['daily-bonus']);
        assert.equal(job.code, 0, job.stderr);
        return /recovery: 1 version ended/.test(job.stdout);
      });
      const again = await a.run(['daily-bonus']);
      assert.match(again.stdout, /recovery: 0 versions/);

      b = await startServer({ env, dataDir: a.dataDir });
      const p = await project(b, u.token, r.json.id);
      assert.equal(p.status, 'failed');
      assert.equal(p.versions[0].error.code, 'interrupted');
      const { total, entries } = await account(b, u.token);
      assert.equal(total, 5);
      assert.equal(refunds(entries), 1);
    } finally {
      if (b) await b.stop();
      await a.kill('SIGKILL');
      await a.remove();
    }
  });
});
