// request-budget.test.mjs - the DynamoDB request budget (docs/ARCHITECTURE.md, "DynamoDB data
// model"), counted through the server: the SigV4-verifying front in front of moto logs every
// request (its X-Amz-Target and body) while one API call runs, and nothing else runs meanwhile
// (one user, no generation but the one under test, leases of an hour so that no renewal or
// recovery tick falls in). Budget: GET /v1/me at most 2 reads (a todo: 3 today, the billing link
// being a read of its own); a spend (the admission of POST /v1/projects) one TransactWriteItems
// after its documented reads; a page of GET /v1/projects one Query plus at most one BatchGetItem,
// after the caller's account (the 2 reads of every authenticated request). Each test prints
// the requests it counted (a diagnostic). Runs on KOUMPA_TEST_BACKEND=aws with the DynamoDB store (make integration-aws);
// elsewhere it is skipped, saying so.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { awsBackend } from './aws-backend.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, BACKEND_DB, signup, startServer } from './harness.mjs';

const APP = 'An app.\n<file path="index.html">\n<!doctype html><p>counted</p>\n</file>\n';
const READS = ['GetItem', 'BatchGetItem', 'Query', 'Scan'];
const skip = BACKEND_DB !== 'dynamodb' && `counts DynamoDB requests; the store here is ${BACKEND_DB} (make integration-aws runs it on DynamoDB)`;
const WAIT_MS = 120_000; // a bound, not a measure

/** The DynamoDB operation of a logged request ("DynamoDB_20120810.GetItem" -> "GetItem"). */
const op = (r) => (r.target || '').replace(/^DynamoDB_\d+\./, '');
/** An event batch of a running generation (its puts are on EVT# items), not the call under test. */
const eventBatch = (r) => op(r) === 'TransactWriteItems' && /"EVT#/.test(r.body) && !/"USER#/.test(r.body);

describe('the DynamoDB request budget, counted at the endpoint', { skip }, () => {
  let fake;
  let server;
  let front;
  let user;

  /** The DynamoDB requests fn() makes, by operation; event batches of a running generation apart. */
  async function counted(fn) {
    front.log.length = 0;
    front.recording = true;
    let result;
    try {
      result = await fn();
    } finally {
      front.recording = false;
    }
    const mine = front.log.filter((r) => (r.target || '').startsWith('DynamoDB_') && !eventBatch(r));
    const byOp = {};
    for (const r of mine) byOp[op(r)] = (byOp[op(r)] || 0) + 1;
    const reads = READS.reduce((n, o) => n + (byOp[o] || 0), 0);
    // for the failure messages: each request's operation and the first key or index it names
    const key = (name, body) => (new RegExp(`"${name}":\\s*(?:\\{"S":\\s*)?"([^"]+)"`).exec(body) || [])[1];
    const seen = mine.map((r) => [op(r), key('IndexName', r.body), key('PK', r.body), key('SK', r.body)].filter(Boolean).join(' '));
    return { result, byOp, reads, writes: mine.length - reads, requests: mine, seen: seen.join(', ') };
  }

  before(async () => {
    if (skip) return;
    fake = await startFakeAnthropic();
    fake.setScenario({ type: 'text', text: APP, gate: 'budget', delayMs: 2 });
    server = await startServer({
      env: { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url, KOUMPA_GENERATION_LEASE_S: '3600' },
    });
    ({ front } = await awsBackend());
    user = await signup(server);
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  const me = () => counted(() => api(server, 'GET', '/v1/me', { token: user.token }));

  test('GET /v1/me: the account (user with balance, plan) and the billing link, no write', async (t) => {
    const c = await me();
    t.diagnostic(c.seen);
    assert.equal(c.result.status, 200);
    assert.deepEqual(c.byOp, { GetItem: 3 }, c.seen);
  });

  // The issue's budget; today the billing link (USER#/BILL, for "subscription") is a third GetItem
  test('GET /v1/me: at most 2 reads', { todo: 'the billing link is read on its own: 3 GetItems' }, async () => {
    const c = await me();
    assert.ok(c.reads <= 2, `GET /v1/me made ${c.reads} reads: ${c.seen}`);
  });

  test('a spend (admitting a generation): one TransactWriteItems, after the documented reads', async (t) => {
    let c;
    try {
      c = await counted(() => api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'an app' } }));
    } finally {
      fake.openGate('budget');
    }
    assert.equal(c.result.status, 202, c.result.text);
    t.diagnostic(c.seen);
    assert.equal(c.byOp.TransactWriteItems, 1, c.seen);
    assert.equal(c.writes, 1, `the transaction is the only write: ${c.seen}`);
    const at = c.requests.findIndex((r) => op(r) === 'TransactWriteItems');
    assert.match(c.requests[at].body, /"RES#/, 'it holds the reservation');
    // before it: the caller's account (user, plan), the balance the reservation is split from
    // (GetItem), the admission's consistent BatchGetItem (user, key, reservation)
    const before = c.requests.slice(0, at).map(op);
    assert.deepEqual(before, ['GetItem', 'GetItem', 'GetItem', 'BatchGetItem'], c.seen);
    // after it, the 202's body: the project and its versions
    const answer = c.requests.slice(at + 1).map(op);
    assert.deepEqual(answer.sort(), ['GetItem', 'Query'], c.seen);
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const p = await api(server, 'GET', `/v1/projects/${c.result.json.id}`, { token: user.token });
      if (p.json.status !== 'generating') {
        assert.equal(p.json.status, 'ready', JSON.stringify(p.json));
        break;
      }
      if (Date.now() > deadline) throw new Error('the generation did not end');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test('a page of GET /v1/projects: one Query and at most one BatchGetItem, after the caller\'s account', async (t) => {
    // a few more projects, one at a time (Free: one generation at a time), so that pages are full
    for (let i = 0; i < 3; i++) {
      const r = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: `app ${i}` } });
      assert.equal(r.status, 202, r.text);
      const deadline = Date.now() + WAIT_MS;
      while ((await api(server, 'GET', `/v1/projects/${r.json.id}`, { token: user.token })).json.status === 'generating') {
        if (Date.now() > deadline) throw new Error('the generation did not end');
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    let cursor = null;
    let pages = 0;
    let seen = 0;
    do {
      const c = await counted(() =>
        api(server, 'GET', `/v1/projects?limit=2${cursor ? `&cursor=${cursor}` : ''}`, { token: user.token }));
      assert.equal(c.result.status, 200, c.result.text);
      t.diagnostic(c.seen);
      assert.equal(c.byOp.Query, 1, c.seen);
      assert.ok((c.byOp.BatchGetItem || 0) <= 1, c.seen);
      assert.ok((c.byOp.GetItem || 0) <= 2, `the caller's account: ${c.seen}`);
      assert.equal(c.reads, c.byOp.Query + (c.byOp.BatchGetItem || 0) + (c.byOp.GetItem || 0), c.seen);
      assert.equal(c.writes, 0, c.seen);
      seen += c.result.json.projects.length;
      cursor = c.result.json.next_cursor;
      pages++;
    } while (cursor && pages < 10);
    assert.equal(seen, 4);
  });
});
