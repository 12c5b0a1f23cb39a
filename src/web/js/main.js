// The dashboard's entry point and router. Reads config.json, configures the API client
// (js/api.js) with the session's token (js/session.js), draws the header's navigation and
// renders the view of the current hash route: a view is js/views/<name>.js exporting
// `async render(root, ctx)`, which may return a cleanup function called when leaving it.
// ctx = { api, config, me, params, navigate(hash), refreshMe(), showError(err) }.
import { api, configure } from './api.js';
import { getToken, clearToken, onChange } from './session.js';
import { h, showErrorIn } from './dom.js';

const DEFAULT_CONFIG = { api_base: '', stream_base: '', apps_url: null, oauth: null };

// [pattern, view, needs a session]
const ROUTES = [
  [/^\/login$/, 'login', false],
  [/^\/signup$/, 'signup', false],
  [/^\/projects$/, 'projects', true],
  [/^\/projects\/([A-Za-z0-9_-]+)$/, 'project', true],
  [/^\/projects\/([A-Za-z0-9_-]+)\/v\/([1-9][0-9]*)$/, 'project', true],
  [/^\/billing$/, 'billing', true],
  [/^\/admin$/, 'admin', true],
  [/^\/verify(?:[?&].*)?$/, 'verify', false], // the verification mail's link (views/verify.js), signed in or not
];

const app = { config: DEFAULT_CONFIG, me: null, cleanup: null, seq: 0, retries: 0, notice: null, loggingOut: false };
const main = () => document.getElementById('main');
const banner = () => document.getElementById('banner');

async function loadConfig() {
  try {
    const res = await fetch('config.json', { cache: 'no-store' });
    if (res.ok) return { ...DEFAULT_CONFIG, ...(await res.json()) };
  } catch {
    /* no config.json: the API is on this origin */
  }
  return DEFAULT_CONFIG;
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function showError(err) {
  showErrorIn(banner(), err);
}

async function refreshMe() {
  if (!getToken()) {
    app.me = null;
  } else {
    try {
      app.me = await api('GET', '/v1/me');
    } catch (err) {
      if (err.status !== 401) showError(err);
      app.me = err.status === 401 ? null : app.me;
    }
  }
  drawNav();
  return app.me;
}

async function logOut() {
  sessionStorage.removeItem('koumpa.next');
  app.loggingOut = true; // back to the projects after the next login, not to this screen
  clearToken();
  app.loggingOut = false;
  app.me = null;
  // signed in through the identity provider: end its session too (js/oauth.js)
  if (app.config.oauth && app.config.oauth.logout_url && (await import('./oauth.js')).signOut(app.config)) return;
  navigate('#/login');
}

// The token is gone (logged out here or in another tab, or refused by the API): to the login
// screen, remembering where the user was unless they logged out.
function signedOut() {
  app.me = null;
  const m = match(hashPath(location.hash));
  if (!m || !m.auth) return drawNav();
  if (!app.loggingOut) sessionStorage.setItem('koumpa.next', location.hash);
  navigate('#/login');
}

function drawNav() {
  const nav = document.getElementById('nav');
  if (!getToken()) {
    nav.replaceChildren();
    return;
  }
  const here = location.hash.split('/')[1] || '';
  const link = (href, label) =>
    h('a', { href, 'aria-current': here === href.split('/')[1] ? 'page' : null }, label);
  const me = app.me;
  const isAdmin = Boolean(me && (me.is_admin || (me.user && me.user.is_admin)));
  const items = [link('#/projects', 'Projects'), link('#/billing', 'Credits and plan')];
  if (isAdmin) items.push(link('#/admin', 'Admin'));
  items.push(h('button', { type: 'button', class: 'link', onclick: logOut }, 'Log out'));
  nav.replaceChildren(...items);
}

function hashPath(hash) {
  try {
    return decodeURIComponent(hash.replace(/^#/, ''));
  } catch {
    return ''; // a malformed escape: no route, so the default screen
  }
}

function match(path) {
  for (const [re, view, auth] of ROUTES) {
    const m = re.exec(path);
    if (m) return { view, auth, args: m.slice(1) };
  }
  return null;
}

async function route() {
  const seq = ++app.seq;
  const path = hashPath(location.hash) || '/';
  const m = match(path);
  const authed = Boolean(getToken());
  if (!m) return navigate(authed ? '#/projects' : '#/login');
  if (m.auth && !authed) {
    sessionStorage.setItem('koumpa.next', location.hash);
    return navigate('#/login');
  }
  if (!m.auth && authed && (m.view === 'login' || m.view === 'signup')) return navigate('#/projects');
  if (app.cleanup) {
    try {
      app.cleanup();
    } catch {
      /* a view's cleanup must not stop the next view */
    }
    app.cleanup = null;
  }
  showError(app.notice || null);
  app.notice = null;
  drawNav();
  const root = main();
  root.replaceChildren(h('p', { role: 'status' }, 'Loading…'));
  let mod;
  try {
    mod = await import(`./views/${m.view}.js`);
  } catch (err) {
    console.error(err); // eslint-disable-line no-console -- a missing or broken view module
    if (seq !== app.seq) return;
    root.replaceChildren(h('h1', {}, 'Not available'), h('p', {}, 'This screen is not part of this dashboard yet.'));
    return;
  }
  if (seq !== app.seq) return;
  const params = m.view === 'project' ? { id: m.args[0], n: m.args[1] ? Number(m.args[1]) : null } : {};
  const ctx = { api, config: app.config, me: app.me, params, navigate, refreshMe, showError };
  root.replaceChildren();
  try {
    const cleanup = await mod.render(root, ctx);
    if (seq !== app.seq) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    app.cleanup = typeof cleanup === 'function' ? cleanup : null;
    app.retries = 0;
  } catch (err) {
    if (seq !== app.seq) return;
    showError(err);
    if (err && err.status === 0) retryLater(seq);
  }
  if (seq === app.seq) focusHeading(root);
}

// The network failed while a screen loaded: "Reconnecting…" (errors.js) and try again, waiting
// 1, 2, 4... up to 30 seconds, for as long as the user stays on that screen.
function retryLater(seq) {
  const delay = Math.min(1000 * 2 ** (app.retries || 0), 30000);
  app.retries = (app.retries || 0) + 1;
  setTimeout(() => {
    if (seq === app.seq) route();
  }, delay);
}

let firstRender = true;
function focusHeading(root) {
  // Move focus to the new screen's heading (not on the first load), so that keyboard and screen
  // reader users start at the top of what changed.
  if (firstRender) {
    firstRender = false;
    return;
  }
  const h1 = root.querySelector('h1');
  if (h1 && !root.contains(document.activeElement)) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: false });
  }
}

async function start() {
  app.config = await loadConfig();
  configure({
    base: app.config.api_base,
    streamBase: app.config.stream_base,
    getToken,
    onUnauthorized: (err) => {
      // the token expired or was revoked: say so on the login screen
      app.notice = err;
      clearToken();
    },
  });
  onChange((token) => (token ? drawNav() : signedOut()));
  window.addEventListener('hashchange', () => {
    app.retries = 0;
    route();
  });
  if (getToken()) await refreshMe();
  await route();
}

start();
