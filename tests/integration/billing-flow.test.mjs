// billing-flow.test.mjs - a user's whole life with Stripe, through the real
// server: sign-up (Free) → checkout (the fake Stripe API) →
// checkout.session.completed → customer.subscription.created (Pro) →
// invoice.paid twice (100 credits once) → portal → checkout again, now with
// the customer → customer.subscription.updated to Business →
// invoice.payment_failed (past_due, plan kept) → invoice.paid (+300) →
// customer.subscription.deleted (Free; the monthly credits stay).
// After every step the ledger sums to the balance, and no webhook made a call
// to Stripe's API (the fake's request log only grows with checkout and portal).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeStripe } from './fake-stripe.mjs';
import { api, signup, startServer, uniqueEmail } from './harness.mjs';
import {
  checkoutCompletedEvent,
  deliver,
  invoiceEvent,
  nowSeconds,
  stripeId,
  subscriptionEvent,
} from './stripe-events.mjs';

const KEY = 'sk_test_koumpa_flow_0123456789';
const WEBHOOK_SECRET = 'whsec_test_flow_0123456789abcdef';
const PRICE_PRO = 'price_test_flow_pro';
const PRICE_BUSINESS = 'price_test_flow_business';

describe('billing: the whole flow', () => {
  let fake;
  let server;
  let user;
  const customer = stripeId('cus');
  const sub = stripeId('sub');
  let clock = nowSeconds() - 120; // events' `created`, one second apart, in order

  const stripeCalls = () => fake.requests.filter((r) => r.path.startsWith('/v1/'));

  const me = async () => {
    const res = await api(server, 'GET', '/v1/me', { token: user.token });
    assert.equal(res.status, 200, res.text);
    return res.json;
  };

  /** /v1/me, after checking that the ledger sums to the balance it shows. */
  const account = async () => {
    const profile = await me();
    const res = await api(server, 'GET', '/v1/me/ledger?limit=100', { token: user.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.next_cursor, null);
    const sum = res.json.entries.reduce(
      (s, e) => ({ daily: s.daily + e.delta_daily, monthly: s.monthly + e.delta_monthly }),
      { daily: 0, monthly: 0 },
    );
    assert.deepEqual(sum, { daily: profile.credits.daily, monthly: profile.credits.monthly }, 'ledger = balance');
    return { ...profile, ledger: res.json.entries };
  };

  /** Delivers a webhook event; Stripe's API must not hear of it. */
  const webhook = async (event, outcome = 'applied') => {
    const calls = stripeCalls().length;
    const res = await deliver(server, event, { secret: WEBHOOK_SECRET });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.outcome, outcome, res.text);
    assert.equal(stripeCalls().length, calls, 'the webhook called Stripe');
  };

  const subscription = (kind, price, opts = {}) =>
    subscriptionEvent(kind, { id: sub, customer, status: 'active', price, userId: user.user.id }, { created: ++clock, ...opts });
  const invoice = (kind, id, price, opts = {}) =>
    invoiceEvent(kind, { id, customer, subscription: sub, price, userId: user.user.id }, { created: ++clock, ...opts });

  before(async () => {
    fake = await startFakeStripe({ apiKey: KEY, prices: [PRICE_PRO, PRICE_BUSINESS] });
    server = await startServer({
      env: {
        STRIPE_SECRET_KEY: KEY,
        STRIPE_API_BASE: fake.url,
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        KOUMPA_PUBLIC_URL: 'https://koumpa.example',
      },
    });
    const admin = await signup(server, uniqueEmail('admin'));
    const grant = await server.run(['admin', 'grant', admin.email]);
    assert.equal(grant.code, 0, grant.stderr);
    for (const [plan, price] of [
      ['pro', PRICE_PRO],
      ['business', PRICE_BUSINESS],
    ]) {
      const res = await api(server, 'PUT', `/v1/admin/plans/${plan}`, { token: admin.token, body: { stripe_price_id: price } });
      assert.equal(res.status, 200, res.text);
    }
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('sign-up → checkout → subscription → invoices → portal → upgrade → failure → payment → cancel', async () => {
    // sign-up: Free, today's bonus, no subscription
    user = await signup(server, uniqueEmail('flow'));
    let a = await account();
    assert.equal(a.plan.id, 'free');
    assert.equal(a.subscription, null);
    const daily = a.credits.daily;

    // checkout: the server asks Stripe for a session
    let res = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'pro' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(stripeCalls().length, 1);
    const first = stripeCalls()[0];
    assert.equal(first.path, '/v1/checkout/sessions');
    assert.equal(first.form.client_reference_id, user.user.id);
    assert.equal(first.form.customer_email, user.email);
    const session = fake.sessions.at(-1);
    assert.equal(res.json.url, session.url);

    // the user pays: Stripe makes the customer and the subscription, and says so
    fake.addCustomer(customer);
    await webhook(
      checkoutCompletedEvent(
        { id: session.id, customer, subscription: sub, userId: user.user.id, email: user.email },
        { created: ++clock },
      ),
    );
    a = await account();
    assert.equal(a.plan.id, 'free', 'no plan before the subscription says active');
    await webhook(subscription('created', PRICE_PRO));
    a = await account();
    assert.equal(a.plan.id, 'pro');
    assert.equal(a.subscription.status, 'active');
    assert.equal(a.subscription.plan_id, 'pro');
    assert.equal(a.subscription.cancel_at_period_end, false);
    assert.ok(a.subscription.current_period_end);

    // the first invoice, delivered twice, and once more inside another event (legacy layout)
    const in1 = invoice('paid', stripeId('in'), PRICE_PRO);
    await webhook(in1);
    await webhook(in1, 'duplicate');
    await webhook(invoice('paid', in1.data.object.id, PRICE_PRO, { legacy: true }));
    a = await account();
    assert.deepEqual(a.credits, { daily, monthly: 100, total: daily + 100 });
    assert.equal(a.ledger.filter((e) => e.reason === 'subscription').length, 1);

    // the customer portal, for the customer the checkout linked
    res = await api(server, 'POST', '/v1/billing/portal', { token: user.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(stripeCalls().length, 2);
    assert.equal(stripeCalls()[1].path, '/v1/billing_portal/sessions');
    assert.equal(stripeCalls()[1].form.customer, customer);

    // checkout again: now with the customer, not an e-mail
    res = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'business' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(stripeCalls().length, 3);
    assert.equal(stripeCalls()[2].form.customer, customer);
    assert.equal(stripeCalls()[2].form.customer_email, undefined);
    assert.deepEqual(stripeCalls()[2].form.line_items, [{ price: PRICE_BUSINESS, quantity: '1' }]);

    // the plan changes to Business (in the portal)
    await webhook(subscription('updated', PRICE_BUSINESS));
    a = await account();
    assert.equal(a.plan.id, 'business');
    assert.equal(a.subscription.plan_id, 'business');

    // a renewal fails: past_due, the plan stays while Stripe retries
    const in2 = stripeId('in');
    await webhook(invoice('failed', in2, PRICE_BUSINESS));
    a = await account();
    assert.equal(a.plan.id, 'business');
    assert.equal(a.subscription.status, 'past_due');
    assert.equal(a.credits.monthly, 100);

    // the retry succeeds: +300
    await webhook(invoice('paid', in2, PRICE_BUSINESS));
    a = await account();
    assert.equal(a.plan.id, 'business');
    assert.equal(a.subscription.status, 'active');
    assert.deepEqual(a.credits, { daily, monthly: 400, total: daily + 400 });

    // canceled: Free at once, the monthly credits already granted stay
    await webhook(subscription('deleted', PRICE_BUSINESS));
    a = await account();
    assert.equal(a.plan.id, 'free');
    assert.equal(a.subscription.status, 'canceled');
    assert.deepEqual(a.credits, { daily, monthly: 400, total: daily + 400 });
    assert.deepEqual(
      a.ledger.filter((e) => e.reason === 'subscription').map((e) => e.delta_monthly),
      [300, 100],
    );

    // and only checkout, portal, checkout ever reached Stripe
    assert.deepEqual(
      stripeCalls().map((c) => c.path),
      ['/v1/checkout/sessions', '/v1/billing_portal/sessions', '/v1/checkout/sessions'],
    );
  });
});
