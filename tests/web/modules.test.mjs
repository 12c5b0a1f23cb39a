// modules.test.mjs - the dashboard's modules: each parses, exports what the shared contract says
// (docs/ARCHITECTURE.md, "Dashboard"), and errors.js describes each error a person can act on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { ApiError, api, configure } from '../../src/web/js/api.js';
import { describeError } from '../../src/web/js/errors.js';

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/web/js');
const files = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.js') ? [path.join(dir, e.name)] : []));

describe('modules', () => {
  test('every module parses', () => {
    for (const f of files(JS)) execFileSync(process.execPath, ['--check', f]);
  });

  test('the shared exports exist', async () => {
    const session = await import('../../src/web/js/session.js');
    for (const name of ['getToken', 'setToken', 'clearToken', 'onChange']) assert.equal(typeof session[name], 'function', name);
    for (const view of ['login', 'signup', 'projects', 'project']) {
      const mod = await import(`../../src/web/js/views/${view}.js`);
      assert.equal(typeof mod.render, 'function', view);
    }
  });
});

describe('api', () => {
  test('ApiError from the error body; status 0 "network" when fetch fails; 401 calls onUnauthorized', async () => {
    const calls = [];
    let unauthorized = 0;
    globalThis.fetch = async (url, init) => {
      calls.push([url, init.headers.Authorization]);
      if (url.endsWith('/down')) throw new TypeError('Failed to fetch');
      const status = url.endsWith('/401') ? 401 : 402;
      return new Response(JSON.stringify({ error: { code: status === 401 ? 'unauthorized' : 'insufficient_credits', message: 'm' } }), { status });
    };
    configure({ base: 'https://api.example/', getToken: () => 'tok', onUnauthorized: () => unauthorized++ });
    await assert.rejects(api('GET', '/v1/x402'), (e) => e instanceof ApiError && e.status === 402 && e.code === 'insufficient_credits');
    await assert.rejects(api('GET', '/v1/down'), (e) => e.status === 0 && e.code === 'network');
    await assert.rejects(api('GET', '/v1/401'), (e) => e.status === 401);
    assert.equal(unauthorized, 1);
    assert.deepEqual(calls[0], ['https://api.example/v1/x402', 'Bearer tok']);
    delete globalThis.fetch;
  });
});

describe('describeError', () => {
  const e = (status, code, message = 'the API says') => new ApiError(status, code, message, { authenticated: true });
  test('402: out of credits, with Upgrade to #/billing', () => {
    const d = describeError(e(402, 'insufficient_credits'));
    assert.match(d.title, /out of credits/i);
    assert.deepEqual(d.action, { label: 'Upgrade', href: '#/billing' });
  });
  test('429 too_many_generations and 409 generation_in_progress: a generation is already running', () => {
    assert.match(describeError(e(429, 'too_many_generations')).title, /already running/);
    assert.match(describeError(e(409, 'generation_in_progress')).title, /already running/);
  });
  test('503 llm_not_configured: what the operator must set, from the API', () => {
    const d = describeError(e(503, 'llm_not_configured', 'set ANTHROPIC_API_KEY'));
    assert.match(d.message, /operator/);
    assert.match(d.message, /ANTHROPIC_API_KEY/);
  });
  test('network: reconnecting; 401 with a token: signed out, to #/login; 401 at login: the message', () => {
    assert.match(describeError(new ApiError(0, 'network', 'x')).message, /Reconnecting/);
    assert.equal(describeError(e(401, 'unauthorized')).action.href, '#/login');
    const login = describeError(new ApiError(401, 'unauthorized', 'invalid email or password', { authenticated: false }));
    assert.equal(login.message, 'Invalid email or password.'); // the API's message, as a sentence
  });
});
