// lambda-harness.mjs - what the tests of the Lambda functions share: starting the real `bootstrap` as one of
// the six functions on its own fake Runtime API (fake-lambda-runtime.mjs), the environment it gets, Cognito
// claims as API Gateway's JWT authorizer passes them, API Gateway HTTP API events (payload format 2.0,
// written by hand in the documented format), and invoking a function and reading its 2.0 response.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';

import { awsBackendEnv, awsSecretsEnv } from './aws-backend.mjs';
import { startFakeRuntime } from './fake-lambda-runtime.mjs';
import { BACKEND, BUILD, command, runKoumpa } from './harness.mjs';
import { nowSeconds } from './stripe-events.mjs';

/** The bootstrap under test: make's, or another (KOUMPA_BOOTSTRAP, e.g. the one unpacked from function.zip). */
export const BOOTSTRAP = process.env.KOUMPA_BOOTSTRAP ? path.resolve(process.env.KOUMPA_BOOTSTRAP) : path.join(BUILD, 'bootstrap');
export const ISSUER = 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TestPool1';
export const CLIENT_ID = '3n4b5urk1ft4fl3mg5e62d9ado';
export const WEBHOOK_SECRET = 'whsec_test_lambda_0123456789abcdef';
export const WRAPPED = Boolean(process.env.KOUMPA_TEST_WRAPPER);
const STOP_MS = WRAPPED ? 120_000 : 15_000;

/** The environment of a function: the test's own, without KOUMPA_/AWS_/... settings, plus env. */
export function functionEnv(handler, api, dataDir, env = {}) {
  const base = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(KOUMPA_|ANTHROPIC_|OPENAI_|STRIPE_|AWS_|_)/.test(k)) base[k] = v;
  return {
    ...base,
    _HANDLER: handler,
    AWS_LAMBDA_RUNTIME_API: api,
    KOUMPA_DATA_DIR: dataDir,
    KOUMPA_JWT_ISSUER: ISSUER,
    KOUMPA_JWT_AUDIENCE: CLIENT_ID,
    KOUMPA_JWKS_URL: 'http://127.0.0.1:9/unused-jwks.json',
    KOUMPA_LOG_LEVEL: 'info',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    ...env,
  };
}

/**
 * The variables of a function on the test backend (KOUMPA_TEST_BACKEND, harness.mjs): none on the local one;
 * on aws, dataDir's DynamoDB table and S3 bucket (aws-backend.mjs; functions on one dataDir share them), its
 * Stripe keys in Secrets Manager (KOUMPA_SECRETS=aws), unless env brings its own AWS_* peers.
 */
async function backendEnv(handler, dataDir, env) {
  if (BACKEND !== 'aws' || Object.keys(env).some((k) => k.startsWith('AWS_'))) return env;
  const vars = await awsBackendEnv(dataDir, functionEnv(handler, '', dataDir), runKoumpa);
  const secrets = { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_SECRET_KEY: 'sk_test_lambda_unused' };
  // a key moved to Secrets Manager is not in the environment (undefined: not passed to the process)
  return { STRIPE_WEBHOOK_SECRET: undefined, ...(await awsSecretsEnv({ ...secrets, ...vars, ...env })) };
}

/**
 * Starts `bootstrap` as function `handler` on its own fake runtime (runtime: startFakeRuntime's options, and
 * killAtDeadline: an invocation reaching its deadline kills the process with SIGKILL, as Lambda stops the
 * environment; `exited` then says { code: null, signal: 'SIGKILL' }).
 */
export async function startFunction(handler, dataDir, env = {}, runtime = {}) {
  env = await backendEnv(handler, dataDir, env);
  const { killAtDeadline = false, onTimeout, ...options } = runtime;
  let child;
  const rt = await startFakeRuntime({
    functionName: `koumpa-${handler}`,
    timeoutMs: WRAPPED ? 300_000 : 30_000,
    ...options,
    onTimeout(inv) {
      if (killAtDeadline) child.kill('SIGKILL');
      onTimeout?.(inv);
    },
  });
  const { file, args } = command([], { bin: BOOTSTRAP });
  child = spawn(file, args, { env: functionEnv(handler, rt.api, dataDir, env), stdio: ['ignore', 'pipe', 'pipe'] });
  const out = [];
  const err = [];
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => err.push(d));
  const exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  return {
    rt,
    exited,
    stdout: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8'),
    /** Sends the process a signal (e.g. SIGSTOP: a function that cannot answer). */
    kill: (signal) => child.kill(signal),
    /** SIGTERM, then the exit status (0: everything was freed; valgrind fails it otherwise). */
    async stop() {
      child.kill('SIGTERM');
      let timer;
      const res = await Promise.race([
        exited,
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(null), STOP_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!res) child.kill('SIGKILL');
      await rt.close();
      return res;
    },
  };
}

/** Cognito ID-token claims as API Gateway's JWT authorizer passes them: every value a string. */
export function claimsFor(user, { groups } = {}) {
  const now = nowSeconds();
  const claims = {
    sub: user.sub,
    email: user.email,
    email_verified: 'true',
    iss: ISSUER,
    aud: CLIENT_ID,
    token_use: 'id',
    'cognito:username': user.sub,
    auth_time: String(now),
    iat: String(now),
    exp: String(now + 3600),
  };
  if (groups) claims['cognito:groups'] = groups;
  return claims;
}

/** An API Gateway HTTP API event, payload format 2.0. */
export function httpEvent(method, target, { routeKey, claims, headers = {}, body, base64 = false, cookies } = {}) {
  const [rawPath, rawQueryString = ''] = target.split('?');
  const key = routeKey ?? `${method} ${rawPath}`;
  const event = {
    version: '2.0',
    routeKey: key,
    rawPath,
    rawQueryString,
    headers: {
      accept: 'application/json',
      'content-length': String(body ? Buffer.byteLength(body, base64 ? 'base64' : 'utf8') : 0),
      host: 'abc123defg.execute-api.eu-west-1.amazonaws.com',
      'user-agent': 'node-test',
      'x-amzn-trace-id': 'Root=1-674d0000-0123456789abcdef01234567',
      'x-forwarded-for': '203.0.113.7',
      'x-forwarded-port': '443',
      'x-forwarded-proto': 'https',
      ...headers,
    },
    requestContext: {
      accountId: '123456789012',
      apiId: 'abc123defg',
      domainName: 'abc123defg.execute-api.eu-west-1.amazonaws.com',
      domainPrefix: 'abc123defg',
      http: { method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '203.0.113.7', userAgent: 'node-test' },
      requestId: `${randomUUID().slice(0, 14)}=`,
      routeKey: key,
      stage: '$default',
      time: '02/Dec/2026:00:00:00 +0000',
      timeEpoch: Date.now(),
    },
    isBase64Encoded: base64,
  };
  if (cookies) event.cookies = cookies;
  if (claims) event.requestContext.authorizer = { jwt: { claims, scopes: null } };
  if (body !== undefined) event.body = body;
  return event;
}

/** Invokes and checks that the function answered (not an invocation error); returns the 2.0 response. */
export async function call(fn, event) {
  const res = await fn.rt.invoke(event);
  assert.equal(res.kind, 'response', JSON.stringify(res.json ?? res));
  const out = res.json;
  assert.equal(typeof out.statusCode, 'number');
  const text = out.isBase64Encoded ? Buffer.from(out.body, 'base64').toString('utf8') : out.body;
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { ...out, text, json, requestId: res.requestId };
}

export function assertError(res, status, code, pattern) {
  assert.equal(res.statusCode, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  if (pattern) assert.match(res.json.error.message, pattern);
}

