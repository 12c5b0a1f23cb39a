// ca-bundle.test.mjs - KOUMPA_CA_BUNDLE (src/core/curl_defaults.c), black-box: an identity provider
// whose JWKS is served over HTTPS on 127.0.0.1 with its own self-signed certificate (made here with the
// openssl command). A server given that certificate as its CA bundle fetches the JWKS and accepts the
// provider's RS256 tokens; one given another certificate, or none (Debian's bundle), cannot: its log
// says why ("jwks fetch failed" with curl's certificate error) and the tokens are a 401. An unreadable
// path stops start-up (cli.test.mjs).
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { exportJWK, SignJWT } from 'jose';

import { selfSigned } from './fake-common.mjs';
import { api, startServer } from './harness.mjs';

const AUDIENCE = 'client-ca-bundle';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


describe('KOUMPA_CA_BUNDLE: the CA bundle of outgoing TLS calls', () => {
  let dir;
  let idp;
  let issuer;
  let signingKey;
  let trusted;
  let other;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-ca-'));
    trusted = selfSigned(dir, 'idp');
    other = selfSigned(dir, 'other');
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    signingKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    idp = https.createServer({ cert: await readFile(trusted.cert), key: await readFile(trusted.key) }, (req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise((resolve) => idp.listen(0, '127.0.0.1', resolve));
    issuer = `https://127.0.0.1:${idp.address().port}`;
  });

  after(async () => {
    idp?.closeAllConnections?.();
    await new Promise((resolve) => (idp ? idp.close(resolve) : resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  const token = () =>
    new SignJWT({ iss: issuer, aud: AUDIENCE, sub: `sub-${randomBytes(6).toString('hex')}`, token_use: 'id' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'JWT' })
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(signingKey);

  const start = (bundle) =>
    startServer({
      backend: 'local',
      env: { KOUMPA_JWT_ISSUER: issuer, KOUMPA_JWT_AUDIENCE: AUDIENCE, ...(bundle ? { KOUMPA_CA_BUNDLE: bundle } : {}) },
    });

  /** GET /v1/me with a fresh token until it is a 200 or the log shows a failed JWKS fetch (bounded). */
  async function outcome(server) {
    let res;
    for (let i = 0; i < 400; i++) {
      res = await api(server, 'GET', '/v1/me', { headers: { Authorization: `Bearer ${await token()}` } });
      if (res.status === 200 || /jwks fetch failed/.test(server.logs())) return res;
      await sleep(25);
    }
    return res;
  }

  test('the provider\'s certificate as the bundle: the JWKS is fetched over HTTPS, its tokens accepted', async () => {
    const server = await start(trusted.cert);
    try {
      const res = await outcome(server);
      assert.equal(res.status, 200, `${res.text}\n${server.logs()}`);
    } finally {
      await server.stop();
    }
  });

  for (const [label, bundle] of [
    ['another certificate', () => other.cert],
    ['unset (Debian\'s bundle)', () => undefined],
  ]) {
    test(`${label}: the fetch fails on the certificate, said in the log; the tokens are a 401`, async () => {
      const server = await start(bundle());
      try {
        const res = await outcome(server);
        assert.equal(res.status, 401, res.text);
        const line = server
          .logs()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l))
          .find((l) => l.msg === 'jwks fetch failed');
        assert.ok(line, server.logs());
        assert.match(JSON.stringify(line), /certificate/i);
      } finally {
        await server.stop();
      }
    });
  }
});
