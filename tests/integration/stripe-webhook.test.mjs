// stripe-webhook.test.mjs - POST /v1/webhooks/stripe through the real server:
// signatures made by the official `stripe` package (valid, tampered, wrong
// secret, stale, future, moved timestamp, missing, empty, garbage, several
// v1, v0 only, a rolled secret), events in the current and the legacy field
// layout, idempotency (the same event 5 times at once, the same invoice in two
// events), order (newer update first, update after delete), unknown types and
// prices. Users sign up through the server; admins map prices to plans through
// the admin API. Each check reads /v1/me and the ledger, whose sum must equal
// the balance.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { api, signup, startServer, uniqueEmail } from './harness.mjs';
import {
  checkoutCompletedEvent,
  deliver,
  invoiceEvent,
  nowSeconds,
  signatureHeader,
  stripeId,
  subscriptionEvent,
} from './stripe-events.mjs';

const SECRET = 'whsec_test_current_0123456789abcdef';
const OLD_SECRET = 'whsec_test_previous_fedcba9876543210';
const PRICE_PRO = 'price_test_pro_monthly';
const PRICE_BUSINESS = 'price_test_business_monthly';

function assertError(res, status, code, messagePattern) {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  if (messagePattern) assert.match(res.json.error.message, messagePattern);
}

function assertOutcome(res, outcome) {
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json, { received: true, outcome });
}

describe('POST /v1/webhooks/stripe', () => {
  let server;

  const me = async (user) => {
    const res = await api(server, 'GET', '/v1/me', { token: user.token });
    assert.equal(res.status, 200, res.text);
    return res.json;
  };

  /** The user's ledger, whose deltas must add up to the balance /v1/me shows. */
  const ledger = async (user) => {
    const res = await api(server, 'GET', '/v1/me/ledger?limit=100', { token: user.token });
    assert.equal(res.status, 200, res.text);
    const { credits } = await me(user);
    const sum = res.json.entries.reduce(
      (s, e) => ({ daily: s.daily + e.delta_daily, monthly: s.monthly + e.delta_monthly }),
      { daily: 0, monthly: 0 },
    );
    assert.deepEqual(sum, { daily: credits.daily, monthly: credits.monthly }, 'the ledger sums to the balance');
    return res.json.entries;
  };

  /** A new user on Free, with a customer and subscription id of their own. */
  const customer = async () => {
    const user = await signup(server, uniqueEmail('billing'));
    return { ...user, customer: stripeId('cus'), sub: stripeId('sub') };
  };

  const send = (event, opts = {}) => deliver(server, event, { secret: SECRET, ...opts });

  before(async () => {
    server = await startServer({ env: { STRIPE_WEBHOOK_SECRET: `${OLD_SECRET}, ${SECRET}` } });
    const admin = await signup(server, uniqueEmail('admin'));
    const grant = await server.run(['admin', 'grant', admin.email]);
    assert.equal(grant.code, 0, grant.stderr);
    for (const [plan, price] of [
      ['pro', PRICE_PRO],
      ['business', PRICE_BUSINESS],
    ]) {
      const res = await api(server, 'PUT', `/v1/admin/plans/${plan}`, {
        token: admin.token,
        body: { stripe_price_id: price },
      });
      assert.equal(res.status, 200, res.text);
    }
  });
  after(async () => {
    await server?.stop();
  });

  test('a valid event moves the plan (current layout)', async () => {
    const u = await customer();
    const ev = subscriptionEvent('created', {
      id: u.sub,
      customer: u.customer,
      status: 'active',
      price: PRICE_PRO,
      userId: u.user.id,
    });
    assertOutcome(await send(ev), 'applied');
    assert.equal((await me(u)).plan.id, 'pro');
  });

  test('a valid event moves the plan (legacy layout)', async () => {
    const u = await customer();
    const ev = subscriptionEvent(
      'created',
      { id: u.sub, customer: u.customer, status: 'trialing', price: PRICE_BUSINESS, userId: u.user.id },
      { legacy: true },
    );
    assertOutcome(await send(ev), 'applied');
    assert.equal((await me(u)).plan.id, 'business');
  });

  describe('signatures', () => {
    let u;
    let ev;
    before(async () => {
      u = await customer();
      ev = subscriptionEvent('created', {
        id: u.sub,
        customer: u.customer,
        status: 'active',
        price: PRICE_PRO,
        userId: u.user.id,
      });
    });
    const refused = async (res, reason) => {
      assertError(res, 400, 'invalid_signature', /Stripe-Signature/);
      assert.equal((await me(u)).plan.id, 'free', 'nothing changed');
      const line = server
        .logs()
        .split('\n')
        .filter((l) => l.includes('"stripe webhook refused"'))
        .pop();
      assert.ok(line, 'the refusal is logged');
      assert.equal(JSON.parse(line).reason, reason);
    };

    test('tampered body', async () => {
      const payload = JSON.stringify(ev);
      const header = signatureHeader(payload, SECRET);
      await refused(await send(ev, { header, payload: payload.replace(PRICE_PRO, PRICE_BUSINESS) }), 'no_matching_signature');
    });

    test('wrong secret', async () => {
      await refused(await send(ev, { secret: 'whsec_test_not_ours' }), 'no_matching_signature');
    });

    test('stale and future timestamps', async () => {
      // A minute beyond the 300 s tolerance: the server's clock may have moved on a
      // second or more by the time it checks (the exact edge is unit-tested).
      await refused(await send(ev, { timestamp: nowSeconds() - 360 }), 'timestamp_too_old');
      await refused(await send(ev, { timestamp: nowSeconds() + 360 }), 'timestamp_in_future');
    });

    test('timestamp changed after signing', async () => {
      const payload = JSON.stringify(ev);
      const old = signatureHeader(payload, SECRET, nowSeconds() - 3600);
      const moved = old.replace(/^t=\d+/, `t=${nowSeconds()}`);
      assert.notEqual(moved, old);
      await refused(await send(ev, { header: moved, payload }), 'no_matching_signature');
    });

    test('missing, empty and garbage headers', async () => {
      await refused(await send(ev, { header: null }), 'missing_header');
      await refused(await send(ev, { header: '' }), 'missing_header');
      await refused(await send(ev, { header: 'garbage' }), 'malformed_header');
      await refused(await send(ev, { header: 't=soon,v1=abc' }), 'malformed_header');
    });

    test('v0 only', async () => {
      const payload = JSON.stringify(ev);
      const v1 = signatureHeader(payload, SECRET);
      await refused(await send(ev, { header: v1.replace(',v1=', ',v0='), payload }), 'no_v1_signature');
    });

    test('the log never shows a secret', () => {
      assert.ok(!server.logs().includes('whsec_'), 'no secret in the log');
    });

    test('several v1 of which one is valid; a secret being rolled', async () => {
      const payload = JSON.stringify(ev);
      const t = nowSeconds();
      const wrong = signatureHeader(payload, 'whsec_test_not_ours', t).split(',')[1];
      const good = signatureHeader(payload, SECRET, t).split(',')[1];
      assertOutcome(await send(ev, { header: `t=${t},${wrong},${good},v0=00`, payload }), 'applied');
      assert.equal((await me(u)).plan.id, 'pro');
      // signed with the previous secret, still listed in STRIPE_WEBHOOK_SECRET
      const ev2 = subscriptionEvent('updated', {
        id: u.sub,
        customer: u.customer,
        status: 'active',
        price: PRICE_BUSINESS,
        userId: u.user.id,
      }, { created: nowSeconds() + 1 });
      assertOutcome(await send(ev2, { secret: OLD_SECRET }), 'applied');
      assert.equal((await me(u)).plan.id, 'business');
    });
  });

  test('a body that is not JSON or not an event is refused (after its signature)', async () => {
    assertError(await send(null, { payload: 'not json' }), 400, 'invalid_event', /not JSON/);
    assertError(await send(null, { payload: '{"hello":"world"}' }), 400, 'invalid_event', /not a Stripe event/);
  });

  test('the same event 5 times at once: exactly one effect', async () => {
    const u = await customer();
    const ev = invoiceEvent('paid', {
      id: stripeId('in'),
      customer: u.customer,
      subscription: u.sub,
      price: PRICE_PRO,
      userId: u.user.id,
    });
    const payload = JSON.stringify(ev);
    const results = await Promise.all(Array.from({ length: 5 }, () => send(ev, { payload })));
    const outcomes = results.map((r) => (assert.equal(r.status, 200, r.text), r.json.outcome)).sort();
    assert.deepEqual(outcomes, ['applied', 'duplicate', 'duplicate', 'duplicate', 'duplicate']);
    assert.equal((await me(u)).credits.monthly, 100);
    const grants = (await ledger(u)).filter((e) => e.reason === 'subscription');
    assert.equal(grants.length, 1);
    assert.equal(grants[0].delta_monthly, 100);
    // and once more, later
    assertOutcome(await send(ev), 'duplicate');
    assert.equal((await me(u)).credits.monthly, 100);
  });

  test('the same invoice inside two different events grants once', async () => {
    const u = await customer();
    const invoice = { id: stripeId('in'), customer: u.customer, subscription: u.sub, price: PRICE_BUSINESS, userId: u.user.id };
    assertOutcome(await send(invoiceEvent('paid', invoice)), 'applied');
    assertOutcome(await send(invoiceEvent('paid', invoice, { legacy: true })), 'applied');
    assert.equal((await me(u)).credits.monthly, 300);
    assert.equal((await ledger(u)).filter((e) => e.reason === 'subscription').length, 1);
  });

  test('out of order: a newer update before an older create', async () => {
    const u = await customer();
    const t = nowSeconds();
    const s = { id: u.sub, customer: u.customer, status: 'active', userId: u.user.id };
    assertOutcome(await send(subscriptionEvent('updated', { ...s, price: PRICE_BUSINESS }, { created: t })), 'applied');
    assertOutcome(await send(subscriptionEvent('created', { ...s, price: PRICE_PRO }, { created: t - 5 })), 'stale');
    assert.equal((await me(u)).plan.id, 'business');
  });

  test('out of order: an update after the delete', async () => {
    const u = await customer();
    const t = nowSeconds();
    const s = { id: u.sub, customer: u.customer, status: 'active', price: PRICE_PRO, userId: u.user.id };
    assertOutcome(await send(subscriptionEvent('created', s, { created: t - 10 })), 'applied');
    assertOutcome(await send(subscriptionEvent('deleted', s, { created: t })), 'applied');
    assert.equal((await me(u)).plan.id, 'free');
    assertOutcome(await send(subscriptionEvent('updated', s, { created: t - 5 })), 'stale');
    assertOutcome(await send(subscriptionEvent('updated', s, { created: t + 1 })), 'stale');
    assert.equal((await me(u)).plan.id, 'free');
  });

  test('an unknown type is acknowledged and ignored', async () => {
    const u = await customer();
    const ev = subscriptionEvent('created', { id: u.sub, customer: u.customer, status: 'active', price: PRICE_PRO, userId: u.user.id });
    ev.type = 'customer.subscription.paused_for_fun';
    assertOutcome(await send(ev), 'ignored');
    assert.equal((await me(u)).plan.id, 'free');
  });

  test('an unknown price: 200, user unchanged, logged at level error', async () => {
    const u = await customer();
    const s = { id: u.sub, customer: u.customer, status: 'active', userId: u.user.id };
    assertOutcome(await send(subscriptionEvent('created', { ...s, price: PRICE_PRO }, { created: nowSeconds() - 1 })), 'applied');
    const ev = subscriptionEvent('updated', { ...s, price: 'price_test_nobody_sells_this' });
    assertOutcome(await send(ev), 'unknown_price');
    assert.equal((await me(u)).plan.id, 'pro');
    const line = server
      .logs()
      .split('\n')
      .find((l) => l.includes(ev.id));
    assert.ok(line, 'logged');
    const entry = JSON.parse(line);
    assert.equal(entry.level, 'error');
    assert.equal(entry.price_id, 'price_test_nobody_sells_this');
    const inv = invoiceEvent('paid', { id: stripeId('in'), customer: u.customer, subscription: u.sub, price: 'price_test_nobody_sells_this', userId: u.user.id });
    assertOutcome(await send(inv), 'unknown_price');
    assert.equal((await me(u)).credits.monthly, 0);
  });

  test('checkout links the customer: later events need no metadata', async () => {
    const u = await customer();
    const t = nowSeconds();
    // the subscription arrives before the checkout, for no known user yet
    assertOutcome(
      await send(subscriptionEvent('created', { id: u.sub, customer: u.customer, status: 'active', price: PRICE_PRO }, { created: t })),
      'applied',
    );
    assert.equal((await me(u)).plan.id, 'free');
    // a paid invoice for nobody yet: refused so that Stripe delivers it again
    const inv = invoiceEvent('paid', { id: stripeId('in'), customer: u.customer, subscription: u.sub, price: PRICE_PRO }, { legacy: true });
    assertError(await send(inv), 409, 'not_linked', new RegExp(u.sub));
    assertOutcome(await send(checkoutCompletedEvent({ customer: u.customer, subscription: u.sub, clientReferenceId: u.user.id })), 'applied');
    assert.equal((await me(u)).plan.id, 'pro');
    assertOutcome(await send(inv), 'applied');
    assert.equal((await me(u)).credits.monthly, 100);
    await ledger(u);
  });
});

describe('POST /v1/webhooks/stripe without a secret', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('503 naming the variable; the rest of the server runs', async () => {
    const ev = subscriptionEvent('created', { id: stripeId('sub'), customer: stripeId('cus'), status: 'active', price: PRICE_PRO });
    assertError(await deliver(server, ev, { secret: SECRET }), 503, 'billing_not_configured', /STRIPE_WEBHOOK_SECRET/);
    assert.equal((await api(server, 'GET', '/healthz')).status, 200);
  });
});

describe('POST /v1/webhooks/stripe with the secret in STRIPE_WEBHOOK_SECRET_FILE', () => {
  let server;
  let dir;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-whsec-'));
    const file = path.join(dir, 'stripe_webhook_secret');
    await writeFile(file, `${SECRET}\n`, { mode: 0o600 });
    server = await startServer({ env: { STRIPE_WEBHOOK_SECRET_FILE: file } });
  });
  after(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('events signed with the file\'s secret are accepted, others refused', async () => {
    const ev = subscriptionEvent('created', { id: stripeId('sub'), customer: stripeId('cus'), status: 'incomplete', price: PRICE_PRO });
    assertError(await deliver(server, ev, { secret: OLD_SECRET }), 400, 'invalid_signature');
    assertOutcome(await deliver(server, ev, { secret: SECRET }), 'applied');
  });
});
