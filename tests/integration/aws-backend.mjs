// aws-backend.mjs - the AWS backend of the integration tests (KOUMPA_TEST_BACKEND=aws, see
// harness.mjs): every server the harness starts keeps its data in DynamoDB and its apps' files in
// S3, on one moto per test file (moto_single.py: one request at a time, so that the races test
// Koumpa's conditions, not moto's) behind the SigV4-verifying front (aws-front.mjs). Each data
// directory gets its own table prefix and bucket, so the tests of a file stay independent, and
// servers started on the same data directory (two instances, a restart) share them.
//
//   AWS_TEST_DB            the store on this backend: 'dynamodb', or 'sqlite' while the DynamoDB
//                          store is incomplete (KOUMPA_TEST_AWS_DB overrides it)
//   awsBackendEnv(dataDir) starts moto and the front on first use; makes the bucket, and on
//                          DynamoDB the table (`koumpa migrate`); resolves to the server's variables
//   awsSecretsEnv(env)     env with ANTHROPIC_API_KEY and STRIPE_SECRET_KEY (+ STRIPE_WEBHOOK_SECRET)
//                          moved into Secrets Manager secrets (KOUMPA_SECRETS=aws), unless env chose
//                          KOUMPA_SECRETS itself
//   awsBackend()           { moto, front } once started (front.stats counts requests by X-Amz-Target)
// moto and the front are stopped when the test file's process exits.
import { startFront, startMoto } from './aws-front.mjs';

/** The store the AWS backend uses. */
export const AWS_TEST_DB = process.env.KOUMPA_TEST_AWS_DB || 'dynamodb';

const KEY = { accessKeyId: 'AKIDKOUMPASUITE', secretAccessKey: 'suite/test+secret' };
let started = null; // a promise of { moto, front }
let stopping = null;
const byDir = new Map(); // data dir -> promise of its variables
let count = 0;
let secrets = 0;

function start() {
  if (!started) {
    started = (async () => {
      const moto = await startMoto({ singleThreaded: true });
      if (!moto) throw new Error('KOUMPA_TEST_BACKEND=aws needs moto (scripts/install-deps.sh --test installs it)');
      const front = await startFront({ target: moto.url, credentials: [KEY] });
      // nothing of these keeps the test file's process alive; the exit handler stops them
      front.unref();
      moto.unref();
      process.once('exit', () => moto.kill());
      return { moto, front };
    })();
  }
  return started;
}

/** { moto, front } of this file's AWS backend, starting it if needed. */
export function awsBackend() {
  return start();
}

/** Stops moto and the front (the exit handler does it too; this waits for them). */
export async function stopAwsBackend() {
  if (!started) return;
  stopping ??= (async () => {
    const { moto, front } = await started;
    await front.stop();
    await moto.stop();
  })();
  await stopping;
}

/**
 * The variables that put a server with data directory dataDir on the AWS backend; the first call
 * for a directory makes its bucket and table. run(args, env) runs `koumpa args` (the harness's
 * runKoumpa, so it is wrapped like the server).
 */
export function awsBackendEnv(dataDir, baseEnv, run) {
  if (!byDir.has(dataDir)) byDir.set(dataDir, prepare(baseEnv, run));
  return byDir.get(dataDir);
}

async function prepare(baseEnv, run) {
  const { moto, front } = await start();
  const n = ++count;
  const bucket = `koumpa-suite-${process.pid}-${n}`;
  const vars = {
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_ENDPOINT_URL: front.url,
    AWS_ACCESS_KEY_ID: KEY.accessKeyId,
    AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
    KOUMPA_STORAGE: 's3',
    KOUMPA_S3_BUCKET: bucket,
    KOUMPA_S3_PATH_STYLE: '1',
    KOUMPA_DB: AWS_TEST_DB,
    KOUMPA_DYNAMODB_TABLE_PREFIX: `suite${process.pid}_${n}_`,
  };
  // the bucket on moto itself, as Terraform makes it (the server only checks that it exists)
  const r = await fetch(`${moto.url}/${bucket}`, { method: 'PUT' });
  if (r.status !== 200) throw new Error(`cannot create bucket ${bucket}: ${r.status} ${await r.text()}`);
  if (AWS_TEST_DB === 'dynamodb') {
    const m = await run(['migrate'], { env: { ...baseEnv, ...vars } });
    if (m.code !== 0) throw new Error(`koumpa migrate on DynamoDB failed (${m.code}):\n${m.stdout}${m.stderr}`);
  }
  return vars;
}

// A secret made on moto itself (moto reads the service from the credential scope and checks nothing).
async function createSecret(moto, name, value) {
  const r = await fetch(`${moto.url}/`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': 'secretsmanager.CreateSecret',
      authorization: `AWS4-HMAC-SHA256 Credential=${KEY.accessKeyId}/20260101/us-east-1/secretsmanager/aws4_request, ` +
        'SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify({ Name: name, SecretString: value }),
  });
  if (r.status !== 200) throw new Error(`cannot create secret ${name}: ${r.status} ${await r.text()}`);
}

/** A server's environment with its Anthropic and Stripe keys read from Secrets Manager instead. */
export async function awsSecretsEnv(env) {
  if (env.KOUMPA_SECRETS || !(env.ANTHROPIC_API_KEY || env.STRIPE_SECRET_KEY)) return env;
  const { moto } = await start();
  const out = { ...env, KOUMPA_SECRETS: 'aws' };
  const base = `suite-${process.pid}/${++secrets}`;
  if (env.ANTHROPIC_API_KEY) {
    await createSecret(moto, `${base}/anthropic`, env.ANTHROPIC_API_KEY);
    out.KOUMPA_SECRET_ID_ANTHROPIC = `${base}/anthropic`;
    delete out.ANTHROPIC_API_KEY;
  }
  if (env.STRIPE_SECRET_KEY) {
    const stripe = { STRIPE_SECRET_KEY: env.STRIPE_SECRET_KEY };
    if (env.STRIPE_WEBHOOK_SECRET) stripe.STRIPE_WEBHOOK_SECRET = env.STRIPE_WEBHOOK_SECRET;
    await createSecret(moto, `${base}/stripe`, JSON.stringify(stripe));
    out.KOUMPA_SECRET_ID_STRIPE = `${base}/stripe`;
    delete out.STRIPE_SECRET_KEY;
    delete out.STRIPE_WEBHOOK_SECRET;
  }
  return out;
}
