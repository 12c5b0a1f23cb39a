// store-contract-suite.mjs - the store contract suite (tests/store/store_contract.c) on every backend,
// for the test files that run its checks (store-contract.test.mjs, store-contract-generations.test.mjs,
// split so that each stays well inside the per-file timeout): SQLite in a temporary directory, and
// DynamoDB on moto behind the SigV4-verifying front (aws-front.mjs). moto serves one request at a time
// (moto_single.py) so that the races (200 spends against 10 credits, 20 sign-ups with one e-mail, 15
// admissions against a limit of 4) test the backend's conditions, not moto's own races. Without moto
// (python3 -c 'import moto') the DynamoDB part is skipped, saying so.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BUILD } from './harness.mjs';
import { startDynamoPeer } from './aws-front.mjs';

const CONTRACT = path.join(BUILD, 'tests', 'store_contract');
const KOUMPA = path.join(BUILD, 'koumpa');
const KEY = { accessKeyId: 'AKIDSTORETEST', secretAccessKey: 'store/test+secret' };
const WRAPPER = (process.env.KOUMPA_TEST_WRAPPER || '').split(/\s+/).filter(Boolean);
// Under `make valgrind` (a wrapper set) the contract binary's checks are skipped: that stage checks koumpa
// itself, and `make sanitize` already runs this binary under ASan + LeakSanitizer.
const CONTRACT_SKIP = WRAPPER.length > 0 && 'the contract binary is leak-checked by make sanitize; valgrind wraps koumpa only';

function baseEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('KOUMPA_')) env[k] = v;
  return { ...env, ...extra };
}

// Runs a command; resolves to {code, stdout, stderr}.
function run(argv, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), WRAPPER.length ? 600_000 : 240_000);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: out, stderr: err });
    });
  });
}

// One check of the suite.
async function contract(backend, where, check, env) {
  const r = await run([CONTRACT, backend, where, check], env);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line, `no result from ${check}: ${r.stderr.slice(-2000)}`);
  const result = JSON.parse(line);
  assert.deepEqual(result.failures, [], `${backend} ${check}`);
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  return result;
}

/**
 * Registers the suite's tests for checks (each run on SQLite, then on DynamoDB; the first must be
 * 'migrate'). cli: also the table definition, `koumpa migrate` and the missing-operation check.
 * prefixTag makes the DynamoDB table's prefix distinct per file.
 */
export function storeContract(checks, { cli = false, prefixTag = '' } = {}) {
  describe(`store contract on SQLite: ${checks.join(', ')}`, () => {
    let dir;
    before(() => { dir = mkdtempSync(path.join(tmpdir(), 'koumpa-contract-')); });
    after(() => rmSync(dir, { recursive: true, force: true }));
    for (const check of checks) {
      test(check, { skip: CONTRACT_SKIP }, async () => {
        const r = await contract('sqlite', path.join(dir, 'koumpa.db'), check, baseEnv({}));
        if (check === 'race') assert.deepEqual([r.figures.spends_ok, r.figures.creates_ok], [10, 1]);
        if (check === 'admit_race') assert.equal(r.figures.admitted, 4);
      });
    }
  });

  if (cli) test('the DynamoDB table definition: PK/SK, GSI1 (projects by user), GSI2 (generating versions by lease)', async () => {
    const r = await contract('dynamodb', 'def_', 'tables', baseEnv({}));
    const d = r.definition;
    assert.equal(d.TableName, 'def_koumpa');
    assert.equal(d.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(d.KeySchema.map((k) => [k.AttributeName, k.KeyType]), [['PK', 'HASH'], ['SK', 'RANGE']]);
    assert.deepEqual(d.GlobalSecondaryIndexes.map((g) => [g.IndexName, g.KeySchema.map((k) => k.AttributeName)]),
      [['GSI1', ['GSI1PK', 'GSI1SK']], ['GSI2', ['GSI2PK', 'GSI2SK']]]);
    const defined = d.AttributeDefinitions.map((a) => a.AttributeName).sort();
    assert.deepEqual(defined, ['GSI1PK', 'GSI1SK', 'GSI2PK', 'GSI2SK', 'PK', 'SK']);
  });

  describe(`store contract on DynamoDB (moto, one request at a time, behind the verifying front): ${checks.join(', ')}`, () => {
    let moto;
    let front;
    let env;
    let skipReason;
    const prefix = `contract${process.pid}${prefixTag}_`;

    before(async () => {
      ({ moto, front, skipReason } = await startDynamoPeer({ credentials: [KEY] }));
      if (skipReason) {
        console.log(`# ${skipReason}`);
        return;
      }
      env = baseEnv({ AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL_DYNAMODB: front.url,
        AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey, KOUMPA_LOG_LEVEL: 'error' });
    });
    after(async () => {
      await front?.stop();
      await moto?.stop();
    });

    test('before migrate: a clear "run koumpa migrate"', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const r = await run([CONTRACT, 'dynamodb', 'nomigrate_', 'plans'], env);
      assert.match(r.stdout, /table nomigrate_koumpa not found \(request id [^)]+\): run koumpa migrate/);
    });

    for (const check of checks) {
      test(check, { skip: CONTRACT_SKIP }, async (t) => {
        if (skipReason) return t.skip(skipReason);
        const r = await contract('dynamodb', prefix, check, env);
        // the request budget (docs/ARCHITECTURE.md): GET /v1/me's account read 2 BatchGetItems ({user,
        // billing link}, then {plan, subscription}); a spend one
        // consistent BatchGetItem (balance, idempotency key, reservation) and one TransactWriteItems
        if (check === 'credits') {
          assert.equal(r.figures.account_get_requests, 2);
          assert.equal(r.figures.spend_requests, 2);
        }
        if (check === 'users') assert.equal(r.figures.by_email_requests, 2);
        if (check === 'projects') assert.equal(r.figures.project_list_requests, 1); // one Query on GSI1
        // a Stripe event with credits and a customer link: the credit's BatchGetItem, the link's GetItem,
        // then one TransactWriteItems for it all
        // and the account of a subscribed user still 2 requests, its subscription included
        if (check === 'billing') {
          assert.equal(r.figures.billing_apply_requests, 3);
          assert.equal(r.figures.account_get_subscribed_requests, 2);
        }
        // events: 1 TransactWriteItems per 100; a retried batch of 2 (whole, then in part): the cancelled
        // transaction and 2 conditional PutItems, twice
        if (check === 'events') assert.deepEqual([r.figures.events_120_requests, r.figures.events_retry_requests], [2, 6]);
        if (check === 'race') assert.deepEqual([r.figures.spends_ok, r.figures.creates_ok], [10, 1]);
        // recovery's reads: the user item's counter (1 GetItem); expired leases: 1 Query per GSI2 shard (8)
        // and 1 BatchGetItem of the versions
        if (check === 'recovery') {
          assert.equal(r.figures.generating_count_requests, 1);
          assert.equal(r.figures.versions_expired_requests, 9);
        }
        // admit: its consistent read (user, idempotency key) and ONE TransactWriteItems; free: the transaction
        // only. version_end: the project (its user), the credit's read, ONE TransactWriteItems
        if (check === 'admit') {
          assert.deepEqual([r.figures.admit_requests, r.figures.free_admit_requests, r.figures.version_end_requests],
            [2, 1, 3]);
        }
        if (check === 'admit_race') assert.equal(r.figures.admitted, 4);
        assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
      });
    }

    if (cli) test('koumpa migrate creates the table once; the DynamoDB store lacks no operation (serve-dynamodb.test.mjs runs it)',
      async (t) => {
        if (skipReason) return t.skip(skipReason);
        const data = mkdtempSync(path.join(tmpdir(), 'koumpa-ddb-'));
        try {
          const e = { ...env, KOUMPA_DB: 'dynamodb', KOUMPA_DYNAMODB_TABLE_PREFIX: `cli${process.pid}_`, KOUMPA_DATA_DIR: data };
          let r = await run([...WRAPPER, KOUMPA, 'migrate'], e);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, new RegExp(`migrated DynamoDB table cli${process.pid}_koumpa: created, plans seeded`));
          r = await run([...WRAPPER, KOUMPA, 'migrate'], e);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /: present, plans seeded/);
          r = await run([CONTRACT, 'dynamodb', prefix, 'missing'], env); // no wrapper: see CONTRACT_SKIP
          assert.equal(JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))).missing, '',
            'every store operation is implemented on DynamoDB');
          r = await run([...WRAPPER, KOUMPA, 'migrate'], { ...e, KOUMPA_DB: 'mysql' });
          assert.notEqual(r.code, 0);
          assert.match(r.stderr, /invalid KOUMPA_DB=mysql: sqlite or dynamodb/);
          assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
        } finally {
          rmSync(data, { recursive: true, force: true });
        }
      });
  });
}
