// request-budget.test.mjs - the DynamoDB request budget (docs/ARCHITECTURE.md, "DynamoDB data
// model"), counted through the server: the SigV4-verifying front in front of moto logs every
// request (its X-Amz-Target and body) while one API call runs, and nothing else runs meanwhile
// (one user, no generation but the one under test, leases of an hour so that no renewal or
// recovery tick falls in). Budget: GET /v1/me at most 2 reads, for a user with a Stripe subscription
// too (made through a signed customer.subscription.created webhook); a spend (the admission of POST
// /v1/projects) one TransactWriteItems after its documented reads; a page of GET /v1/projects one
// Query plus at most one BatchGetItem, after the caller's account (the 2 BatchGetItems of every
// authenticated request). Each test prints the requests it counted (a diagnostic). Runs on
// KOUMPA_TEST_BACKEND=aws with the DynamoDB store (make integration-aws); elsewhere it is skipped,
// saying so.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { awsBackend } from './aws-backend.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, BACKEND_DB, signup, startServer, uniqueEmail } from './harness.mjs';
import { deliver, stripeId, subscriptionEvent } from './stripe-events.mjs';

const APP = 'An app.\n<file path="index.html">\n<!doctype html><p>counted</p>\n</file>\n';
const READS = ['GetItem', 'BatchGetItem', 'Query', 'Scan'];
const skip = BACKEND_DB !== 'dynamodb' && `counts DynamoDB requests; the store here is ${BACKEND_DB} (make integration-aws runs it on DynamoDB)`;
const WAIT_MS = 120_000; // a bound, not a measure
const WEBHOOK_SECRET = 'whsec_test_budget_0123456789abcdef';
const PRICE_PRO = 'price_test_budget_pro';

/** The DynamoDB operation of a logged request ("DynamoDB_20120810.GetItem" -> "GetItem"). */
const op = (r) => (r.target || '').replace(/^DynamoDB_\d+\./, '');
/** The account every authenticated request reads first: {user, billing link}, then {plan, subscription}. */
const ACCOUNT = ['BatchGetItem', 'BatchGetItem'];
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
      env: {
        ANTHROPIC_API_KEY: 'sk-any',
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_GENERATION_LEASE_S: '3600',
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      },
    });
    ({ front } = await awsBackend());
    user = await signup(server);
    // Pro gets a Stripe price, so that a subscription to it names its plan
    const admin = await signup(server, uniqueEmail('admin'));
    const grant = await server.run(['admin', 'grant', admin.email]);
    assert.equal(grant.code, 0, grant.stderr);
    const put = await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: { stripe_price_id: PRICE_PRO } });
    assert.equal(put.status, 200, put.text);
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  const me = (u = user) => counted(() => api(server, 'GET', '/v1/me', { token: u.token }));

  test('GET /v1/me: the account (user with balance and billing link, then plan and subscription), no write', async (t) => {
    const c = await me();
    t.diagnostic(c.seen);
    assert.equal(c.result.status, 200);
    assert.equal(c.result.json.subscription, null);
    assert.deepEqual(c.requests.map(op), ACCOUNT, c.seen);
    assert.match(c.requests[0].body, /"BILL"/, 'the billing link is read with the user');
  });

  test('GET /v1/me: at most 2 reads', async () => {
    const c = await me();
    assert.ok(c.reads <= 2, `GET /v1/me made ${c.reads} reads: ${c.seen}`);
    assert.equal(c.writes, 0, c.seen);
  });

  test('GET /v1/me of a subscribed user: at most 2 reads, the subscription shown', async (t) => {
    const subscriber = await signup(server, uniqueEmail('subscriber'));
    const ev = subscriptionEvent('created', {
      id: stripeId('sub'),
      customer: stripeId('cus'),
      status: 'active',
      price: PRICE_PRO,
      userId: subscriber.user.id,
    });
    const res = await deliver(server, ev, { secret: WEBHOOK_SECRET });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.outcome, 'applied', res.text);
    const c = await me(subscriber);
    t.diagnostic(c.seen);
    assert.equal(c.result.status, 200, c.result.text);
    assert.equal(c.result.json.plan.id, 'pro');
    assert.equal(c.result.json.subscription?.status, 'active', c.result.text);
    assert.equal(c.result.json.subscription.plan_id, 'pro', c.result.text);
    assert.ok(c.reads <= 2, `GET /v1/me made ${c.reads} reads: ${c.seen}`);
    assert.deepEqual(c.requests.map(op), ACCOUNT, c.seen);
    assert.match(c.requests[1].body, /"STRSUB#/, 'the subscription is read with the plan');
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
    // before it: the caller's account (2 BatchGetItems), the balance the reservation is split from
    // (GetItem), the admission's consistent BatchGetItem (user, key, reservation)
    const before = c.requests.slice(0, at).map(op);
    assert.deepEqual(before, [...ACCOUNT, 'GetItem', 'BatchGetItem'], c.seen);
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
      const ops = c.requests.map(op);
      assert.deepEqual(ops.slice(0, 2), ACCOUNT, `the caller's account first: ${c.seen}`);
      const page = ops.slice(2);
      assert.equal(page.filter((o) => o === 'Query').length, 1, c.seen);
      assert.ok(page.filter((o) => o === 'BatchGetItem').length <= 1, c.seen);
      assert.equal(page.length, page.filter((o) => o === 'Query' || o === 'BatchGetItem').length, c.seen);
      assert.equal(c.writes, 0, c.seen);
      seen += c.result.json.projects.length;
      cursor = c.result.json.next_cursor;
      pages++;
    } while (cursor && pages < 10);
    assert.equal(seen, 4);
  });
});
