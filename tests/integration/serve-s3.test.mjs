// serve-s3.test.mjs - `koumpa serve` with KOUMPA_STORAGE=s3 against moto behind the verifying
// SigV4 front (s3-peer.mjs): a generated app's files land in the bucket with their content types,
// the apps origin serves them from S3 (S3's ETag passed through, If-None-Match -> 304 without a
// body), the zip download reads them back, deleting the project removes the objects; every
// request the server makes is verified by @smithy/signature-v4; the daily-bonus job opens the same
// store. And the start-up checks: a missing bucket or no bucket name -> serve (and daily-bonus)
// exits non-zero naming the problem. Without moto_server on the PATH this file is skipped, saying so.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, freePort, runKoumpa, signup, startServer } from './harness.mjs';
import { startS3 } from './s3-peer.mjs';

const BUCKET = 'koumpa-apps';
const INDEX = '<!doctype html>\n<html><head><link rel="stylesheet" href="style.css"></head><body><p>ünïcödé on S3</p></body></html>';
const CSS = 'p { color: teal; }';
const APP = `An app.\n<file path="index.html">\n${INDEX}\n</file>\n<file path="style.css">\n${CSS}\n</file>\n`;

const md5 = (s) => `"${createHash('md5').update(s).digest('hex')}"`;

async function waitReady(server, token, id) {
  for (let i = 0; i < 600; i++) {
    const r = await api(server, 'GET', `/v1/projects/${id}`, { token });
    const v = r.json.versions.find((x) => x.n === 1);
    if (v && v.status !== 'generating') {
      assert.equal(v.status, 'ready', JSON.stringify(v.error));
      return;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('still generating');
}

describe('serve with KOUMPA_STORAGE=s3', () => {
  let s3;
  let fake;
  let server;
  before(async () => {
    s3 = await startS3({ buckets: [BUCKET] });
    if (s3.skipReason) return;
    fake = await startFakeAnthropic();
    fake.setScenario(() => ({ type: 'text', text: APP }));
    server = await startServer({
      env: { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url,
        ...s3.vars({ KOUMPA_STORAGE: 's3', KOUMPA_S3_BUCKET: BUCKET }) },
    });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
    await s3?.stop();
  });

  test('generate, serve from S3 with its ETag and 304, download the zip, delete: objects gone', async (t) => {
    if (s3.skipReason) return t.skip(s3.skipReason);
    const user = await signup(server);
    const r = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'an app' } });
    assert.equal(r.status, 202, r.text);
    const id = r.json.id;
    await waitReady(server, user.token, id);

    // the files are objects in the bucket
    assert.deepEqual(await s3.keys(BUCKET, `apps/${id}/`), [`apps/${id}/v1/index.html`, `apps/${id}/v1/style.css`]);
    const obj = await s3.get(BUCKET, `apps/${id}/v1/style.css`);
    assert.equal(obj.status, 200);
    assert.equal(obj.headers.get('content-type'), 'text/css; charset=utf-8');
    assert.equal(await obj.text(), CSS);

    // the apps origin serves them from S3, with S3's ETag (the MD5 of a single-part PUT)
    for (const [file, type, body] of [['', 'text/html; charset=utf-8', INDEX], ['style.css', 'text/css; charset=utf-8', CSS]]) {
      const res = await fetch(`${server.appsUrl}/${id}/@v1/${file}`);
      assert.equal(res.status, 200, file);
      assert.equal(res.headers.get('content-type'), type);
      assert.equal(await res.text(), body);
      const etag = res.headers.get('etag');
      assert.equal(etag, md5(body));
      assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      const again = await fetch(`${server.appsUrl}/${id}/@v1/${file}`, { headers: { 'If-None-Match': etag } });
      assert.equal(again.status, 304);
      assert.equal(await again.text(), '');
      assert.equal(again.headers.get('etag'), etag);
      // a list, a weak tag, and a tag that does not match
      const listed = await fetch(`${server.appsUrl}/${id}/${file}`, { headers: { 'If-None-Match': `"x", W/${etag}` } });
      assert.equal(listed.status, 304);
      await listed.arrayBuffer();
      const other = await fetch(`${server.appsUrl}/${id}/${file}`, { headers: { 'If-None-Match': '"nope"' } });
      assert.equal(other.status, 200);
      assert.equal(await other.text(), body);
    }

    // the zip download reads the files back from S3
    const zip = await fetch(`${server.url}/v1/projects/${id}/versions/1/download`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(zip.status, 200);
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-s3zip-'));
    try {
      await writeFile(path.join(dir, 'app.zip'), Buffer.from(await zip.arrayBuffer()));
      const files = JSON.parse(execFileSync('python3', ['-c',
        'import json,sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); print(json.dumps({n: z.read(n).decode() for n in z.namelist()}))',
        path.join(dir, 'app.zip')]).toString());
      assert.deepEqual(files, { 'index.html': INDEX, 'style.css': CSS });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }

    // deleting the project removes its objects
    const del = await api(server, 'DELETE', `/v1/projects/${id}`, { token: user.token });
    assert.equal(del.status, 204, del.text);
    assert.deepEqual(await s3.keys(BUCKET, `apps/${id}/`), []);
    assert.equal((await fetch(`${server.appsUrl}/${id}/@v1/style.css`)).status, 404);

    // the daily-bonus job's recovery opens the same store
    const job = await server.run(['daily-bonus']);
    assert.equal(job.code, 0, job.stdout + job.stderr);

    assert.equal(s3.front.stats.rejected, 0, JSON.stringify(s3.front.stats.rejections));
    assert.ok(s3.front.stats.byService.s3 >= 8, JSON.stringify(s3.front.stats.byService));
  });

  test('a missing bucket, or none named: serve exits non-zero and says why', async (t) => {
    if (s3.skipReason) return t.skip(s3.skipReason);
    const dataDir = await mkdtemp(path.join(tmpdir(), 'koumpa-s3-'));
    try {
      const base = { KOUMPA_DATA_DIR: dataDir, KOUMPA_ADDR: `127.0.0.1:${await freePort()}`,
        KOUMPA_APPS_ADDR: `127.0.0.1:${await freePort()}`, KOUMPA_STORAGE: 's3' };
      let r = await runKoumpa(['serve'], { env: s3.env({ ...base, KOUMPA_S3_BUCKET: 'koumpa-missing' }) });
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, /S3 bucket koumpa-missing does not exist/);
      r = await runKoumpa(['daily-bonus'], { env: s3.env({ ...base, KOUMPA_S3_BUCKET: 'koumpa-missing' }) });
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, /S3 bucket koumpa-missing does not exist/);
      r = await runKoumpa(['serve'], { env: s3.env(base) });
      assert.notEqual(r.code, 0);
      assert.match(r.stdout + r.stderr, /KOUMPA_S3_BUCKET must be set when KOUMPA_STORAGE=s3/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
