// admission.test.mjs - the plan's limit on generations at a time holds when a
// user fires several requests at once: exactly the allowed number start, the
// others get 429 too_many_generations and are charged nothing. Admissions run
// on their own pool (KOUMPA_ADMISSION_THREADS): the HTTP threads answer while
// one waits on the disk, and a full queue is 503 busy, charged nothing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, HOOKS_BIN, signup, sqliteOnly, startServer } from './harness.mjs';

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

test('admissions run off the HTTP threads: /v1/me answers while one waits on the disk; a full queue is 503 busy, charged nothing', { skip: sqliteOnly('the fault point is inside the SQLite admission transaction') }, async () => {
  // one HTTP thread, one admission thread and no queue; every admission held 1.5 s inside its write
  const slow = await startServer({
    bin: HOOKS_BIN,
    env: {
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'sk-test',
      KOUMPA_THREADS: '1',
      KOUMPA_ADMISSION_THREADS: '1',
      KOUMPA_ADMISSION_QUEUE: '0',
      KOUMPA_TEST_DELAY: 'after_reserve:1500',
    },
  });
  try {
    const a = await signup(slow);
    const b = await signup(slow);
    const before = await api(slow, 'GET', '/v1/me', { token: b.token });
    const done = {};
    const timed = (name, p) => p.then((r) => ((done[name] = performance.now()), r));
    const first = timed('first', api(slow, 'POST', '/v1/projects', { token: a.token, body: { prompt: 'held in its write' } }));
    await new Promise((r) => setTimeout(r, 300));
    const [me, second] = await Promise.all([
      timed('me', api(slow, 'GET', '/v1/me', { token: b.token })),
      api(slow, 'POST', '/v1/projects', { token: b.token, body: { prompt: 'no room' } }),
    ]);
    const admitted = await first;
    assert.equal(me.status, 200);
    assert.ok(done.me < done.first, 'GET /v1/me was answered while the admission waited (the one HTTP thread is free)');
    // one admission thread, no queue: of the two, one is admitted and the other refused at once
    assert.deepEqual([admitted.status, second.status].sort(), [202, 503]);
    const refused = admitted.status === 503 ? admitted : second;
    assert.equal(refused.json.error.code, 'busy');
    assert.match(refused.json.error.message, /generation requests/);
    assert.ok(Number(refused.headers.get('retry-after')) > 0);
    const charged = (await api(slow, 'GET', '/v1/me', { token: b.token })).json.credits.total;
    assert.equal(charged, before.json.credits.total - (second.status === 202 ? 1 : 0), 'the refused request charged nothing');
  } finally {
    await slow.stop();
  }
});
