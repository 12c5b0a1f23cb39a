// aws-faults.test.mjs - AWS faults through the real code paths: `koumpa serve` on S3 with its
// Anthropic key in Secrets Manager (and `koumpa migrate` / `serve` on DynamoDB), moto_server behind
// the verifying SigV4 front (aws-front.mjs), which injects the faults: an operation's next N
// requests answered with AWS's throttling error or a 500 in the service's own wire format
// (DynamoDB JSON __type, Secrets Manager JSON 1.1, S3 XML <Error><Code>), a GetSecretValue held
// unanswered, access keys made unknown or expired. Credentials come from the environment or from
// the ECS container endpoint (fake-aws-metadata.mjs), which hands out a new key at each fetch.
//   - throttling then success (S3 SlowDown on GetObject, Secrets Manager ThrottlingException,
//     DynamoDB ThrottlingException / ProvisionedThroughputExceededException): attempts counted at the front;
//   - 5xx exhausted: the apps origin answers 503 naming "s3 GetObject", and stays healthy;
//   - credentials with a short Expiration are fetched again before it, never sent once due;
//   - one credentials provider per process: S3 and Secrets Manager share one ECS fetch;
//   - wrong credentials: serve does not start (S3, DynamoDB), naming AWS's error;
//   - a held GetSecretValue (a key refresh after the TTL) does not hold the generation loop.
// A failed condition on a spend (ConditionalCheckFailed on credits: KP_ECONFLICT / KP_ECREDITS,
// nothing half-written) is checked by tests/store/store_contract.c (check_credits, race), run on
// DynamoDB by store-contract.test.mjs. Without moto_server the file is skipped, saying so. No
// timing is asserted: waits are bounded polls, and "does not hold" is an ordering (the generation
// ends while the front still holds the GetSecretValue).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startMotoBehindFront } from './aws-front.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { startMetadataFake } from './fake-aws-metadata.mjs';
import { api, runKoumpa, signup, startServer } from './harness.mjs';
import { serveFails } from './secrets-helpers.mjs';

const REGION = 'us-east-1';
const BUCKET = 'koumpa-faults';
const SECRET_ID = 'koumpa/anthropic';
const KEY = { accessKeyId: 'AKIDKOUMPAFAULTS', secretAccessKey: 'faults/test+secret' };
const API_KEY = 'sk-ant-faults-key';
// the keys fake-aws-metadata.mjs hands out, one per fetch
const FAKE_KEYS = Array.from({ length: 60 }, (_, i) => {
  const n = String(i + 1).padStart(4, '0');
  return { accessKeyId: `AKIDFAKE${n}`, secretAccessKey: `secret-${n}`, sessionToken: `token-${n}` };
});
const INDEX = '<!doctype html><p>faults</p>';
const APP = `<file path="index.html">\n${INDEX}\n</file>\n`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls cond() every 50 ms for at most ms; returns its last value. */
async function until(cond, ms = 20_000) {
  const deadline = Date.now() + ms;
  let v = await cond();
  while (!v && Date.now() < deadline) {
    await sleep(50);
    v = await cond();
  }
  return v;
}

/** A secret made on moto itself (as Terraform would), not through the front. */
async function createSecret(moto, name, value) {
  const r = await fetch(moto.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': 'secretsmanager.CreateSecret',
      authorization: `AWS4-HMAC-SHA256 Credential=${KEY.accessKeyId}/20260101/${REGION}/secretsmanager/aws4_request, ` +
        `SignedHeaders=host, Signature=${'0'.repeat(64)}`,
    },
    body: JSON.stringify({ Name: name, SecretString: value }),
  });
  if (r.status !== 200) throw new Error(`CreateSecret: ${r.status} ${await r.text()}`);
}

/** One generation, waited for; returns the project id. */
async function generate(server, token) {
  const res = await api(server, 'POST', '/v1/projects', { token, body: { prompt: 'A page.' } });
  assert.equal(res.status, 202, res.text);
  const status = await until(async () => {
    const p = await api(server, 'GET', `/v1/projects/${res.json.id}`, { token });
    const v = p.json.versions.find((x) => x.n === 1);
    return v && v.status !== 'generating' && v.status;
  });
  assert.equal(status, 'ready');
  return res.json.id;
}

const appUrl = (server, id) => `${server.appsUrl}/${id}/index.html`;
const count = (front, op) => front.operations[op] || 0;

/** `koumpa <args>` in a hermetic environment (no inherited KOUMPA_ or AWS_ variable) plus env. */
function koumpa(args, env) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(KOUMPA_|AWS_)/.test(k)));
  return runKoumpa(args, { env: { ...base, ...env } });
}

describe('AWS faults, through a verifying front that injects them', () => {
  let moto;
  let front;
  let anthropic;
  let skipReason;
  let dir;

  before(async () => {
    ({ moto, front, skipReason } = await startMotoBehindFront({ credentials: [KEY, ...FAKE_KEYS] }));
    if (skipReason) return;
    const r = await fetch(`${moto.url}/${BUCKET}`, { method: 'PUT' });
    assert.equal(r.status, 200);
    await createSecret(moto, SECRET_ID, API_KEY);
    anthropic = await startFakeAnthropic({ scenario: { type: 'text', text: APP } });
    dir = mkdtempSync(path.join(tmpdir(), 'koumpa-aws-faults-'));
  });

  after(async () => {
    await anthropic?.close();
    await front?.stop();
    await moto?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** serve on S3, its Anthropic key in Secrets Manager (unless secrets: false); credentials: the
   * environment's KEY, or `meta`'s ECS endpoint. */
  function serverEnv({ meta, secrets = true, ...extra } = {}) {
    const creds = meta
      ? { AWS_CONTAINER_CREDENTIALS_FULL_URI: `${meta.url}/creds` }
      : { AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey };
    return {
      AWS_REGION: REGION,
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_ENDPOINT_URL: front.url,
      KOUMPA_S3_PATH_STYLE: '1',
      KOUMPA_STORAGE: 's3',
      KOUMPA_S3_BUCKET: BUCKET,
      ...(secrets ? { KOUMPA_SECRETS: 'aws', KOUMPA_SECRET_ID_ANTHROPIC: SECRET_ID } : { ANTHROPIC_API_KEY: API_KEY }),
      ANTHROPIC_BASE_URL: anthropic.url,
      KOUMPA_GENERATION_COST: '0',
      KOUMPA_LOG_LEVEL: 'info',
      ...creds,
      ...extra,
    };
  }

  test('S3 and Secrets Manager share one credentials provider: one ECS fetch for both', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const meta = await startMetadataFake({ lifetimeS: 3600 });
    const rejected0 = front.stats.rejected;
    const server = await startServer({ env: serverEnv({ meta }) });
    try {
      const user = await signup(server);
      const id = await generate(server, user.token);
      const page = await fetch(appUrl(server, id));
      assert.equal(page.status, 200);
      assert.equal(await page.text(), INDEX);
      // the start-up GetSecretValue and HeadBucket, the generation's PutObject, the GetObject: one fetch
      assert.ok(count(front, 'secretsmanager GetSecretValue') >= 1 && count(front, 's3 PutObject') >= 1);
      assert.equal(meta.state.requests.length, 1, JSON.stringify(meta.state.requests.map((r) => r.path)));
      assert.equal(front.stats.rejected, rejected0, JSON.stringify(front.stats.rejections));
    } finally {
      await server.stop();
      await meta.stop();
    }
  });

  describe('one server on S3 and Secrets Manager', () => {
    let server;
    let user;
    let project;
    before(async () => {
      if (skipReason) return;
      server = await startServer({ env: serverEnv({ KOUMPA_SECRETS_TTL: '1' }) });
      user = await signup(server);
      project = await generate(server, user.token);
    });
    after(async () => { await server?.stop(); });

    test('throttling then success: S3 SlowDown twice on GetObject, the file is served on the third attempt', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const gets0 = count(front, 's3 GetObject');
      const fault = front.fail({ service: 's3', operation: 'GetObject', times: 2, status: 503, code: 'SlowDown',
        message: 'Please reduce your request rate.' });
      const page = await fetch(appUrl(server, project));
      assert.equal(page.status, 200);
      assert.equal(await page.text(), INDEX);
      assert.equal(fault.times, 0);
      assert.equal(count(front, 's3 GetObject') - gets0, 3);
    });

    test('throttling then success: Secrets Manager ThrottlingException twice, the key is read on the third attempt', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const reads0 = count(front, 'secretsmanager GetSecretValue');
      const fault = front.fail({ service: 'secretsmanager', operation: 'GetSecretValue', times: 2, status: 400,
        code: 'ThrottlingException', message: 'Rate exceeded' });
      await sleep(1500); // past KOUMPA_SECRETS_TTL: the next generation's key read starts a refresh
      await generate(server, user.token);
      assert.ok(await until(() => count(front, 'secretsmanager GetSecretValue') - reads0 >= 3));
      assert.equal(fault.times, 0);
      assert.equal(count(front, 'secretsmanager GetSecretValue') - reads0, 3, 'the third attempt succeeded');
      assert.doesNotMatch(server.logs(), /secret could not be read again/);
    });

    test('5xx exhausted: the apps origin answers 503 naming s3 GetObject, then serves again', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const gets0 = count(front, 's3 GetObject');
      const fault = front.fail({ service: 's3', operation: 'GetObject', times: 5, status: 500, code: 'InternalError',
        message: 'We encountered an internal error. Please try again.' });
      const page = await fetch(appUrl(server, project));
      const text = await page.text();
      assert.equal(page.status, 503, text);
      assert.equal(page.headers.get('retry-after'), '1');
      assert.match(text, /^503 the app's files cannot be read now \(s3 GetObject: HTTP 500 InternalError: /);
      assert.match(text, /5 attempts/);
      assert.equal(fault.times, 0);
      assert.equal(count(front, 's3 GetObject') - gets0, 5);
      assert.match(server.logs(), /"msg":"apps origin: the storage cannot serve a file"/);
      // healthy afterwards, and the same file is served
      const health = await fetch(`${server.url}/healthz`);
      assert.equal(health.status, 200);
      const again = await fetch(appUrl(server, project));
      assert.equal(again.status, 200);
      assert.equal(await again.text(), INDEX);
    });

    test('a held GetSecretValue (a key refresh after the TTL) does not hold the generation loop', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const reads0 = count(front, 'secretsmanager GetSecretValue');
      await sleep(1500); // past KOUMPA_SECRETS_TTL
      const hold = front.hold({ service: 'secretsmanager', operation: 'GetSecretValue' });
      try {
        const before = anthropic.requests.length;
        // the generation reads the key on the loop thread: it gets the cached one and goes on
        await generate(server, user.token);
        const plans = await api(server, 'GET', '/v1/plans');
        assert.equal(plans.status, 200);
        // ...while the refresh that read started is still under way: held at the front, its client
        // still waiting (or, on a slow machine, between attempts). A read on the loop would have let
        // the generation go on only after all 3 attempts, each held until it timed out.
        assert.ok(hold.held === 1 || hold.total < 3, `held now ${hold.held}, in all ${hold.total}`);
        assert.equal(count(front, 'secretsmanager GetSecretValue') - reads0, hold.total);
        assert.equal(anthropic.requests.length, before + 1);
        assert.equal(anthropic.requests[before].headers['x-api-key'], API_KEY);
      } finally {
        hold.release();
      }
      assert.ok(await until(() => hold.held === 0));
    });
  });

  test('credentials with a short Expiration are fetched again before it, and never sent once due', async (t) => {
    if (skipReason) return t.skip(skipReason);
    // 303 s: fresh for 3 s, then within the 5 minutes before Expiration, when Koumpa must fetch again
    const meta = await startMetadataFake({ lifetimeS: 303 });
    const server = await startServer({ env: serverEnv({ meta }) });
    try {
      const user = await signup(server);
      const id = await generate(server, user.token);
      const issued = meta.state.issued;
      await sleep(3500);
      // AWS would still take them, but they are due for renewal: refuse them as expired, so that
      // any request still signed with one shows (as a rejection) at the front
      for (let i = 1; i <= issued; i++) front.expired.add(FAKE_KEYS[i - 1].accessKeyId);
      const rejected0 = front.stats.rejected;
      const page = await fetch(appUrl(server, id));
      assert.equal(page.status, 200);
      assert.equal(await page.text(), INDEX);
      assert.equal(meta.state.issued, issued + 1, 'fetched once more');
      assert.equal(front.stats.rejected, rejected0, JSON.stringify(front.stats.rejections.slice(-3)));
      assert.doesNotMatch(server.logs(), /refused as expired/);
      assert.match(server.logs(), /"msg":"aws credentials fetched"/);
    } finally {
      front.expired.clear();
      await server.stop();
      await meta.stop();
    }
  });

  describe('wrong credentials: serve does not start, and says why', () => {
    test('S3: a wrong secret key (SignatureDoesNotMatch), an unknown key id (InvalidAccessKeyId)', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const env = serverEnv({ secrets: false });
      let out = await serveFails(dir, { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
      assert.match(out, /"msg":"cannot start"/);
      assert.match(out, /s3 ListObjectsV2: the request signature does not match: check AWS_SECRET_ACCESS_KEY/);
      assert.match(out, /SignatureDoesNotMatch/);
      assert.doesNotMatch(out, /not-the-secret/);
      out = await serveFails(dir, { ...env, AWS_ACCESS_KEY_ID: 'AKIDNOTKNOWN' });
      assert.match(out, /s3 ListObjectsV2: .*access key id is not known to AWS.*InvalidAccessKeyId/);
    });

    test('DynamoDB: the store is pinged at start-up; a wrong key or secret stops serve naming the error', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const prefix = `faults${process.pid}_`;
      const env = {
        AWS_REGION: REGION, AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL: front.url,
        AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
        KOUMPA_DB: 'dynamodb', KOUMPA_DYNAMODB_TABLE_PREFIX: prefix,
      };
      const data = mkdtempSync(path.join(dir, 'ddb-'));
      const migrate = await koumpa(['migrate'], { ...env, KOUMPA_DATA_DIR: data });
      assert.equal(migrate.code, 0, migrate.stderr);
      let out = await serveFails(dir, { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
      assert.match(out, /KOUMPA_DB=dynamodb: the table cannot be read: dynamodb: the request signature does not match: check AWS_SECRET_ACCESS_KEY/);
      assert.match(out, /SignatureDoesNotMatch/);
      out = await serveFails(dir, { ...env, AWS_ACCESS_KEY_ID: 'AKIDNOTKNOWN' });
      assert.match(out, /KOUMPA_DB=dynamodb: the table cannot be read: dynamodb: .*UnrecognizedClientException/);
      const wrong = await koumpa(['migrate'], { ...env, KOUMPA_DATA_DIR: data, AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stdout + wrong.stderr, /SignatureDoesNotMatch/);
    });
  });

  test('DynamoDB throttling then success: koumpa migrate retries ThrottlingException and ProvisionedThroughputExceeded', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const env = {
      AWS_REGION: REGION, AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL: front.url,
      AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
      KOUMPA_DB: 'dynamodb', KOUMPA_DYNAMODB_TABLE_PREFIX: `throttled${process.pid}_`,
      KOUMPA_DATA_DIR: mkdtempSync(path.join(dir, 'ddb-')),
    };
    const calls0 = front.stats.byService.dynamodb || 0;
    const throttled = front.fail({ service: 'dynamodb', times: 2, status: 400, code: 'ThrottlingException', message: 'Rate exceeded' });
    const provisioned = front.fail({ service: 'dynamodb', times: 1, status: 400, code: 'ProvisionedThroughputExceededException',
      message: 'The level of configured provisioned throughput for the table was exceeded.' });
    let r = await koumpa(['migrate'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /migrated DynamoDB table throttled\d+_koumpa: created, plans seeded/);
    assert.deepEqual([throttled.times, provisioned.times], [0, 0]);
    const calls = front.stats.byService.dynamodb - calls0;
    // exhausted: 5 attempts of 500, the error names the service, the code and the attempts
    const failing = front.fail({ service: 'dynamodb', times: 5, status: 500, code: 'InternalServerError', message: 'Internal server error' });
    r = await koumpa(['migrate'], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /dynamodb: HTTP 500 InternalServerError.*5 attempts/);
    assert.equal(failing.times, 0);
    assert.ok(calls >= 4, `${calls} DynamoDB requests`);
  });
});
