// sse.test.mjs - js/sse.js: the text/event-stream parser (WHATWG HTML, "event stream
// interpretation") and follow(), which resumes with Last-Event-ID and never delivers an event twice.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { SseParser, follow, retryable } from '../../src/web/js/sse.js';
import { sseResponse as response } from './streams.mjs';

function parse(chunks, opts) {
  const events = [];
  const comments = [];
  const p = new SseParser((e) => events.push(e), { onComment: (c) => comments.push(c), ...opts });
  for (const c of chunks) p.feed(typeof c === 'string' ? c : new Uint8Array(c));
  p.end();
  return { events, comments, parser: p };
}

describe('SseParser', () => {
  test('fields, names and ids', () => {
    const { events } = parse(['id: 4\nevent: file\ndata: {"path":"index.html"}\n\n']);
    assert.deepEqual(events, [{ id: '4', event: 'file', data: '{"path":"index.html"}' }]);
  });

  test('multi-line data is joined with LF; no name means "message"', () => {
    const { events } = parse(['data: one\ndata:two\ndata:  three\n\n']);
    assert.deepEqual(events, [{ id: '', event: 'message', data: 'one\ntwo\n three' }]);
  });

  test('comments are not events; a blank line without data dispatches nothing but ends the block', () => {
    const { events, comments } = parse([': keep-alive\n\nevent: x\n\ndata: y\n\n']);
    assert.deepEqual(comments, ['keep-alive']);
    assert.deepEqual(events, [{ id: '', event: 'message', data: 'y' }]); // "event: x" had no data: dropped
  });

  test('the last event id persists across events; an id containing NUL is ignored', () => {
    const { events } = parse(['id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\nid\ndata: d\n\n']);
    assert.deepEqual(
      events.map((e) => e.id),
      ['7', '7', '7', ''],
    );
  });

  test('retry takes digits only', () => {
    const seen = [];
    const { parser } = parse(['retry: 1500\n', 'retry: 2s\n', 'retry\n\n'], { onRetry: (ms) => seen.push(ms) });
    assert.deepEqual(seen, [1500]);
    assert.equal(parser.retry, 1500);
  });

  test('CR, LF and CRLF line ends, also when CRLF is split between chunks', () => {
    const { events } = parse(['data: a\r', '\ndata: b\rdata: c\r\n\r', '\nid: 2\ndata: d\r\r']);
    assert.deepEqual(events, [
      { id: '', event: 'message', data: 'a\nb\nc' },
      { id: '2', event: 'message', data: 'd' },
    ]);
  });

  test('a field without a colon, unknown fields, only one leading space removed', () => {
    const { events } = parse(['data\nfoo: bar\ndata:   x\n\n']);
    assert.deepEqual(events, [{ id: '', event: 'message', data: '\n  x' }]);
  });

  test('UTF-8 split inside a character, and a leading BOM dropped', () => {
    const bytes = [...new TextEncoder().encode('\uFEFFdata: Déjà 😀\n\n')];
    const { events } = parse([bytes.slice(0, 10), bytes.slice(10, 13), bytes.slice(13)]);
    assert.deepEqual(events, [{ id: '', event: 'message', data: 'Déjà 😀' }]);
  });

  test('an event left unfinished at the end of the stream is discarded', () => {
    const { events } = parse(['id: 1\ndata: whole\n\nid: 2\ndata: cut']);
    assert.deepEqual(
      events.map((e) => e.data),
      ['whole'],
    );
  });
});

const ev = (id, name, data) => `id: ${id}\nevent: ${name}\ndata: ${data}\n\n`;
const noSleep = async () => {};

describe('follow', () => {
  test('resumes after a drop with the last id, skips events it already has, ends at the final one', async () => {
    const asked = [];
    const plan = [
      () => response([ev(1, 'project', '{}'), ev(2, 'delta', '"a"'), 'id: 3\nevent: delta\ndata: "cu'], { fail: true }),
      // a server that sends again what the client had (and the cut event) must not duplicate it
      () => response([ev(2, 'delta', '"a"'), ev(3, 'delta', '"b"'), ev(4, 'done', '{}')]),
    ];
    const got = [];
    const states = [];
    const how = await follow({
      connect: async (last, attempt) => {
        asked.push([last, attempt]);
        return plan.shift()();
      },
      onEvent: (e) => got.push(`${e.id}:${e.event}:${e.data}`),
      isFinal: (e) => e.event === 'done',
      onState: (s, info) => states.push(s === 'reconnecting' ? `${s}:${info.error.code}` : s),
      sleep: noSleep,
    });
    assert.equal(how, 'final');
    assert.deepEqual(asked, [
      ['', 0],
      ['2', 1],
    ]);
    assert.deepEqual(got, ['1:project:{}', '2:delta:"a"', '3:delta:"b"', '4:done:{}']);
    assert.deepEqual(states, ['connected', 'reconnecting:network', 'connected']); // a broken body is a network failure
  });

  test('starts from the given Last-Event-ID (a reload) and delivers only later events', async () => {
    const got = [];
    await follow({
      lastEventId: '5',
      connect: async (last) => {
        assert.equal(last, '5');
        return response([ev(5, 'delta', 'old'), ev(6, 'file', 'new'), ev(7, 'error', 'x')]);
      },
      onEvent: (e) => got.push(e.id),
      isFinal: (e) => e.event === 'error',
      sleep: noSleep,
    });
    assert.deepEqual(got, ['6', '7']);
  });

  test('backs off on network errors and 5xx/429, doubling up to the maximum, honouring Retry-After', async () => {
    const waits = [];
    const errors = [
      Object.assign(new Error('down'), { status: 0, code: 'network' }),
      Object.assign(new Error('busy'), { status: 503 }),
      Object.assign(new Error('full'), { status: 429, details: { retryAfter: 5 } }),
      Object.assign(new Error('down'), { status: 0 }),
      Object.assign(new Error('down'), { status: 0 }),
    ];
    await follow({
      connect: async () => {
        if (errors.length) throw errors.shift();
        return response([ev(1, 'done', '{}')]);
      },
      onEvent: () => {},
      isFinal: () => true,
      minDelayMs: 100,
      maxDelayMs: 500,
      sleep: async (ms) => waits.push(ms),
    });
    assert.deepEqual(waits, [100, 200, 5000, 500, 500]);
  });

  test('a refusal that retrying cannot fix (4xx) is thrown', async () => {
    const err = Object.assign(new Error('nope'), { status: 404, code: 'not_found' });
    await assert.rejects(
      follow({ connect: async () => Promise.reject(err), onEvent: () => {}, sleep: noSleep }),
      (e) => e === err,
    );
    assert.equal(retryable(err), false);
    assert.equal(retryable({ status: 0 }), true);
  });

  test('a clean end without the final event asks onEnd whether to go on', async () => {
    let connects = 0;
    let ends = 0;
    const how = await follow({
      connect: async () => (connects++, response([])),
      onEvent: () => assert.fail('no events'),
      onEnd: async () => ++ends < 3,
      sleep: noSleep,
    });
    assert.equal(how, 'ended');
    assert.equal(connects, 3);
  });

  test('the signal stops it', async () => {
    const ac = new AbortController();
    const how = await follow({
      connect: async () => {
        ac.abort();
        throw Object.assign(new Error('aborted'), { name: 'AbortError' });
      },
      onEvent: () => {},
      signal: ac.signal,
      sleep: noSleep,
    });
    assert.equal(how, 'aborted');
  });
});
