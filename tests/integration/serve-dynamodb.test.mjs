// serve-dynamodb.test.mjs - `koumpa serve` with KOUMPA_DB=dynamodb on moto (one request at a time,
// moto_single.py) behind the SigV4-verifying front (aws-front.mjs): `koumpa migrate` makes the table,
// serve starts on it (recovery at start-up reads GSI2), a user signs up, GET /v1/me answers, a project is
// generated against the fake Anthropic and its /events followed to the end, the credit is charged once
// (one reservation, committed: one ledger row, the balance one less), the finished version
// replays the same events, and the daily-bonus job (recovery, then the bonus) runs on the same table.
// Every request the server makes is verified by @smithy/signature-v4. Without moto, skipped, saying so.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startDynamoPeer } from './aws-front.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, runKoumpa, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const KEY = { accessKeyId: 'AKIDSERVEDDB', secretAccessKey: 'serve/ddb+secret' };
const INDEX = '<!doctype html>\n<p>on DynamoDB</p>';
const APP = `An app.\n<file path="index.html">\n${INDEX}\n</file>\n`;

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(KOUMPA_|ANTHROPIC_|AWS_)/.test(k)) env[k] = v;
  return env;
}

describe('serve with KOUMPA_DB=dynamodb', () => {
  let moto;
  let front;
  let fake;
  let server;
  let skipReason;
  let dataDir;

  before(async () => {
    ({ moto, front, skipReason } = await startDynamoPeer({ credentials: [KEY] }));
    if (skipReason) {
      console.log(`# ${skipReason}`);
      return;
    }
    fake = await startFakeAnthropic();
    fake.setScenario(() => ({ type: 'text', text: APP }));
    const env = {
      AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL_DYNAMODB: front.url,
      AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
      KOUMPA_DB: 'dynamodb', KOUMPA_DYNAMODB_TABLE_PREFIX: `serve${process.pid}_`,
      ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url,
    };
    dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-ddb-serve-'));
    const migrated = await runKoumpa(['migrate'], { env: { ...cleanEnv(), ...env, KOUMPA_DATA_DIR: dataDir } });
    assert.equal(migrated.code, 0, migrated.stdout + migrated.stderr);
    server = await startServer({ env });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
    await front?.stop();
    await moto?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test('sign up, /v1/me, generate and follow /events to the end: charged once', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const u = await signup(server);
    const me = await api(server, 'GET', '/v1/me', { token: u.token });
    assert.equal(me.status, 200, me.text);
    const before = me.json.credits.total;
    assert.ok(before >= 1, me.text);

    const r = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app' } });
    assert.equal(r.status, 202, r.text);
    const id = r.json.id;
    const res = await sse(server, 'GET', `/v1/projects/${id}/events`, { token: u.token });
    assert.equal(res.status, 200);
    const events = await readEvents(res);
    assert.deepEqual(events.map((e) => e.id), events.map((_, i) => i + 1), 'ids contiguous from 1');
    assert.equal(events[0].event, 'project');
    assert.equal(events.at(-1).event, 'done', JSON.stringify(events.at(-1)));
    assert.equal(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join(''), APP);
    assert.deepEqual(events.filter((e) => e.event === 'file').map((e) => e.data.path), ['index.html']);
    assert.equal(events.at(-1).data.credits_left, before - 1);

    const p = await api(server, 'GET', `/v1/projects/${id}`, { token: u.token });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.versions.find((v) => v.n === 1).status, 'ready', p.text);
    const after = await api(server, 'GET', '/v1/me', { token: u.token });
    assert.equal(after.json.credits.total, before - 1);
    // one row: the reservation (-1), which the end committed without moving credits again
    const ledger = await api(server, 'GET', '/v1/me/ledger', { token: u.token });
    assert.equal(ledger.status, 200, ledger.text);
    const gen = ledger.json.entries.filter((e) => e.reason !== 'daily_bonus');
    assert.deepEqual(gen.map((e) => [e.reason, e.delta]), [['generation', -1]], ledger.text);

    // the finished version replays the same events from the event store
    const replay = await readEvents(await sse(server, 'GET', `/v1/projects/${id}/events`, { token: u.token }));
    assert.deepEqual(replay, events);
    // the app is served
    const page = await fetch(`${server.appsUrl}/${id}/@v1/`);
    assert.equal(page.status, 200);
    assert.equal(await page.text(), INDEX);

    // the daily-bonus job: recovery (nothing to recover) and the bonus, on the same table
    const job = await server.run(['daily-bonus']);
    assert.equal(job.code, 0, job.stdout + job.stderr);
    assert.equal(front.stats.rejected, 0, JSON.stringify(front.stats.rejections));
  });
});
