// fake-openai.mjs - a fake OpenAI-compatible chat completions server (POST
// /v1/chat/completions, also without /v1) for tests, answering with the
// documented streaming format
// (https://platform.openai.com/docs/api-reference/chat-streaming):
// `data: {chat.completion.chunk}` lines, a last chunk with finish_reason, a
// usage chunk (choices: []) when stream_options.include_usage is set (every
// other chunk then carries "usage": null), and `data: [DONE]`.
//
//   import { startFakeOpenAI } from './fake-openai.mjs';
//   const fake = await startFakeOpenAI();   // {url (ends in /v1: use it as OPENAI_BASE_URL), requests, setScenario, reset, close}
//
//   node tests/integration/fake-openai.mjs --port 0 [--api-key K] [--exit-on-stdin-close]
//   prints its base URL; control endpoints in fake-common.mjs.
//
// Validation as OpenAI answers it (400 invalid_request_error): a body that is
// not JSON; model missing; messages missing or empty; a role other than
// system, developer, user, assistant or tool; stream_options without stream.
// With apiKey set, Authorization: Bearer {apiKey} is required (401
// invalid_api_key); without, any or no key is accepted, like local servers.
//
// Scenarios: the same names and options as fake-anthropic.mjs (text,
// max_tokens [finish_reason "length"], error_event [a data chunk holding an
// error object], cut, slow, hang, rate_limited, overloaded [503],
// server_error, invalid_request, auth_error, http_error).
import { DEFAULT_CHUNK_SIZES, chars, cliMain, filler, pieces, randomId, sendJson, startFake, writeStream } from './fake-common.mjs';

export const DEFAULT_TEXT = 'Hello from the fake OpenAI-compatible server. Déjà vu: 日本語 😀 — done.';
const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

const HTTP_ERRORS = {
  rate_limited: { status: 429, errorType: 'requests', code: 'rate_limit_exceeded', message: 'Rate limit reached for requests' },
  overloaded: { status: 503, errorType: 'server_error', code: null, message: 'The engine is currently overloaded, please try again later' },
  server_error: { status: 500, errorType: 'server_error', code: null, message: 'The server had an error while processing your request' },
  invalid_request: { status: 400, errorType: 'invalid_request_error', code: null, message: 'Invalid request' },
  auth_error: { status: 401, errorType: 'invalid_request_error', code: 'invalid_api_key', message: 'Incorrect API key provided' },
};

function sendError(res, status, type, message, code = null, headers = {}) {
  sendJson(res, status, { error: { message, type, param: null, code } }, { 'x-request-id': randomId('req_'), ...headers });
}

/** The first problem OpenAI would report, as [status, type, message, code], or null. */
export function validate(rec, apiKey) {
  if (apiKey !== undefined && rec.headers.authorization !== `Bearer ${apiKey}`) {
    return [401, 'invalid_request_error', 'Incorrect API key provided', 'invalid_api_key'];
  }
  const b = rec.body;
  if (!b || typeof b !== 'object' || Array.isArray(b)) return [400, 'invalid_request_error', 'We could not parse the JSON body of your request.'];
  if (typeof b.model !== 'string' || !b.model) return [400, 'invalid_request_error', 'you must provide a model parameter'];
  if (!Array.isArray(b.messages)) return [400, 'invalid_request_error', "'messages' is a required property"];
  if (b.messages.length === 0) return [400, 'invalid_request_error', "[] is too short - 'messages'"];
  for (const [i, m] of b.messages.entries()) {
    if (!m || !ROLES.has(m.role)) return [400, 'invalid_request_error', `Invalid value for 'messages[${i}].role'`];
  }
  if (b.stream_options && b.stream !== true) return [400, 'invalid_request_error', 'The stream_options parameter is only allowed when stream is enabled.'];
  if (b.max_tokens !== undefined && (!Number.isInteger(b.max_tokens) || b.max_tokens < 1)) return [400, 'invalid_request_error', 'max_tokens must be a positive integer'];
  return null;
}

function estimatePromptTokens(body) {
  return Math.max(1, Math.ceil(JSON.stringify(body.messages).length / 4));
}

function plan(scenario, body) {
  const text = scenario.text ?? (scenario.type === 'slow' ? filler(scenario.bytes ?? 8192) : DEFAULT_TEXT);
  if (scenario.type !== 'max_tokens') return { text, finish: scenario.finishReason || 'stop' };
  const all = chars(text);
  const last = body.messages[body.messages.length - 1];
  let from = 0;
  if (last.role === 'assistant' && typeof last.content === 'string' && text.startsWith(last.content)) from = chars(last.content).length;
  const to = Math.min(all.length, from + (scenario.maxChars ?? Math.ceil(all.length / 2)));
  return { text: all.slice(from, to).join(''), finish: to < all.length ? 'length' : 'stop' };
}

function chunkFrames(scenario, body, { text, finish }, stopAt) {
  const id = randomId('chatcmpl-');
  const created = Math.floor(Date.now() / 1000);
  const model = scenario.model || body.model;
  const withUsage = body.stream_options?.include_usage === true;
  const data = (choices, extra = {}) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices, ...(withUsage ? { usage: null } : {}), ...extra })}\n\n`;
  const choice = (delta, finishReason = null) => [{ index: 0, delta, logprobs: null, finish_reason: finishReason }];
  const frames = [data(choice({ role: 'assistant', content: '', refusal: null }))];
  if (scenario.pings !== false) frames.push(': keep-alive\n\n');
  if (scenario.unknownEvent !== false) frames.push('event: vendor_annotation\ndata: {"note":"an event this client has never heard of"}\n\n');
  const limit = stopAt ? (scenario.afterChars ?? Math.floor(chars(text).length / 2)) : Infinity;
  let sent = 0;
  for (const p of pieces(text, scenario.pieceChars ?? 6)) {
    if (sent >= limit) break;
    frames.push(data(choice({ content: p })));
    sent += chars(p).length;
  }
  if (stopAt === 'error') {
    frames.push(`data: ${JSON.stringify({ error: { message: scenario.message || 'The server had an error while processing your request', type: scenario.errorType || 'server_error', param: null, code: null } })}\n\n`);
    return frames;
  }
  if (stopAt === 'cut') {
    frames.push(data(choice({ content: 'never seen in full' })));
    return frames;
  }
  frames.push(data(choice({}, finish)));
  if (withUsage) {
    const prompt = scenario.inputTokens ?? estimatePromptTokens(body);
    const completion = scenario.outputTokens ?? Math.max(1, Math.ceil(Buffer.byteLength(text) / 4));
    frames.push(data([], { usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } }));
  }
  frames.push('data: [DONE]\n\n');
  return frames;
}

function nonStreaming(res, scenario, body, p) {
  const prompt = scenario.inputTokens ?? estimatePromptTokens(body);
  const completion = scenario.outputTokens ?? Math.max(1, Math.ceil(Buffer.byteLength(p.text) / 4));
  sendJson(res, 200, {
    id: randomId('chatcmpl-'), object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: scenario.model || body.model,
    choices: [{ index: 0, message: { role: 'assistant', content: p.text, refusal: null }, logprobs: null, finish_reason: p.finish }],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  });
}

async function answer(req, res, rec, scenario, { apiKey }) {
  if (rec.method !== 'POST' || !['/v1/chat/completions', '/chat/completions'].includes(rec.path)) {
    return sendError(res, 404, 'invalid_request_error', `Invalid URL (${rec.method} ${rec.path})`);
  }
  const problem = validate(rec, apiKey);
  if (problem) return sendError(res, ...problem);
  const type = scenario.type || 'text';
  if (type === 'hang') return;
  if (type === 'http_error' || HTTP_ERRORS[type]) {
    const e = { ...HTTP_ERRORS[type], ...scenario };
    const headers = { ...(e.headers || {}) };
    if (e.status === 429 && scenario.retryAfter !== undefined) headers['retry-after'] = String(scenario.retryAfter);
    return sendError(res, e.status, e.errorType || 'server_error', e.message || 'error', e.code ?? null, headers);
  }
  const p = plan(scenario, rec.body);
  if (rec.body.stream !== true) return nonStreaming(res, scenario, rec.body, p);
  const stopAt = type === 'error_event' ? 'error' : type === 'cut' ? 'cut' : null;
  if (type === 'error_event' && scenario.text === undefined) p.text = 'Partial output. ';
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-request-id': randomId('req_') });
  const durationMs = scenario.durationMs ?? (type === 'slow' ? 20000 : undefined);
  await writeStream(res, chunkFrames(scenario, rec.body, p, stopAt), {
    chunkSizes: scenario.chunkSizes || DEFAULT_CHUNK_SIZES, delayMs: scenario.delayMs ?? 0, durationMs, cut: type === 'cut',
  });
}

/** Starts the fake: opts {port (0), host ('127.0.0.1'), apiKey (required Bearer key; any when unset), scenario}. */
export async function startFakeOpenAI(opts = {}) {
  const fake = await startFake({ ...opts, api: answer, defaultScenario: { type: 'text' }, urlPath: '/v1' });
  if (opts.scenario) fake.setScenario(opts.scenario);
  return fake;
}

await cliMain(import.meta.url, startFakeOpenAI);
