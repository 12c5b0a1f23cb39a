// oauth.js - sign-in through the identity provider's hosted UI (AWS Cognito),
// used when /config.json carries "oauth": OAuth 2.0 authorization code with
// PKCE (RFC 7636, S256), no client secret, no third-party code.
//
// startSignIn() keeps a random state and code verifier in sessionStorage (this
// tab only, gone when it closes) and sends the browser to authorize_url. The
// provider sends it back to the dashboard's own URL (origin + path, no query,
// no hash) with ?code=&state=; completeSignIn() checks the state, exchanges the
// code at token_url (a form POST with client_id and code_verifier), hands the
// ID token to session.setToken and removes code and state from the address bar
// with history.replaceState, so the one-time code is not left in the history.
// The ID token is kept (not the access token) because it carries the verified
// email the API links accounts and admin rights with (src/auth/auth.c accepts
// both kinds). signOut() also visits the provider's logout_url when set, so
// the next "Sign in" asks for credentials again.
//
// The pure helpers (randomString, base64url, pkceChallenge, authorizeUrl,
// callbackParams) are unit-tested in tests/web/oauth.test.mjs; the browser
// objects are parameters with the real ones as defaults. renderSignIn() is
// what the login screen (views/auth-form.js) shows above its own form.
import { alertBox, h, showErrorIn } from './dom.js';

const PENDING_KEY = 'koumpa.oauth.pending';

// An error a person can act on: shown on the login screen.
export class OAuthError extends Error {
  constructor(message) {
    super(message);
    this.name = 'OAuthError';
  }
}

// Whether the dashboard signs in through the hosted UI.
export function oauthEnabled(config) {
  return Boolean(config && config.oauth && config.oauth.authorize_url && config.oauth.token_url);
}

// base64url without padding (RFC 4648 section 5) of a byte array.
export function base64url(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// A random base64url string from `bytes` random bytes (32 bytes: 43
// characters, within PKCE's 43 to 128 for a verifier).
export function randomString(bytes = 32) {
  return base64url(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));
}

// The S256 code challenge of a verifier: base64url(SHA-256(ASCII verifier)).
export async function pkceChallenge(verifier) {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// The dashboard's own URL, as registered with the provider: no query, no hash.
export function redirectUri(loc = globalThis.location) {
  return loc.origin + loc.pathname;
}

// The provider's authorization URL for this sign-in.
export function authorizeUrl(oauth, { state, challenge, redirect }) {
  const url = new URL(oauth.authorize_url);
  const params = {
    response_type: 'code',
    client_id: oauth.client_id,
    redirect_uri: redirect,
    scope: oauth.scopes || 'openid email',
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

// What the provider put in the query: null when this load is not a callback.
export function callbackParams(search) {
  const q = new URLSearchParams(search);
  if (!q.has('code') && !q.has('error')) return null;
  return {
    code: q.get('code'),
    state: q.get('state'),
    error: q.get('error'),
    errorDescription: q.get('error_description'),
  };
}

// Sends the browser to the hosted UI. Resolves only if assign does not leave.
export async function startSignIn(
  config,
  { storage = globalThis.sessionStorage, loc = globalThis.location, assign = (u) => loc.assign(u) } = {},
) {
  if (!oauthEnabled(config)) throw new OAuthError('sign-in through the identity provider is not configured');
  const state = randomString();
  const verifier = randomString(48);
  const redirect = redirectUri(loc);
  storage.setItem(PENDING_KEY, JSON.stringify({ state, verifier, redirect }));
  assign(authorizeUrl(config.oauth, { state, challenge: await pkceChallenge(verifier), redirect }));
}

// The pending sign-in this tab started, removed (a code is used once); null if none.
function takePending(storage) {
  const raw = storage.getItem(PENDING_KEY);
  storage.removeItem(PENDING_KEY);
  try {
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

// Exchanges the code; resolves to the token response's ID token.
async function exchangeCode(oauth, code, pending, fetchFn) {
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    client_id: oauth.client_id,
    code,
    redirect_uri: pending.redirect,
    code_verifier: pending.verifier,
  });
  let res;
  try {
    res = await fetchFn(oauth.token_url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
  } catch {
    throw new OAuthError('Could not reach the sign-in service. Check your connection and sign in again.');
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const why = body.error_description || body.error || `status ${res.status}`;
    throw new OAuthError(`The sign-in service refused the sign-in (${why}). Sign in again.`);
  }
  if (typeof body.id_token !== 'string' || !body.id_token)
    throw new OAuthError('The sign-in service answered without an ID token (is the "openid" scope allowed?).');
  return body.id_token;
}

// Handles the provider's callback on load. Resolves to the token (already
// given to setToken) or null when this load is no callback; throws OAuthError
// when the provider reported an error or the state does not match. The URL is
// cleaned in every case.
export async function completeSignIn(
  config,
  {
    loc = globalThis.location,
    storage = globalThis.sessionStorage,
    fetchFn = globalThis.fetch.bind(globalThis),
    history = globalThis.history,
    setToken = null,
  } = {},
) {
  const cb = callbackParams(loc.search);
  if (!cb || !oauthEnabled(config)) return null;
  const pending = takePending(storage);
  history.replaceState(null, '', redirectUri(loc) + loc.hash);
  if (cb.error)
    throw new OAuthError(`Sign-in did not complete: ${cb.errorDescription || cb.error}. Sign in again.`);
  if (!pending || !cb.state || cb.state !== pending.state)
    throw new OAuthError('This sign-in answer was not started from this tab (state mismatch). Sign in again.');
  const token = await exchangeCode(config.oauth, cb.code, pending, fetchFn);
  const store = setToken || (await import('./session.js')).setToken;
  store(token);
  return token;
}

// The provider's logout URL for this dashboard (Cognito's /logout wants
// client_id and logout_uri); null when none is configured.
export function logoutUrl(config, loc = globalThis.location) {
  const u = config && config.oauth && config.oauth.logout_url;
  if (!u) return null;
  const url = new URL(u);
  if (!url.searchParams.has('client_id')) url.searchParams.set('client_id', config.oauth.client_id);
  if (!url.searchParams.has('logout_uri') && !url.searchParams.has('redirect_uri'))
    url.searchParams.set('logout_uri', redirectUri(loc));
  return url.toString();
}

// After the local token is cleared: ends the provider's session too, when it
// has a logout URL. Returns whether the browser is being sent away.
export function signOut(config, { loc = globalThis.location, assign = (u) => loc.assign(u) } = {}) {
  const url = logoutUrl(config, loc);
  if (!url) return false;
  assign(url);
  return true;
}

// A sign-in error in the alert: ours as they are, the API's through describeError.
function failed(alert, err) {
  if (err instanceof OAuthError) alert.replaceChildren(h('strong', {}, 'Sign-in failed.'), ' ', err.message);
  else showErrorIn(alert, err);
}

// The login screen's part: the "Sign in" button and, on the provider's
// callback, the code exchange with its progress and errors.
export async function renderSignIn(container, ctx) {
  const alert = alertBox();
  const status = h('p', { role: 'status', class: 'muted' });
  const button = h('button', { type: 'button', class: 'oauth-primary' }, 'Sign in');
  button.addEventListener('click', async () => {
    showErrorIn(alert, null);
    button.disabled = true;
    status.textContent = 'Opening the sign-in page…';
    try {
      await startSignIn(ctx.config);
    } catch (err) {
      status.textContent = '';
      failed(alert, err);
      button.disabled = false;
    }
  });
  container.replaceChildren(
    button,
    h('p', { class: 'muted' }, 'Sign in with your organisation’s account, or log in below with a Koumpa password.'),
    alert,
    status,
  );
  if (!callbackParams(globalThis.location.search)) return;
  button.disabled = true;
  status.textContent = 'Signing you in…';
  try {
    if (!(await completeSignIn(ctx.config))) return;
    status.textContent = '';
    await ctx.refreshMe();
    const next = globalThis.sessionStorage.getItem('koumpa.next');
    globalThis.sessionStorage.removeItem('koumpa.next');
    ctx.navigate(next && !/^#\/(login|signup)/.test(next) ? next : '#/projects');
  } catch (err) {
    status.textContent = '';
    failed(alert, err);
  } finally {
    button.disabled = false;
  }
}
