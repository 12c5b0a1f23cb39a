// request-log.test.mjs - the request log as `koumpa serve` writes it in production: at the
// default level (info), to a file. Lines wait in per-thread buffers (src/core/log.h), so
// these tests check that none is lost: every request's line is in the file after a SIGTERM,
// and a line reaches the file by itself soon after its request (the flush interval), without
// an exit. The crash-signal flush has its unit test (tests/unit/test_log.c).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { api, signup, startServer } from './harness.mjs';

const REQUESTS = 400;
const PARALLEL = 16;

/** The file's lines, each parsed (a line that is not JSON fails the test). */
async function records(file) {
  const text = await readFile(file, 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() && !/^==\d+==/.test(l))
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return assert.fail(`log line is not JSON: ${l}`);
      }
    });
}

describe('the request log in a file', () => {
  let dir;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-reqlog-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test(`${REQUESTS} requests, then SIGTERM: each request has its one line in the file`, async () => {
    const file = path.join(dir, 'sigterm.log');
    const server = await startServer({ env: { KOUMPA_LOG_LEVEL: 'info' }, logFile: file });
    const ids = [];
    try {
      const user = await signup(server);
      for (let done = 0; done < REQUESTS; done += PARALLEL) {
        const batch = await Promise.all(
          Array.from({ length: PARALLEL }, () => api(server, 'GET', '/v1/me', { token: user.token })),
        );
        for (const r of batch) {
          assert.equal(r.status, 200);
          ids.push(r.headers.get('x-request-id'));
        }
      }
    } finally {
      await server.stop(); // SIGTERM, and a clean exit
    }
    const byId = new Map();
    for (const r of await records(file)) if (r.msg === 'request') byId.set(r.request_id, (byId.get(r.request_id) ?? 0) + 1);
    const missing = ids.filter((id) => byId.get(id) !== 1);
    assert.deepEqual(missing, [], `${missing.length} of ${ids.length} requests without exactly one line`);
    const last = (await records(file)).at(-1);
    assert.equal(last.msg, 'stopping', 'the last line is the server saying it stops');
  });

  test('a request line reaches the file soon, with the server still running', async () => {
    const file = path.join(dir, 'running.log');
    const server = await startServer({ env: { KOUMPA_LOG_LEVEL: 'info' }, logFile: file });
    try {
      const r = await api(server, 'GET', '/healthz');
      const id = r.headers.get('x-request-id');
      let found = false;
      for (let i = 0; i < 100 && !found; i++) {
        found = (await records(file)).some((l) => l.request_id === id);
        if (!found) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(found, 'the line of a request answered 5 s ago is not in the file');
    } finally {
      await server.stop();
    }
  });
});
