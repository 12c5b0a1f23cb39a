// secrets-aws.test.mjs - KOUMPA_SECRETS=aws end to end: `koumpa serve` reads its
// secrets with GetSecretValue from moto_server behind the verifying SigV4 front
// (aws-front.mjs: every request's signature recomputed by @smithy/signature-v4).
// The secrets are made here with the Secrets Manager JSON API, signed by smithy.
//   - the Anthropic key (a plain-text secret) reaches the fake Anthropic API as x-api-key;
//   - the Stripe secret, a JSON object: a webhook signed (by the `stripe` package) with its
//     STRIPE_WEBHOOK_SECRET is accepted, one signed otherwise refused; checkout reaches the
//     fake Stripe API with its STRIPE_SECRET_KEY;
//   - with KOUMPA_SECRETS_TTL=1 a rotated secret (PutSecretValue) is used without a restart;
//   - the JWT secret from KOUMPA_SECRET_ID_JWT signs and checks tokens; without it, from the environment;
//   - a wrong AWS secret key, a missing secret and a SecretBinary secret stop serve before it
//     answers, the log naming the secret and the error; no secret value is ever in the output.
// Without moto_server (scripts/install-deps.sh --test installs it) all of it is skipped, saying so.
// No timing is asserted: each rotation is followed by a wait of 1.5 s, more than the TTL on
// the server's own clock; the first read after it starts a background read, and the checks
// repeat (bounded) until the new value is in use.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { rm } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

import { startFront, startMoto } from './aws-front.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { startFakeStripe } from './fake-stripe.mjs';
import { api, signup, startServer, uniqueEmail } from './harness.mjs';
import { generationKey, localToken, serveFails, startedLine } from './secrets-helpers.mjs';
import { deliver, nowSeconds, stripeId } from './stripe-events.mjs';

const REGION = 'us-east-1';
const AWS_KEY = { accessKeyId: 'AKIDKOUMPASECRETS', secretAccessKey: 'secrets/test+key' };
const APP = '<file path="index.html">\n<p>hi</p>\n</file>\n';
const PAST_TTL_MS = 1500;

const secret = (label) => `${label}-${randomBytes(24).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One Secrets Manager JSON API call through the front, signed as the AWS SDK signs it. */
async function secretsManager(front, action, body) {
  const url = new URL(front.url);
  const payload = JSON.stringify(body);
  const signer = new SignatureV4({ credentials: AWS_KEY, region: REGION, service: 'secretsmanager', sha256: Sha256 });
  const signed = await signer.sign({
    method: 'POST',
    protocol: 'http:',
    hostname: url.hostname,
    port: Number(url.port),
    path: '/',
    query: {},
    headers: {
      host: url.host,
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': `secretsmanager.${action}`,
    },
    body: payload,
  });
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method: 'POST', path: '/', headers: signed.headers },
      (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`${action}: HTTP ${res.statusCode} ${text}`));
          else resolve(JSON.parse(text));
        });
      });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The environment the server gets to reach Secrets Manager through the front. */
function awsEnv(front, extra = {}) {
  return {
    KOUMPA_SECRETS: 'aws',
    AWS_REGION: REGION,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: front.url,
    AWS_ACCESS_KEY_ID: AWS_KEY.accessKeyId,
    AWS_SECRET_ACCESS_KEY: AWS_KEY.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}

/** An event type Koumpa does not act on: answered 200 "ignored" once its signature holds. */
function ignoredEvent() {
  return { id: stripeId('evt'), object: 'event', type: 'customer.created', created: nowSeconds(),
    data: { object: { id: stripeId('cus'), object: 'customer' } }, livemode: false };
}

describe('secrets from AWS Secrets Manager, through a verifying front to moto', () => {
  let moto;
  let front;
  let anthropic;
  let stripeApi;
  let server;
  let skipReason;
  const ids = { anthropic: 'koumpa/anthropic', stripe: 'koumpa/stripe', jwt: 'koumpa/jwt' };
  const values = {
    key1: `sk-ant-${secret('one')}`,
    key2: `sk-ant-${secret('two')}`,
    stripeKey: `sk_test_${secret('stripe')}`,
    webhook1: `whsec_${secret('one')}`,
    webhook2: `whsec_${secret('two')}`,
    jwt: secret('jwt'),
    envJwt: secret('env-jwt'),
  };

  before(async () => {
    moto = await startMoto();
    if (!moto) {
      skipReason = 'moto_server not found (scripts/install-deps.sh --test installs it): skipped';
      console.log(`# ${skipReason}`);
      return;
    }
    front = await startFront({ target: moto.url, credentials: [AWS_KEY] });
    await secretsManager(front, 'CreateSecret', { Name: ids.anthropic, SecretString: `${values.key1}\n` });
    await secretsManager(front, 'CreateSecret', { Name: ids.stripe,
      SecretString: JSON.stringify({ STRIPE_SECRET_KEY: values.stripeKey, STRIPE_WEBHOOK_SECRET: values.webhook1 }) });
    await secretsManager(front, 'CreateSecret', { Name: ids.jwt, SecretString: JSON.stringify({ jwt_secret: values.jwt }) });
    await secretsManager(front, 'CreateSecret', { Name: 'koumpa/binary',
      SecretBinary: Buffer.from(values.key1).toString('base64') });
    anthropic = await startFakeAnthropic({ scenario: { type: 'text', text: APP } });
    stripeApi = await startFakeStripe({ apiKey: values.stripeKey, prices: ['price_pro_aws'] });
    server = await startServer({
      env: awsEnv(front, {
        KOUMPA_SECRET_ID_ANTHROPIC: ids.anthropic,
        KOUMPA_SECRET_ID_STRIPE: ids.stripe,
        KOUMPA_SECRET_ID_JWT: ids.jwt,
        KOUMPA_JWT_SECRET: values.envJwt, // not read: KOUMPA_SECRET_ID_JWT wins
        ANTHROPIC_BASE_URL: anthropic.url,
        STRIPE_API_BASE: stripeApi.url,
        KOUMPA_SECRETS_TTL: '1',
        KOUMPA_GENERATION_COST: '0',
        KOUMPA_LOG_LEVEL: 'debug',
      }),
    });
  });

  after(async () => {
    await server?.stop();
    await anthropic?.close();
    await stripeApi?.close();
    await front?.stop();
    await moto?.stop();
  });

  test('the Anthropic key (plain text, its newline stripped) reaches the provider as x-api-key', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const user = await signup(server);
    assert.equal(await generationKey(server, anthropic, user.token), values.key1);
    const lines = server.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const started = startedLine(server);
    assert.equal(started.generation, true);
    assert.equal(started.config.ANTHROPIC_API_KEY, '(set)');
    assert.equal(started.config.STRIPE_SECRET_KEY, '(set)');
    assert.equal(started.config.STRIPE_WEBHOOK_SECRET, '(set)');
    assert.equal(started.config.KOUMPA_SECRETS, 'aws');
    assert.ok(lines.some((l) => l.msg === 'secret read from Secrets Manager' && l.secret === 'ANTHROPIC_API_KEY' &&
      l.secret_id === ids.anthropic), 'a debug line names the secret id');
    assert.ok(front.stats.byService.secretsmanager >= 3 + 3, JSON.stringify(front.stats));
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });

  test('the JWT secret from Secrets Manager (a JSON object, alias jwt_secret) signs and checks tokens', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const user = await signup(server);
    const me = async (token) => (await api(server, 'GET', '/v1/me', { token })).status;
    assert.equal(await me(user.token), 200);
    assert.equal(await me(await localToken(user.user.id, values.jwt)), 200);
    assert.equal(await me(await localToken(user.user.id, values.envJwt)), 401, 'the environment value is not used');
  });

  test('without KOUMPA_SECRET_ID_JWT the JWT secret comes from the environment', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const other = await startServer({ env: awsEnv(front, { KOUMPA_SECRET_ID_ANTHROPIC: ids.anthropic,
      KOUMPA_JWT_SECRET: values.envJwt, ANTHROPIC_BASE_URL: anthropic.url, KOUMPA_LOG_LEVEL: 'info' }) });
    try {
      const user = await signup(other);
      assert.equal((await api(other, 'GET', '/v1/me', { token: await localToken(user.user.id, values.envJwt) })).status, 200);
      assert.equal(startedLine(other).config.ANTHROPIC_API_KEY, '(set)');
      assert.ok(!other.logs().includes(values.envJwt));
    } finally {
      await other.stop();
    }
  });

  test('the Stripe secret as a JSON object: its webhook secret checks signatures, its key calls Stripe', async (t) => {
    if (skipReason) return t.skip(skipReason);
    let res = await deliver(server, ignoredEvent(), { secret: values.webhook1 });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.received, true);
    res = await deliver(server, ignoredEvent(), { secret: values.webhook2 });
    assert.equal(res.status, 400, res.text);

    const email = uniqueEmail('admin');
    const admin = await signup(server, email);
    const grant = await server.run(['admin', 'grant', email]);
    assert.equal(grant.code, 0, grant.stderr);
    res = await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: { stripe_price_id: 'price_pro_aws' } });
    assert.ok(res.status === 200 || res.status === 201, res.text);
    const user = await signup(server);
    res = await api(server, 'POST', '/v1/billing/checkout', { token: user.token, body: { plan_id: 'pro' } });
    assert.equal(res.status, 200, res.text);
    const call = stripeApi.requests.find((r) => r.path === '/v1/checkout/sessions');
    assert.equal(call.headers.authorization, `Bearer ${values.stripeKey}`);
  });

  test('rotated secrets (PutSecretValue) are used after KOUMPA_SECRETS_TTL, without a restart', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const user = await signup(server);
    await secretsManager(front, 'PutSecretValue', { SecretId: ids.anthropic, SecretString: values.key2 });
    await secretsManager(front, 'PutSecretValue', { SecretId: ids.stripe,
      SecretString: JSON.stringify({ secret_key: values.stripeKey, webhook_secret: values.webhook2 }) });
    await sleep(PAST_TTL_MS);
    // the first read after the TTL gets the cached value and starts a background GetSecretValue
    // (never on the caller's thread); the new value is used once that read has ended
    let key;
    for (let i = 0; i < 20 && key !== values.key2; i++) key = await generationKey(server, anthropic, user.token);
    assert.equal(key, values.key2);
    let res;
    for (let i = 0; i < 50; i++) {
      res = await deliver(server, ignoredEvent(), { secret: values.webhook2 });
      if (res.status === 200) break;
      await sleep(100);
    }
    assert.equal(res.status, 200, res.text);
    res = await deliver(server, ignoredEvent(), { secret: values.webhook1 });
    assert.equal(res.status, 400, 'the old webhook secret no longer signs');
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });

  test('no secret value appears in the server output', (t) => {
    if (skipReason) return t.skip(skipReason);
    const out = server.logs();
    for (const [name, value] of Object.entries(values)) assert.ok(!out.includes(value), `${name} is in the output`);
    assert.ok(!out.includes(AWS_KEY.secretAccessKey), 'the AWS secret key is in the output');
  });

  describe('settings that stop start-up before the server answers', () => {
    let dir;
    before(() => { dir = mkdtempSync(path.join(tmpdir(), 'koumpa-secrets-aws-')); });
    after(async () => { await rm(dir, { recursive: true, force: true }); });

    /** serve must stop before it answers, printing no value. */
    async function serveStops(env) {
      const out = await serveFails(dir, env);
      assert.doesNotMatch(out, /koumpa serving/);
      for (const [name, value] of Object.entries(values)) assert.ok(!out.includes(value), `${name} is in the output`);
      return out;
    }

    test('a wrong AWS secret key: the signature error, naming the secret', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const rejected0 = front.stats.rejected;
      const out = await serveStops(awsEnv(front, { AWS_SECRET_ACCESS_KEY: 'not-the-aws-secret',
        KOUMPA_SECRET_ID_ANTHROPIC: ids.anthropic }));
      assert.match(out, /"msg":"cannot start"/);
      assert.match(out, /secret koumpa\/anthropic \(KOUMPA_SECRET_ID_ANTHROPIC\): secretsmanager: the request signature does not match: check AWS_SECRET_ACCESS_KEY/);
      assert.match(out, /SignatureDoesNotMatch/);
      assert.ok(!out.includes('not-the-aws-secret'));
      assert.equal(front.stats.rejected - rejected0, 1, 'refused once, not retried');
    });

    test('an unknown access key id', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const out = await serveStops(awsEnv(front, { AWS_ACCESS_KEY_ID: 'AKIDNOTKNOWN', KOUMPA_SECRET_ID_STRIPE: ids.stripe }));
      assert.match(out, /secret koumpa\/stripe \(KOUMPA_SECRET_ID_STRIPE\): .*access key id is not known to AWS/);
    });

    test('a secret that does not exist', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const out = await serveStops(awsEnv(front, { KOUMPA_SECRET_ID_ANTHROPIC: 'koumpa/nope' }));
      assert.match(out, /secret koumpa\/nope \(KOUMPA_SECRET_ID_ANTHROPIC\): secretsmanager: HTTP 40\d ResourceNotFoundException/);
    });

    test('a SecretBinary secret', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const out = await serveStops(awsEnv(front, { KOUMPA_SECRET_ID_JWT: 'koumpa/binary' }));
      assert.match(out, /secret koumpa\/binary holds a SecretBinary: Koumpa reads SecretString only/);
    });

    test('no region, and secret ids without KOUMPA_SECRETS=aws (no moto needed)', async () => {
      let out = await serveStops(awsEnv(front ?? { url: 'http://127.0.0.1:1' }, { AWS_REGION: '', KOUMPA_SECRET_ID_ANTHROPIC: ids.anthropic }));
      assert.match(out, /KOUMPA_SECRETS=aws needs AWS_REGION/);
      out = await serveStops({ KOUMPA_SECRET_ID_STRIPE: ids.stripe });
      assert.match(out, /KOUMPA_SECRET_ID_STRIPE is set but KOUMPA_SECRETS is not aws/);
    });
  });
});
