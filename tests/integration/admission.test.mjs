// admission.test.mjs - the plan's limit on generations at a time holds when a
// user fires several requests at once: exactly the allowed number start, the
// others get 429 too_many_generations and are charged nothing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';

const APP = 'An app.\n<file path="index.html">\n<!doctype html><title>x</title><p>hi</p>\n</file>\n';
let fake;
let server;

before(async () => {
  fake = await startFakeAnthropic({ apiKey: 'sk-test' });
  fake.setScenario({ type: 'text', text: APP, durationMs: 3000 });
  server = await startServer({ env: { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-test' } });
});

after(async () => {
  await server?.stop();
  await fake?.close();
});

test('five simultaneous generations on the Free plan (1 at a time): one starts, four get 429', async () => {
  const user = await signup(server); // Free: 5 daily credits, 1 generation at a time
  const attempts = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: `app ${i}` } }),
    ),
  );
  const statuses = attempts.map((r) => r.status).sort();
  assert.deepEqual(statuses, [202, 429, 429, 429, 429]);
  for (const r of attempts.filter((a) => a.status === 429)) assert.equal(r.json.error.code, 'too_many_generations');

  const me = await api(server, 'GET', '/v1/me', { token: user.token });
  assert.equal(me.json.credits.total, 4, 'only the generation that started is charged');

  // once it is done, the next one is admitted
  const started = attempts.find((a) => a.status === 202).json;
  const id = started.id ?? started.project?.id;
  for (let i = 0; i < 200; i++) {
    const p = await api(server, 'GET', `/v1/projects/${id}`, { token: user.token });
    if (p.json.versions.at(-1).status !== 'generating') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const next = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'another' } });
  assert.equal(next.status, 202);
});
