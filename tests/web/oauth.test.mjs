// Unit tests of src/web/js/oauth.js (the hosted-UI sign-in with PKCE): the
// pure helpers against RFC 7636's own example, and the callback handling with
// in-memory stand-ins for sessionStorage, location, history and fetch.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  authorizeUrl,
  base64url,
  callbackParams,
  completeSignIn,
  logoutUrl,
  OAuthError,
  pkceChallenge,
  randomString,
  startSignIn,
} from '../../src/web/js/oauth.js';

const CONFIG = {
  oauth: {
    authorize_url: 'https://auth.example.com/oauth2/authorize',
    token_url: 'https://auth.example.com/oauth2/token',
    client_id: 'client123',
    scopes: 'openid email',
    logout_url: 'https://auth.example.com/logout',
  },
};

function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
    size: () => m.size,
  };
}

function fakeLocation(href) {
  const u = new URL(href);
  return { origin: u.origin, pathname: u.pathname, search: u.search, hash: u.hash };
}

function fakeHistory() {
  const calls = [];
  return { calls, replaceState: (_s, _t, url) => calls.push(url) };
}

// Runs startSignIn and returns the URL it sent the browser to, and the storage.
async function started(storage = memoryStorage()) {
  let sentTo = null;
  await startSignIn(CONFIG, {
    storage,
    loc: fakeLocation('https://dash.example.com/app/#/login'),
    assign: (u) => {
      sentTo = new URL(u);
    },
  });
  return { sentTo, storage };
}

test('pkceChallenge is RFC 7636 appendix B', async () => {
  assert.equal(
    await pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  );
});

test('base64url has no padding and the URL-safe alphabet', () => {
  assert.equal(base64url(new Uint8Array([0xfb, 0xff])), '-_8');
  assert.equal(base64url(new Uint8Array([])), '');
});

test('randomString: 43 URL-safe characters by default, different each time', () => {
  const a = randomString();
  const b = randomString();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
  assert.match(randomString(48), /^[A-Za-z0-9_-]{64}$/);
});

test('authorizeUrl carries the code flow with an S256 challenge', () => {
  const u = new URL(authorizeUrl(CONFIG.oauth, { state: 's1', challenge: 'c1', redirect: 'https://d.example/' }));
  assert.equal(u.origin + u.pathname, CONFIG.oauth.authorize_url);
  assert.deepEqual(Object.fromEntries(u.searchParams), {
    response_type: 'code',
    client_id: 'client123',
    redirect_uri: 'https://d.example/',
    scope: 'openid email',
    state: 's1',
    code_challenge: 'c1',
    code_challenge_method: 'S256',
  });
});

test('callbackParams: null on an ordinary load, the fields on a callback', () => {
  assert.equal(callbackParams(''), null);
  assert.equal(callbackParams('?checkout=success'), null);
  assert.deepEqual(callbackParams('?code=abc&state=xyz'), {
    code: 'abc',
    state: 'xyz',
    error: null,
    errorDescription: null,
  });
  assert.equal(callbackParams('?error=access_denied').error, 'access_denied');
});

test('startSignIn keeps state and verifier, sends their challenge, redirect_uri without hash', async () => {
  const { sentTo, storage } = await started();
  const pending = JSON.parse(storage.getItem('koumpa.oauth.pending'));
  assert.equal(sentTo.searchParams.get('state'), pending.state);
  assert.equal(sentTo.searchParams.get('redirect_uri'), 'https://dash.example.com/app/');
  assert.equal(pending.redirect, 'https://dash.example.com/app/');
  assert.equal(sentTo.searchParams.get('code_challenge'), await pkceChallenge(pending.verifier));
  assert.notEqual(pending.state, pending.verifier);
});

test('completeSignIn exchanges the code with the verifier, stores the ID token, cleans the URL', async () => {
  const { storage } = await started();
  const pending = JSON.parse(storage.getItem('koumpa.oauth.pending'));
  const history = fakeHistory();
  const posts = [];
  let stored = null;
  const token = await completeSignIn(CONFIG, {
    storage,
    history,
    loc: fakeLocation(`https://dash.example.com/app/?code=the-code&state=${pending.state}`),
    setToken: (t) => {
      stored = t;
    },
    fetchFn: async (url, init) => {
      posts.push({ url, init });
      return new Response(JSON.stringify({ id_token: 'id.jwt', access_token: 'acc.jwt' }), { status: 200 });
    },
  });
  assert.equal(token, 'id.jwt');
  assert.equal(stored, 'id.jwt');
  assert.deepEqual(history.calls, ['https://dash.example.com/app/']);
  assert.equal(storage.getItem('koumpa.oauth.pending'), null, 'a pending sign-in is used once');
  assert.equal(posts.length, 1);
  assert.equal(posts[0].url, CONFIG.oauth.token_url);
  assert.equal(posts[0].init.method, 'POST');
  assert.equal(posts[0].init.headers['Content-Type'], 'application/x-www-form-urlencoded');
  assert.deepEqual(Object.fromEntries(new URLSearchParams(posts[0].init.body)), {
    grant_type: 'authorization_code',
    client_id: 'client123',
    code: 'the-code',
    redirect_uri: 'https://dash.example.com/app/',
    code_verifier: pending.verifier,
  });
});

test('completeSignIn is null and touches nothing on an ordinary load', async () => {
  const history = fakeHistory();
  const r = await completeSignIn(CONFIG, {
    storage: memoryStorage(),
    history,
    loc: fakeLocation('https://dash.example.com/#/projects'),
    fetchFn: () => assert.fail('no exchange'),
  });
  assert.equal(r, null);
  assert.deepEqual(history.calls, []);
});

test('a state that does not match is refused before any exchange, and the URL is cleaned', async () => {
  const { storage } = await started();
  const history = fakeHistory();
  await assert.rejects(
    completeSignIn(CONFIG, {
      storage,
      history,
      loc: fakeLocation('https://dash.example.com/app/?code=c&state=forged#/login'),
      setToken: () => assert.fail('no token'),
      fetchFn: () => assert.fail('no exchange'),
    }),
    (err) => err instanceof OAuthError && /state mismatch/.test(err.message),
  );
  assert.deepEqual(history.calls, ['https://dash.example.com/app/#/login']);
});

test('a callback with no sign-in pending in this tab is refused', async () => {
  await assert.rejects(
    completeSignIn(CONFIG, {
      storage: memoryStorage(),
      history: fakeHistory(),
      loc: fakeLocation('https://dash.example.com/?code=c&state=s'),
      fetchFn: () => assert.fail('no exchange'),
    }),
    /state mismatch/,
  );
});

test('error= from the provider becomes a readable OAuthError', async () => {
  const { storage } = await started();
  await assert.rejects(
    completeSignIn(CONFIG, {
      storage,
      history: fakeHistory(),
      loc: fakeLocation('https://dash.example.com/?error=access_denied&error_description=User+cancelled'),
      fetchFn: () => assert.fail('no exchange'),
    }),
    (err) => err instanceof OAuthError && /User cancelled/.test(err.message),
  );
});

test('a refused exchange names the provider error', async () => {
  const { storage } = await started();
  const pending = JSON.parse(storage.getItem('koumpa.oauth.pending'));
  await assert.rejects(
    completeSignIn(CONFIG, {
      storage,
      history: fakeHistory(),
      loc: fakeLocation(`https://dash.example.com/?code=c&state=${pending.state}`),
      setToken: () => assert.fail('no token'),
      fetchFn: async () => new Response(JSON.stringify({ error: 'invalid_grant' }), { status: 400 }),
    }),
    /invalid_grant/,
  );
});

test('logoutUrl adds client_id and logout_uri, and is null without logout_url', () => {
  const u = new URL(logoutUrl(CONFIG, fakeLocation('https://dash.example.com/app/#/projects')));
  assert.equal(u.searchParams.get('client_id'), 'client123');
  assert.equal(u.searchParams.get('logout_uri'), 'https://dash.example.com/app/');
  assert.equal(logoutUrl({ oauth: { ...CONFIG.oauth, logout_url: undefined } }), null);
  assert.equal(logoutUrl({ oauth: null }), null);
});
