// fake-anthropic.mjs - a fake Anthropic Messages API (POST /v1/messages) for
// tests: validates requests the way the real API does and answers with the
// documented streaming wire format (https://docs.anthropic.com/en/api/messages-streaming)
// or the documented error shapes, as the chosen scenario says.
//
//   import { startFakeAnthropic } from './fake-anthropic.mjs';
//   const fake = await startFakeAnthropic({ apiKey: 'sk-test' });  // {url, requests, setScenario, reset, close}
//   fake.setScenario([{ type: 'rate_limited', retryAfter: 1 }, { type: 'text', text: 'Hi' }]);
//
//   node tests/integration/fake-anthropic.mjs --port 0 [--api-key K] [--exit-on-stdin-close]
//   prints its base URL (use it as ANTHROPIC_BASE_URL); control endpoints in fake-common.mjs.
//
// Validation, answered as the API does (400 invalid_request_error unless said):
// x-api-key missing (401 authentication_error) or, when apiKey is given, wrong
// (401); anthropic-version missing or not one of 2023-06-01 and 2026-10-21; a
// body that is not JSON; model, max_tokens or messages missing; max_tokens not
// a positive integer; an empty messages list, a role other than user or
// assistant, content that is neither a string nor an array; a final assistant
// message ending in whitespace; an unknown top-level field; and temperature,
// top_p or top_k (rejected in every version here, although 2023-06-01 still
// takes them, so that a client sending them never passes a test).
//
// Scenarios ({type, ...options}; common options: chunkSizes (byte sizes of the
// written chunks, in turn), delayMs (between chunks), durationMs (whole
// stream), gate (a name: the stream's last chunk waits for openGate(name)),
// inputTokens, outputTokens, model):
//   text           text (default DEFAULT_TEXT), stopReason ('end_turn'),
//                  pings (true), unknownEvent (true), pieceChars (6)
//   max_tokens     text, maxChars: streams at most maxChars characters and
//                  stops with max_tokens; when the last message is an
//                  assistant prefill that starts the text, it continues from
//                  there (so a client that continues converges on text)
//   error_event    text ('Partial output. '), errorType ('overloaded_error'),
//                  message ('Overloaded'): some text, then event: error
//   cut            text, afterChars (default half): the socket is destroyed
//                  in the middle of the stream
//   slow           bytes (8192) or text, durationMs (20000)
//   hang           accepts the request and never answers
//   rate_limited   429 rate_limit_error, retryAfter (seconds, default 1), message
//   overloaded     529 overloaded_error
//   server_error   500 api_error
//   invalid_request 400 invalid_request_error, message
//   auth_error     401 authentication_error
//   http_error     status, errorType, message, headers
import { DEFAULT_CHUNK_SIZES, chars, cliMain, filler, pieces, randomId, sendJson, startFake, writeStream } from './fake-common.mjs';

export const KNOWN_VERSIONS = ['2023-06-01', '2026-10-21'];
export const DEFAULT_TEXT = 'Hello from the fake Anthropic API. Déjà vu: 日本語 😀 — done.';
const SAMPLING = ['temperature', 'top_p', 'top_k'];
const KNOWN_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'system', 'stream', 'metadata', 'stop_sequences', 'tools', 'tool_choice',
  'thinking', 'service_tier', 'container', 'mcp_servers', 'context_management', ...SAMPLING,
]);

const HTTP_ERRORS = {
  rate_limited: { status: 429, errorType: 'rate_limit_error', message: 'Number of request tokens has exceeded your per-minute rate limit' },
  overloaded: { status: 529, errorType: 'overloaded_error', message: 'Overloaded' },
  server_error: { status: 500, errorType: 'api_error', message: 'Internal server error' },
  invalid_request: { status: 400, errorType: 'invalid_request_error', message: 'Invalid request' },
  auth_error: { status: 401, errorType: 'authentication_error', message: 'invalid x-api-key' },
};

function errorBody(type, message, requestId) {
  return { type: 'error', error: { type, message }, request_id: requestId };
}

function sendError(res, status, type, message, headers = {}) {
  const requestId = randomId('req_');
  sendJson(res, status, errorBody(type, message, requestId), { 'request-id': requestId, ...headers });
}

/** The first problem the real API would report, as [status, type, message], or null. */
export function validate(rec, apiKey) {
  const h = rec.headers;
  if (!h['x-api-key']) return [401, 'authentication_error', 'x-api-key header is required'];
  if (apiKey !== undefined && h['x-api-key'] !== apiKey) return [401, 'authentication_error', 'invalid x-api-key'];
  const version = h['anthropic-version'];
  if (!version) return [400, 'invalid_request_error', 'anthropic-version: header is required'];
  if (!KNOWN_VERSIONS.includes(version)) return [400, 'invalid_request_error', `anthropic-version: invalid version ${version}`];
  const b = rec.body;
  if (!b || typeof b !== 'object' || Array.isArray(b)) return [400, 'invalid_request_error', 'the request body is not a JSON object'];
  for (const k of SAMPLING) if (k in b) return [400, 'invalid_request_error', `${k}: Extra inputs are not permitted`];
  for (const k of Object.keys(b)) if (!KNOWN_FIELDS.has(k)) return [400, 'invalid_request_error', `${k}: Extra inputs are not permitted`];
  for (const k of ['model', 'max_tokens', 'messages']) if (!(k in b)) return [400, 'invalid_request_error', `${k}: Field required`];
  if (typeof b.model !== 'string' || !b.model) return [400, 'invalid_request_error', 'model: Input should be a valid string'];
  if (!Number.isInteger(b.max_tokens) || b.max_tokens < 1) return [400, 'invalid_request_error', 'max_tokens: Input should be greater than or equal to 1'];
  if (!Array.isArray(b.messages) || b.messages.length === 0) return [400, 'invalid_request_error', 'messages: at least one message is required'];
  for (const [i, m] of b.messages.entries()) {
    if (!m || (m.role !== 'user' && m.role !== 'assistant')) return [400, 'invalid_request_error', `messages.${i}.role: Input should be 'user' or 'assistant'`];
    if (typeof m.content !== 'string' && !Array.isArray(m.content)) return [400, 'invalid_request_error', `messages.${i}.content: Input should be a valid string or list`];
  }
  const last = b.messages[b.messages.length - 1];
  if (last.role === 'assistant' && typeof last.content === 'string' && /\s$/.test(last.content)) {
    return [400, 'invalid_request_error', 'final assistant content cannot end with trailing whitespace'];
  }
  if (b.system !== undefined && typeof b.system !== 'string' && !Array.isArray(b.system)) return [400, 'invalid_request_error', 'system: Input should be a valid string or list'];
  return null;
}

function frame(event, data) {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function estimateInputTokens(body) {
  return Math.max(1, Math.ceil((JSON.stringify(body.messages).length + JSON.stringify(body.system || '').length) / 4));
}

/** The text to stream and the stop reason for a scenario and request. */
function plan(scenario, body) {
  const text = scenario.text ?? (scenario.type === 'slow' ? filler(scenario.bytes ?? 8192) : DEFAULT_TEXT);
  if (scenario.type !== 'max_tokens') return { text, stopReason: scenario.stopReason || 'end_turn' };
  const all = chars(text);
  const last = body.messages[body.messages.length - 1];
  let from = 0;
  if (last.role === 'assistant' && typeof last.content === 'string' && text.startsWith(last.content)) from = chars(last.content).length;
  const max = scenario.maxChars ?? Math.ceil(all.length / 2);
  const to = Math.min(all.length, from + max);
  return { text: all.slice(from, to).join(''), stopReason: to < all.length ? 'max_tokens' : 'end_turn' };
}

/** The SSE frames of a message; stopAt ('cut' / 'error') ends them early after afterChars characters. */
function messageFrames(scenario, body, { text, stopReason }, stopAt) {
  const model = scenario.model || body.model;
  const inputTokens = scenario.inputTokens ?? estimateInputTokens(body);
  const outputTokens = scenario.outputTokens ?? Math.max(1, Math.ceil(Buffer.byteLength(text) / 4));
  const frames = [
    frame('message_start', {
      type: 'message_start',
      message: {
        id: randomId('msg_'), type: 'message', role: 'assistant', content: [], model,
        stop_reason: null, stop_sequence: null,
        usage: { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1, service_tier: 'standard' },
      },
    }),
    frame('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
  ];
  if (scenario.pings !== false) frames.push(frame('ping', { type: 'ping' }));
  if (scenario.unknownEvent !== false) frames.push(frame('content_block_annotation', { type: 'content_block_annotation', index: 0, note: 'an event type this client has never heard of' }));
  const limit = stopAt ? (scenario.afterChars ?? Math.floor(chars(text).length / 2)) : Infinity;
  let sent = 0;
  for (const [i, p] of pieces(text, scenario.pieceChars ?? 6).entries()) {
    if (sent >= limit) break;
    frames.push(frame('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } }));
    sent += chars(p).length;
    if (scenario.pings !== false && i % 5 === 4) frames.push(frame('ping', { type: 'ping' }));
  }
  if (stopAt === 'error') {
    frames.push(frame('error', { type: 'error', error: { type: scenario.errorType || 'overloaded_error', message: scenario.message || 'Overloaded' } }));
    return frames;
  }
  if (stopAt === 'cut') {
    frames.push(frame('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'never seen in full' } }));
    return frames;
  }
  frames.push(
    frame('content_block_stop', { type: 'content_block_stop', index: 0 }),
    frame('message_delta', { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: outputTokens } }),
    frame('message_stop', { type: 'message_stop' }),
  );
  return frames;
}

function streamHeaders() {
  return { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': randomId('req_') };
}

function nonStreaming(res, scenario, body, p) {
  sendJson(res, 200, {
    id: randomId('msg_'), type: 'message', role: 'assistant', model: scenario.model || body.model,
    content: [{ type: 'text', text: p.text }], stop_reason: p.stopReason, stop_sequence: null,
    usage: { input_tokens: scenario.inputTokens ?? estimateInputTokens(body), output_tokens: scenario.outputTokens ?? Math.max(1, Math.ceil(Buffer.byteLength(p.text) / 4)) },
  }, { 'request-id': randomId('req_') });
}

async function answer(req, res, rec, scenario, { apiKey, gate }) {
  if (rec.method !== 'POST' || rec.path !== '/v1/messages') return sendError(res, 404, 'not_found_error', `Not found: ${rec.method} ${rec.path}`);
  const problem = validate(rec, apiKey);
  if (problem) return sendError(res, ...problem);
  const type = scenario.type || 'text';
  if (type === 'hang') return; // never answers; the client must time out
  if (type === 'http_error' || HTTP_ERRORS[type]) {
    const e = { ...HTTP_ERRORS[type], ...scenario };
    const headers = { ...(e.headers || {}) };
    if (e.status === 429) headers['retry-after'] = String(scenario.retryAfter ?? 1);
    return sendError(res, e.status, e.errorType || 'api_error', e.message || 'error', headers);
  }
  const p = plan(scenario, rec.body);
  if (rec.body.stream !== true) return nonStreaming(res, scenario, rec.body, p);
  const stopAt = type === 'error_event' ? 'error' : type === 'cut' ? 'cut' : null;
  if (type === 'error_event' && scenario.text === undefined) p.text = 'Partial output. ';
  const frames = messageFrames(scenario, rec.body, p, stopAt);
  res.writeHead(200, streamHeaders());
  const durationMs = scenario.durationMs ?? (type === 'slow' ? 20000 : undefined);
  await writeStream(res, frames, {
    chunkSizes: scenario.chunkSizes || DEFAULT_CHUNK_SIZES,
    delayMs: scenario.delayMs ?? 0,
    durationMs,
    cut: type === 'cut',
    gate: scenario.gate ? gate(scenario.gate) : undefined,
  });
}

/** Starts the fake: opts {port (0), host ('127.0.0.1'), apiKey (any key accepted when unset), scenario}. */
export async function startFakeAnthropic(opts = {}) {
  const fake = await startFake({ ...opts, api: answer, defaultScenario: { type: 'text' } });
  if (opts.scenario) fake.setScenario(opts.scenario);
  return fake;
}

await cliMain(import.meta.url, startFakeAnthropic);

/** A scenario function: `slow` over durationMs when the last message contains "[[slow]]", else `text`. */
export function slowWhenMarked(text, durationMs = 60000) {
  return (rec) => {
    const msgs = rec.body.messages;
    const slow = JSON.stringify(msgs[msgs.length - 1].content).includes('[[slow]]');
    return slow ? { type: 'slow', text, durationMs } : { type: 'text', text };
  };
}
