// secrets.test.mjs - the secrets service (src/secrets/) seen from outside:
// ANTHROPIC_API_KEY_FILE and KOUMPA_JWT_SECRET_FILE (Docker/Kubernetes secret
// files) are read at start; with KOUMPA_SECRETS_TTL=1 a rewritten file is
// picked up without a restart: a token of the old JWT secret is refused and
// one of the new secret (minted here with jose, HS256) accepted, and the fake
// Anthropic API sees the new x-api-key on the next generation; a key file that
// disappears leaves the last key in use (a warning names the secret); the
// values never appear in the server's output. Also: NAME and NAME_FILE both
// set, and a secret file that cannot be read, stop start-up with a message
// naming them.
//
// No timing is asserted: each rewrite is followed by a wait of 1.5 s, more
// than the TTL on the server's own clock, before the one request that checks it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';
import { generationKey, localToken, serveFails, startedLine } from './secrets-helpers.mjs';

const APP = '<file path="index.html">\n<p>hi</p>\n</file>\n';
const PAST_TTL_MS = 1500;

const secret = (label) => `${label}-${randomBytes(24).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Replaces a file the way Kubernetes updates a mounted secret: a new file renamed over the old one. */
async function replaceFile(file, content) {
  const tmp = `${file}.new`;
  await writeFile(tmp, content, { mode: 0o600 });
  await rename(tmp, file);
}

async function meStatus(server, token) {
  return (await api(server, 'GET', '/v1/me', { token })).status;
}

describe('secrets from files, re-read after KOUMPA_SECRETS_TTL', () => {
  let dir;
  let fake;
  let server;
  const jwt1 = secret('jwt-one');
  const jwt2 = secret('jwt-two');
  const key1 = `sk-ant-${secret('one')}`;
  const key2 = `sk-ant-${secret('two')}`;
  let jwtFile;
  let keyFile;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-secrets-'));
    jwtFile = path.join(dir, 'jwt');
    keyFile = path.join(dir, 'anthropic');
    await writeFile(jwtFile, `${jwt1}\n`, { mode: 0o600 });
    await writeFile(keyFile, `${key1}\r\n`, { mode: 0o600 });
    fake = await startFakeAnthropic({ scenario: { type: 'text', text: APP } });
    server = await startServer({
      env: {
        KOUMPA_JWT_SECRET_FILE: jwtFile,
        ANTHROPIC_API_KEY_FILE: keyFile,
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_SECRETS_TTL: '1',
        KOUMPA_GENERATION_COST: '0',
        KOUMPA_LOG_LEVEL: 'info',
      },
    });
  });

  after(async () => {
    await server?.stop();
    await fake?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the files are read at start, their values never logged', async () => {
    const user = await signup(server, `files-${randomBytes(4).toString('hex')}@example.com`);
    assert.equal(await meStatus(server, user.token), 200);
    assert.equal(await meStatus(server, await localToken(user.user.id, jwt1)), 200, 'a token of the file secret');
    assert.equal(await generationKey(server, fake, user.token), key1, 'the key file, its \\r\\n stripped');
    const started = startedLine(server);
    assert.equal(started.config.ANTHROPIC_API_KEY, '(set)');
    assert.equal(started.config.KOUMPA_JWT_SECRET, '(set)');
    assert.equal(started.generation, true);
  });

  test('a rewritten JWT secret file: old tokens refused, new ones accepted', async () => {
    const user = await signup(server, `rotate-${randomBytes(4).toString('hex')}@example.com`);
    const oldMinted = await localToken(user.user.id, jwt1);
    assert.equal(await meStatus(server, user.token), 200); // verified, so in the server's token cache
    assert.equal(await meStatus(server, oldMinted), 200);

    await replaceFile(jwtFile, `${jwt2}\n`);
    await sleep(PAST_TTL_MS);
    assert.equal(await meStatus(server, user.token), 401, 'a token the server issued under the old secret');
    assert.equal(await meStatus(server, oldMinted), 401, 'a token minted with the old secret');
    assert.equal(await meStatus(server, await localToken(user.user.id, jwt2)), 200, 'minted with the new secret');
    const login = await api(server, 'POST', '/v1/auth/login', { body: { email: user.email, password: user.password } });
    assert.equal(login.status, 200);
    assert.equal(await meStatus(server, login.json.token), 200, 'issued under the new secret');
  });

  test('a rewritten key file: the next generation sends the new key; a vanished file keeps it', async () => {
    const user = await signup(server, `key-${randomBytes(4).toString('hex')}@example.com`);
    await replaceFile(keyFile, `${key2}\n`);
    await sleep(PAST_TTL_MS);
    assert.equal(await generationKey(server, fake, user.token), key2);

    await unlink(keyFile);
    await sleep(PAST_TTL_MS);
    assert.equal(await generationKey(server, fake, user.token), key2, 'the last value read stays in use');
    const warned = server
      .logs()
      .split('\n')
      .some((l) => l.includes('"level":"warn"') && l.includes('"secret":"ANTHROPIC_API_KEY"') && l.includes(keyFile));
    assert.ok(warned, 'a warning names the secret and the file');
  });

  test('no secret value appears in the server output', () => {
    const out = server.logs();
    for (const [name, value] of Object.entries({ jwt1, jwt2, key1, key2 }))
      assert.ok(!out.includes(value), `${name} appears in the server output`);
  });
});

describe('secret settings that stop start-up', () => {
  let dir;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-secrets-bad-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('NAME and NAME_FILE both set', async () => {
    const key = `sk-ant-${secret('both')}`;
    const file = path.join(dir, 'key');
    await writeFile(file, `${key}\n`);
    const out = await serveFails(dir, { ANTHROPIC_API_KEY: key, ANTHROPIC_API_KEY_FILE: file });
    assert.match(out, /both ANTHROPIC_API_KEY and ANTHROPIC_API_KEY_FILE are set/);
    assert.ok(!out.includes(key), 'the key was printed');
  });

  test('a secret file that cannot be read is named', async () => {
    const missing = path.join(dir, 'no-such-jwt-secret');
    const out = await serveFails(dir, { KOUMPA_JWT_SECRET_FILE: missing });
    assert.ok(out.includes(missing), out);
    assert.match(out, /KOUMPA_JWT_SECRET_FILE/);
  });

  test('a JWT secret file holding a short secret is refused without printing it', async () => {
    const short = `short-${randomBytes(4).toString('hex')}`;
    const file = path.join(dir, 'short-jwt');
    await writeFile(file, `${short}\n`);
    const out = await serveFails(dir, { KOUMPA_JWT_SECRET_FILE: file });
    assert.match(out, /KOUMPA_JWT_SECRET.*at least 32/);
    assert.ok(!out.includes(short), 'the secret was printed');
  });
});
