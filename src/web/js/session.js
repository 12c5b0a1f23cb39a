// The session: the bearer token the API gave at sign-up or login.
// Kept in localStorage under "koumpa.token" so that it survives a reload and is shared by the
// tabs of the dashboard's origin (docs/ARCHITECTURE.md, "Dashboard", says why this is safe enough).
// It is never put in a URL. main.js clears it on logout and whenever the API answers 401.

const KEY = 'koumpa.token';
const listeners = new Set();

function storage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null; // storage disabled: the session then lasts as long as the page
  }
}

let memory = null;

export function getToken() {
  const s = storage();
  if (!s) return memory;
  try {
    return s.getItem(KEY);
  } catch {
    return memory;
  }
}

function notify() {
  const token = getToken();
  for (const fn of listeners) fn(token);
}

export function setToken(token) {
  memory = token;
  try {
    storage()?.setItem(KEY, token);
  } catch {
    /* quota or disabled: keep it in memory */
  }
  notify();
}

export function clearToken() {
  memory = null;
  try {
    storage()?.removeItem(KEY);
  } catch {
    /* nothing stored */
  }
  notify();
}

/** Calls fn(token or null) whenever the token changes, in this tab or another. Returns an unsubscribe. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

globalThis.addEventListener?.('storage', (e) => {
  if (e.key === KEY || e.key === null) notify();
});
