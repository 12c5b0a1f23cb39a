// Server-Sent Events over fetch: EventSource cannot send an Authorization header, so the
// dashboard reads text/event-stream bodies itself. No DOM here (tests/web/sse.test.mjs runs it
// under node).
//
// SseParser implements the WHATWG HTML "event stream interpretation": UTF-8 (a leading BOM
// dropped), lines ended by CRLF, LF or CR, comments (":"), fields event/data/id/retry with one
// optional space after the colon, multi-line data joined with "\n", the last event id kept across
// events, an id with U+0000 ignored, an event dispatched at a blank line only when it has data, and
// an unfinished event at the end of the stream discarded.
//
// follow() reads a stream and, when it drops, reconnects with Last-Event-ID (backing off on
// network errors), skipping any event whose numeric id it has already delivered, so a consumer
// never sees an event twice.

export class SseParser {
  constructor(onEvent, { onComment, onRetry } = {}) {
    this.onEvent = onEvent;
    this.onComment = onComment || null;
    this.onRetry = onRetry || null;
    this.decoder = new TextDecoder('utf-8');
    this.buffer = '';
    this.started = false;
    this.pendingCR = false;
    this.data = '';
    this.hasData = false;
    this.type = '';
    this.lastEventId = '';
    this.retry = null;
  }

  /** Feeds bytes (Uint8Array) or already-decoded text. */
  feed(chunk) {
    let text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.pendingCR) {
      // a CR ended the previous chunk: a LF starting this one belongs to it
      this.pendingCR = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 === this.buffer.length) this.pendingCR = true;
        else if (this.buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: a partial line or event is discarded, as the spec says. */
  end() {
    this.feed(this.decoder.decode());
    this.buffer = '';
    this.data = '';
    this.hasData = false;
    this.type = '';
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) {
      if (this.onComment) this.onComment(line.slice(1).replace(/^ /, ''));
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.type = value;
        break;
      case 'data':
        this.data += value + '\n';
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) {
          this.retry = Number(value);
          if (this.onRetry) this.onRetry(this.retry);
        }
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  dispatch() {
    if (!this.hasData) {
      this.type = '';
      return;
    }
    const ev = { id: this.lastEventId, event: this.type || 'message', data: this.data.slice(0, -1) };
    this.data = '';
    this.hasData = false;
    this.type = '';
    this.onEvent(ev);
  }
}

/** Reads a fetch body (ReadableStream of bytes) through a parser until it ends or signal aborts. */
export async function readStream(body, parser, signal) {
  const reader = body.getReader();
  const stop = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', stop, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
    parser.end();
  } finally {
    signal?.removeEventListener('abort', stop);
    reader.releaseLock?.();
  }
}

function newer(id, last) {
  if (!last) return true;
  if (/^[0-9]+$/.test(id) && /^[0-9]+$/.test(last)) return Number(id) > Number(last);
  return id !== last;
}

const sleeper = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** Whether an error is worth reconnecting for: the network, a 5xx, a 429 (too many readers). */
export function retryable(err) {
  if (!err || err.name === 'AbortError') return false;
  const s = err.status;
  return s === undefined || s === 0 || s === 429 || s >= 500;
}

/**
 * Follows an event stream across drops.
 * - connect(lastEventId, attempt) -> Promise<Response> (ok, with a body); it throws ApiError on refusals
 * - onEvent({id, event, data}) for each new event, in order, never twice (numeric ids compared)
 * - isFinal(ev) -> true when ev is the last one (follow() then returns 'final')
 * - onState('connected' | 'reconnecting', {attempt, delayMs, error})
 * - onEnd() -> Promise<boolean>: the stream ended cleanly without a final event; true to reconnect
 * - lastEventId: where to resume from; signal: stops everything (follow() returns 'aborted')
 * Errors for which retryable() is false are thrown.
 */
export async function follow({
  connect,
  onEvent,
  isFinal = () => false,
  onState = () => {},
  onEnd = async () => true,
  lastEventId = '',
  signal,
  minDelayMs = 500,
  maxDelayMs = 30000,
  maxAttempts = Infinity,
  sleep = sleeper,
} = {}) {
  let last = lastEventId || '';
  let attempt = 0;
  let delay = minDelayMs;
  let final = false;
  let retryMs = 0;
  const deliver = (ev) => {
    if (final || !newer(ev.id, last)) return;
    if (ev.id) last = ev.id;
    onEvent(ev);
    if (isFinal(ev)) final = true;
  };
  while (!signal?.aborted) {
    let error = null;
    try {
      const res = await connect(last, attempt);
      onState('connected', { attempt });
      // a new parser per connection: an event cut by a drop is discarded, never half-delivered
      const parser = new SseParser(deliver, { onRetry: (ms) => (retryMs = ms) });
      parser.lastEventId = last;
      await readStream(res.body, parser, signal);
      if (final) return 'final';
      if (signal?.aborted) break;
      attempt = 0;
      delay = minDelayMs;
      if (!(await onEnd())) return 'ended';
    } catch (err) {
      if (final) return 'final';
      if (signal?.aborted || err?.name === 'AbortError') break;
      if (!retryable(err)) throw err;
      // a stream that broke while being read is a network failure, as a failed fetch is
      error = err && typeof err.status === 'number' ? err : Object.assign(new Error('the connection dropped'), { status: 0, code: 'network', cause: err });
    }
    attempt++;
    if (attempt > maxAttempts) throw error || new Error('the stream kept ending');
    const retryAfter = error?.details?.retryAfter ? error.details.retryAfter * 1000 : 0;
    const wait = Math.max(error ? delay : minDelayMs, retryAfter, retryMs);
    onState('reconnecting', { attempt, delayMs: wait, error });
    await sleep(wait, signal);
    if (error) delay = Math.min(delay * 2, maxDelayMs);
  }
  return 'aborted';
}
