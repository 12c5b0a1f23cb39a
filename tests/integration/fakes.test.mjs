// fakes.test.mjs - self-test of the fake LLM servers (fake-anthropic.mjs,
// fake-openai.mjs): their wire format, their validation, their scenarios and
// control endpoints, checked with plain fetch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { startFakeOpenAI } from './fake-openai.mjs';

/** Parses an SSE body into [{event, data}] (enough for these well-formed streams). */
function parseSse(text) {
  return text
    .split('\n\n')
    .filter((block) => block.trim() && !block.startsWith(':'))
    .map((block) => {
      const ev = { event: 'message', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) ev.event = line.slice(7);
        else if (line.startsWith('data: ')) ev.data += line.slice(6);
      }
      return ev;
    });
}

const MESSAGES = [{ role: 'user', content: 'Write a to-do app.' }];

describe('fake Anthropic API', () => {
  let fake;
  const post = (body, headers = {}) =>
    fetch(`${fake.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'k', 'anthropic-version': '2026-10-21', 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'k' });
  });
  after(() => fake.close());

  test('streams the documented events; the text deltas join into the text', async () => {
    const text = 'Bonjour 日本 😀 fin';
    fake.setScenario({ type: 'text', text, chunkSizes: [1, 2, 3], inputTokens: 5, outputTokens: 7 });
    const res = await post({ model: 'claude-sonnet-5-5', max_tokens: 100, messages: MESSAGES, stream: true });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = parseSse(await res.text());
    const names = events.map((e) => e.event);
    assert.equal(names[0], 'message_start');
    assert.equal(names.at(-1), 'message_stop');
    assert.ok(names.includes('ping'));
    assert.ok(names.includes('content_block_annotation'));
    for (const e of events) assert.equal(JSON.parse(e.data).type, e.event);
    const joined = events
      .filter((e) => e.event === 'content_block_delta')
      .map((e) => JSON.parse(e.data).delta.text)
      .join('');
    assert.equal(joined, text);
    const delta = JSON.parse(events.find((e) => e.event === 'message_delta').data);
    assert.equal(delta.delta.stop_reason, 'end_turn');
    assert.equal(delta.usage.output_tokens, 7);
    assert.equal(JSON.parse(events[0].data).message.usage.input_tokens, 5);
  });

  test('validates like the API', async () => {
    fake.setScenario({ type: 'text' });
    const ok = { model: 'm', max_tokens: 10, messages: MESSAGES, stream: true };
    const cases = [
      [{ ...ok, temperature: 0.5 }, {}, 400, /temperature/],
      [{ ...ok, top_k: 5 }, {}, 400, /top_k/],
      [{ model: 'm', messages: MESSAGES }, {}, 400, /max_tokens: Field required/],
      [{ ...ok, messages: [] }, {}, 400, /messages/],
      [ok, { 'x-api-key': '' }, 401, /x-api-key/],
      [ok, { 'x-api-key': 'wrong' }, 401, /invalid x-api-key/],
      [ok, { 'anthropic-version': '2024-01-01' }, 400, /anthropic-version/],
      [{ ...ok, messages: [...MESSAGES, { role: 'assistant', content: 'Sure ' }] }, {}, 400, /trailing whitespace/],
    ];
    for (const [body, headers, status, message] of cases) {
      const res = await post(body, headers);
      assert.equal(res.status, status, JSON.stringify(body));
      const j = await res.json();
      assert.equal(j.type, 'error');
      assert.match(j.error.message, message);
    }
    assert.equal((await post(ok, { 'anthropic-version': '2023-06-01' })).status, 200);
  });

  test('scenario queue, retry-after, and the control endpoints', async () => {
    const base = fake.url;
    await fetch(`${base}/__reset`, { method: 'POST' });
    const set = await fetch(`${base}/__scenario`, {
      method: 'POST',
      body: JSON.stringify([{ type: 'rate_limited', retryAfter: 3 }, { type: 'overloaded' }, { type: 'text', text: 'x' }]),
    });
    assert.equal(set.status, 204);
    const body = { model: 'm', max_tokens: 10, messages: MESSAGES, stream: true };
    const r1 = await post(body);
    assert.equal(r1.status, 429);
    assert.equal(r1.headers.get('retry-after'), '3');
    assert.equal((await r1.json()).error.type, 'rate_limit_error');
    const r2 = await post(body);
    assert.equal(r2.status, 529);
    assert.equal((await r2.json()).error.type, 'overloaded_error');
    assert.equal((await post(body)).status, 200);
    assert.equal((await post(body)).status, 200); // the last scenario sticks
    const recorded = await (await fetch(`${base}/__requests`)).json();
    assert.equal(recorded.length, 4);
    assert.equal(recorded[0].headers['anthropic-version'], '2026-10-21');
    assert.deepEqual(recorded[0].body.messages, MESSAGES);
  });

  test('error event, and max_tokens that continues from an assistant prefill', async () => {
    fake.setScenario({ type: 'error_event', text: 'abc' });
    const events = parseSse(await (await post({ model: 'm', max_tokens: 10, messages: MESSAGES, stream: true })).text());
    assert.equal(events.at(-1).event, 'error');
    assert.equal(JSON.parse(events.at(-1).data).error.type, 'overloaded_error');

    fake.setScenario({ type: 'max_tokens', text: 'abcdefghij', maxChars: 4 });
    const first = await (await post({ model: 'm', max_tokens: 10, messages: MESSAGES })).json();
    assert.equal(first.content[0].text, 'abcd');
    assert.equal(first.stop_reason, 'max_tokens');
    const next = await (
      await post({ model: 'm', max_tokens: 10, messages: [...MESSAGES, { role: 'assistant', content: 'abcdefgh' }] })
    ).json();
    assert.equal(next.content[0].text, 'ij');
    assert.equal(next.stop_reason, 'end_turn');
  });
});

describe('fake OpenAI-compatible server', () => {
  let fake;
  const post = (body, headers = {}) =>
    fetch(`${fake.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk', 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
  before(async () => {
    fake = await startFakeOpenAI({ apiKey: 'sk' });
  });
  after(() => fake.close());

  test('streams chunks, finish_reason, the usage chunk and [DONE]', async () => {
    fake.setScenario({ type: 'text', text: 'Hé 😀', chunkSizes: [3], inputTokens: 4, outputTokens: 2 });
    const res = await post({ model: 'llama', messages: MESSAGES, stream: true, stream_options: { include_usage: true } });
    assert.equal(res.status, 200);
    const events = parseSse(await res.text()).filter((e) => e.event === 'message');
    assert.equal(events.at(-1).data, '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hé 😀');
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.deepEqual(chunks.at(-1).usage, { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 });
    assert.equal(chunks[0].usage, null);
  });

  test('no usage chunk without include_usage; validation; errors', async () => {
    fake.setScenario({ type: 'text', text: 'x' });
    const events = parseSse(await (await post({ model: 'llama', messages: MESSAGES, stream: true })).text());
    assert.ok(events.every((e) => e.data === '[DONE]' || e.event !== 'message' || !('usage' in JSON.parse(e.data))));
    assert.equal((await post({ messages: MESSAGES, stream: true })).status, 400);
    assert.equal((await post({ model: 'llama', messages: MESSAGES }, { authorization: 'Bearer nope' })).status, 401);
    fake.setScenario({ type: 'server_error' });
    const r = await post({ model: 'llama', messages: MESSAGES, stream: true });
    assert.equal(r.status, 500);
    assert.equal((await r.json()).error.type, 'server_error');
  });
});
