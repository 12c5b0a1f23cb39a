// projects.test.mjs - app generation end to end: the real server against the
// fake Anthropic API. Generate with SSE and without, iterate, replay events
// after Last-Event-ID, download a zip, list, delete, cancel; outputs that break
// the rules (path traversal, oversize, no index.html, cut by max_tokens) and
// provider failures are refunded; other users' projects are invisible; and the
// refusals (402, 429, 400 context_too_large, 503 llm_not_configured) charge
// nothing.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startFakeAnthropic } from './fake-anthropic.mjs';
import { api, signup, startServer } from './harness.mjs';
import { readEvents, sse } from './sse-client.mjs';

const INDEX =
  '<!doctype html>\n<html><head><meta charset="utf-8"><title>Counter</title><link rel="stylesheet" href="style.css"></head>\n' +
  '<body><h1>Compteur — 日本語 😀</h1><button id="b">0</button><script src="app.js"></script></body></html>';
const CSS = 'body { font-family: sans-serif; }';
const JS = "let n = 0;\ndocument.getElementById('b').onclick = (e) => { e.target.textContent = ++n; };";
const APP =
  `A tiny counter.\n<file path="index.html">\n${INDEX}\n</file>\n<file path="style.css">\n${CSS}\n</file>\n` +
  `<file path="app.js">\n${JS}\n</file>\nClick the button.\n`;
const JS2 = "let n = 10;\ndocument.getElementById('b').onclick = (e) => { e.target.textContent = --n; };";
const UPDATE = `Now it counts down.\n<file path="app.js">\n${JS2}\n</file>\n<delete path="style.css"/>\n`;

/**
 * Picks the fake's scenario from a [[marker]] in the prompt: table[marker] is a
 * scenario, or an array of them for the first call, the first continuation...
 */
function picker(table) {
  return (rec) => {
    const msgs = rec.body?.messages || [];
    for (let i = msgs.length - 1; i >= 0; i--) {
      if (msgs[i].role !== 'user' || typeof msgs[i].content !== 'string') continue;
      const marks = msgs[i].content.match(/\[\[([a-z0-9_]+)\]\]/g);
      if (!marks) continue;
      const entry = table[marks[marks.length - 1].slice(2, -2)];
      const attempt = Math.floor((msgs.length - 1 - i) / 2);
      return Array.isArray(entry) ? entry[Math.min(attempt, entry.length - 1)] : entry;
    }
    return { type: 'text', text: APP };
  };
}

const SCENARIOS = {
  app: { type: 'text', text: APP },
  update: { type: 'text', text: UPDATE },
  slow: { type: 'text', text: APP, durationMs: 3000 },
  traversal: { type: 'text', text: '<file path="index.html">\nok\n</file>\n<file path="../../etc/passwd">\nroot\n</file>\n' },
  noindex: { type: 'text', text: '<file path="main.html">\n<p>hi</p>\n</file>\n' },
  oversize: {
    type: 'text',
    text: `<file path="index.html">\n${'x'.repeat(2 * 1024 * 1024 + 100)}\n</file>\n`,
    pieceChars: 60000,
    chunkSizes: [65536],
  },
  overloaded: { type: 'error_event', errorType: 'overloaded_error', message: 'Overloaded' },
  badrequest: { type: 'invalid_request', message: 'prompt is too long' },
  cut: { type: 'cut', text: APP },
  // cut inside app.js, then the rest
  cont: [
    { type: 'max_tokens', text: APP, maxChars: APP.indexOf('<file path="app.js">') + 30 },
    { type: 'text', text: `<file path="app.js">\n${JS}\n</file>\nClick the button.\n` },
  ],
  toolong: { type: 'max_tokens', text: APP, maxChars: 60 },
  // U+0000 and lone surrogates: JSON escapes jansson will not decode (\u0000, \ud800)
  odd: { type: 'text', text: 'Odd \u0000 and \ud800.\n<file path="index.html">\n<p>a\u0000b\udc00c</p>\n</file>\n' },
};

async function credits(server, token) {
  const me = await api(server, 'GET', '/v1/me', { token });
  assert.equal(me.status, 200);
  return me.json.credits.total;
}

// a bound, not a measure: on the AWS backend (single-threaded moto) a loaded machine can take tens of seconds
async function waitVersion(server, token, id, n, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await api(server, 'GET', `/v1/projects/${id}`, { token });
    assert.equal(res.status, 200);
    const v = res.json.versions.find((x) => x.n === n);
    if (v && v.status !== 'generating') return { project: res.json, version: v };
    if (Date.now() > deadline) throw new Error(`version ${n} of ${id} still generating`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Generates without SSE and waits for the end; returns {project, version}. */
async function generate(server, token, prompt) {
  const res = await api(server, 'POST', '/v1/projects', { token, body: { prompt } });
  assert.equal(res.status, 202, res.text);
  return waitVersion(server, token, res.json.id, 1);
}

/** Entry names of a zip archive, from its central directory. */
function zipNames(buf) {
  let eocd = -1;
  for (let i = buf.length - 22; i >= 0; i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  assert.ok(eocd >= 0, 'no end of central directory record');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const names = [];
  for (let k = 0; k < count; k++) {
    assert.equal(buf.readUInt32LE(p), 0x02014b50);
    const nlen = buf.readUInt16LE(p + 28);
    const xlen = buf.readUInt16LE(p + 30);
    const clen = buf.readUInt16LE(p + 32);
    names.push(buf.subarray(p + 46, p + 46 + nlen).toString('utf8'));
    p += 46 + nlen + xlen + clen;
  }
  return names.sort();
}

describe('projects', () => {
  let fake;
  let server;
  before(async () => {
    fake = await startFakeAnthropic({ apiKey: 'sk-test-key' });
    fake.setScenario(picker(SCENARIOS));
    server = await startServer({
      env: {
        ANTHROPIC_API_KEY: 'sk-test-key',
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_LLM_RETRY_BASE_MS: '10',
      },
    });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('generate with SSE: project, deltas, files, done; one credit spent', async () => {
    const u = await signup(server);
    const before = await credits(server, u.token);
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'A counter [[app]]' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = await readEvents(res);
    assert.deepEqual(
      events.map((e) => e.id),
      events.map((_, i) => i + 1),
    );
    assert.equal(events[0].event, 'project');
    const id = events[0].data.project_id;
    assert.match(id, /^prj_[0-9a-f]+$/);
    assert.equal(events[0].data.version, 1);
    const text = events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('');
    assert.equal(text, APP);
    assert.deepEqual(
      events.filter((e) => e.event === 'file').map((e) => [e.data.path, e.data.bytes]),
      [
        ['index.html', Buffer.byteLength(INDEX)],
        ['style.css', Buffer.byteLength(CSS)],
        ['app.js', Buffer.byteLength(JS)],
      ],
    );
    const done = events[events.length - 1];
    assert.equal(done.event, 'done');
    assert.equal(done.data.version, 1);
    assert.equal(done.data.url, `${server.appsUrl}/${id}/@v1/`);
    assert.equal(done.data.credits_left, before - 1);
    assert.deepEqual(done.data.files.map((f) => f.path).sort(), ['app.js', 'index.html', 'style.css']);
    assert.ok(done.data.usage.output_tokens > 0);
    assert.equal(await credits(server, u.token), before - 1);

    const got = await api(server, 'GET', `/v1/projects/${id}`, { token: u.token });
    assert.equal(got.status, 200);
    assert.equal(got.json.status, 'ready');
    assert.equal(got.json.latest_ready_version, 1);
    assert.equal(got.json.url, `${server.appsUrl}/${id}/@v1/`);
    assert.equal(got.json.name, 'A counter [[app]]');
    const v = got.json.versions[0];
    assert.equal(v.n, 1);
    assert.equal(v.status, 'ready');
    assert.equal(v.prompt, 'A counter [[app]]');
    assert.equal(v.message, 'A tiny counter.\nClick the button.');
    assert.equal(v.error, null);
    assert.ok(v.usage.input_tokens > 0);
    assert.equal(typeof v.model, 'string');
    assert.ok(v.duration_ms >= 0);
    assert.deepEqual(
      v.files.find((f) => f.path === 'index.html'),
      {
        path: 'index.html',
        size: Buffer.byteLength(INDEX),
        content_type: 'text/html; charset=utf-8',
        sha256: createHash('sha256').update(INDEX).digest('hex'),
      },
    );

    // what the model was sent
    const req = fake.requests.find((r) => JSON.stringify(r.body?.messages || []).includes('A counter [[app]]'));
    assert.ok(req);
    assert.equal(req.headers['x-api-key'], 'sk-test-key');
    assert.equal(req.body.stream, true);
    assert.match(JSON.stringify(req.body.system), /<file path=/);
    assert.deepEqual(req.body.messages, [{ role: 'user', content: 'A counter [[app]]' }]);
  });

  test('generate without SSE: 202 with the project to poll', async () => {
    const u = await signup(server);
    const res = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'x [[app]]', name: '  My app  ' } });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('location'), `/v1/projects/${res.json.id}`);
    assert.equal(res.json.name, 'My app');
    assert.equal(res.json.versions.length, 1);
    const { project } = await waitVersion(server, u.token, res.json.id, 1);
    assert.equal(project.status, 'ready');
  });

  test('iterate: a follow-up sees the conversation and files; unchanged files carry over, deletions apply', async () => {
    const u = await signup(server);
    const { project } = await generate(server, u.token, 'A counter [[app]]');
    const res = await sse(server, 'POST', `/v1/projects/${project.id}/versions`, {
      token: u.token,
      body: { prompt: 'count down instead [[update]]' },
    });
    assert.equal(res.status, 200);
    const events = await readEvents(res);
    assert.deepEqual(events[0].data, { project_id: project.id, version: 2 });
    const done = events[events.length - 1];
    assert.equal(done.event, 'done');
    assert.equal(done.data.url, `${server.appsUrl}/${project.id}/@v2/`);
    assert.deepEqual(done.data.files.map((f) => f.path), ['app.js', 'index.html']);

    const got = await api(server, 'GET', `/v1/projects/${project.id}`, { token: u.token });
    assert.equal(got.json.latest_version, 2);
    assert.equal(got.json.latest_ready_version, 2);
    assert.deepEqual(got.json.versions.map((v) => [v.n, v.status]), [[1, 'ready'], [2, 'ready']]);
    assert.equal(got.json.versions[1].message, 'Now it counts down.');

    const req = fake.requests.find((r) => JSON.stringify(r.body?.messages || []).includes('count down instead'));
    const msgs = req.body.messages;
    assert.deepEqual(msgs.map((m) => m.role), ['user', 'assistant', 'user']);
    assert.equal(msgs[0].content, 'A counter [[app]]');
    assert.equal(msgs[1].content, 'A tiny counter.\nClick the button.');
    assert.ok(msgs[2].content.includes(`<file path="app.js">\n${JS}\n</file>`));
    assert.ok(msgs[2].content.endsWith('count down instead [[update]]'));
    assert.equal(await credits(server, u.token), 3);
  });

  test('a model writing U+0000 or a lone surrogate: U+FFFD in its place, the generation succeeds', async () => {
    const u = await signup(server);
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'odd chars [[odd]]' } });
    assert.equal(res.status, 200);
    const events = await readEvents(res);
    const done = events[events.length - 1];
    assert.equal(done.event, 'done', JSON.stringify(done));
    const { version } = await waitVersion(server, u.token, events[0].data.project_id, 1);
    assert.equal(version.status, 'ready');
    assert.equal(version.message, 'Odd \uFFFD and \uFFFD.');
    const page = await fetch(`${done.data.url}index.html`);
    assert.equal(await page.text(), '<p>a\uFFFDb\uFFFDc</p>');
  });

  test('events: replay after Last-Event-ID, all without it, nothing repeated', async () => {
    const u = await signup(server);
    const { project } = await generate(server, u.token, 'A counter [[app]]');
    const all = await readEvents(await sse(server, 'GET', `/v1/projects/${project.id}/events`, { token: u.token }));
    assert.ok(all.length >= 5);
    assert.equal(all[0].event, 'project');
    assert.equal(all[all.length - 1].event, 'done');
    const rest = await readEvents(
      await sse(server, 'GET', `/v1/projects/${project.id}/events`, { token: u.token, headers: { 'Last-Event-ID': '3' } }),
    );
    assert.deepEqual(rest, all.slice(3));
    const none = await readEvents(
      await sse(server, 'GET', `/v1/projects/${project.id}/events`, {
        token: u.token,
        headers: { 'Last-Event-ID': String(all.length) },
      }),
    );
    assert.deepEqual(none, []);
    const bad = await api(server, 'GET', `/v1/projects/${project.id}/events`, {
      token: u.token,
      headers: { 'Last-Event-ID': 'abc' },
    });
    assert.equal(bad.status, 400);
  });

  test('a reader that leaves and comes back misses nothing; leaving cancels nothing', async () => {
    const u = await signup(server);
    const ac = new AbortController();
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'slowly [[slow]]' }, signal: ac.signal });
    const first = await readEvents(res, (e) => e.event === 'delta');
    ac.abort();
    const id = first[0].data.project_id;
    const lastId = first[first.length - 1].id;
    const rest = await readEvents(
      await sse(server, 'GET', `/v1/projects/${id}/events`, { token: u.token, headers: { 'Last-Event-ID': String(lastId) } }),
    );
    assert.equal(rest[0].id, lastId + 1);
    assert.equal(rest[rest.length - 1].event, 'done');
    const text = [...first, ...rest].filter((e) => e.event === 'delta').map((e) => e.data.text).join('');
    assert.equal(text, APP);
    const { version } = await waitVersion(server, u.token, id, 1);
    assert.equal(version.status, 'ready');
    assert.equal(await credits(server, u.token), 4);
  });

  test('download: the version as a zip', async () => {
    const u = await signup(server);
    const { project } = await generate(server, u.token, 'A counter [[app]]');
    const res = await fetch(`${server.url}/v1/projects/${project.id}/versions/1/download`, {
      headers: { Authorization: `Bearer ${u.token}` },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/zip');
    assert.match(res.headers.get('content-disposition'), /^attachment; filename="A-counter-app-v1\.zip"$/);
    const buf = Buffer.from(await res.arrayBuffer());
    assert.equal(buf.readUInt32LE(0), 0x04034b50);
    assert.deepEqual(zipNames(buf), ['app.js', 'index.html', 'style.css']);
    // the contents round-trip through a real unzip
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-zip-'));
    try {
      await writeFile(path.join(dir, 'app.zip'), buf);
      const out = execFileSync('unzip', ['-p', path.join(dir, 'app.zip'), 'index.html']);
      assert.equal(out.toString('utf8'), INDEX);
    } catch (e) {
      if (e.code !== 'ENOENT') throw e; // no unzip here: the central directory check above stands
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    for (const bad of ['2', '0', 'x', '01']) {
      const r = await api(server, 'GET', `/v1/projects/${project.id}/versions/${bad}/download`, { token: u.token });
      assert.equal(r.status, 404, bad);
    }
  });

  test('list: newest first, paged with an opaque cursor', async () => {
    const u = await signup(server);
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await generate(server, u.token, `app ${i} [[app]]`)).project.id);
    const page1 = await api(server, 'GET', '/v1/projects?limit=2', { token: u.token });
    assert.equal(page1.status, 200);
    assert.equal(page1.json.projects.length, 2);
    assert.equal(typeof page1.json.next_cursor, 'string');
    const page2 = await api(server, 'GET', `/v1/projects?limit=2&cursor=${page1.json.next_cursor}`, { token: u.token });
    assert.equal(page2.json.projects.length, 1);
    assert.equal(page2.json.next_cursor, null);
    const listed = [...page1.json.projects, ...page2.json.projects];
    assert.deepEqual(new Set(listed.map((p) => p.id)), new Set(ids));
    for (let i = 1; i < listed.length; i++) assert.ok(listed[i - 1].created_at >= listed[i].created_at);
    const p = listed[0];
    assert.deepEqual(Object.keys(p).sort(), [
      'created_at', 'id', 'latest_ready_version', 'latest_version', 'name', 'status', 'updated_at', 'url',
    ]);
    assert.equal(p.status, 'ready');
    assert.equal(p.url, `${server.appsUrl}/${p.id}/@v1/`);
    for (const q of ['limit=0', 'limit=101', 'limit=x', 'cursor=nope', 'cursor=bm90IG91cnM']) {
      const r = await api(server, 'GET', `/v1/projects?${q}`, { token: u.token });
      assert.equal(r.status, 400, q);
    }
    const other = await signup(server);
    const empty = await api(server, 'GET', '/v1/projects', { token: other.token });
    assert.deepEqual(empty.json, { projects: [], next_cursor: null });
  });

  test("another user's project is a 404 everywhere", async () => {
    const owner = await signup(server);
    const { project } = await generate(server, owner.token, 'mine [[app]]');
    const other = await signup(server);
    const id = project.id;
    const calls = [
      ['GET', `/v1/projects/${id}`],
      ['DELETE', `/v1/projects/${id}`],
      ['GET', `/v1/projects/${id}/events`],
      ['POST', `/v1/projects/${id}/cancel`],
      ['GET', `/v1/projects/${id}/versions/1/download`],
    ];
    for (const [method, p] of calls) {
      const r = await api(server, method, p, { token: other.token });
      assert.equal(r.status, 404, `${method} ${p}`);
      assert.equal(r.json.error.code, 'not_found');
    }
    const v = await api(server, 'POST', `/v1/projects/${id}/versions`, { token: other.token, body: { prompt: 'steal [[app]]' } });
    assert.equal(v.status, 404);
    assert.equal(await credits(server, other.token), 5);
    const still = await api(server, 'GET', `/v1/projects/${id}`, { token: owner.token });
    assert.equal(still.status, 200);
    const anon = await api(server, 'GET', `/v1/projects/${id}`);
    assert.equal(anon.status, 401);
  });

  test('delete: the project and its files are gone', async () => {
    const u = await signup(server);
    const { project } = await generate(server, u.token, 'to delete [[app]]');
    const page = await fetch(`${server.appsUrl}/${project.id}/`);
    assert.equal(page.status, 200);
    await page.arrayBuffer();
    const del = await api(server, 'DELETE', `/v1/projects/${project.id}`, { token: u.token });
    assert.equal(del.status, 204);
    assert.equal((await api(server, 'GET', `/v1/projects/${project.id}`, { token: u.token })).status, 404);
    assert.equal((await api(server, 'DELETE', `/v1/projects/${project.id}`, { token: u.token })).status, 404);
    const gone = await fetch(`${server.appsUrl}/${project.id}/@v1/index.html`);
    assert.equal(gone.status, 404);
    await gone.arrayBuffer();
  });

  test('validation: prompt and name', async () => {
    const u = await signup(server);
    const bad = [
      {},
      { prompt: '' },
      { prompt: '   \n ' },
      { prompt: 42 },
      { prompt: 'x'.repeat(20001) },
      { prompt: 'ok', name: 'n'.repeat(101) },
      { prompt: 'ok', name: 7 },
      { prompt: 'ok', colour: 'blue' },
    ];
    for (const body of bad) {
      const r = await api(server, 'POST', '/v1/projects', { token: u.token, body });
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
      assert.equal(r.json.error.code, 'invalid_request');
    }
    const ok = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'é'.repeat(20000), name: 'ü'.repeat(40) } });
    assert.equal(ok.status, 202, ok.text);
    await waitVersion(server, u.token, ok.json.id, 1);
    assert.equal((await api(server, 'POST', '/v1/projects', { token: u.token, body: 'not json', headers: { 'Content-Type': 'application/json' } })).status, 400);
  });

  for (const [marker, code] of [
    ['traversal', 'invalid_output'],
    ['noindex', 'invalid_output'],
    ['oversize', 'invalid_output'],
    ['toolong', 'too_long'],
    ['overloaded', null],
    ['badrequest', null],
    ['cut', null],
  ]) {
    test(`a failed generation (${marker}) is refunded and publishes nothing`, async () => {
      const u = await signup(server);
      const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: `fail [[${marker}]]` } });
      assert.equal(res.status, 200);
      const events = await readEvents(res);
      const last = events[events.length - 1];
      assert.equal(last.event, 'error');
      if (code) assert.equal(last.data.code, code);
      else assert.match(last.data.code, /^[a-z_]+$/);
      assert.equal(typeof last.data.message, 'string');
      assert.equal(last.data.credits_refunded, 1);
      const id = events[0].data.project_id;
      const { project, version } = await waitVersion(server, u.token, id, 1);
      assert.equal(version.status, 'failed');
      assert.equal(version.error.code, last.data.code);
      // the event and the version say the credit came back, and why
      const why = code ? 'rejected_output_allowance' : 'service_failure';
      assert.equal(last.data.refunded, true);
      assert.equal(last.data.refund_reason, why);
      assert.equal(version.error.refunded, true);
      assert.equal(version.error.refund_reason, why);
      assert.equal(project.latest_ready_version, null);
      assert.equal(project.url, null);
      assert.equal(await credits(server, u.token), 5);
      const page = await fetch(`${server.appsUrl}/${id}/@v1/index.html`);
      assert.equal(page.status, 404);
      await page.arrayBuffer();
      const dl = await api(server, 'GET', `/v1/projects/${id}/versions/1/download`, { token: u.token });
      assert.equal(dl.status, 409);
    });
  }

  test('max_tokens inside a file: the generation continues and is charged once', async () => {
    const u = await signup(server);
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'long [[cont]]' } });
    const events = await readEvents(res);
    const done = events[events.length - 1];
    assert.equal(done.event, 'done', JSON.stringify(done));
    assert.deepEqual(done.data.files.map((f) => f.path), ['app.js', 'index.html', 'style.css']);
    assert.equal(await credits(server, u.token), 4);
    const calls = fake.requests.filter((r) => JSON.stringify(r.body?.messages || []).includes('long [[cont]]'));
    assert.equal(calls.length, 2);
    const cont = calls[1].body.messages;
    assert.deepEqual(cont.map((m) => m.role), ['user', 'assistant', 'user']);
    assert.ok(cont[1].content.endsWith(`<file path="style.css">\n${CSS}\n</file>\n`));
    assert.ok(!cont[1].content.includes('<file path="app.js">'));
    const { project } = await waitVersion(server, u.token, events[0].data.project_id, 1);
    assert.equal(project.status, 'ready');
  });

  test('cancel: fails the version, refunds, and the reader gets the error', async () => {
    const u = await signup(server);
    const res = await sse(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'slowly [[slow]]' } });
    const reader = readEvents(res);
    let id;
    for (let i = 0; i < 100 && !id; i++) {
      const list = await api(server, 'GET', '/v1/projects', { token: u.token });
      id = list.json.projects[0]?.id;
      if (!id) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await credits(server, u.token), 4);
    // a project that is generating cannot be deleted
    const del = await api(server, 'DELETE', `/v1/projects/${id}`, { token: u.token });
    assert.equal(del.status, 409);
    const c = await api(server, 'POST', `/v1/projects/${id}/cancel`, { token: u.token });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.status, 'failed');
    assert.deepEqual(c.json.versions[0].error.code, 'canceled');
    const events = await reader;
    const last = events[events.length - 1];
    assert.equal(last.event, 'error');
    assert.equal(last.data.code, 'canceled');
    assert.equal(last.data.credits_refunded, 1);
    assert.equal(last.data.refund_reason, 'canceled_early');
    assert.equal(await credits(server, u.token), 5);
    const again = await api(server, 'POST', `/v1/projects/${id}/cancel`, { token: u.token });
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'not_generating');
  });

  test('the plan limits generations at a time (429), charging nothing', async () => {
    const u = await signup(server); // free plan: one at a time
    const first = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'slowly [[slow]]' } });
    assert.equal(first.status, 202);
    const second = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'another [[app]]' } });
    assert.equal(second.status, 429);
    assert.equal(second.json.error.code, 'too_many_generations');
    const follow = await api(server, 'POST', `/v1/projects/${first.json.id}/versions`, {
      token: u.token,
      body: { prompt: 'more [[app]]' },
    });
    assert.equal(follow.status, 409);
    assert.equal(follow.json.error.code, 'generation_in_progress');
    assert.equal(await credits(server, u.token), 4);
    await waitVersion(server, u.token, first.json.id, 1);
    assert.equal(await credits(server, u.token), 4);
  });
});

describe('refusals that charge nothing', () => {
  let fake;
  let server;
  before(async () => {
    fake = await startFakeAnthropic();
    fake.setScenario(picker(SCENARIOS));
    server = await startServer({
      env: {
        ANTHROPIC_API_KEY: 'sk-any',
        ANTHROPIC_BASE_URL: fake.url,
        KOUMPA_GENERATION_COST: '6',
        KOUMPA_CONTEXT_WINDOW: '4000',
        KOUMPA_MAX_TOKENS: '1000',
      },
    });
  });
  after(async () => {
    await server?.stop();
    await fake?.close();
  });

  test('402 insufficient_credits with the balance', async () => {
    const u = await signup(server);
    const r = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app [[app]]' } });
    assert.equal(r.status, 402);
    assert.equal(r.json.error.code, 'insufficient_credits');
    assert.deepEqual(r.json.error.balance, { daily: 5, monthly: 0, total: 5 });
    assert.equal(await credits(server, u.token), 5);
    const list = await api(server, 'GET', '/v1/projects', { token: u.token });
    assert.equal(list.json.projects.length, 0);
  });

  test('400 context_too_large before charging', async () => {
    const u = await signup(server);
    const r = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'y'.repeat(15000) } });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'context_too_large');
    assert.equal(await credits(server, u.token), 5);
    assert.equal(fake.requests.length, 0);
  });
});

describe('without an LLM provider', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('generation answers 503 llm_not_configured, naming the variable; the rest works', async () => {
    const u = await signup(server);
    const r = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'an app' } });
    assert.equal(r.status, 503);
    assert.equal(r.json.error.code, 'llm_not_configured');
    assert.match(r.json.error.message, /ANTHROPIC_API_KEY/);
    assert.equal(await credits(server, u.token), 5);
    const list = await api(server, 'GET', '/v1/projects', { token: u.token });
    assert.equal(list.status, 200);
  });
});
