// fake-stripe.mjs - a fake of the parts of Stripe's API that Koumpa calls
// (POST /v1/checkout/sessions, POST /v1/billing_portal/sessions), faithful to
// the documented wire format (https://docs.stripe.com/api):
//
//   - authentication: `Authorization: Bearer <key>` or HTTP Basic with the key
//     as the user name; missing → 401 "You did not provide an API key", a key
//     other than apiKey (when given) → 401 "Invalid API Key provided: sk_test_****abcd";
//   - bodies are application/x-www-form-urlencoded in bracket notation, parsed
//     into nested objects as Stripe does ("line_items[0][price]=p" →
//     {line_items: [{price: 'p'}]}; numeric indexes make arrays); each recorded
//     request carries that object as `form`;
//   - Stripe-Version: when sent, must look like a version (2026-10-28.endive),
//     else 400 "Invalid Stripe API version";
//   - Idempotency-Key on a POST: the first response of an endpoint that ran is
//     saved; the same key with the same method, path and parameters answers
//     that FIRST response again (header Idempotent-Replayed: true), with other
//     parameters 400 idempotency_error. Failed validation saves nothing (as
//     Stripe: "results are only saved if an API endpoint started executing");
//   - errors are {"error": {type, code?, param?, message}}; every response
//     carries a Request-Id (req_...).
//
// Objects the fake knows: prices (addPrice(id)) and customers (addCustomer(id));
// any other price or customer is 400 resource_missing "No such price: 'x'".
//
//   import { startFakeStripe } from './fake-stripe.mjs';
//   const fake = await startFakeStripe({ apiKey: 'sk_test_123', prices: ['price_pro'] });
//   fake.setScenario([{ type: 'error', status: 500 }, { type: 'ok' }]);  // a 500, then normal answers
//
// Scenarios (chosen per request as in fake-common.mjs; default {type: 'ok'}):
//   ok          the API's answer; with gate: NAME, only once openGate(NAME) was called
//   error       status (500), type ('api_error'), code, message, headers (e.g.
//               {'stripe-should-retry': 'false'}): answered before the
//               endpoint runs (nothing saved for the Idempotency-Key)
//   rate_limit  429 rate_limit (Stripe's shape), headers
//   hang        never answers (the client times out); with process: true the
//               endpoint runs first (its result is saved for the key) and
//               only the answer is lost
//   reset       TCP reset once the request arrived (fake-common.mjs)
//
//   node tests/integration/fake-stripe.mjs --port 0 [--api-key K] [--exit-on-stdin-close]
//   prints its base URL (use it as STRIPE_API_BASE); control endpoints in fake-common.mjs.
import { cliMain, randomId, sendJson, startFake } from './fake-common.mjs';

const VERSION_RE = /^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$/;

/** Stripe's error body. */
export function stripeError(type, message, { code, param } = {}) {
  const error = { type, message };
  if (code) error.code = code;
  if (param) error.param = param;
  return { error };
}

/** Splits "a[b][0][c]" into ['a', 'b', '0', 'c']; null when the brackets are malformed. */
function keyPath(key) {
  const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(key);
  if (!m) return null;
  const rest = [...m[2].matchAll(/\[([^[\]]*)\]/g)].map((x) => x[1]);
  return [m[1], ...rest];
}

/** Objects whose keys are all 0..n-1 become arrays, as Stripe's parser makes them. */
function arrays(v) {
  if (v === null || typeof v !== 'object') return v;
  const keys = Object.keys(v);
  for (const k of keys) v[k] = arrays(v[k]);
  const numeric = keys.length > 0 && keys.every((k) => /^\d+$/.test(k));
  if (!numeric) return v;
  const idx = keys.map(Number).sort((a, b) => a - b);
  if (!idx.every((n, i) => n === i)) return v;
  return idx.map((i) => v[String(i)]);
}

/**
 * Parses an application/x-www-form-urlencoded body in bracket notation into
 * a nested object. Throws on a malformed key (Stripe answers 400).
 */
export function parseForm(text) {
  const root = {};
  for (const [key, value] of new URLSearchParams(text)) {
    const path = keyPath(key);
    if (!path) throw new Error(`Invalid parameter name: ${key}`);
    let node = root;
    for (let i = 0; i < path.length - 1; i++) {
      const seg = path[i];
      if (node[seg] === undefined || typeof node[seg] !== 'object') node[seg] = {};
      node = node[seg];
    }
    node[path[path.length - 1]] = value;
  }
  return arrays(root);
}

/** The key the request authenticated with, or null. */
function presentedKey(headers) {
  const auth = headers.authorization || '';
  const bearer = /^Bearer (.+)$/.exec(auth);
  if (bearer) return bearer[1];
  const basic = /^Basic (.+)$/.exec(auth);
  if (basic) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const user = decoded.split(':')[0];
    return user || null;
  }
  return null;
}

function masked(key) {
  return `${key.slice(0, key.indexOf('_', 3) + 1 || 3)}****${key.slice(-4)}`;
}

/** The first problem with the request's envelope, as [status, body], or null. */
function checkEnvelope(rec, apiKey) {
  const key = presentedKey(rec.headers);
  if (!key)
    return [
      401,
      stripeError(
        'invalid_request_error',
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
      ),
    ];
  if (apiKey !== undefined && key !== apiKey)
    return [401, stripeError('invalid_request_error', `Invalid API Key provided: ${masked(key)}`, { code: 'api_key_invalid' })];
  const version = rec.headers['stripe-version'];
  if (version !== undefined && !VERSION_RE.test(version))
    return [400, stripeError('invalid_request_error', `Invalid Stripe API version: ${version}`, { code: 'invalid_stripe_api_version' })];
  const type = (rec.headers['content-type'] || '').split(';')[0].trim();
  if (rec.method === 'POST' && rec.rawBody.length > 0 && type !== 'application/x-www-form-urlencoded')
    return [400, stripeError('invalid_request_error', `Invalid request: unsupported Content-Type ${type || '(none)'}. If error persists and you need assistance, please contact support@stripe.com.`)];
  return null;
}

const missing = (param) => [400, stripeError('invalid_request_error', `Missing required param: ${param}.`, { code: 'parameter_missing', param })];
const noSuch = (what, id, param) =>
  [400, stripeError('invalid_request_error', `No such ${what}: '${id}'`, { code: 'resource_missing', param })];

function isUrl(s) {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

/** POST /v1/checkout/sessions: [status, body]. */
function checkoutSession(form, state) {
  if (!form.mode) return missing('mode');
  if (!['payment', 'setup', 'subscription'].includes(form.mode))
    return [400, stripeError('invalid_request_error', `Invalid mode: must be one of payment, setup, or subscription`, { param: 'mode' })];
  if (!form.success_url) return missing('success_url');
  for (const p of ['success_url', 'cancel_url'])
    if (form[p] !== undefined && !isUrl(form[p]))
      return [400, stripeError('invalid_request_error', `Not a valid URL`, { code: 'url_invalid', param: p })];
  if (form.customer !== undefined && form.customer_email !== undefined)
    return [400, stripeError('invalid_request_error', 'You may only specify one of these parameters: customer, customer_email.', { param: 'customer' })];
  if (form.customer !== undefined && !state.customers.has(form.customer)) return noSuch('customer', form.customer, 'customer');
  const items = form.line_items;
  if (form.mode === 'subscription' && (!Array.isArray(items) || items.length === 0)) return missing('line_items');
  for (const [i, item] of (items || []).entries()) {
    if (!item.price) return missing(`line_items[${i}][price]`);
    if (!state.prices.has(item.price)) return noSuch('price', item.price, `line_items[${i}][price]`);
    if (item.quantity !== undefined && !/^[1-9]\d*$/.test(item.quantity))
      return [400, stripeError('invalid_request_error', 'Invalid integer: ' + item.quantity, { param: `line_items[${i}][quantity]` })];
  }
  const id = randomId('cs_test_', 24);
  const now = Math.floor(Date.now() / 1000);
  const session = {
    id,
    object: 'checkout.session',
    cancel_url: form.cancel_url ?? null,
    client_reference_id: form.client_reference_id ?? null,
    created: now,
    customer: form.customer ?? null,
    customer_email: form.customer_email ?? null,
    expires_at: now + 86400,
    livemode: false,
    metadata: form.metadata ?? {},
    mode: form.mode,
    payment_status: 'unpaid',
    status: 'open',
    subscription: null,
    success_url: form.success_url,
    url: `https://checkout.stripe.com/c/pay/${id}`,
  };
  state.sessions.push(session);
  return [200, session];
}

/** POST /v1/billing_portal/sessions: [status, body]. */
function portalSession(form, state) {
  if (!form.customer) return missing('customer');
  if (!state.customers.has(form.customer)) return noSuch('customer', form.customer, 'customer');
  if (form.return_url !== undefined && !isUrl(form.return_url))
    return [400, stripeError('invalid_request_error', 'Not a valid URL', { code: 'url_invalid', param: 'return_url' })];
  const id = randomId('bps_', 24);
  const session = {
    id,
    object: 'billing_portal.session',
    configuration: 'bpc_fake',
    created: Math.floor(Date.now() / 1000),
    customer: form.customer,
    livemode: false,
    locale: null,
    on_behalf_of: null,
    return_url: form.return_url ?? null,
    url: `https://billing.stripe.com/p/session/test_${id.slice(4)}`,
  };
  state.portalSessions.push(session);
  return [200, session];
}

const ENDPOINTS = {
  'POST /v1/checkout/sessions': checkoutSession,
  'POST /v1/billing_portal/sessions': portalSession,
};

export async function startFakeStripe({ apiKey, prices = [], customers = [], host, port } = {}) {
  const state = {
    prices: new Set(prices),
    customers: new Set(customers),
    sessions: [],
    portalSessions: [],
    saved: new Map(), // Idempotency-Key -> {method, path, rawBody, status, body}
  };

  const send = (res, status, body, headers = {}) => sendJson(res, status, body, { 'request-id': randomId('req_', 7), ...headers });

  /** Runs the endpoint once for rec (or replays its saved answer): [status, body, headers]. */
  function run(rec) {
    const key = rec.method === 'POST' ? rec.headers['idempotency-key'] : undefined;
    const prior = key && state.saved.get(key);
    if (prior) {
      if (prior.method !== rec.method || prior.path !== rec.path || prior.rawBody !== rec.rawBody)
        return [
          400,
          stripeError(
            'idempotency_error',
            `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
          ),
          {},
        ];
      return [prior.status, prior.body, { 'idempotent-replayed': 'true', 'original-request': prior.requestId }];
    }
    const endpoint = ENDPOINTS[`${rec.method} ${rec.path}`];
    if (!endpoint) return [404, stripeError('invalid_request_error', `Unrecognized request URL (${rec.method}: ${rec.path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`), {}];
    const [status, body] = endpoint(rec.form, state);
    if (key && status === 200)
      state.saved.set(key, { method: rec.method, path: rec.path, rawBody: rec.rawBody, status, body, requestId: rec.requestId });
    return [status, body, {}];
  }

  async function api(req, res, rec, scenario, ctx) {
    rec.requestId = randomId('req_', 7);
    try {
      rec.form = parseForm(rec.method === 'GET' ? new URL(req.url, 'http://x').search.slice(1) : rec.rawBody);
    } catch (e) {
      rec.form = null;
      return send(res, 400, stripeError('invalid_request_error', e.message));
    }
    const problem = checkEnvelope(rec, apiKey);
    if (problem) return send(res, problem[0], problem[1]);
    switch (scenario.type) {
      case 'error':
        return send(
          res,
          scenario.status ?? 500,
          stripeError(scenario.errorType ?? 'api_error', scenario.message ?? 'An unknown error occurred', { code: scenario.code }),
          scenario.headers,
        );
      case 'rate_limit':
        return send(
          res,
          429,
          stripeError('invalid_request_error', 'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.', { code: 'rate_limit' }),
          scenario.headers,
        );
      case 'hang':
        if (scenario.process) run(rec);
        return new Promise((resolve) => res.on('close', resolve)); // until the client gives up
      default: {
        if (scenario.gate) await ctx.gate(scenario.gate);
        const [status, body, headers] = run(rec);
        return send(res, status, body, { 'request-id': rec.requestId, ...headers });
      }
    }
  }

  const fake = await startFake({ api, defaultScenario: { type: 'ok' }, apiKey, host, port });
  return {
    ...fake,
    /** Checkout Sessions created (each once, whatever the retries). */
    sessions: state.sessions,
    portalSessions: state.portalSessions,
    addPrice(id) {
      state.prices.add(id);
    },
    addCustomer(id) {
      state.customers.add(id);
    },
    /** Forgets requests, scenarios and saved idempotent answers (not prices, customers or sessions). */
    reset() {
      fake.reset();
      state.saved.clear();
    },
  };
}

await cliMain(import.meta.url, startFakeStripe);
