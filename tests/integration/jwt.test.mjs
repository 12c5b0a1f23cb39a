// jwt.test.mjs - bearer token verification, black-box: tokens minted with
// `jose` (and a few built by hand) against a server that trusts a local
// identity provider, whose JWKS a small HTTP server in this file publishes.
//
// Valid: RS256 id and access tokens from the provider (user created on first
// sight, admin by group), HS256 local tokens made with the server's secret,
// exp/nbf within the 60 s leeway. Attacks (RFC 8725): alg none, the RSA
// public key used as an HMAC secret, expired, not yet valid, wrong iss / aud /
// client_id, unknown kid, tampered payload, truncated, oversized, malformed
// base64 / JSON, no token, another scheme: every one is a 401 with
// WWW-Authenticate: Bearer. The JWKS is refetched on an unknown kid, at most
// once per burst.
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { SignJWT, exportJWK, exportSPKI } from 'jose';

import { api, signup, startServer, uniqueEmail } from './harness.mjs';

const AUDIENCE = 'client123';
const SECRET = randomBytes(24).toString('hex'); // 48 characters
const JWKS_PATH = '/.well-known/jwks.json';

const now = () => Math.floor(Date.now() / 1000);
const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// node KeyObjects rather than WebCrypto keys, so that one key can sign RS256,
// RS512 and PS256 alike
const rsaKeyPair = () => generateKeyPairSync('rsa', { modulusLength: 2048 });

/** A JWKS endpoint on 127.0.0.1 that counts its fetches; keys can change; while
 * state.gate (a promise) is set, answers wait for it. */
async function startJwksServer() {
  const state = { keys: [], fetches: [], gate: null };
  const srv = http.createServer(async (req, res) => {
    if (req.method === 'GET' && req.url === JWKS_PATH) {
      state.fetches.push(Date.now());
      if (state.gate) await state.gate;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ keys: state.keys }));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  state.issuer = `http://127.0.0.1:${srv.address().port}`;
  state.close = () =>
    new Promise((resolve) => {
      srv.closeAllConnections?.();
      srv.close(resolve);
    });
  return state;
}

async function publicJwk(publicKey, kid) {
  return { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
}

/** A JWT signed with HMAC-SHA256 over arbitrary key bytes, built by hand. */
function hs256(header, payload, key) {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

async function callMe(server, authorization) {
  const headers = authorization === undefined ? {} : { Authorization: authorization };
  return api(server, 'GET', '/v1/me', { headers });
}

/**
 * The server fetches the JWKS in the background (a token with a kid it has
 * not fetched yet is a 401 at once): calls /v1/me with a fresh token from
 * makeToken() until it passes, a bounded number of times. Returns the last response.
 */
async function untilAccepted(server, makeToken, tries = 400) {
  let res;
  for (let i = 0; i < tries; i++) {
    res = await callMe(server, `Bearer ${await makeToken()}`);
    if (res.status === 200) return res;
    await sleep(25);
  }
  return res;
}

/** Asserts the documented refusal of a bad token: 401, Bearer challenge, JSON error. */
function assertRejected(res, label, { tokenGiven = true } = {}) {
  assert.equal(res.status, 401, `${label}: expected 401, got ${res.status} ${res.text.slice(0, 200)}`);
  const challenge = res.headers.get('www-authenticate') || '';
  assert.match(challenge, /^Bearer(\s|$)/, `${label}: WWW-Authenticate is ${JSON.stringify(challenge)}`);
  if (tokenGiven) assert.match(challenge, /error="invalid_token"/, `${label}: ${challenge}`);
  else assert.doesNotMatch(challenge, /error=/, `${label}: no error code without a token (RFC 6750 3.1)`);
  assert.equal(res.json?.error?.code, 'unauthorized', `${label}: ${res.text.slice(0, 200)}`);
  assert.equal(typeof res.json.error.message, 'string');
}

describe('JWT verification', () => {
  let jwks;
  let server;
  let signingKey; // private key of kid "k1", published
  let publicKey;
  let strangerKey; // a key the provider never published
  let localUser;

  const idClaims = (extra = {}) => ({
    iss: jwks.issuer,
    aud: AUDIENCE,
    sub: `sub-${randomBytes(6).toString('hex')}`,
    token_use: 'id',
    iat: now(),
    exp: now() + 600,
    ...extra,
  });

  const rs256 = (claims, { key = signingKey, kid = 'k1', alg = 'RS256' } = {}) =>
    new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'JWT' }).sign(key);

  const localToken = (claims, { alg = 'HS256', secret = SECRET } = {}) =>
    new SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret));

  const localClaims = (extra = {}) => ({
    iss: 'koumpa',
    aud: 'koumpa',
    sub: localUser.user.id,
    iat: now(),
    exp: now() + 600,
    ...extra,
  });

  before(async () => {
    jwks = await startJwksServer();
    ({ privateKey: signingKey, publicKey } = rsaKeyPair());
    ({ privateKey: strangerKey } = rsaKeyPair());
    jwks.keys = [await publicJwk(publicKey, 'k1')];
    server = await startServer({
      env: {
        KOUMPA_JWT_ISSUER: jwks.issuer,
        KOUMPA_JWT_AUDIENCE: AUDIENCE,
        KOUMPA_JWT_SECRET: SECRET,
        KOUMPA_ADMIN_EMAILS: 'boss@example.com',
      },
    });
    localUser = await signup(server);
    // serve asks for the keys at start-up; wait until they have landed
    const ready = await untilAccepted(server, () => rs256(idClaims()));
    assert.equal(ready.status, 200, `the JWKS never loaded: ${ready.text}`);
  });

  after(async () => {
    await server?.stop();
    await jwks?.close();
  });

  describe('valid tokens', () => {
    test('an RS256 id token is accepted and its user created on first sight, once', async () => {
      const claims = idClaims({ email: 'Ada.Lovelace@Example.com', email_verified: true });
      const first = await callMe(server, `Bearer ${await rs256(claims)}`);
      assert.equal(first.status, 200, first.text);
      assert.match(first.json.id, /\S/);
      assert.equal(first.json.email, 'ada.lovelace@example.com');
      assert.equal(first.json.is_admin, false);
      assert.equal(first.json.plan.id, 'free');
      assert.equal(first.json.credits.daily, 5, 'a new user gets the daily bonus at once');
      assert.ok(jwks.fetches.length >= 1, 'the JWKS was fetched');

      // a second token for the same sub (fresh iat/exp) finds the same user
      const second = await callMe(server, `Bearer ${await rs256({ ...claims, iat: now(), exp: now() + 300 })}`);
      assert.equal(second.status, 200, second.text);
      assert.equal(second.json.id, first.json.id);
      assert.equal(second.json.created_at, first.json.created_at);

      // a different sub is a different user
      const other = await callMe(server, `Bearer ${await rs256(idClaims())}`);
      assert.equal(other.status, 200, other.text);
      assert.notEqual(other.json.id, first.json.id);
    });

    test('aud may be an array containing the audience', async () => {
      const res = await callMe(server, `Bearer ${await rs256(idClaims({ aud: ['someone-else', AUDIENCE] }))}`);
      assert.equal(res.status, 200, res.text);
    });

    test('an RS256 access token is checked by client_id (token_use "access")', async () => {
      const claims = idClaims({ token_use: 'access', client_id: AUDIENCE, scope: 'openid' });
      delete claims.aud;
      const ok = await callMe(server, `Bearer ${await rs256(claims)}`);
      assert.equal(ok.status, 200, ok.text);

      // an access token with the right aud but another client_id is refused
      const wrongClient = { ...claims, client_id: 'other-client', aud: AUDIENCE };
      assertRejected(await callMe(server, `Bearer ${await rs256(wrongClient)}`), 'access token, wrong client_id');
    });

    test('an email that is not verified is not taken (nor does it make an admin)', async () => {
      const claims = idClaims({ email: 'boss@example.com', email_verified: false });
      const res = await callMe(server, `Bearer ${await rs256(claims)}`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.email, '');
      assert.equal(res.json.is_admin, false);
    });

    test("a verified provider email that a local account owns does not log into that account", async () => {
      const res = await callMe(
        server,
        `Bearer ${await rs256(idClaims({ email: localUser.email, email_verified: true }))}`,
      );
      assert.equal(res.status, 200, res.text);
      assert.notEqual(res.json.id, localUser.user.id);
      assert.notEqual(res.json.email, localUser.email);
    });

    test('cognito:groups containing "admin" makes an admin who may change plans', async () => {
      const admin = await rs256(idClaims({ 'cognito:groups': ['users', 'admin'] }));
      const me = await callMe(server, `Bearer ${admin}`);
      assert.equal(me.status, 200, me.text);
      assert.equal(me.json.is_admin, true);
      const put = await api(server, 'PUT', '/v1/admin/plans/jwt-team', {
        token: admin,
        body: { name: 'JWT Team', price_cents: 100, monthly_credits: 7, daily_bonus: 1, max_concurrent_generations: 2 },
      });
      assert.equal(put.status, 201, put.text);
      assert.equal(put.json.monthly_credits, 7);

      const member = await rs256(idClaims({ 'cognito:groups': ['users'] }));
      const meMember = await callMe(server, `Bearer ${member}`);
      assert.equal(meMember.json.is_admin, false);
      const denied = await api(server, 'PUT', '/v1/admin/plans/jwt-team', { token: member, body: { daily_bonus: 2 } });
      assert.equal(denied.status, 403, denied.text);
    });

    test('a local HS256 token minted with the server secret is accepted', async () => {
      const token = await localToken(localClaims());
      const res = await callMe(server, `Bearer ${token}`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.id, localUser.user.id);
      assert.equal(res.json.email, localUser.email);
    });

    test('the token signup returned is accepted too, and the scheme name is case-insensitive', async () => {
      const res = await callMe(server, `bearer ${localUser.token}`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.id, localUser.user.id);
    });

    test('exp and nbf have 60 s of leeway: exp 30 s ago and nbf in 30 s are accepted', async () => {
      const expired30 = await rs256(idClaims({ iat: now() - 600, exp: now() - 30 }));
      assert.equal((await callMe(server, `Bearer ${expired30}`)).status, 200);
      const nbf30 = await rs256(idClaims({ nbf: now() + 30 }));
      assert.equal((await callMe(server, `Bearer ${nbf30}`)).status, 200);
      const localExpired30 = await localToken(localClaims({ iat: now() - 600, exp: now() - 30 }));
      assert.equal((await callMe(server, `Bearer ${localExpired30}`)).status, 200);
    });
  });

  describe('attacks: each is a 401 with a Bearer challenge', () => {
    test('alg "none" (unsigned), as an external and as a local token', async () => {
      const none = { alg: 'none', typ: 'JWT' };
      const external = `${b64url(none)}.${b64url(idClaims())}.`;
      assertRejected(await callMe(server, `Bearer ${external}`), 'alg none, external');
      const local = `${b64url(none)}.${b64url(localClaims())}.`;
      assertRejected(await callMe(server, `Bearer ${local}`), 'alg none, local');
      const noneUpper = `${b64url({ alg: 'None' })}.${b64url(localClaims())}.`;
      assertRejected(await callMe(server, `Bearer ${noneUpper}`), 'alg None');
      // "none" with a made-up signature segment
      const withSig = `${b64url(none)}.${b64url(localClaims())}.${b64url('x')}`;
      assertRejected(await callMe(server, `Bearer ${withSig}`), 'alg none with a signature');
    });

    test('the RS256 public key used as an HS256 secret', async () => {
      const pem = await exportSPKI(publicKey);
      const jwk = JSON.stringify(jwks.keys[0]);
      const header = { alg: 'HS256', typ: 'JWT', kid: 'k1' };
      for (const [name, keyBytes] of [
        ['PEM', pem],
        ['PEM without the final newline', pem.trimEnd()],
        ['JWK JSON', jwk],
        ['modulus', Buffer.from(jwks.keys[0].n, 'base64url')],
      ]) {
        assertRejected(await callMe(server, `Bearer ${hs256(header, idClaims(), keyBytes)}`), `HS256/${name}, external iss`);
        assertRejected(
          await callMe(server, `Bearer ${hs256(header, localClaims(), keyBytes)}`),
          `HS256/${name}, iss koumpa`,
        );
      }
    });

    test('the other direction: an RS256 token that claims to be local', async () => {
      assertRejected(await callMe(server, `Bearer ${await rs256(localClaims())}`), 'RS256 with iss koumpa');
    });

    test('an algorithm other than the expected one, even validly signed', async () => {
      assertRejected(await callMe(server, `Bearer ${await localToken(localClaims(), { alg: 'HS512' })}`), 'HS512 local');
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims(), { alg: 'RS512' })}`), 'RS512 external');
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims(), { alg: 'PS256' })}`), 'PS256 external');
    });

    test('a local token signed with another secret', async () => {
      const token = await localToken(localClaims(), { secret: 'x'.repeat(48) });
      assertRejected(await callMe(server, `Bearer ${token}`), 'wrong secret');
    });

    test('expired beyond the leeway', async () => {
      const external = await rs256(idClaims({ iat: now() - 3600, exp: now() - 120 }));
      assertRejected(await callMe(server, `Bearer ${external}`), 'expired external');
      const local = await localToken(localClaims({ iat: now() - 3600, exp: now() - 120 }));
      const res = await callMe(server, `Bearer ${local}`);
      assertRejected(res, 'expired local');
      assert.match(res.json.error.message, /expired/);
    });

    test('no exp at all', async () => {
      const claims = idClaims();
      delete claims.exp;
      assertRejected(await callMe(server, `Bearer ${await rs256(claims)}`), 'no exp');
      const local = localClaims();
      delete local.exp;
      assertRejected(await callMe(server, `Bearer ${await localToken(local)}`), 'local without exp');
    });

    test('not yet valid (nbf in 5 minutes) and issued in the future', async () => {
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims({ nbf: now() + 300 }))}`), 'nbf +5 min');
      assertRejected(
        await callMe(server, `Bearer ${await localToken(localClaims({ nbf: now() + 300 }))}`),
        'local nbf +5 min',
      );
      assertRejected(
        await callMe(server, `Bearer ${await rs256(idClaims({ iat: now() + 600, exp: now() + 1200 }))}`),
        'iat +10 min',
      );
    });

    test('wrong issuer, validly signed', async () => {
      for (const iss of ['https://evil.example', `${jwks.issuer}/`, `${jwks.issuer}/other`, 'KOUMPA']) {
        assertRejected(await callMe(server, `Bearer ${await rs256(idClaims({ iss }))}`), `iss ${iss}`);
      }
      const noIss = idClaims();
      delete noIss.iss;
      assertRejected(await callMe(server, `Bearer ${await rs256(noIss)}`), 'no iss');
    });

    test('wrong audience, validly signed', async () => {
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims({ aud: 'client456' }))}`), 'aud client456');
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims({ aud: ['a', 'b'] }))}`), 'aud array');
      const noAud = idClaims();
      delete noAud.aud;
      assertRejected(await callMe(server, `Bearer ${await rs256(noAud)}`), 'no aud');
      // an id token does not get in through client_id
      const idWithClient = idClaims({ aud: 'client456', client_id: AUDIENCE });
      assertRejected(await callMe(server, `Bearer ${await rs256(idWithClient)}`), 'id token, client_id only');
      // a local token must have aud "koumpa"
      assertRejected(await callMe(server, `Bearer ${await localToken(localClaims({ aud: AUDIENCE }))}`), 'local aud');
    });

    test('unknown kid, no kid, and a published kid with a stranger key', async () => {
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims(), { key: strangerKey, kid: 'k9' })}`), 'kid k9');
      const noKid = await new SignJWT(idClaims()).setProtectedHeader({ alg: 'RS256' }).sign(signingKey);
      assertRejected(await callMe(server, `Bearer ${noKid}`), 'no kid');
      assertRejected(await callMe(server, `Bearer ${await rs256(idClaims(), { key: strangerKey })}`), 'k1, wrong key');
    });

    test('tampered payload: another sub with the old signature', async () => {
      for (const [name, token] of [
        ['external', await rs256(idClaims())],
        ['local', await localToken(localClaims())],
      ]) {
        const [h, p, s] = token.split('.');
        const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
        const forged = `${h}.${b64url({ ...claims, sub: 'usr_000000000000000000000000' })}.${s}`;
        assertRejected(await callMe(server, `Bearer ${forged}`), `tampered ${name}`);
        const admin = `${h}.${b64url({ ...claims, 'cognito:groups': ['admin'] })}.${s}`;
        assertRejected(await callMe(server, `Bearer ${admin}`), `tampered ${name} groups`);
        // flip one bit of the signature
        const sig = Buffer.from(s, 'base64url');
        sig[sig.length - 1] ^= 1;
        assertRejected(await callMe(server, `Bearer ${h}.${p}.${sig.toString('base64url')}`), `bad sig ${name}`);
      }
    });

    test('truncated tokens', async () => {
      const token = await rs256(idClaims());
      const [h, p] = token.split('.');
      for (const [name, t] of [
        ['last 10 characters cut', token.slice(0, -10)],
        ['no signature', `${h}.${p}.`],
        ['two segments', `${h}.${p}`],
        ['header only', h],
        ['half', token.slice(0, token.length >> 1)],
        ['four segments', `${token}.${p}`],
      ]) {
        assertRejected(await callMe(server, `Bearer ${t}`), `truncated: ${name}`);
      }
    });

    test('an oversized token (10 KiB, validly signed) is refused as too long', async () => {
      const token = await rs256(idClaims({ padding: 'p'.repeat(7 * 1024) }));
      assert.ok(token.length > 9 * 1024 && token.length < 12 * 1024, `${token.length}`);
      const res = await callMe(server, `Bearer ${token}`);
      assertRejected(res, '10 KiB token');
      assert.match(res.json.error.message, /too long/);
    });

    test('a 64 KiB token is a 401 too', async () => {
      const token = await rs256(idClaims({ padding: 'p'.repeat(64 * 1024) }));
      assert.ok(token.length > 64 * 1024);
      assertRejected(await callMe(server, `Bearer ${token}`), '64 KiB token');
      assert.equal((await api(server, 'GET', '/healthz')).status, 200);
    });

    test('malformed base64url or JSON', async () => {
      const token = await rs256(idClaims());
      const [h, p, s] = token.split('.');
      for (const [name, t] of [
        ['header with *', `*${h.slice(1)}.${p}.${s}`],
        ['payload with !', `${h}.${p.slice(0, 10)}!${p.slice(11)}.${s}`],
        ['signature with %', `${h}.${p}.%${s.slice(1)}`],
        ['payload in standard base64 with padding', `${h}.${Buffer.from(JSON.stringify(idClaims())).toString('base64')}==.${s}`],
        ['header not JSON', `${b64url('not json')}.${p}.${s}`],
        ['payload not JSON', `${h}.${b64url('{"sub":')}.${s}`],
        ['payload a JSON array', `${h}.${b64url([1, 2, 3])}.${s}`],
        ['header a JSON string', `${b64url('"RS256"')}.${p}.${s}`],
        ['empty segments', '..'],
        ['spaces inside', `${h} .${p}.${s}`],
        ['NUL-free garbage', 'Zm9v.YmFy.YmF6'],
      ]) {
        assertRejected(await callMe(server, `Bearer ${t}`), `malformed: ${name}`);
      }
    });

    test('a local token for a user that does not exist', async () => {
      const token = await localToken(localClaims({ sub: 'usr_000000000000000000000000' }));
      assertRejected(await callMe(server, `Bearer ${token}`), 'unknown user');
    });

    test('no token, an empty one, or another scheme', async () => {
      assertRejected(await callMe(server, undefined), 'no Authorization', { tokenGiven: false });
      assertRejected(await callMe(server, 'Bearer '), 'empty bearer', { tokenGiven: false });
      assertRejected(await callMe(server, 'Basic dXNlcjpwYXNzd29yZA=='), 'Basic', { tokenGiven: false });
      assertRejected(await callMe(server, `Token ${localUser.token}`), 'Token scheme', { tokenGiven: false });
      assertRejected(await callMe(server, localUser.token), 'bare token', { tokenGiven: false });
      const missing = await callMe(server, undefined);
      assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="koumpa"');
    });

    test('every authenticated endpoint refuses a bad token the same way', async () => {
      const forged = `${b64url({ alg: 'none' })}.${b64url(localClaims())}.`;
      for (const [method, path] of [
        ['GET', '/v1/me'],
        ['GET', '/v1/me/ledger'],
        ['PUT', '/v1/admin/plans/pro'],
        ['PUT', `/v1/admin/users/${localUser.user.id}/plan`],
        ['GET', `/v1/admin/users?email=${encodeURIComponent(localUser.email)}`],
      ]) {
        const res = await api(server, method, path, { token: forged, body: method === 'PUT' ? {} : undefined });
        assertRejected(res, `${method} ${path}`);
      }
    });
  });

  describe('JWKS caching', () => {
    test('a burst of unknown kids right after a fetch does not refetch', async () => {
      // make sure keys are loaded, then hit the server with 20 unknown kids at once
      assert.equal((await callMe(server, `Bearer ${await rs256(idClaims())}`)).status, 200);
      const fetchesBefore = jwks.fetches.length;
      const tokens = await Promise.all(
        Array.from({ length: 20 }, (_, i) => rs256(idClaims(), { key: strangerKey, kid: `unknown-${i}` })),
      );
      const results = await Promise.all(tokens.map((t) => callMe(server, `Bearer ${t}`)));
      for (const [i, res] of results.entries()) assertRejected(res, `unknown kid ${i}`);
      assert.ok(jwks.fetches.length - fetchesBefore <= 1, `${jwks.fetches.length - fetchesBefore} JWKS fetches for one burst`);
    });

    test('a new kid is fetched once the refetch interval has passed, once per burst', async () => {
      // The server refetches at most every 30 s; wait until that has passed
      // since its last fetch, then publish a second key and send a burst that
      // mixes the new kid with kids nobody published. The burst is answered at
      // once (401: the new kid is not fetched yet) and asks for one fetch in
      // the background; after it, the new kid passes.
      const waitMs = jwks.fetches[jwks.fetches.length - 1] + 32_000 - Date.now();
      if (waitMs > 0) await sleep(waitMs);
      const { privateKey: rotatedKey, publicKey: rotatedPublic } = rsaKeyPair();
      jwks.keys = [...jwks.keys, await publicJwk(rotatedPublic, 'k2')];
      const fetchesBefore = jwks.fetches.length;
      let release;
      jwks.gate = new Promise((resolve) => {
        release = resolve;
      }); // the fetch the burst asks for is held until the burst is answered, however slow the server
      const unknown = await Promise.all(
        Array.from({ length: 20 }, (_, i) => rs256(idClaims(), { key: strangerKey, kid: `other-${i}` })),
      );
      const rotated = await Promise.all(Array.from({ length: 5 }, () => rs256(idClaims(), { key: rotatedKey, kid: 'k2' })));
      let results;
      try {
        results = await Promise.all([...unknown, ...rotated].map((t) => callMe(server, `Bearer ${t}`)));
      } finally {
        jwks.gate = null;
        release();
      }
      results.forEach((res, i) => assertRejected(res, `kid ${i} not fetched yet`));
      const accepted = await untilAccepted(server, () => rs256(idClaims(), { key: rotatedKey, kid: 'k2' }));
      assert.equal(accepted.status, 200, `rotated key: ${accepted.text}`);
      assert.equal(jwks.fetches.length - fetchesBefore, 1, 'exactly one JWKS fetch for the burst');
      // the old key still works from the cache
      assert.equal((await callMe(server, `Bearer ${await rs256(idClaims())}`)).status, 200);
      assert.equal(jwks.fetches.length - fetchesBefore, 1);
    });
  });
});

test('a server without KOUMPA_JWT_ISSUER refuses RS256 tokens and accepts its own', async () => {
  const { privateKey } = rsaKeyPair();
  const server = await startServer({ env: { KOUMPA_JWT_SECRET: SECRET } });
  try {
    const user = await signup(server, uniqueEmail('nojwks'));
    const external = await new SignJWT({ sub: 'x', aud: AUDIENCE, exp: now() + 600, iat: now() })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer('http://127.0.0.1:9/')
      .sign(privateKey);
    assertRejected(await callMe(server, `Bearer ${external}`), 'RS256 without an issuer configured');
    const local = await new SignJWT({ iss: 'koumpa', aud: 'koumpa', sub: user.user.id, iat: now(), exp: now() + 60 })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(SECRET));
    const me = await callMe(server, `Bearer ${local}`);
    assert.equal(me.status, 200, me.text);
  } finally {
    await server.stop();
  }
});

// Issue 9, item 9: a token with an unknown kid used to run the JWKS fetch (10 s
// timeout) on an HTTP worker thread: 4 forged tokens against a provider that
// never answers stalled /healthz. Now fetches run on a background thread and
// such tokens get 401 at once. Shown by order, not timing: every answer below
// arrives while the server's JWKS request is still open and unanswered.
describe('an unresponsive JWKS server', () => {
  let provider;
  let server;
  const held = []; // sockets of the JWKS requests, never answered until told
  before(async () => {
    provider = net.createServer((socket) => {
      const conn = { socket, head: '', closed: false };
      socket.on('data', (d) => {
        conn.head += d.toString('latin1');
      });
      socket.on('close', () => {
        conn.closed = true;
      });
      socket.on('error', () => {});
      held.push(conn);
    });
    await new Promise((resolve) => provider.listen(0, '127.0.0.1', resolve));
    const issuer = `http://127.0.0.1:${provider.address().port}`;
    server = await startServer({
      // the fetch must still be waiting when the test answers it, however slow start-up is (valgrind)
      env: { KOUMPA_JWT_ISSUER: issuer, KOUMPA_JWT_AUDIENCE: AUDIENCE, KOUMPA_JWT_SECRET: SECRET, KOUMPA_JWKS_TIMEOUT: '600' },
    });
  });
  after(async () => {
    await server?.stop();
    for (const c of held) c.socket.destroy();
    await new Promise((resolve) => provider.close(resolve));
  });

  test('forged kids get 401 and /healthz answers while the fetch hangs; then a valid token passes', async () => {
    // the start-up fetch: connected, request sent, no answer
    for (let i = 0; i < 400 && !held.some((c) => c.head.includes('\r\n\r\n')); i++) await sleep(25);
    const pending = held.find((c) => c.head.includes('\r\n\r\n'));
    assert.ok(pending, 'the server asked for the JWKS');
    assert.match(pending.head, /^GET \/\.well-known\/jwks\.json HTTP\/1\.1\r\n/);

    const { privateKey: signingKey, publicKey } = rsaKeyPair();
    const claims = () => ({ iss: server.env.KOUMPA_JWT_ISSUER, aud: AUDIENCE, sub: 'hang-user', iat: now(), exp: now() + 600 });
    const token = (kid) => new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', kid }).sign(signingKey);
    const forged = await Promise.all([1, 2, 3, 4].map((i) => token(`forged-${i}`)));
    const [health, ...refused] = await Promise.all([
      api(server, 'GET', '/healthz'),
      ...forged.map((t) => callMe(server, `Bearer ${t}`)),
    ]);
    assert.equal(health.status, 200, health.text);
    refused.forEach((res, i) => assertRejected(res, `forged kid ${i + 1}`));
    const again = await api(server, 'GET', '/healthz');
    assert.equal(again.status, 200, again.text);
    assert.equal(pending.closed, false, 'all of that was answered while the JWKS request was still open');
    assert.equal(held.length, 1, 'forged kids did not start more fetches (the refetch interval holds)');

    // the provider answers, on the request that was waiting
    const body = JSON.stringify({ keys: [await publicJwk(publicKey, 'k1')] });
    pending.socket.end(
      `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    const ok = await untilAccepted(server, () => token('k1'));
    assert.equal(ok.status, 200, ok.text);
  });
});
