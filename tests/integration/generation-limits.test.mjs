// generation-limits.test.mjs - a generation's total timeout (KOUMPA_GENERATION_TIMEOUT_S, gen/timeout.c) on
// the real server: the fake Anthropic API streams an app and holds back its last chunk (a gate that is
// never opened in time), so only the time limit can end the generation. The provider call is cancelled,
// the SSE reader gets the `error` event `timed_out`, the credit comes back once (`time_limit`), and a
// replay tells the same. (The Lambda deadline's cap: lambda-deadline.test.mjs.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const APP = '<file path="index.html">\n<!doctype html><p>never finished</p>\n</file>\nDone.\n';

async function credits(server, token) {
  const me = await api(server, 'GET', '/v1/me', { token });
  assert.equal(me.status, 200, me.text);
  return me.json.credits.total;
}

describe('generation time limit', () => {
  let fake;
  let server;
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario({ type: 'text', text: APP, gate: 'never' });
    server = await startServer({
      env: {
        ANTHROPIC_API_KEY: 'sk-test-key',
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_GENERATION_TIMEOUT_S: '1',
      },
    });
  });
  after(async () => {
    await server?.stop();
    fake?.openGate('never');
    await fake?.close();
  });

  test('a generation past KOUMPA_GENERATION_TIMEOUT_S fails timed_out, its call cancelled, refunded once', async () => {
    const u = await signup(server);
    const before = await credits(server, u.token);
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app that never ends' } });
    assert.equal(res.status, 200);
    const events = await readEvents(res);
    assert.equal(events[0].event, 'project');
    assert.ok(events.some((e) => e.event === 'delta'), 'the model had started writing');
    const last = events[events.length - 1];
    assert.equal(last.event, 'error');
    assert.equal(last.data.code, 'timed_out');
    assert.match(last.data.message, /longer than its limit of 1 s/);
    assert.equal(last.data.refunded, true);
    assert.equal(last.data.refund_reason, 'time_limit');
    assert.equal(last.data.credits_refunded, 1);
    assert.equal(await credits(server, u.token), before);

    // the provider's stream was abandoned, not finished
    const call = fake.requests[fake.requests.length - 1];
    for (let i = 0; i < 200 && call.closedByClient === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(call.closedByClient, true);

    const id = events[0].data.project_id;
    const p = await api(server, 'GET', `/v1/projects/${id}`, { token: u.token });
    assert.equal(p.status, 200);
    assert.equal(p.json.status, 'failed');
    assert.equal(p.json.versions[0].error.code, 'timed_out');
    assert.equal(p.json.versions[0].error.refunded, true);
    assert.equal(p.json.versions[0].error.refund_reason, 'time_limit');
    const ledger = await api(server, 'GET', '/v1/me/ledger', { token: u.token });
    assert.equal(ledger.status, 200, ledger.text);
    assert.equal(ledger.json.entries.filter((e) => e.reason === 'refund:time_limit').length, 1, ledger.text);

    // a replay ends the same way
    const replay = await readEvents(await sse(server, 'GET', `/v1/projects/${id}/events`, { token: u.token }));
    assert.deepEqual(replay[replay.length - 1], last);
    assert.equal(await credits(server, u.token), before);
  });
});
