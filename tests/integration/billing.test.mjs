// billing.test.mjs - POST /v1/billing/checkout and POST /v1/billing/portal
// against the fake Stripe (fake-stripe.mjs): every field the server sends
// (form body in bracket notation, Authorization, Stripe-Version,
// Idempotency-Key), retries with the same key after a 500, a 429 and a
// timeout and none after a 4xx, Stripe's errors as 502 with Stripe's message,
// the 400/404/409/503 answers, the billing pool's 503 when full, shutdown
// during a call, key rotation, and the `subscription` field of GET /v1/me
// and the customer of a user the webhook linked (events signed by the
// official stripe package, stripe-events.mjs; the whole flow is
// billing-flow.test.mjs). The fake itself is checked first, also against the
// official stripe package.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Stripe from 'stripe';

import { startFakeStripe, parseForm } from './fake-stripe.mjs';
import { api, signup, startServer, uniqueEmail } from './harness.mjs';
import { checkoutCompletedEvent, deliver, stripeId, subscriptionEvent } from './stripe-events.mjs';

const KEY = 'sk_test_koumpa_billing_0123456789';
const VERSION = '2026-10-28.endive';
const PUBLIC = 'https://koumpa.example';
const KEY_RE = /^koumpa-[0-9a-f]{32}$/;

function assertError(res, status, code, messagePattern) {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  if (messagePattern) assert.match(res.json.error.message, messagePattern);
}

async function waitFor(cond, what) {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function makeAdmin(server) {
  const email = uniqueEmail('admin');
  const admin = await signup(server, email);
  const grant = await server.run(['admin', 'grant', email]);
  assert.equal(grant.code, 0, grant.stderr);
  return admin;
}

/** A fake Stripe that knows the test prices, and a server pointed at it (env added). */
async function startWithFake(env = {}) {
  const fake = await startFakeStripe({ apiKey: KEY, prices: ['price_pro_test', 'price_business_test'] });
  const server = await startServer({ env: { STRIPE_SECRET_KEY: KEY, STRIPE_API_BASE: fake.url, ...env } });
  return { fake, server };
}

async function putPlan(server, admin, id, body) {
  const res = await api(server, 'PUT', `/v1/admin/plans/${id}`, { token: admin.token, body });
  assert.ok(res.status === 200 || res.status === 201, res.text);
}

describe('fake Stripe API', () => {
  let fake;
  const post = (path, body, headers = {}) =>
    fetch(`${fake.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body,
    });
  before(async () => {
    fake = await startFakeStripe({ apiKey: 'sk_test_fake', prices: ['price_a'], customers: ['cus_a'] });
  });
  after(() => fake.close());

  test('bracket notation parses into nested objects and arrays', () => {
    assert.deepEqual(parseForm('a=1&line_items%5B0%5D%5Bprice%5D=p&line_items[0][quantity]=2&line_items[1][price]=q&m[k]=%26%3D+x'), {
      a: '1',
      line_items: [{ price: 'p', quantity: '2' }, { price: 'q' }],
      m: { k: '&= x' },
    });
    assert.throws(() => parseForm('a[b=1'));
  });

  test('authentication: Bearer or Basic, else 401 in Stripe shape', async () => {
    const form = 'customer=cus_a&return_url=https%3A%2F%2Fx.example%2F';
    const none = await post('/v1/billing_portal/sessions', form);
    assert.equal(none.status, 401);
    assert.match((await none.json()).error.message, /You did not provide an API key/);
    const wrong = await post('/v1/billing_portal/sessions', form, { authorization: 'Bearer sk_test_wrongkey9' });
    assert.equal(wrong.status, 401);
    assert.equal((await wrong.json()).error.message, 'Invalid API Key provided: sk_test_****key9');
    const basic = `Basic ${Buffer.from('sk_test_fake:').toString('base64')}`;
    const ok = await post('/v1/billing_portal/sessions', form, { authorization: basic });
    assert.equal(ok.status, 200);
    const session = await ok.json();
    assert.equal(session.object, 'billing_portal.session');
    assert.match(session.url, /^https:\/\/billing\.stripe\.com\/p\/session\//);
    assert.match(ok.headers.get('request-id'), /^req_/);
  });

  test('the official stripe package talks to the fake: bracket notation, auth, idempotent retry', async () => {
    const port = Number(new URL(fake.url).port);
    const client = new Stripe('sk_test_fake', { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 1 });
    fake.reset();
    fake.setScenario([{ type: 'error', status: 500 }, { type: 'ok' }]);
    const params = {
      mode: 'subscription',
      line_items: [{ price: 'price_a', quantity: 1 }],
      client_reference_id: 'usr_1',
      customer_email: 'zoë+x@example.com',
      success_url: 'https://x.example/billing/success?session_id={CHECKOUT_SESSION_ID}',
      metadata: { koumpa_user_id: 'usr_1' },
      subscription_data: { metadata: { koumpa_user_id: 'usr_1' } },
    };
    const session = await client.checkout.sessions.create(params);
    assert.equal(session.object, 'checkout.session');
    assert.equal(session.client_reference_id, 'usr_1');
    assert.equal(fake.requests.length, 2, 'the package retried the 500');
    // the server's default Stripe-Version is the one the official package pins
    assert.equal(fake.requests[0].headers['stripe-version'], VERSION);
    const [a, b] = fake.requests;
    assert.ok(a.headers['idempotency-key']);
    assert.equal(b.headers['idempotency-key'], a.headers['idempotency-key']);
    assert.deepEqual(b.form, { ...params, line_items: [{ price: 'price_a', quantity: '1' }] });
    const portal = await client.billingPortal.sessions.create({ customer: 'cus_a', return_url: 'https://x.example/' });
    assert.equal(portal.object, 'billing_portal.session');
    await assert.rejects(client.checkout.sessions.create({ ...params, line_items: [{ price: 'price_nope' }] }), (e) => {
      assert.equal(e.type, 'StripeInvalidRequestError');
      assert.equal(e.message, "No such price: 'price_nope'");
      assert.equal(e.code, 'resource_missing');
      return true;
    });
  });

  test('Idempotency-Key: the same request replays the first answer; other parameters are an idempotency_error', async () => {
    const auth = { authorization: 'Bearer sk_test_fake', 'idempotency-key': 'k-1' };
    const form = 'mode=subscription&line_items[0][price]=price_a&success_url=https%3A%2F%2Fx.example%2Fs';
    const first = await (await post('/v1/checkout/sessions', form, auth)).json();
    const again = await post('/v1/checkout/sessions', form, auth);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(await again.json(), first);
    const other = await post('/v1/checkout/sessions', `${form}&client_reference_id=x`, auth);
    assert.equal(other.status, 400);
    assert.equal((await other.json()).error.type, 'idempotency_error');
    const missing = await post('/v1/checkout/sessions', 'mode=subscription&line_items[0][price]=price_zz&success_url=https%3A%2F%2Fx.example%2F', {
      authorization: 'Bearer sk_test_fake',
    });
    assert.equal(missing.status, 400);
    assert.deepEqual((await missing.json()).error, {
      type: 'invalid_request_error',
      code: 'resource_missing',
      param: 'line_items[0][price]',
      message: "No such price: 'price_zz'",
    });
  });
});

describe('billing: checkout and portal', () => {
  let fake;
  let server;
  let admin;

  const checkout = (user, body = { plan_id: 'pro' }) =>
    api(server, 'POST', '/v1/billing/checkout', {
      token: user.token,
      body,
      headers: typeof body === 'string' ? { 'Content-Type': 'application/json' } : {},
    });
  const stripeCalls = () => fake.requests.filter((r) => r.path.startsWith('/v1/'));

  before(async () => {
    ({ fake, server } = await startWithFake({
      KOUMPA_PUBLIC_URL: `${PUBLIC}/`,
      KOUMPA_STRIPE_TIMEOUT_S: '1',
      KOUMPA_STRIPE_RETRIES: '2',
    }));
    admin = await makeAdmin(server);
    await putPlan(server, admin, 'pro', { stripe_price_id: 'price_pro_test' });
    await putPlan(server, admin, 'gone', {
      name: 'Gone',
      price_cents: 1500,
      monthly_credits: 50,
      daily_bonus: 5,
      max_concurrent_generations: 1,
      stripe_price_id: 'price_missing',
    });
    await putPlan(server, admin, 'retired', {
      name: 'Retired',
      price_cents: 1000,
      monthly_credits: 10,
      daily_bonus: 5,
      max_concurrent_generations: 1,
      stripe_price_id: 'price_pro_test',
      active: false,
    });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('checkout sends every field Stripe needs and answers its url', async () => {
    fake.reset();
    const user = await signup(server);
    const res = await checkout(user);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.json), ['url']);
    const calls = stripeCalls();
    assert.equal(calls.length, 1);
    const [call] = calls;
    assert.equal(call.method, 'POST');
    assert.equal(call.path, '/v1/checkout/sessions');
    assert.equal(call.headers.authorization, `Bearer ${KEY}`);
    assert.equal(call.headers['stripe-version'], VERSION);
    assert.match(call.headers['idempotency-key'], KEY_RE);
    assert.equal(call.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.deepEqual(call.form, {
      mode: 'subscription',
      line_items: [{ price: 'price_pro_test', quantity: '1' }],
      client_reference_id: user.user.id,
      customer_email: user.email,
      success_url: `${PUBLIC}/?checkout=success&session_id={CHECKOUT_SESSION_ID}#/billing`,
      cancel_url: `${PUBLIC}/?checkout=cancel#/billing`,
      metadata: { koumpa_user_id: user.user.id },
      subscription_data: { metadata: { koumpa_user_id: user.user.id } },
    });
    const session = fake.sessions.at(-1);
    assert.equal(res.json.url, session.url);
    assert.equal(session.client_reference_id, user.user.id);
  });

  test('each checkout has its own Idempotency-Key', async () => {
    fake.reset();
    const user = await signup(server);
    assert.equal((await checkout(user)).status, 200);
    assert.equal((await checkout(user)).status, 200);
    const [a, b] = stripeCalls();
    assert.notEqual(a.headers['idempotency-key'], b.headers['idempotency-key']);
  });

  test('a 500 is retried with the same Idempotency-Key and body', async () => {
    fake.reset();
    fake.setScenario([{ type: 'error', status: 500 }, { type: 'ok' }]);
    const before = fake.sessions.length;
    const res = await checkout(await signup(server));
    assert.equal(res.status, 200, res.text);
    const calls = stripeCalls();
    assert.equal(calls.length, 2);
    assert.match(calls[0].headers['idempotency-key'], KEY_RE);
    assert.equal(calls[1].headers['idempotency-key'], calls[0].headers['idempotency-key']);
    assert.equal(calls[1].rawBody, calls[0].rawBody);
    assert.equal(fake.sessions.length, before + 1);
  });

  test('429 twice, then success: three attempts, one key', async () => {
    fake.reset();
    fake.setScenario([{ type: 'rate_limit' }, { type: 'rate_limit' }, { type: 'ok' }]);
    const res = await checkout(await signup(server));
    assert.equal(res.status, 200, res.text);
    const keys = stripeCalls().map((c) => c.headers['idempotency-key']);
    assert.equal(keys.length, 3);
    assert.equal(new Set(keys).size, 1);
  });

  test('a timeout is retried with the same key, and Stripe replays the session the lost answer held', async () => {
    fake.reset();
    // the first attempt creates the session, then its answer never comes
    fake.setScenario([{ type: 'hang', process: true }, { type: 'ok' }]);
    const before = fake.sessions.length;
    const res = await checkout(await signup(server));
    assert.equal(res.status, 200, res.text);
    const calls = stripeCalls();
    assert.equal(calls.length, 2);
    assert.equal(calls[1].headers['idempotency-key'], calls[0].headers['idempotency-key']);
    assert.equal(fake.sessions.length, before + 1, 'one session, not two');
    assert.equal(res.json.url, fake.sessions.at(-1).url);
  });

  test('retries are bounded: 500 every time is a 502 after 1 + KOUMPA_STRIPE_RETRIES attempts', async () => {
    fake.reset();
    fake.setScenario({ type: 'error', status: 500, message: 'An unknown error occurred' });
    const res = await checkout(await signup(server));
    assertError(res, 502, 'stripe_error', /^Stripe: An unknown error occurred$/);
    assert.equal(stripeCalls().length, 3);
  });

  test('Stripe-Should-Retry: false is not retried', async () => {
    fake.reset();
    fake.setScenario({ type: 'error', status: 500, headers: { 'stripe-should-retry': 'false' } });
    assertError(await checkout(await signup(server)), 502, 'stripe_error');
    assert.equal(stripeCalls().length, 1);
  });

  test("a 4xx is not retried and becomes a 502 with Stripe's message", async () => {
    fake.reset();
    const user = await signup(server);
    const res = await checkout(user, { plan_id: 'gone' });
    assertError(res, 502, 'stripe_error');
    assert.equal(res.json.error.message, "Stripe: No such price: 'price_missing'");
    assert.equal(stripeCalls().length, 1);
  });

  test('no answer at all (connection reset) is a 502 stripe_unavailable after the retries', async () => {
    fake.reset();
    fake.setScenario({ type: 'reset' });
    const res = await checkout(await signup(server));
    assertError(res, 502, 'stripe_unavailable', /^Stripe did not answer after 3 attempts/);
    assert.equal(stripeCalls().length, 3);
  });

  test('plans that cannot be bought, and bodies that name none, never reach Stripe', async () => {
    fake.reset();
    const user = await signup(server);
    assertError(await checkout(user, {}), 400, 'invalid_request', /plan_id/);
    assertError(await checkout(user, { plan_id: 42 }), 400, 'invalid_request', /plan_id/);
    assertError(await checkout(user, { plan_id: '' }), 400, 'invalid_request', /plan_id/);
    assertError(await checkout(user, 'not json'), 400, 'invalid_json');
    assertError(await checkout(user, { plan_id: 'free' }), 400, 'plan_free', /free/);
    assertError(await checkout(user, { plan_id: 'retired' }), 400, 'plan_inactive', /retired/);
    assertError(await checkout(user, { plan_id: 'business' }), 400, 'plan_not_purchasable', /stripe_price_id/);
    assertError(await checkout(user, { plan_id: 'platinum' }), 404, 'plan_not_found', /platinum/);
    assertError(await checkout(user, { plan_id: 'x'.repeat(5000) }), 404, 'plan_not_found');
    assertError(await checkout(user, { plan_id: ['pro'] }), 400, 'invalid_request', /plan_id/);
    assert.equal(stripeCalls().length, 0);
  });

  test('the routes need a signed-in user', async () => {
    const res = await api(server, 'POST', '/v1/billing/checkout', { body: { plan_id: 'pro' } });
    assert.equal(res.status, 401);
    assert.equal((await api(server, 'POST', '/v1/billing/portal')).status, 401);
  });

  test('portal without a Stripe customer is 409 no_customer', async () => {
    fake.reset();
    const user = await signup(server);
    const res = await api(server, 'POST', '/v1/billing/portal', { token: user.token });
    assertError(res, 409, 'no_customer', /checkout/);
    assert.equal(stripeCalls().length, 0);
  });

  test('the secret key never reaches the log', () => {
    assert.ok(server.logs().includes('stripe call retried'), 'the retries above were logged');
    assert.ok(!server.logs().includes(KEY));
    assert.ok(!server.logs().includes(KEY.slice(-12)));
  });

  test('GET /v1/me shows subscription null for a new user', async () => {
    const user = await signup(server);
    const res = await api(server, 'GET', '/v1/me', { token: user.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.subscription, null);
  });
});

describe('billing: a user whose Stripe customer the webhook linked', () => {
  const WEBHOOK_SECRET = 'whsec_test_checkout_0123456789';
  let fake;
  let server;
  let user;
  let customer;
  let sub;
  const periodStart = Math.floor(Date.UTC(2026, 10, 20, 8, 0, 0) / 1000);

  before(async () => {
    ({ fake, server } = await startWithFake({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, KOUMPA_PUBLIC_URL: PUBLIC }));
    const admin = await makeAdmin(server);
    await putPlan(server, admin, 'pro', { stripe_price_id: 'price_pro_test' });
    await putPlan(server, admin, 'business', { stripe_price_id: 'price_business_test' });
    user = await signup(server);
    customer = stripeId('cus');
    sub = stripeId('sub');
    fake.addCustomer(customer);
    // what Stripe sends once the user paid: the session, then the subscription
    const send = async (event) => {
      const res = await deliver(server, event, { secret: WEBHOOK_SECRET });
      assert.equal(res.status, 200, res.text);
    };
    await send(checkoutCompletedEvent({ customer, subscription: sub, userId: user.user.id }));
    await send(
      subscriptionEvent('created', {
        id: sub,
        customer,
        status: 'active',
        price: 'price_pro_test',
        userId: user.user.id,
        periodStart,
        cancelAtPeriodEnd: true,
      }),
    );
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('the webhook never called Stripe', () => {
    assert.equal(fake.requests.length, 0);
  });

  test('GET /v1/me shows the subscription', async () => {
    const res = await api(server, 'GET', '/v1/me', { token: user.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.plan.id, 'pro');
    assert.deepEqual(res.json.subscription, {
      status: 'active',
      plan_id: 'pro',
      current_period_end: new Date((periodStart + 30 * 86400) * 1000).toISOString().replace('.000Z', 'Z'),
      cancel_at_period_end: true,
    });
  });

  test('checkout sends the customer, not the e-mail', async () => {
    fake.reset();
    const res = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'business' } });
    assert.equal(res.status, 200, res.text);
    const [call] = fake.requests;
    assert.equal(call.form.customer, customer);
    assert.equal(call.form.customer_email, undefined);
    assert.deepEqual(call.form.line_items, [{ price: 'price_business_test', quantity: '1' }]);
    assert.equal(call.form.client_reference_id, user.user.id);
    assert.equal(res.json.url, fake.sessions.at(-1).url);
  });

  test('portal: a Billing Portal session for the customer, back to {public}/#/billing', async () => {
    fake.reset();
    const res = await api(server, 'POST', '/v1/billing/portal', { token: user.token });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.json), ['url']);
    assert.equal(fake.requests.length, 1);
    const [call] = fake.requests;
    assert.equal(call.method, 'POST');
    assert.equal(call.path, '/v1/billing_portal/sessions');
    assert.equal(call.headers.authorization, `Bearer ${KEY}`);
    assert.equal(call.headers['stripe-version'], VERSION);
    assert.match(call.headers['idempotency-key'], KEY_RE);
    assert.deepEqual(call.form, { customer, return_url: `${PUBLIC}/#/billing` });
    assert.equal(res.json.url, fake.portalSessions.at(-1).url);
  });

  test("portal: a customer Stripe no longer knows is a 502 with Stripe's message", async () => {
    const other = await signup(server);
    const gone = stripeId('cus');
    const res0 = await deliver(server, checkoutCompletedEvent({ customer: gone, subscription: stripeId('sub'), userId: other.user.id }), {
      secret: WEBHOOK_SECRET,
    });
    assert.equal(res0.status, 200, res0.text);
    fake.reset();
    const res = await api(server, 'POST', '/v1/billing/portal', { token: other.token });
    assertError(res, 502, 'stripe_error');
    assert.equal(res.json.error.message, `Stripe: No such customer: '${gone}'`);
    assert.equal(fake.requests.length, 1, 'a 400 is not retried');
  });
});

describe('billing: the pool that calls Stripe is bounded', () => {
  let fake;
  let server;
  before(async () => {
    ({ fake, server } = await startWithFake({ KOUMPA_BILLING_THREADS: '1', KOUMPA_BILLING_QUEUE: '0' }));
    await putPlan(server, await makeAdmin(server), 'pro', { stripe_price_id: 'price_pro_test' });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('while the only thread waits for Stripe, the next checkout is 503 busy at once; the first completes', async () => {
    const [a, b] = [await signup(server), await signup(server)];
    fake.setScenario({ type: 'ok', gate: 'first' });
    const first = api(server, 'POST', '/v1/billing/checkout', { token: a.token, body: { plan_id: 'pro' } });
    await waitFor(() => fake.requests.length === 1, 'the first call to reach the fake');
    const second = await api(server, 'POST', '/v1/billing/checkout', { token: b.token, body: { plan_id: 'pro' } });
    assertError(second, 503, 'busy', /calls to Stripe/);
    assert.ok(second.headers.get('retry-after'));
    // the HTTP threads are free meanwhile
    assert.equal((await api(server, 'GET', '/v1/me', { token: b.token })).status, 200);
    fake.openGate('first');
    const res = await first;
    assert.equal(res.status, 200, res.text);
    assert.equal(fake.requests.length, 1);
  });
});

describe('billing: the key comes from the secrets service at each call', () => {
  test('STRIPE_SECRET_KEY_FILE rewritten: a later call uses the new key, without a restart', async () => {
    const fake = await startFakeStripe({ prices: ['price_pro_test'] }); // any key
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-stripe-key-'));
    const file = path.join(dir, 'stripe_key');
    await writeFile(file, 'sk_test_first_key_0001\n');
    const server = await startServer({
      env: { STRIPE_SECRET_KEY_FILE: file, STRIPE_API_BASE: fake.url, KOUMPA_SECRETS_TTL: '1' },
    });
    try {
      await putPlan(server, await makeAdmin(server), 'pro', { stripe_price_id: 'price_pro_test' });
      const user = await signup(server);
      const checkoutAuth = async () => {
        const res = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'pro' } });
        assert.equal(res.status, 200, res.text);
        return fake.requests.at(-1).headers.authorization;
      };
      assert.equal(await checkoutAuth(), 'Bearer sk_test_first_key_0001');
      await writeFile(file, 'sk_test_second_key_0002\n');
      let auth;
      for (let i = 0; i < 50 && auth !== 'Bearer sk_test_second_key_0002'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        auth = await checkoutAuth();
      }
      assert.equal(auth, 'Bearer sk_test_second_key_0002');
    } finally {
      await server.stop();
      await fake.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('billing: without STRIPE_SECRET_KEY', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { STRIPE_SECRET_KEY: '' } });
  });
  after(async () => {
    await server?.stop();
  });

  test('checkout and portal answer 503 billing_not_configured; the rest of the server runs', async () => {
    const user = await signup(server);
    const c = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'pro' } });
    assertError(c, 503, 'billing_not_configured', /STRIPE_SECRET_KEY/);
    const p = await api(server, 'POST', '/v1/billing/portal', { token: user.token });
    assertError(p, 503, 'billing_not_configured', /STRIPE_SECRET_KEY/);
    const me = await api(server, 'GET', '/v1/me', { token: user.token });
    assert.equal(me.status, 200);
    assert.equal(me.json.subscription, null);
  });
});

describe('billing: shutdown during a call to Stripe', () => {
  test('a call Stripe never answers does not hold the server past SIGTERM', async () => {
    // the default timeouts (30 s an attempt, 2 retries) would outlast the harness's stop deadline
    const { fake, server } = await startWithFake();
    try {
      await putPlan(server, await makeAdmin(server), 'pro', { stripe_price_id: 'price_pro_test' });
      const user = await signup(server);
      fake.setScenario({ type: 'hang' });
      const pending = api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'pro' } }).catch(
        (e) => e,
      );
      await waitFor(() => fake.requests.length === 1, 'the call to reach the fake');
      await server.stop(); // throws unless the server exits 0 within the harness's deadline
      await pending;
      assert.equal(fake.requests.length, 1, 'no retry once stopping');
    } finally {
      await server.kill();
      await fake.close();
    }
  });
});
