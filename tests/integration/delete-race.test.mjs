// delete-race.test.mjs - deleting a project races a follow-up generation on
// it, many rounds: the delete is refused (409 generation_in_progress) while a
// version generates, and a follow-up is refused once the delete has begun,
// each checked in one transaction, so the two can never both succeed; at the
// end no credit is lost and no reservation is left without its version (a
// restart finds nothing to repair). The server is the fault-injection build
// (harness HOOKS_BIN) pausing each delete 40 ms after its check
// (KOUMPA_TEST_DELAY): a check that were not atomic with its effect would let
// the simultaneous follow-up through in every round.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';

import { slowWhenMarked, startFakeAnthropic } from './fake-anthropic.mjs';
import { api, HOOKS_BIN, signup, startServer } from './harness.mjs';

const APP = 'An app.\n<file path="index.html">\n<!doctype html><p>hello</p>\n</file>\n';
const ROUNDS = 40;
let fake;
let server;
let env;

before(async () => {
  fake = await startFakeAnthropic();
  fake.setScenario(slowWhenMarked(APP));
  env = { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url, KOUMPA_TEST_DELAY: 'before_project_files:40' };
  server = await startServer({ env, bin: HOOKS_BIN });
});

after(async () => {
  await server?.stop();
  await fake?.close();
});

async function credits(token) {
  const me = await api(server, 'GET', '/v1/me', { token });
  return me.json.credits;
}

async function ledgerSum(token) {
  const sum = { daily: 0, monthly: 0 };
  let cursor = null;
  do {
    const r = await api(server, 'GET', `/v1/me/ledger?limit=100${cursor ? `&cursor=${cursor}` : ''}`, { token });
    for (const e of r.json.entries) {
      sum.daily += e.delta_daily;
      sum.monthly += e.delta_monthly;
    }
    cursor = r.json.next_cursor;
  } while (cursor);
  return sum;
}

async function waitLatest(token, id) {
  for (let i = 0; i < 500; i++) {
    const r = await api(server, 'GET', `/v1/projects/${id}`, { token });
    if (r.json.versions.at(-1).status !== 'generating') return r.json;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`project ${id} still generating`);
}

test(`delete racing a follow-up, ${ROUNDS} rounds: never both, no credit lost`, async () => {
  // enough credits for every round: the Free plan's bonus raised before sign-up
  const admin = await signup(server);
  assert.equal((await server.run(['admin', 'grant', admin.email])).code, 0);
  const plan = await api(server, 'PUT', '/v1/admin/plans/free', { token: admin.token, body: { daily_bonus: 1000 } });
  assert.equal(plan.status, 200, plan.text);
  const u = await signup(server); // Free: one generation at a time
  const start = (await credits(u.token)).total;
  assert.equal(start, 1000);

  let project = null;
  let created = 0;
  const outcomes = { followUpWon: 0, deleteWon: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    if (!project) {
      const r = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: `app ${round}` } });
      assert.equal(r.status, 202, r.text);
      created++;
      project = r.json.id;
      assert.equal((await waitLatest(u.token, project)).status, 'ready');
    }
    const remove = () => api(server, 'DELETE', `/v1/projects/${project}`, { token: u.token });
    const followUp = () =>
      api(server, 'POST', `/v1/projects/${project}/versions`, { token: u.token, body: { prompt: 'more [[slow]]' } });
    let del;
    let fol;
    if (round % 4 === 3) {
      fol = await followUp(); // one after the other: the delete meets a generating version
      del = await remove();
    } else {
      [del, fol] = await Promise.all([remove(), followUp()]);
    }
    assert.ok(!(del.status === 204 && fol.status === 202), `round ${round}: both the delete and the follow-up won`);
    if (fol.status === 202) {
      outcomes.followUpWon++;
      assert.equal(del.status, 409, `round ${round}: ${del.text}`);
      assert.equal(del.json.error.code, 'generation_in_progress');
      const c = await api(server, 'POST', `/v1/projects/${project}/cancel`, { token: u.token });
      assert.equal(c.status, 200, c.text);
      assert.equal(c.json.versions.at(-1).error.refunded, true);
    } else {
      outcomes.deleteWon++;
      assert.equal(del.status, 204, `round ${round}: delete ${del.status} ${del.text}, follow-up ${fol.status}`);
      assert.ok(fol.status >= 400, `round ${round}: follow-up ${fol.status}`);
      project = null;
    }
  }
  assert.ok(outcomes.followUpWon > 0 && outcomes.deleteWon > 0, JSON.stringify(outcomes));

  // every credit is accounted for: one per project made, cancels refunded
  const bal = await credits(u.token);
  assert.equal(bal.total, start - created);
  assert.deepEqual(await ledgerSum(u.token), { daily: bal.daily, monthly: bal.monthly });
  const list = await api(server, 'GET', '/v1/projects?limit=100', { token: u.token });
  for (const p of list.json.projects) assert.notEqual(p.status, 'generating');

  // no reservation was left without its version: a restart refunds nothing
  const dataDir = server.dataDir;
  await server.stop({ keepData: true });
  server = await startServer({ env: { ...env, KOUMPA_LOG_LEVEL: 'info' }, dataDir, bin: HOOKS_BIN });
  try {
    assert.equal((await credits(u.token)).total, start - created);
    assert.match(server.logs(), /"msg":"/, 'info logs are on');
    assert.doesNotMatch(server.logs(), /refunded reservations without a version|recovered unsettled versions/);
  } finally {
    await server.stop();
    server = null;
    await rm(dataDir, { recursive: true, force: true });
  }
});
