// secrets-helpers.mjs - what the secrets tests (secrets.test.mjs: files;
// secrets-aws.test.mjs: AWS Secrets Manager) share:
//   generationKey(server, fake, token)  one generation, waited for; the x-api-key the fake Anthropic API saw
//   serveFails(dir, env)                `koumpa serve` in a hermetic environment plus env must exit
//                                       non-zero (never run on); resolves to its output
//   startedLine(server)                 the "koumpa serving" log line, parsed
//   localToken(sub, key)                a token as POST /v1/auth/login issues it, signed (HS256) with key
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { SignJWT } from 'jose';

import { api, runKoumpa } from './harness.mjs';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Generates one project and waits for its version to end; returns the x-api-key the fake saw. */
export async function generationKey(server, fake, token) {
  const before = fake.requests.length;
  const res = await api(server, 'POST', '/v1/projects', { token, body: { prompt: 'A page that says hi.' } });
  assert.equal(res.status, 202, res.text);
  const deadline = Date.now() + 30000;
  for (;;) {
    const p = await api(server, 'GET', `/v1/projects/${res.json.id}`, { token });
    const v = p.json.versions.find((x) => x.n === 1);
    if (v && v.status !== 'generating') {
      assert.equal(v.status, 'ready', JSON.stringify(v));
      break;
    }
    if (Date.now() > deadline) throw new Error('the generation did not end');
    await sleep(50);
  }
  assert.equal(fake.requests.length, before + 1, 'one request to the provider');
  return fake.requests[fake.requests.length - 1].headers['x-api-key'];
}

/** Runs serve (data under dir) with the inherited KOUMPA_, provider, Stripe and AWS variables dropped, plus env. */
export async function serveFails(dir, env) {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(KOUMPA_|ANTHROPIC_|OPENAI_|STRIPE_|AWS_)/.test(k)),
  );
  const res = await runKoumpa(['serve'], {
    env: {
      ...base,
      KOUMPA_DATA_DIR: path.join(dir, `data-${randomBytes(4).toString('hex')}`),
      KOUMPA_ADDR: '127.0.0.1:0',
      KOUMPA_APPS_ADDR: '127.0.0.1:0',
      ...env,
    },
  });
  assert.equal(res.timedOut, false, 'serve kept running');
  assert.notEqual(res.code, 0);
  return res.stdout + res.stderr;
}

/** The server's start-up summary line. */
export function startedLine(server) {
  return server
    .logs()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l))
    .find((l) => l.msg === 'koumpa serving');
}

/** A local token (what POST /v1/auth/login issues) signed with key. */
export function localToken(sub, key) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'koumpa', aud: 'koumpa', sub, iat: now, exp: now + 600 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(key));
}
