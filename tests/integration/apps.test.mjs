// apps.test.mjs - the apps origin: generated apps served on their own
// listener, latest and versioned URLs, content types, the sandboxing headers,
// ETag / If-None-Match, redirects, and 404 for everything else (other
// projects' paths, traversal, unpublished versions, the API's origin).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer, waitReady } from './harness.mjs';

const INDEX = '<!doctype html>\n<html><head><link rel="stylesheet" href="css/style.css"></head><body><p>v1 — ünïcödé</p><script src="app.js"></script></body></html>';
const CSS = 'p { color: teal; }';
const JS = 'console.log("v1");';
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>';
const FOLDER_V2 = '<!doctype html>\n<p>a folder named v2</p>';
const APP =
  `Version one.\n<file path="index.html">\n${INDEX}\n</file>\n<file path="css/style.css">\n${CSS}\n</file>\n` +
  `<file path="app.js">\n${JS}\n</file>\n<file path="logo.svg">\n${SVG}\n</file>\n<file path="data.json">\n{"a":1}\n</file>\n` +
  `<file path="notes.weird">\nbinary-ish\n</file>\n<file path="v2/index.html">\n${FOLDER_V2}\n</file>\n`;
const INDEX2 = '<!doctype html>\n<p>v2</p>';
const UPDATE = `Version two.\n<file path="index.html">\n${INDEX2}\n</file>\n`;
const CSP = 'sandbox allow-scripts allow-forms allow-popups allow-modals';

/** A raw request whose path is sent as written (fetch would normalise "..") . */
function rawGet(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function get(url, headers = {}, method = 'GET') {
  const res = await fetch(url, { method, headers, redirect: 'manual' });
  const body = await res.text();
  return { status: res.status, headers: res.headers, body };
}

describe('apps origin', () => {
  let fake;
  let server;
  let user;
  let id;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario((rec) => {
      const last = rec.body.messages[rec.body.messages.length - 1].content;
      return { type: 'text', text: last.includes('[[update]]') ? UPDATE : APP };
    });
    server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url } });
    user = await signup(server);
    const r = await api(server, 'POST', '/v1/projects', { token: user.token, body: { prompt: 'an app' } });
    assert.equal(r.status, 202);
    id = r.json.id;
    await waitReady(server, user.token, id, 1);
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('the latest version at /{id}/: index.html with the sandbox headers, no cookies', async () => {
    const r = await get(`${server.appsUrl}/${id}/`);
    assert.equal(r.status, 200);
    assert.equal(r.body, INDEX);
    assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(r.headers.get('content-security-policy'), CSP);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    assert.match(r.headers.get('etag'), /^"[0-9a-f]{32}"$/);
    assert.equal(r.headers.get('set-cookie'), null);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
  });

  test('versioned URLs are immutable; content types follow the extension', async () => {
    const cases = [
      ['index.html', 'text/html; charset=utf-8', INDEX],
      ['', 'text/html; charset=utf-8', INDEX],
      ['css/style.css', 'text/css; charset=utf-8', CSS],
      ['app.js', 'text/javascript; charset=utf-8', JS],
      ['logo.svg', 'image/svg+xml', SVG],
      ['data.json', 'application/json', '{"a":1}'],
      ['notes.weird', 'application/octet-stream', 'binary-ish'],
    ];
    for (const [file, type, body] of cases) {
      const r = await get(`${server.appsUrl}/${id}/@v1/${file}`);
      assert.equal(r.status, 200, file);
      assert.equal(r.headers.get('content-type'), type, file);
      assert.equal(r.body, body, file);
      assert.equal(r.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      assert.equal(r.headers.get('content-security-policy'), CSP);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    }
  });

  test('ETag and If-None-Match: 304 without a body', async () => {
    const first = await get(`${server.appsUrl}/${id}/@v1/app.js`);
    const etag = first.headers.get('etag');
    const again = await get(`${server.appsUrl}/${id}/@v1/app.js`, { 'If-None-Match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body, '');
    assert.equal(again.headers.get('etag'), etag);
    const weak = await get(`${server.appsUrl}/${id}/@v1/app.js`, { 'If-None-Match': `"nope", W/${etag}` });
    assert.equal(weak.status, 304);
    const other = await get(`${server.appsUrl}/${id}/@v1/app.js`, { 'If-None-Match': '"something-else"' });
    assert.equal(other.status, 200);
    assert.notEqual((await get(`${server.appsUrl}/${id}/@v1/index.html`)).headers.get('etag'), etag);
  });

  test('HEAD answers like GET without a body; other methods are 405', async () => {
    const head = await get(`${server.appsUrl}/${id}/@v1/index.html`, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(head.headers.get('content-security-policy'), CSP);
    const post = await get(`${server.appsUrl}/${id}/`, {}, 'POST');
    assert.equal(post.status, 405);
    assert.match(post.headers.get('allow'), /GET/);
  });

  test('an app folder named v2/ is reachable: versions are @v{n}, which no app path can be', async () => {
    for (const p of [`/${id}/v2/index.html`, `/${id}/v2/`, `/${id}/@v1/v2/index.html`, `/${id}/@v1/v2/`]) {
      const r = await get(server.appsUrl + p);
      assert.equal(r.status, 200, p);
      assert.equal(r.body, FOLDER_V2, p);
    }
    const r = await get(`${server.appsUrl}/${id}/v2`);
    assert.equal(r.status, 404); /* a file path, and there is no file "v2" */
  });

  test('missing trailing slashes redirect', async () => {
    const a = await get(`${server.appsUrl}/${id}`);
    assert.equal(a.status, 301);
    assert.equal(a.headers.get('location'), `/${id}/`);
    const b = await get(`${server.appsUrl}/${id}/@v1`);
    assert.equal(b.status, 301);
    assert.equal(b.headers.get('location'), `/${id}/@v1/`);
  });

  test('everything else is a plain 404', async () => {
    const paths = [
      '/',
      '/favicon.ico',
      `/${id}/missing.js`,
      `/${id}/@v2/`,
      `/${id}/@v0/`,
      `/${id}/@v1/css/`,
      '/prj_000000000000000000000000/',
      '/not-a-project/',
      `/${id}/@v1/.hidden`,
    ];
    for (const p of paths) {
      const r = await get(server.appsUrl + p);
      assert.equal(r.status, 404, p);
      assert.match(r.headers.get('content-type'), /^text\/plain/, p);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    }
  });

  test('path traversal never leaves the version', async () => {
    const paths = [
      `/${id}/@v1/../../../koumpa.db`,
      `/${id}/@v1/%2e%2e/%2e%2e/jwt_secret`,
      `/${id}/..%2f..%2fkoumpa.db`,
      `/${id}/@v1/css/../app.js`,
      `/${id}//etc/passwd`,
      `/${id}/@v1/css%2f..%2f..%2fv1%2fapp.js`,
    ];
    for (const p of paths) {
      const r = await rawGet(server.appsPort, p);
      assert.ok(r.status === 404 || r.status === 400, `${p}: ${r.status}`);
      assert.ok(!r.body.includes('SQLite'), p);
    }
  });

  test('the API origin does not serve apps, and the apps origin serves no API', async () => {
    const onApi = await get(`${server.url}/${id}/`);
    assert.equal(onApi.status, 404);
    const onApps = await get(`${server.appsUrl}/v1/me`);
    assert.equal(onApps.status, 404);
    const health = await get(`${server.appsUrl}/healthz`);
    assert.equal(health.status, 404);
  });

  test('a new version becomes the latest; older versions stay at their URLs', async () => {
    const r = await api(server, 'POST', `/v1/projects/${id}/versions`, { token: user.token, body: { prompt: 'v2 [[update]]' } });
    assert.equal(r.status, 202);
    const project = await waitReady(server, user.token, id, 2);
    assert.equal(project.url, `${server.appsUrl}/${id}/@v2/`);
    assert.equal((await get(`${server.appsUrl}/${id}/`)).body, INDEX2);
    assert.equal((await get(`${server.appsUrl}/${id}/@v2/`)).body, INDEX2);
    assert.equal((await get(`${server.appsUrl}/${id}/@v1/`)).body, INDEX);
    // carried over unchanged
    assert.equal((await get(`${server.appsUrl}/${id}/@v2/app.js`)).body, JS);
    assert.equal((await get(`${server.appsUrl}/${id}/app.js`)).body, JS);
  });
});
