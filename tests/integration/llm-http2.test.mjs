// llm-http2.test.mjs - the connection to the LLM provider over HTTP/2
// (KOUMPA_LLM_HTTP_VERSION, src/llm/http_stream.h): against a fake Anthropic
// API on node:http2 over TLS (h2 by ALPN, as api.anthropic.com), by default a
// generation works and several at once share one connection; HTTP/1.1 stays
// what the default speaks on plain http (local OpenAI-compatible servers), and
// 1.1 can be forced; h2c (HTTP/2 on http://, prior knowledge) works where
// libcurl can reuse such a connection and is refused at start-up where it
// cannot; an unknown value stops start-up naming the variable.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { selfSigned } from './fake-common.mjs';
import { startFakeOpenAI } from './fake-openai.mjs';
import { api, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const APP = 'An app.\n<file path="index.html">\n<!doctype html><p>Hello — 日本語 😀</p>\n</file>\n';

/** One generation through the event stream: its events. */
async function generate(server, token, prompt) {
  const res = await sse(server, 'POST', '/v1/projects', { token, body: { prompt } });
  assert.equal(res.status, 200);
  return readEvents(res);
}

function lastEvent(events) {
  return events.at(-1)?.event;
}

/** A server whose user may run `concurrent` generations at once, with credits for them. */
async function serverWith(env, concurrent = 1) {
  const server = await startServer({ env });
  const admin = await signup(server, 'admin@h2.test');
  assert.equal((await server.run(['admin', 'grant', 'admin@h2.test'])).code, 0);
  const user = await signup(server);
  const plan = { name: 'H2', price_cents: 0, monthly_credits: 0, daily_bonus: 20, max_concurrent_generations: concurrent };
  assert.equal((await api(server, 'PUT', '/v1/admin/plans/h2', { token: admin.token, body: plan })).status < 300, true);
  assert.equal((await api(server, 'PUT', `/v1/admin/users/${user.user.id}/plan`, { token: admin.token, body: { plan_id: 'h2' } })).status, 200);
  await server.run(['daily-bonus', '--date', '2099-01-01']);
  return { server, token: user.token };
}

/** A generation, then four at once: all done over HTTP/2, the five calls on one connection. */
async function fiveCallsOneConnection(fake, server, token) {
  const first = await generate(server, token, 'one app');
  assert.equal(lastEvent(first), 'done', JSON.stringify(first.at(-1)));
  assert.equal(fake.requests.length, 1);
  assert.equal(fake.requests[0].httpVersion, '2.0');

  // four at once, each stream long enough (1.5 s) that they overlap
  fake.setScenario({ type: 'text', text: APP, durationMs: 1500 });
  const all = await Promise.all([1, 2, 3, 4].map((i) => generate(server, token, `app ${i}`)));
  for (const events of all) assert.equal(lastEvent(events), 'done', JSON.stringify(events.at(-1)));
  assert.equal(fake.requests.length, 5);
  const times = fake.requests.slice(1).map((r) => r.time);
  assert.ok(Math.max(...times) - Math.min(...times) < 1500, 'the four calls overlapped');
  assert.equal(fake.connections.total, 1, `one HTTP/2 connection for every call, not ${fake.connections.total}`);
}

describe('HTTP/2 to the provider (KOUMPA_LLM_HTTP_VERSION)', () => {
  const cleanups = [];
  let dir;
  let tls;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-h2-'));
    tls = selfSigned(dir, 'fake-anthropic');
  });
  after(async () => {
    for (const f of cleanups.reverse()) await f();
    await rm(dir, { recursive: true, force: true });
  });

  test('https (default, auto): a generation completes over HTTP/2, and concurrent generations share one connection', async () => {
    const fake = await startFakeAnthropic({ apiKey: 'sk-h2', http2: true, tls, scenario: { type: 'text', text: APP } });
    cleanups.push(() => fake.close());
    assert.match(fake.url, /^https:/);
    const env = { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-h2', KOUMPA_CA_BUNDLE: tls.cert };
    const { server, token } = await serverWith(env, 4);
    cleanups.push(() => server.stop());
    await fiveCallsOneConnection(fake, server, token);
  });

  test('http:// with KOUMPA_LLM_HTTP_VERSION=2 (h2c): one shared connection, or refused at start-up where libcurl cannot reuse it', async (t) => {
    const fake = await startFakeAnthropic({ apiKey: 'sk-h2', http2: true, scenario: { type: 'text', text: APP } });
    cleanups.push(() => fake.close());
    const env = { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-h2', KOUMPA_LLM_HTTP_VERSION: '2' };
    let started;
    try {
      started = await serverWith(env, 4);
    } catch (e) {
      assert.match(e.message, /KOUMPA_LLM_HTTP_VERSION=2 on an http:\/\/ URL .* needs libcurl 8\.0\.0/);
      t.diagnostic('this libcurl cannot reuse h2c connections: refused at start-up, as it should');
      return;
    }
    cleanups.push(() => started.server.stop());
    await fiveCallsOneConnection(fake, started.server, started.token);
  });

  test('HTTP/1.1 forced (KOUMPA_LLM_HTTP_VERSION=1.1): a generation completes over HTTP/1.1', async () => {
    const fake = await startFakeAnthropic({ apiKey: 'sk-h1', scenario: { type: 'text', text: APP } });
    cleanups.push(() => fake.close());
    const { server, token } = await serverWith({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-h1', KOUMPA_LLM_HTTP_VERSION: '1.1' });
    cleanups.push(() => server.stop());
    assert.equal(lastEvent(await generate(server, token, 'one app')), 'done');
    assert.equal(fake.requests[0].httpVersion, '1.1');
  });

  test('an OpenAI-compatible server on plain http is spoken to in HTTP/1.1 by default', async () => {
    const fake = await startFakeOpenAI({ scenario: { type: 'text', text: APP } });
    cleanups.push(() => fake.close());
    const { server, token } = await serverWith({ OPENAI_BASE_URL: fake.url, KOUMPA_MODEL: 'qwen2.5-coder' });
    cleanups.push(() => server.stop());
    const events = await generate(server, token, 'one app');
    assert.equal(lastEvent(events), 'done', JSON.stringify(events.at(-1)));
    assert.equal(fake.requests.length, 1);
    assert.equal(fake.requests[0].httpVersion, '1.1');
  });

  test('plain http (auto): a call never waits behind another call that has not answered yet', async () => {
    // On http:// the protocol is known only from a connection's first response: a call told to wait for
    // a connection it could multiplex on (PIPEWAIT) would wait for the other call's answer, here never.
    const scenario = (rec) => (JSON.stringify(rec.body.messages).includes('[[hang]]') ? { type: 'hang' } : { type: 'text', text: APP });
    const fake = await startFakeAnthropic({ apiKey: 'sk-h1', scenario });
    cleanups.push(() => fake.close());
    const { server, token } = await serverWith({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-h1' }, 2);
    cleanups.push(() => server.stop());
    const hung = await api(server, 'POST', '/v1/projects', { token, body: { prompt: 'an app [[hang]]' } });
    assert.equal(hung.status, 202, hung.text);
    for (let i = 0; i < 400 && fake.requests.length < 1; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(fake.requests.length, 1, 'the first call reached the provider');
    const events = await generate(server, token, 'another app');
    assert.equal(lastEvent(events), 'done', JSON.stringify(events.at(-1)));
    assert.equal(fake.requests.length, 2, 'the hung call was not retried meanwhile');
    assert.doesNotMatch(server.logs(), /llm call retrying/, 'the second call went out at once, not once the hung one timed out');
    assert.equal(fake.requests[1].httpVersion, '1.1');
    const canceled = await api(server, 'POST', `/v1/projects/${hung.json.id}/cancel`, { token });
    assert.ok(canceled.status < 300, canceled.text);
  });

  test('an unknown KOUMPA_LLM_HTTP_VERSION stops start-up, naming the variable', async () => {
    await assert.rejects(
      startServer({ env: { KOUMPA_LLM_HTTP_VERSION: '3' } }),
      (e) => /KOUMPA_LLM_HTTP_VERSION=3/.test(String(e.message) + String(e.stderr ?? '')),
    );
  });
});
