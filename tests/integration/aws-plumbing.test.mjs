// aws-plumbing.test.mjs - the shared AWS plumbing (src/aws/) end to end,
// through the test driver build/tests/aws_probe (tests/aws/aws_probe.c):
//   - DynamoDB ListTables/CreateTable, Secrets Manager CreateSecret/GetSecretValue, S3
//     CreateBucket/PutObject/GetObject/ListObjectsV2 (a key with spaces, unicode and '+') against
//     moto_server, every request verified on the way by @smithy/signature-v4 (aws-front.mjs);
//   - refused signatures and unknown keys named clearly; retries on throttling and 5xx, bounded,
//     and none on a failed condition;
//   - the credential chain's ECS container endpoint and IMDSv2 (fake-aws-metadata.mjs, AWS's own
//     endpoints cannot be reached here), and refresh before expiry.
// moto_server is started and stopped here, on a free loopback port. Without moto_server on the
// PATH the moto part is skipped, saying so; the credential-chain part always runs.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BUILD } from './harness.mjs';
import { startMoto, startFront } from './aws-front.mjs';
import { startMetadataFake } from './fake-aws-metadata.mjs';

const PROBE = path.join(BUILD, 'tests', 'aws_probe');
const KEY = { accessKeyId: 'AKIDKOUMPATEST', secretAccessKey: 'koumpa/test+secret' };
const SESSION = { accessKeyId: 'ASIAKOUMPATEST', secretAccessKey: 'session-secret', sessionToken: 'session/token+=' };
const FAKE_KEYS = [1, 2, 3, 4].map((i) => {
  const n = String(i).padStart(4, '0');
  return { accessKeyId: `AKIDFAKE${n}`, secretAccessKey: `secret-${n}`, sessionToken: `token-${n}` };
});

// The environment without any inherited AWS_* variable, plus `extra`.
function envWith(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_')) env[k] = v;
  return { ...env, AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true', ...extra };
}

// Under `make valgrind` the probe runs under the same wrapper as the server (leaks fail it).
const WRAPPER = (process.env.KOUMPA_TEST_WRAPPER || '').split(/\s+/).filter(Boolean);

// Runs the probe; resolves to {code, lines: [parsed JSON per stdout line], stderr}.
function probe(env, ...args) {
  return new Promise((resolve, reject) => {
    const argv = [...WRAPPER, PROBE, ...args];
    const p = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), WRAPPER.length ? 120_000 : 30_000);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l));
      resolve({ code, lines, stderr: err, result: lines[0] });
    });
  });
}

describe('AWS calls through a verifying front to moto', () => {
  let moto;
  let front;
  let env;
  let skipReason;

  before(async () => {
    moto = await startMoto();
    if (!moto) {
      skipReason = 'moto_server not found (scripts/install-deps.sh --test installs it): skipped';
      console.log(`# ${skipReason}`);
      return;
    }
    front = await startFront({ target: moto.url, credentials: [KEY, SESSION, ...FAKE_KEYS] });
    env = envWith({ AWS_ENDPOINT_URL: front.url, AWS_ACCESS_KEY_ID: KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey, KOUMPA_S3_PATH_STYLE: '1' });
  });
  after(async () => {
    await front?.stop();
    await moto?.stop();
  });

  test('DynamoDB ListTables and CreateTable are signed right', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const before0 = front.stats.verified;
    let r = await probe(env, 'ddb-list-tables');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.deepEqual(JSON.parse(r.result.body).TableNames, []);
    r = await probe(env, 'ddb-create-table', 'koumpa-probe');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(JSON.parse(r.result.body).TableDescription.TableName, 'koumpa-probe');
    r = await probe(env, 'ddb-list-tables');
    assert.deepEqual(JSON.parse(r.result.body).TableNames, ['koumpa-probe']);
    assert.equal(front.stats.verified - before0, 3);
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });

  test('Secrets Manager CreateSecret and GetSecretValue are signed right', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const value = JSON.stringify({ key: 'sk-ant-ünïcode+/=' });
    let r = await probe(env, 'sm-create-secret', 'koumpa/anthropic', value);
    assert.equal(r.code, 0, JSON.stringify(r.result));
    r = await probe(env, 'sm-get-secret', 'koumpa/anthropic');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(JSON.parse(r.result.body).SecretString, value);
    r = await probe(env, 'sm-get-secret', 'koumpa/missing');
    assert.equal(r.code, 1);
    assert.equal(r.result.code, 'ResourceNotFoundException');
    assert.match(r.result.error, /^secretsmanager: HTTP 40\d ResourceNotFoundException: /);
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });

  test('S3 PutObject, GetObject and ListObjectsV2 with spaces, unicode and + in the key', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const key = 'apps/p 1/v1/dé jà+plus €/index (1).html';
    const body = '<h1>héllo + wörld</h1>';
    let r = await probe(env, 's3-create-bucket', 'koumpa-apps');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    r = await probe(env, 's3-put', 'koumpa-apps', key, body, 'text/html; charset=utf-8');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    r = await probe(env, 's3-put', 'koumpa-apps', 'apps/p 1/v1/a+b.css', 'p{}', 'text/css');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    r = await probe(env, 's3-get', 'koumpa-apps', key);
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(r.result.body, body);
    r = await probe(env, 's3-list', 'koumpa-apps', 'apps/p 1/v1/');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.match(r.result.body, /<KeyCount>2<\/KeyCount>/);
    // encoding-type=url: the listing's keys are percent-encoded; decoded, they are exactly the keys put
    const keys = [...r.result.body.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => decodeURIComponent(m[1]));
    assert.deepEqual(keys.sort(), ['apps/p 1/v1/a+b.css', key].sort());
    r = await probe(env, 's3-get', 'koumpa-apps', 'apps/none');
    assert.equal(r.code, 1);
    assert.equal(r.result.code, 'NoSuchKey');
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
    assert.ok(front.stats.byService.s3 >= 6);
  });

  test('consecutive calls with a connection pool reuse one connection; without, one each', async (t) => {
    if (skipReason) return t.skip(skipReason);
    let c0 = front.stats.connections;
    let r = await probe(env, 'ddb-list-tables', '4');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    assert.equal(r.lines.length, 4);
    assert.equal(front.stats.connections - c0, 1);
    c0 = front.stats.connections;
    r = await probe({ ...env, KOUMPA_PROBE_NO_POOL: '1' }, 'ddb-list-tables', '4');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    assert.equal(front.stats.connections - c0, 4);
  });

  test('temporary credentials (session token) are signed right', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const r = await probe({ ...env, AWS_ACCESS_KEY_ID: SESSION.accessKeyId, AWS_SECRET_ACCESS_KEY: SESSION.secretAccessKey,
      AWS_SESSION_TOKEN: SESSION.sessionToken }, 'ddb-list-tables');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });

  test('a wrong secret is refused as SignatureDoesNotMatch and named clearly, an unknown key too', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const rejected0 = front.stats.rejected;
    const wrong = { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' };
    let r = await probe(wrong, 'ddb-list-tables');
    assert.equal(r.code, 1);
    assert.equal(r.result.status, 403);
    assert.equal(r.result.code, 'SignatureDoesNotMatch');
    assert.equal(r.result.attempts, 1);
    assert.match(r.result.error, /^dynamodb: the request signature does not match: check AWS_SECRET_ACCESS_KEY/);
    r = await probe(wrong, 's3-get', 'koumpa-apps', 'x');
    assert.equal(r.result.code, 'SignatureDoesNotMatch');
    assert.match(r.result.error, /^s3: the request signature does not match/);
    assert.doesNotMatch(r.stderr + JSON.stringify(r.lines), /not-the-secret/);
    r = await probe({ ...env, AWS_ACCESS_KEY_ID: 'AKIDUNKNOWN' }, 'sm-get-secret', 'koumpa/anthropic');
    assert.equal(r.result.code, 'InvalidClientTokenId');
    assert.match(r.result.error, /access key id is not known to AWS: check AWS_ACCESS_KEY_ID/);
    assert.equal(front.stats.rejected - rejected0, 3);
  });

  test('throttling and 5xx are retried with backoff, bounded; a failed condition is not', async (t) => {
    if (skipReason) return t.skip(skipReason);
    front.inject.push({ status: 400, code: 'ThrottlingException' },
      { status: 400, code: 'ProvisionedThroughputExceededException' });
    let r = await probe(env, 'ddb-list-tables');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(r.result.attempts, 3);
    front.inject.push({ status: 429, code: 'TooManyRequestsException' }, { status: 500, code: 'InternalError' });
    r = await probe(env, 's3-get', 'koumpa-apps', 'apps/p 1/v1/a+b.css');
    assert.equal(r.code, 0, JSON.stringify(r.result));
    assert.equal(r.result.attempts, 3);
    assert.equal(r.result.body, 'p{}');
    for (let i = 0; i < 6; i++) front.inject.push({ status: 503, code: 'ServiceUnavailable' });
    r = await probe(env, 'ddb-list-tables');
    assert.equal(r.code, 1);
    assert.equal(r.result.attempts, 5);
    assert.match(r.result.error, /dynamodb: HTTP 503 ServiceUnavailable.*retries exhausted.*5 attempts/);
    front.inject.length = 0;
    front.inject.push({ status: 400, code: 'ConditionalCheckFailedException', message: 'The conditional request failed' });
    r = await probe(env, 'ddb-list-tables');
    assert.equal(r.result.attempts, 1);
    assert.equal(r.result.code, 'ConditionalCheckFailedException');
    assert.match(r.result.error, /ConditionalCheckFailedException: The conditional request failed/);
  });

  test('credentials from the ECS endpoint sign requests with their session token', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const fake = await startMetadataFake({ ecsToken: 'ecs-auth' });
    try {
      const ecsEnv = { ...env, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds`, AWS_CONTAINER_AUTHORIZATION_TOKEN: 'ecs-auth' };
      delete ecsEnv.AWS_ACCESS_KEY_ID;
      delete ecsEnv.AWS_SECRET_ACCESS_KEY;
      const rejected0 = front.stats.rejected;
      const r = await probe(ecsEnv, 'ddb-list-tables');
      assert.equal(r.code, 0, JSON.stringify(r.result));
      assert.equal(fake.state.issued, 1);
      assert.equal(front.stats.rejected, rejected0, JSON.stringify(front.stats.rejections));
    } finally {
      await fake.stop();
    }
  });

  test('remote credentials refused as expired are fetched again and the request resent once', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const fake = await startMetadataFake({ lifetimeS: 3600 });
    try {
      const ecsEnv = { ...env, AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds` };
      delete ecsEnv.AWS_ACCESS_KEY_ID;
      delete ecsEnv.AWS_SECRET_ACCESS_KEY;
      front.expired.add('AKIDFAKE0001');
      let r = await probe(ecsEnv, 's3-get', 'koumpa-apps', 'apps/p 1/v1/a+b.css');
      assert.equal(r.code, 0, JSON.stringify(r.result));
      assert.equal(r.result.attempts, 2);
      assert.equal(fake.state.issued, 2);
      assert.match(r.stderr, /refused as expired/);
      // environment credentials cannot be fetched again: the error is returned, named
      front.expired.add(KEY.accessKeyId);
      r = await probe(env, 'ddb-list-tables');
      assert.equal(r.code, 1);
      assert.equal(r.result.attempts, 1);
      assert.match(r.result.error, /^dynamodb: the session token has expired/);
    } finally {
      front.expired.clear();
      await fake.stop();
    }
  });
});

describe('the credential chain: ECS container endpoint and IMDSv2', () => {
  let fake;
  let dir;
  before(() => { dir = mkdtempSync(path.join(tmpdir(), 'koumpa-aws-')); });
  after(async () => {
    await fake?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function restart(opts) {
    await fake?.stop();
    fake = await startMetadataFake(opts);
    return fake;
  }

  test('ECS: one fetch while the credentials are fresh, with the authorization token', async () => {
    await restart({ ecsToken: 'tok-123' });
    const r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds`,
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'tok-123' }), 'creds', '3');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    assert.deepEqual(r.lines.map((l) => [l.access_key_id, l.source, l.has_secret, l.has_token, l.fetches]),
      [['AKIDFAKE0001', 'ecs', true, true, 1], ['AKIDFAKE0001', 'ecs', true, true, 1], ['AKIDFAKE0001', 'ecs', true, true, 1]]);
    assert.ok(r.lines[0].expiration > Date.now() / 1000 + 3000);
    assert.equal(fake.state.requests.length, 1);
    assert.equal(fake.state.requests[0].headers.authorization, 'tok-123');
  });

  test('ECS: 16 threads asking at once share one fetch', async () => {
    await restart({});
    const r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds` }), 'creds-parallel', '16');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.result, { ok: true, distinct_keys: 1, fetches: 1 });
    assert.equal(fake.state.requests.length, 1);
  });

  test('ECS: the token file wins over the token variable; a refused token is an error naming ecs', async () => {
    await restart({ ecsToken: 'from-file' });
    const file = path.join(dir, 'token');
    writeFileSync(file, 'from-file\n');
    let r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds`,
      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: file, AWS_CONTAINER_AUTHORIZATION_TOKEN: 'wrong' }), 'creds', '1');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds`,
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'wrong' }), 'creds', '1');
    assert.equal(r.code, 1);
    assert.match(r.lines[0].error, /aws credentials \(ecs\): GET .* answered HTTP 401/);
    assert.doesNotMatch(r.lines[0].error, /wrong/);
  });

  test('ECS: credentials within 5 minutes of expiry are fetched again at each use', async () => {
    await restart({ lifetimeS: 240 });
    const r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds` }), 'creds', '3');
    assert.equal(r.code, 0);
    assert.deepEqual(r.lines.map((l) => [l.access_key_id, l.fetches]),
      [['AKIDFAKE0001', 1], ['AKIDFAKE0002', 2], ['AKIDFAKE0003', 3]]);
  });

  test('ECS: a failed refresh keeps the current credentials while they are valid', async () => {
    await restart({ lifetimeS: 240, failAfter: 1 });
    const r = await probe(envWith({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fake.url}/creds` }), 'creds', '2');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    assert.deepEqual(r.lines.map((l) => [l.ok, l.access_key_id, l.fetches]), [[true, 'AKIDFAKE0001', 1], [true, 'AKIDFAKE0001', 2]]);
    assert.match(r.stderr, /refresh failed, using the current ones/);
  });

  test('IMDSv2: token first, then role and credentials with the token; refreshed before expiry', async () => {
    await restart({ lifetimeS: 3600 });
    const env = envWith({ AWS_EC2_METADATA_SERVICE_ENDPOINT: fake.url });
    delete env.AWS_EC2_METADATA_DISABLED;
    let r = await probe(env, 'creds', '2');
    assert.equal(r.code, 0, JSON.stringify(r.lines));
    assert.deepEqual(r.lines.map((l) => [l.access_key_id, l.source, l.has_token, l.fetches]),
      [['AKIDFAKE0001', 'imds', true, 1], ['AKIDFAKE0001', 'imds', true, 1]]);
    assert.deepEqual(fake.state.requests.map((q) => `${q.method} ${q.path}`), [
      'PUT /latest/api/token',
      'GET /latest/meta-data/iam/security-credentials/',
      'GET /latest/meta-data/iam/security-credentials/koumpa-role',
    ]);
    assert.equal(fake.state.requests[0].headers['x-aws-ec2-metadata-token-ttl-seconds'], '21600');
    assert.equal(fake.state.requests[2].headers['x-aws-ec2-metadata-token'], 'imds-token-1');

    await restart({ lifetimeS: 200 });
    r = await probe({ ...env, AWS_EC2_METADATA_SERVICE_ENDPOINT: fake.url }, 'creds', '2');
    assert.deepEqual(r.lines.map((l) => [l.access_key_id, l.fetches]), [['AKIDFAKE0001', 1], ['AKIDFAKE0002', 2]]);
  });

  test('the environment comes first; with nothing anywhere the error says what to set', async () => {
    let r = await probe(envWith({ AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 's',
      AWS_CONTAINER_CREDENTIALS_FULL_URI: 'http://127.0.0.1:1/creds' }), 'creds', '1');
    assert.deepEqual([r.lines[0].access_key_id, r.lines[0].source, r.lines[0].fetches], ['AKIDENV', 'env', 0]);
    r = await probe(envWith({}), 'creds', '1');
    assert.equal(r.code, 1);
    assert.match(r.lines[0].error, /no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  });
});
