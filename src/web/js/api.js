// The API client: every call the dashboard makes to Koumpa's JSON API goes through here.
// configure() sets the base URL (config.json's api_base; "" is the same origin), where the bearer
// token comes from and what to do on a 401. Errors are thrown as ApiError, built from the API's
// {"error":{"code","message"}} body; a network failure is status 0, code "network".

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const state = { base: '', streamBase: '', getToken: () => null, onUnauthorized: null };

export function configure({ base = '', streamBase, getToken, onUnauthorized } = {}) {
  state.base = String(base || '').replace(/\/+$/, '');
  state.streamBase = String(streamBase || '').replace(/\/+$/, '');
  if (getToken) state.getToken = getToken;
  state.onUnauthorized = onUnauthorized || null;
}

/** The absolute or relative URL of an API path; stream: true uses stream_base when it is set. */
export function apiUrl(path, { stream = false } = {}) {
  return ((stream && state.streamBase) || state.base) + path;
}

async function errorFrom(res, authenticated) {
  let code = 'http_' + res.status;
  let message = res.statusText || 'the server answered ' + res.status;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(res.status, code, message, {
    authenticated,
    requestId: res.headers.get('X-Request-Id'),
    retryAfter: Number(res.headers.get('Retry-After')) || null,
  });
}

/**
 * Sends a request and returns the Response when it is 2xx; throws ApiError otherwise.
 * body: an object (sent as JSON) or a string; stream: send to stream_base (SSE, streamed POSTs).
 */
export async function request(method, path, { body, headers = {}, signal, stream = false } = {}) {
  const h = { ...headers };
  const token = state.getToken();
  if (token) h.Authorization = 'Bearer ' + token;
  let payload;
  if (body !== undefined && body !== null) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(apiUrl(path, { stream }), { method, headers: h, body: payload, signal, cache: 'no-store' });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'cannot reach the server', { cause: String(e && e.message) });
  }
  if (res.ok) return res;
  const err = await errorFrom(res, Boolean(token));
  if (res.status === 401 && token && state.onUnauthorized) state.onUnauthorized(err);
  throw err;
}

/** Calls the API: the parsed JSON answer, or null when there is none (204). */
export async function api(method, path, { body, headers, signal } = {}) {
  const res = await request(method, path, { body, headers: { Accept: 'application/json', ...headers }, signal });
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, 'bad_response', 'the server answered something that is not JSON');
  }
}
