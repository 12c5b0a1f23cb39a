// apps-origins.test.mjs - each app on its own origin (KOUMPA_APPS_URL=http://{project}.localhost:PORT,
// src/core/apps_url.h): the apps listener serves a project by the Host header, prj-{id}.localhost,
// the latest version at / and version n at /@v{n}/ (an app's own folder named v2/ stays its own), with
// a CSP that allows same-origin there and not in the path form; a Host naming no project is a 404
// that says where apps are; the API's URLs and the model's system prompt follow the form; a
// misplaced {project} stops start-up.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, freePort, signup, startServer, waitReady } from './harness.mjs';

const CSP = 'sandbox allow-scripts allow-forms allow-popups allow-modals';
const CSP_OWN = `${CSP} allow-same-origin`;
const appOf = (name) =>
  `An app.\n<file path="index.html">\n<p>${name} v1</p>\n</file>\n<file path="app.js">\nlocalStorage.x = "${name}";\n</file>\n` +
  `<file path="v2/index.html">\n<p>${name}: a folder named v2</p>\n</file>\n`;
const UPDATE = 'Version two.\n<file path="index.html">\n<p>v2 of the app</p>\n</file>\n';

/** GET on the apps listener with the Host header given (fetch would not let it be set): undefined
 * sends 127.0.0.1:port, null none at all. */
function get(port, path, host, method = 'GET') {
  return new Promise((resolve, reject) => {
    const headers = host == null ? {} : { Host: host };
    const req = http.request({ host: '127.0.0.1', port, path, method, headers, setHost: host === undefined }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function create(server, token, prompt) {
  const r = await api(server, 'POST', '/v1/projects', { token, body: { prompt } });
  assert.equal(r.status, 202, JSON.stringify(r.json));
  return waitReady(server, token, r.json.id, 1);
}

const label = (id) => id.replace(/^prj_/, 'prj-');

describe('each app on its own origin', () => {
  let fake;
  let server;
  let appsPort;
  let user;
  let p1;
  let p2;
  const host = (id) => `${label(id)}.localhost:${appsPort}`;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario((rec) => {
      const last = rec.body.messages[rec.body.messages.length - 1].content;
      if (last.includes('[[update]]')) return { type: 'text', text: UPDATE };
      return { type: 'text', text: appOf(last.includes('second') ? 'second' : 'first') };
    });
    appsPort = await freePort();
    server = await startServer({
      env: {
        ANTHROPIC_API_KEY: 'sk-any',
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_APPS_ADDR: `127.0.0.1:${appsPort}`,
        KOUMPA_APPS_URL: `http://{project}.localhost:${appsPort}`,
      },
    });
    user = await signup(server);
    p1 = await create(server, user.token, 'the first app');
    p2 = await create(server, user.token, 'the second app');
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('the API gives each project and version a URL on its own host', async () => {
    assert.equal(p1.url, `http://${host(p1.id)}/@v1/`);
    assert.equal(p1.versions[0].url, `http://${host(p1.id)}/@v1/`);
    const list = await api(server, 'GET', '/v1/projects', { token: user.token });
    const urls = Object.fromEntries(list.json.projects.map((p) => [p.id, p.url]));
    assert.equal(urls[p2.id], `http://${host(p2.id)}/@v1/`);
    assert.notEqual(new URL(urls[p1.id]).origin, new URL(urls[p2.id]).origin);
  });

  test('the system prompt tells the model that localStorage and IndexedDB persist', () => {
    const systems = fake.requests.map((r) => JSON.stringify(r.body.system));
    assert.ok(systems.length >= 2);
    for (const s of systems) {
      assert.match(s, /localStorage and IndexedDB work and persist/);
      assert.doesNotMatch(s, /must still work when it is not/);
    }
  });

  test('two projects served by Host: / is the latest, with allow-same-origin in the CSP', async () => {
    const a = await get(appsPort, '/', host(p1.id));
    assert.equal(a.status, 200);
    assert.equal(a.body, '<p>first v1</p>');
    assert.equal(a.headers['content-security-policy'], CSP_OWN);
    assert.equal(a.headers['x-content-type-options'], 'nosniff');
    assert.equal(a.headers['set-cookie'], undefined);
    const b = await get(appsPort, '/app.js', host(p2.id));
    assert.equal(b.status, 200);
    assert.equal(b.body, 'localStorage.x = "second";');
    assert.match(b.headers['content-type'], /^text\/javascript/);
    // host names are case-insensitive, the port is not part of the match
    assert.equal((await get(appsPort, '/', host(p2.id).toUpperCase())).body, '<p>second v1</p>');
  });

  test('a version is /@v{n}/ on the project\'s host; the app\'s own v2/ folder stays its own', async () => {
    const r = await api(server, 'POST', `/v1/projects/${p1.id}/versions`, { token: user.token, body: { prompt: '[[update]]' } });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    const p = await waitReady(server, user.token, p1.id, 2);
    assert.equal(p.versions[1].url, `http://${host(p1.id)}/@v2/`);
    const latest = await get(appsPort, '/', host(p1.id));
    assert.equal(latest.body, '<p>v2 of the app</p>');
    assert.equal(latest.headers['cache-control'], 'no-cache');
    const v1 = await get(appsPort, '/@v1/', host(p1.id));
    assert.equal(v1.body, '<p>first v1</p>');
    assert.match(v1.headers['cache-control'], /immutable/);
    assert.equal(v1.headers['content-security-policy'], CSP_OWN);
    assert.equal((await get(appsPort, '/@v2/', host(p1.id))).body, '<p>v2 of the app</p>');
    // the folder named v2 of the latest version (carried over) and of version 1
    assert.equal((await get(appsPort, '/v2/', host(p1.id))).body, '<p>first: a folder named v2</p>');
    assert.equal((await get(appsPort, '/@v1/v2/', host(p1.id))).body, '<p>first: a folder named v2</p>');
    const redirect = await get(appsPort, '/@v1', host(p1.id));
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, '/@v1/');
    assert.equal(redirect.headers['content-security-policy'], CSP_OWN);
    for (const missing of ['/@v3/', '/@v0/', '/nope.html', '/../app.js', `/${p1.id}/`, `/${p2.id}/app.js`]) {
      const res = await get(appsPort, missing, host(p1.id));
      assert.equal(res.status, 404, missing);
      assert.equal(res.headers['content-security-policy'], CSP_OWN, missing);
    }
  });

  test('a Host that names no project is a 404 that says where apps are', async () => {
    const hosts = [`127.0.0.1:${appsPort}`, `localhost:${appsPort}`, `${p1.id}.localhost:${appsPort}`,
      `prj-nosuchproject.localhost:${appsPort}`, `x.${host(p1.id)}`, `${label(p1.id)}.example.com`, ''];
    for (const h of hosts) {
      const res = await get(appsPort, '/', h);
      assert.equal(res.status, 404, h);
      assert.match(res.headers['content-type'], /^text\/plain/);
      assert.equal(res.headers['content-security-policy'], CSP_OWN, h);
      if (!h.startsWith('prj-nosuch')) assert.match(res.body, /each app is served at its own host, http:\/\/\{project\}\.localhost/, h);
    }
    const none = await get(appsPort, '/', null);
    assert.equal(none.status, 404);
  });

  test('a misplaced {project} stops start-up with the reason', async () => {
    const cases = [
      ['http://localhost:8081/{project}', /leftmost label/],
      ['http://a.{project}.localhost:8081', /leftmost label/],
      ['http://{project}.{project}.localhost', /exactly one \{project\}/],
      ['http://{project}.localhost:8081/base', /nothing after it/],
      ['http://{projects}.localhost', /that is not \{project\}/],
    ];
    for (const [url, reason] of cases) {
      const res = await server.run(['serve'], {
        env: { KOUMPA_APPS_URL: url, KOUMPA_ADDR: '127.0.0.1:0', KOUMPA_APPS_ADDR: '127.0.0.1:0' },
        timeoutMs: 20_000,
      });
      assert.notEqual(res.code, 0, url);
      assert.match(res.stderr, /invalid KOUMPA_APPS_URL/, url);
      assert.match(res.stderr, reason, url);
    }
  });
});

describe('the path form (the default)', () => {
  let fake;
  let server;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario(() => ({ type: 'text', text: appOf('path') }));
    server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-any', ANTHROPIC_BASE_URL: fake.url } });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('one shared origin: apps by path, no allow-same-origin, whatever the Host', async () => {
    const user = await signup(server);
    const p = await create(server, user.token, 'an app');
    assert.equal(p.url, `${server.appsUrl}/${p.id}/@v1/`);
    for (const h of [undefined, `${label(p.id)}.localhost:${server.appsPort}`]) {
      const res = await get(server.appsPort, `/${p.id}/`, h);
      assert.equal(res.status, 200);
      assert.equal(res.body, '<p>path v1</p>');
      assert.equal(res.headers['content-security-policy'], CSP);
      assert.equal((await get(server.appsPort, '/', h)).headers['content-security-policy'], CSP);
    }
    assert.equal((await get(server.appsPort, `/${p.id}/v2/`)).body, '<p>path: a folder named v2</p>');
    const system = JSON.stringify(fake.requests.at(-1).body.system);
    assert.match(system, /must still work when it is not/);
    assert.doesNotMatch(system, /IndexedDB/);
  });
});
