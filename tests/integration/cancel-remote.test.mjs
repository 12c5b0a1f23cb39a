// cancel-remote.test.mjs - two `koumpa serve` processes on one database (one data directory; on
// KOUMPA_TEST_BACKEND=aws one DynamoDB table): a generation running on A is cancelled through B's
// POST /v1/projects/{id}/cancel. B does not run it, so it stores the request (202, "requested"); A reads
// it back at its next lease renewal and ends the version `canceled` as a local cancel would: A's readers
// get the error event, the credit policy applies (KOUMPA_CANCEL_REFUND_CHARS: refunded before that much
// output, charged after), exactly once. A version not generating stays 409 not_generating on both.
// The fake model holds each stream's end behind a gate, so only the cancel can end it.
// Nothing here measures time: every wait polls for a state, with a deadline.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { sleep } from './fake-common.mjs';
import { api, BACKEND_DB, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

// short leases so that the renewal (every third of the lease) that carries the request comes soon; longer
// under valgrind and on DynamoDB (moto answers one request at a time), as in leases.test.mjs
const LEASE_S = process.env.KOUMPA_TEST_WRAPPER ? '10' : BACKEND_DB === 'dynamodb' ? '8' : '2';
const REFUND_CHARS = 50; // the cancel policy's threshold, on both instances
const LONG_APP = `An app.\n<file path="index.html">\n<!doctype html><p>${'canceled '.repeat(20)}</p>\n</file>\n`;
const WAIT_MS = 120_000; // a bound, not a measure (valgrind is slow)

/** Polls pred until it holds (at most WAIT_MS). */
async function waitFor(what, pred) {
  for (const deadline = Date.now() + WAIT_MS; !(await pred()); await sleep(50))
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
}

/** [[short]]: a few characters, held before their end; [[long]]: an app past REFUND_CHARS, held before its end. */
function scenario(rec) {
  const prompt = JSON.stringify(rec.body.messages.at(-1).content);
  if (prompt.includes('[[short]]')) return { type: 'text', text: 'Hm.', gate: 'cancel', delayMs: 2 };
  return { type: 'text', text: LONG_APP, gate: 'cancel', delayMs: 2 };
}

async function ledger(server, token) {
  const r = await api(server, 'GET', '/v1/me/ledger?limit=100', { token });
  assert.equal(r.status, 200);
  return r.json.entries;
}

async function balance(server, token) {
  const me = await api(server, 'GET', '/v1/me', { token });
  assert.equal(me.status, 200);
  const entries = await ledger(server, token);
  assert.equal(me.json.credits.daily, entries.reduce((a, e) => a + e.delta_daily, 0), 'balance equals the ledger');
  return { total: me.json.credits.total, entries };
}

describe('cancelling a generation that runs on another instance', () => {
  let fake;
  let a;
  let b;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario(scenario);
    const env = {
      ANTHROPIC_API_KEY: 'sk-any',
      ANTHROPIC_BASE_URL: fake.url,
      KOUMPA_GENERATION_LEASE_S: LEASE_S,
      KOUMPA_CANCEL_REFUND_CHARS: String(REFUND_CHARS),
    };
    a = await startServer({ env });
    b = await startServer({ env, dataDir: a.dataDir });
  });
  after(async () => {
    fake?.openGate('cancel');
    if (b) await b.stop();
    if (a) {
      await a.stop();
      await a.remove();
    }
    await fake?.close();
  });

  /** Starts a generation on A and waits until A's reader saw the event `until`; returns the project id and a
   * reader of A's events (from the start, followed live to the end). */
  async function startOnA(token, prompt, until) {
    const r = await api(a, 'POST', '/v1/projects', { token, body: { prompt } });
    assert.equal(r.status, 202, r.text);
    const id = r.json.id;
    const path = `/v1/projects/${id}/events`;
    const seen = await readEvents(await sse(a, 'GET', path, { token }), (e) => e.event === until);
    assert.equal(seen.at(-1)?.event, until, JSON.stringify(seen));
    const res = await sse(a, 'GET', path, { token });
    assert.equal(res.status, 200);
    return { id, events: readEvents(res) };
  }

  async function cancelThroughB(token, id) {
    const c = await api(b, 'POST', `/v1/projects/${id}/cancel`, { token });
    assert.equal(c.status, 202, c.text);
    assert.equal(c.json.cancel, 'requested');
    assert.equal(c.json.project_id, id);
    assert.equal(c.json.version, 1);
    assert.ok(c.json.takes_effect_within_s >= 1, c.text);
    assert.match(c.json.message, /lease renewal/);
    return c;
  }

  async function ended(token, id) {
    let p;
    await waitFor('the version to end', async () => {
      p = (await api(b, 'GET', `/v1/projects/${id}`, { token })).json;
      return p.status !== 'generating';
    });
    return p;
  }

  test('before REFUND_CHARS of output: canceled through B, refunded once, A\'s reader gets the error', { timeout: WAIT_MS }, async () => {
    const u = await signup(a);
    const start = (await balance(a, u.token)).total;
    const { id, events } = await startOnA(u.token, 'a tiny app [[short]]', 'project');
    assert.equal((await api(b, 'GET', `/v1/projects/${id}`, { token: u.token })).json.status, 'generating');
    assert.equal((await balance(a, u.token)).total, start - 1, 'reserved');

    await cancelThroughB(u.token, id);
    const got = await events;
    const last = got.at(-1);
    assert.equal(last.event, 'error', JSON.stringify(got));
    assert.equal(last.data.code, 'canceled');
    assert.equal(last.data.credits_refunded, 1);
    assert.equal(last.data.refund_reason, 'canceled_early');

    const p = await ended(u.token, id);
    assert.equal(p.status, 'failed');
    assert.equal(p.versions[0].error.code, 'canceled');
    assert.equal(p.versions[0].error.refunded, true);
    const after = await balance(b, u.token);
    assert.equal(after.total, start, 'refunded');
    assert.equal(after.entries.filter((e) => e.reason === 'refund:canceled_early').length, 1, 'refunded once');

    for (const server of [a, b]) {
      const again = await api(server, 'POST', `/v1/projects/${id}/cancel`, { token: u.token });
      assert.equal(again.status, 409, again.text);
      assert.equal(again.json.error.code, 'not_generating');
    }
  });

  test('after REFUND_CHARS of output: canceled through B, charged once', { timeout: WAIT_MS }, async () => {
    const u = await signup(a);
    const start = (await balance(a, u.token)).total;
    // the app's file is written (past REFUND_CHARS) while its end waits behind the gate
    const { id, events } = await startOnA(u.token, 'an app [[long]]', 'file');

    await cancelThroughB(u.token, id);
    const last = (await events).at(-1);
    assert.equal(last.event, 'error');
    assert.equal(last.data.code, 'canceled');
    assert.equal(last.data.credits_refunded, 0);
    assert.equal(last.data.charge_reason, 'canceled_after_output');

    const p = await ended(u.token, id);
    assert.equal(p.versions[0].error.code, 'canceled');
    assert.equal(p.versions[0].error.refunded, false);
    const after = await balance(b, u.token);
    assert.equal(after.total, start - 1, 'charged');
    assert.equal(after.entries.filter((e) => e.reason.startsWith('refund')).length, 0, 'never refunded');
    assert.equal(after.entries.filter((e) => e.reason === 'charge:canceled_after_output').length, 1, 'charged once');
  });
});
