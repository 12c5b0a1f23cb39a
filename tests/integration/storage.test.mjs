// storage.test.mjs - a generation's end (its files, its rows, its credits) is
// stored off the loop thread that streams every generation, so a stuck disk
// under one publish does not freeze the others.
//
// The stuck disk is a named pipe: while version 2 of a project generates, the
// blob of version 1's style.css (which version 2 carries over) is replaced by
// a FIFO, so publishing version 2 blocks reading it until the test writes to
// the pipe. While it is held, another user's generation must stream all its
// events to the end; only then is the pipe released. Arrival and order are
// asserted, never a duration.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, localOnly, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const INDEX = '<!doctype html>\n<html><head><link rel="stylesheet" href="style.css"></head><body>hi</body></html>';
const CSS = 'body { color: teal; }';
const APP = `An app.\n<file path="index.html">\n${INDEX}\n</file>\n<file path="style.css">\n${CSS}\n</file>\n`;
const UPDATE = 'A script too.\n<file path="app.js">\nconsole.log(1);\n</file>\n';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Opens the FIFO for writing once the server is blocked reading it (ENXIO until then); bounded. */
async function openWhenRead(fifo) {
  for (let i = 0; i < 400; i++) {
    try {
      return openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      if (e.code !== 'ENXIO') throw e;
    }
    await sleep(25);
  }
  throw new Error('the server never opened the blob being published');
}

describe('storage off the generation loop', () => {
  let fake;
  let server;
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario((rec) => {
      const last = rec.body?.messages?.at(-1)?.content ?? '';
      if (typeof last === 'string' && last.includes('[[held]]')) return { type: 'text', text: UPDATE, gate: 'held' };
      return { type: 'text', text: APP };
    });
    server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-test-key', ANTHROPIC_BASE_URL: fake.url } });
  });
  after(async () => {
    fake?.openGate('held');
    await server?.stop();
    await fake?.close();
  });

  const skip = localOnly('a FIFO in place of a file under {data dir}/blobs stalls the publish');
  test("a publish stuck on the disk does not stop another generation's events", { skip }, async () => {
    const a = await signup(server);
    const b = await signup(server);
    const first = await readEvents(await sse(server, 'POST', '/v1/projects', { token: a.token, body: { prompt: 'app' } }));
    assert.equal(first.at(-1).event, 'done', JSON.stringify(first.at(-1)));
    const id = first[0].data.project_id;

    // version 2 carries style.css over; its stream holds its end at the gate
    const resA = await sse(server, 'POST', `/v1/projects/${id}/versions`, { token: a.token, body: { prompt: '[[held]]' } });
    assert.equal(resA.status, 200);
    const fifo = path.join(server.dataDir, 'blobs', 'apps', id, 'v1', 'style.css~');
    unlinkSync(fifo);
    execFileSync('mkfifo', [fifo]);
    let fd = -1;
    let released = false;
    try {
      const eventsA = [];
      const readingA = readEvents(resA, (ev) => eventsA.push(ev) && false);
      fake.openGate('held');
      fd = await openWhenRead(fifo); // publishing version 2 now waits on the pipe

      const resB = await sse(server, 'POST', '/v1/projects', {
        token: b.token,
        body: { prompt: 'another app' },
        signal: AbortSignal.timeout(30000),
      });
      const eventsB = await readEvents(resB);
      assert.deepEqual(
        eventsB.map((e) => e.id),
        eventsB.map((_, i) => i + 1),
      );
      assert.equal(eventsB[0].event, 'project');
      assert.equal(eventsB.at(-1).event, 'done', JSON.stringify(eventsB.at(-1)));
      assert.ok(!eventsA.some((e) => e.event === 'done' || e.event === 'error'), 'version 2 ended while its blob was held');

      writeSync(fd, `text/css; charset=utf-8\n${CSS}`);
      closeSync(fd);
      released = true;
      await readingA;
      assert.equal(eventsA.at(-1).event, 'done', JSON.stringify(eventsA.at(-1)));
      assert.equal(eventsA.at(-1).data.version, 2);
      const css = await fetch(`${server.appsUrl}/${id}/@v2/style.css`);
      assert.equal(css.status, 200);
      assert.equal(await css.text(), CSS);
      const me = await api(server, 'GET', '/v1/me', { token: a.token });
      assert.equal(me.status, 200);
    } finally {
      if (!released) {
        // let the server go on (it may be blocked opening the pipe)
        if (fd < 0) fd = await openWhenRead(fifo).catch(() => -1);
        if (fd >= 0) closeSync(fd);
      }
    }
  });
});
