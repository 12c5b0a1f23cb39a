// dashboard.test.mjs - the web dashboard served by `koumpa serve` on the API origin (api/dashboard.c):
// GET / and every file under src/web/ embedded in the binary with its type, the gzip copy (which
// decompresses to the same bytes), ETags and 304s, HEAD, the Content-Security-Policy and the other
// headers on every dashboard response, /config.json with and without the OAuth settings, JSON 404s
// for what the dashboard does not have, and KOUMPA_WEB_DIR (files read per request).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';

import { ROOT, startServer } from './harness.mjs';

const WEB = path.join(ROOT, 'src', 'web');
const TYPES = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  mjs: 'text/javascript; charset=utf-8',
  json: 'application/json',
  svg: 'image/svg+xml',
  png: 'image/png',
  ico: 'image/x-icon',
  webp: 'image/webp',
  woff2: 'font/woff2',
  txt: 'text/plain; charset=utf-8',
  webmanifest: 'application/manifest+json',
};

/** Every file under src/web/ (what the build embeds), as paths relative to it. */
async function webFiles(dir = WEB, prefix = '') {
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory()) out.push(...(await webFiles(path.join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

/** One exchange without any decoding (fetch would gunzip): { status, headers, body: Buffer }. */
function raw(server, method, urlPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${urlPath}`, { method, headers }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** The policy as { directive: 'sources' }. */
function directives(csp) {
  const out = {};
  for (const part of csp.split(';')) {
    const [name, ...sources] = part.trim().split(/\s+/);
    assert.ok(!(name in out), `${name} appears twice in ${csp}`);
    out[name] = sources.join(' ');
  }
  return out;
}

function assertDashboardHeaders(res, appsOrigin, what) {
  const d = directives(res.headers['content-security-policy'] || '');
  assert.deepEqual(
    d,
    {
      'default-src': "'none'",
      'script-src': "'self'",
      'style-src': "'self'",
      'img-src': "'self' data:",
      'connect-src': "'self'",
      'frame-src': appsOrigin,
      'form-action': "'self'",
      'base-uri': "'none'",
      'frame-ancestors': "'none'",
    },
    what,
  );
  assert.equal(res.headers['x-content-type-options'], 'nosniff', what);
  assert.equal(res.headers['referrer-policy'], 'no-referrer', what);
  assert.equal(res.headers['cache-control'], 'no-cache', what);
}

function assertJson404(res, what) {
  assert.equal(res.status, 404, what);
  assert.match(res.headers['content-type'], /^application\/json/, what);
  assert.equal(JSON.parse(res.body.toString()).error.code, 'not_found', what);
  assert.equal(res.headers['content-security-policy'], undefined, what);
}

describe('the dashboard on the API origin', () => {
  let server;
  let files;
  before(async () => {
    server = await startServer();
    files = await webFiles();
  });
  after(async () => {
    await server?.stop();
  });

  test('GET / is index.html with the policy and the other headers', async () => {
    const res = await raw(server, 'GET', '/');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.deepEqual(res.body, await readFile(path.join(WEB, 'index.html')));
    assert.match(res.headers.etag, /^"[0-9a-f]{32}"$/);
    assertDashboardHeaders(res, server.appsUrl, 'GET /');
  });

  test('every file under src/web/ is served at /<path> with its type and bytes', async () => {
    assert.ok(files.includes('index.html') && files.includes('app.css') && files.includes('js/main.js'));
    for (const f of files) {
      const type = TYPES[path.extname(f).slice(1)];
      assert.ok(type, `${f}: a type this test does not know`);
      const res = await raw(server, 'GET', `/${f}`);
      assert.equal(res.status, 200, f);
      assert.equal(res.headers['content-type'], type, f);
      assert.equal(res.headers['content-encoding'], undefined, f);
      assert.deepEqual(res.body, await readFile(path.join(WEB, f)), f);
      assertDashboardHeaders(res, server.appsUrl, f);
    }
  });

  test('a client that accepts gzip gets the compressed copy, which decompresses to the same bytes', async () => {
    let compressed = 0;
    for (const f of files) {
      const plain = await raw(server, 'GET', `/${f}`);
      const res = await raw(server, 'GET', `/${f}`, { 'Accept-Encoding': 'br, gzip;q=0.8' });
      assert.equal(res.status, 200, f);
      if (res.headers['content-encoding'] === undefined) continue; // not smaller compressed
      compressed++;
      assert.equal(res.headers['content-encoding'], 'gzip', f);
      assert.equal(res.headers.vary, 'Accept-Encoding', f);
      assert.equal(plain.headers.vary, 'Accept-Encoding', f);
      assert.ok(res.body.length < plain.body.length, f);
      assert.deepEqual(gunzipSync(res.body), plain.body, f);
      assert.equal(res.headers.etag, plain.headers.etag.replace(/"$/, '-gz"'), f);
      assertDashboardHeaders(res, server.appsUrl, `${f} (gzip)`);
      const refused = await raw(server, 'GET', `/${f}`, { 'Accept-Encoding': 'gzip;q=0, deflate' });
      assert.equal(refused.headers['content-encoding'], undefined, `${f}: gzip;q=0`);
    }
    assert.ok(compressed > 0 && (await raw(server, 'GET', '/', { 'Accept-Encoding': 'gzip' })).headers['content-encoding'] === 'gzip');
  });

  test('If-None-Match with the current ETag is a 304 without a body, per encoding', async () => {
    for (const enc of [undefined, 'gzip']) {
      const h = enc ? { 'Accept-Encoding': enc } : {};
      const first = await raw(server, 'GET', '/app.css', h);
      const again = await raw(server, 'GET', '/app.css', { ...h, 'If-None-Match': first.headers.etag });
      assert.equal(again.status, 304, `${enc}`);
      assert.equal(again.body.length, 0);
      assert.equal(again.headers.etag, first.headers.etag);
      assertDashboardHeaders(again, server.appsUrl, `304 ${enc}`);
      const stale = await raw(server, 'GET', '/app.css', { ...h, 'If-None-Match': '"0123"' });
      assert.equal(stale.status, 200);
    }
  });

  test('HEAD answers like GET without a body', async () => {
    for (const p of ['/', '/js/main.js', '/config.json']) {
      const get = await raw(server, 'GET', p);
      const head = await raw(server, 'HEAD', p);
      assert.equal(head.status, 200, p);
      assert.equal(head.body.length, 0, p);
      assert.equal(head.headers['content-length'], String(get.body.length), p);
      for (const h of ['content-type', 'etag', 'content-security-policy', 'cache-control'])
        assert.equal(head.headers[h], get.headers[h], `${p}: ${h}`);
    }
  });

  test('GET /config.json without OAuth settings', async () => {
    const res = await raw(server, 'GET', '/config.json');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(res.body.toString()), {
      api_base: '',
      stream_base: '',
      apps_url: server.appsUrl,
      oauth: null,
    });
    assertDashboardHeaders(res, server.appsUrl, '/config.json');
    const again = await raw(server, 'GET', '/config.json', { 'If-None-Match': res.headers.etag });
    assert.equal(again.status, 304);
  });

  test('what the dashboard does not have is the JSON 404; /v1/ stays the API', async () => {
    for (const p of ['/nope', '/nope.js', '/js/', '/js/nope.js', '/v1/index.html', '/v1/app.css', '/index.html/x', '/.git/config'])
      assertJson404(await raw(server, 'GET', p), p);
    assertJson404(await raw(server, 'POST', '/app.css'), 'POST /app.css');
    const api = await raw(server, 'GET', '/v1/plans');
    assert.equal(api.status, 200);
    assert.equal(api.headers['cache-control'], 'no-store');
  });
});

describe('the dashboard with OAuth sign-in and one origin per app', () => {
  const AUTH = 'https://koumpa.auth.eu-west-3.amazoncognito.com';
  let server;
  before(async () => {
    server = await startServer({
      env: {
        KOUMPA_APPS_URL: 'http://{project}.localhost:18081',
        KOUMPA_OAUTH_AUTHORIZE_URL: `${AUTH}/oauth2/authorize`,
        KOUMPA_OAUTH_TOKEN_URL: 'https://tokens.example.com/oauth2/token',
        KOUMPA_OAUTH_CLIENT_ID: 'client-1',
        KOUMPA_OAUTH_LOGOUT_URL: `${AUTH}/logout`,
      },
    });
  });
  after(async () => {
    await server?.stop();
  });

  test('GET /config.json carries the oauth object', async () => {
    const res = await raw(server, 'GET', '/config.json');
    assert.deepEqual(JSON.parse(res.body.toString()), {
      api_base: '',
      stream_base: '',
      apps_url: 'http://{project}.localhost:18081',
      oauth: {
        authorize_url: `${AUTH}/oauth2/authorize`,
        token_url: 'https://tokens.example.com/oauth2/token',
        client_id: 'client-1',
        scopes: 'openid email',
        logout_url: `${AUTH}/logout`,
      },
    });
  });

  test('the policy allows the token endpoint, the provider pages and the apps wildcard', async () => {
    const d = directives((await raw(server, 'GET', '/')).headers['content-security-policy']);
    assert.equal(d['connect-src'], "'self' https://tokens.example.com");
    assert.equal(d['form-action'], `'self' ${AUTH}`);
    assert.equal(d['frame-src'], 'http://*.localhost:18081');
    assert.equal(d['script-src'], "'self'");
    assert.equal(d['frame-ancestors'], "'none'");
  });
});

describe('the dashboard from KOUMPA_WEB_DIR (development)', () => {
  let server;
  let dir;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'koumpa-web-'));
    await writeFile(path.join(dir, 'index.html'), '<!doctype html><title>dev</title>');
    server = await startServer({ env: { KOUMPA_WEB_DIR: dir } });
  });
  after(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('files are read on each request: an edit shows without a build', async () => {
    const first = await raw(server, 'GET', '/');
    assert.equal(first.body.toString(), '<!doctype html><title>dev</title>');
    assertDashboardHeaders(first, server.appsUrl, 'dev /');
    assertJson404(await raw(server, 'GET', '/app.css'), 'not in the directory (the embedded copy is not used)');
    await writeFile(path.join(dir, 'app.css'), 'body{}');
    const css = await raw(server, 'GET', '/app.css', { 'Accept-Encoding': 'gzip' });
    assert.equal(css.status, 200);
    assert.equal(css.headers['content-type'], 'text/css; charset=utf-8');
    assert.equal(css.body.toString(), 'body{}');
    await writeFile(path.join(dir, 'index.html'), '<!doctype html><title>edited</title>');
    const edited = await raw(server, 'GET', '/', { 'If-None-Match': first.headers.etag });
    assert.equal(edited.status, 200);
    assert.equal(edited.body.toString(), '<!doctype html><title>edited</title>');
  });
});
