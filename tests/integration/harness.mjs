// harness.mjs - black-box test harness: runs the real `koumpa` binary on a
// fresh data directory and free ports, and talks to it over HTTP.
//
// Environment:
//   KOUMPA_BUILD          build directory holding the binary (default "build", relative to the repo root)
//   KOUMPA_TEST_WRAPPER   command prefix for every koumpa process, e.g. "valgrind --error-exitcode=99 ..."
//   KOUMPA_TEST_SANITIZED=1  the binary is built with ASan (make sanitize): its shadow memory and
//                         quarantine make RSS figures meaningless, so memory-bound tests skip
//   KOUMPA_TEST_LOG_LEVEL server log level (default "warn")
//   KOUMPA_TEST_KEEP=1    keep data directories after the tests
//   KOUMPA_TEST_BACKEND   local (default: SQLite + files in the data directory) or aws: every server
//                         on DynamoDB + S3 (+ its keys in Secrets Manager) on moto behind the
//                         SigV4-verifying front (aws-backend.mjs;
//                         KOUMPA_TEST_AWS_DB=sqlite keeps SQLite with S3). Tests about SQLite or
//                         local files skip there, saying why (localOnly below)
//
// The server's environment is hermetic: inherited KOUMPA_*, LLM provider, Stripe and AWS
// variables are dropped, then the test's own are set. Password hashing uses
// cheap Argon2 parameters so that sign-ups are fast, and the per-address
// sign-up limit is lifted (tests that check it set their own).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { AWS_TEST_DB, awsBackendEnv, awsSecretsEnv } from './aws-backend.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUILD = path.resolve(ROOT, process.env.KOUMPA_BUILD || 'build');
export const BIN = path.join(BUILD, 'koumpa');
/** The server built with fault injection (core/testhook.h: KOUMPA_TEST_FAULT). */
export const HOOKS_BIN = path.join(BUILD, 'koumpa-hooks');
const WRAPPER = (process.env.KOUMPA_TEST_WRAPPER || '').split(/\s+/).filter(Boolean);
const WRAPPED = WRAPPER.length > 0;
/** Why a test that measures the server's memory (RSS) cannot run in this build, or false. */
export const RSS_UNMEASURABLE = WRAPPED
  ? 'the server runs under a wrapper'
  : process.env.KOUMPA_TEST_SANITIZED === '1' && 'ASan build: shadow memory and quarantine';
const START_TIMEOUT_MS = WRAPPED ? 120_000 : 30_000;
const STOP_TIMEOUT_MS = WRAPPED ? 120_000 : 15_000;
const DROPPED_ENV = /^(KOUMPA_|ANTHROPIC_|OPENAI_|STRIPE_|AWS_)/;

/** The backend of the servers startServer starts: 'local' or 'aws' (KOUMPA_TEST_BACKEND). */
export const BACKEND = process.env.KOUMPA_TEST_BACKEND || 'local';
if (!['local', 'aws'].includes(BACKEND)) throw new Error(`KOUMPA_TEST_BACKEND=${BACKEND}: local or aws`);
/** The store on that backend: 'sqlite' or 'dynamodb'. */
export const BACKEND_DB = BACKEND === 'aws' ? AWS_TEST_DB : 'sqlite';
/** For a test about local files: its skip reason on the AWS backend, else false. */
export function localOnly(why) {
  return BACKEND === 'aws' && `${why}: not on KOUMPA_TEST_BACKEND=aws`;
}
/** For a test about the SQLite file: its skip reason when the store is another, else false. */
export function sqliteOnly(why) {
  return BACKEND_DB !== 'sqlite' && `${why}: not on KOUMPA_DB=${BACKEND_DB}`;
}

/**
 * A TCP port that was free a moment ago, below the ephemeral range (10000-32767): between now and
 * the server's bind (seconds on DynamoDB, after its start-up recovery) the many outgoing
 * connections of the tests and the AWS peers take ephemeral ports, never these.
 */
export async function freePort() {
  for (let i = 0; ; i++) {
    const port = 10000 + Math.floor(Math.random() * 22768);
    const srv = createServer();
    const ok = await new Promise((resolve, reject) => {
      srv.once('error', (e) => (e.code === 'EADDRINUSE' && i < 100 ? resolve(false) : reject(e)));
      srv.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) continue;
    await new Promise((resolve) => srv.close(resolve));
    return port;
  }
}

function baseEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!DROPPED_ENV.test(k)) env[k] = v;
  return env;
}

/** The argv of a koumpa process (or bin): prefix, then KOUMPA_TEST_WRAPPER, then the binary. */
export function command(args, { prefix = [], bin = BIN } = {}) {
  const argv = [...prefix, ...WRAPPER, bin, ...args];
  return { file: argv[0], args: argv.slice(1) };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs `koumpa <args>` to completion: { code, signal, stdout, stderr, timedOut }.
 * After timeoutMs (default 60 s, 300 s under a wrapper) the process is killed.
 */
export function runKoumpa(args, { env, input, timeoutMs = WRAPPED ? 300_000 : 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const { file, args: argv } = command(args);
    const child = spawn(file, argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? 128,
        signal,
        timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    // a command that fails before reading its input closes the pipe first: that is not the test's failure
    child.stdin.on('error', (e) => {
      if (e.code !== 'EPIPE') reject(e);
    });
    child.stdin.end(input ?? '');
  });
}

/**
 * Starts `koumpa serve` and waits until GET /healthz answers 200.
 * Options: env (extra variables, win over the defaults and the backend's), args (extra flags),
 * backend ('local' or 'aws'; default BACKEND, but 'local' when env sets AWS_* variables: the test
 * brings its own AWS peers),
 * dataDir (reuse a directory, e.g. to restart after kill(); then stop() keeps it),
 * prefix (a command that execs the server, e.g. ['prlimit', '--nofile=1024', '--']),
 * bin (another binary, e.g. HOOKS_BIN),
 * logFile (the server's stderr goes to this file, as in production, instead of a pipe; logs() reads it).
 * Returns { url, appsUrl, port, appsPort, pid, dataDir, env, stop(), kill(), remove(), logs(), run(), exited }.
 */
export async function startServer(options = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerOnce(options);
    } catch (e) {
      // another process took a port between freePort() and the server's bind: new ports, once more
      if (!(e instanceof PortTakenError) || attempt >= PORT_ATTEMPTS) throw e;
    }
  }
}

const PORT_ATTEMPTS = 5;
class PortTakenError extends Error {}

/** The port of a listen address "host:port" (0 when it names none, or port 0). */
function addrPort(addr) {
  const m = /:(\d+)$/.exec(addr || '');
  return m ? Number(m[1]) : 0;
}

/**
 * Whether process pid listens on every one of ports (TCP, from /proc: a listening socket's inode
 * among the process's descriptors). A /healthz answered on the port proves nothing alone: when
 * another process took the port between freePort() and this server's bind, that process answers
 * while this server fails to start.
 */
function listensOn(pid, ports) {
  const byPort = new Map(); // port -> inodes of the sockets listening on it
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A') continue; // 0A: LISTEN
      const port = parseInt(cols[1].split(':')[1], 16);
      if (!byPort.has(port)) byPort.set(port, new Set());
      byPort.get(port).add(cols[9]);
    }
  }
  const mine = new Set();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) mine.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return false; // exited
  }
  return ports.every((port) => [...(byPort.get(port) || [])].some((inode) => mine.has(inode)));
}

/**
 * What the threads of a server that does not answer are doing, from /proc (each thread's name,
 * state and kernel wait channel) and, when gdb is installed, every thread's stack.
 */
function diagnose(pid) {
  const lines = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const read = (f) => {
        try {
          return readFileSync(`/proc/${pid}/task/${tid}/${f}`, 'utf8').trim();
        } catch {
          return '?';
        }
      };
      const state = read('stat').replace(/^.*\) /, '').split(' ')[0];
      lines.push(`thread ${tid} ${read('comm')} state ${state} wchan ${read('wchan')}`);
    }
  } catch (e) {
    lines.push(`/proc/${pid}: ${e.message}`);
  }
  const gdb = spawnSync('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'thread apply all bt'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (!gdb.error) lines.push(gdb.stdout.split('\n').filter((l) => !/^\[(New )?Thread /.test(l)).join('\n'));
  return lines.join('\n');
}

async function startServerOnce({ env = {}, args = [], dataDir, prefix = [], bin, backend, logFile } = {}) {
  backend ??= Object.keys(env).some((k) => k.startsWith('AWS_')) ? 'local' : BACKEND;
  const ownDir = !dataDir;
  const dir = dataDir ?? (await mkdtemp(path.join(tmpdir(), 'koumpa-test-')));
  const backendEnv = backend === 'aws' ? await awsBackendEnv(dir, baseEnv(), runKoumpa) : {};
  const port = await freePort();
  let appsPort = await freePort();
  while (appsPort === port) appsPort = await freePort();
  let fullEnv = {
    ...baseEnv(),
    KOUMPA_DATA_DIR: dir,
    KOUMPA_ADDR: `127.0.0.1:${port}`,
    KOUMPA_APPS_ADDR: `127.0.0.1:${appsPort}`,
    KOUMPA_LOG_LEVEL: process.env.KOUMPA_TEST_LOG_LEVEL || 'warn',
    KOUMPA_PWHASH_MEMLIMIT_KIB: '8192',
    KOUMPA_PWHASH_OPSLIMIT: '1',
    // tests sign many users up from 127.0.0.1; the per-address limit has its own tests
    KOUMPA_SIGNUP_PER_HOUR: '100000',
    ...backendEnv,
    ...env,
  };
  if (backend === 'aws') fullEnv = await awsSecretsEnv(fullEnv);
  const url = `http://127.0.0.1:${port}`;
  const appsUrl = `http://127.0.0.1:${appsPort}`;

  const { file, args: argv } = command(['serve', ...args], { prefix, bin });
  const logFd = logFile ? openSync(logFile, 'a') : null;
  const child = spawn(file, argv, { env: fullEnv, stdio: ['ignore', 'pipe', logFd ?? 'pipe'] });
  if (logFd !== null) closeSync(logFd);
  const output = [];
  child.stdout.on('data', (d) => output.push(d));
  child.stderr?.on('data', (d) => output.push(d));
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.once('error', (e) => {
      exitInfo = { code: 127, signal: null, error: e };
      resolve(exitInfo);
    });
    child.once('close', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const logs = () => Buffer.concat(output).toString('utf8') + (logFile ? readFileSync(logFile, 'utf8') : '');

  const cleanup = async (keep) => {
    if (ownDir && !keep && !process.env.KOUMPA_TEST_KEEP) await rm(dir, { recursive: true, force: true });
  };

  const waitExit = async (ms) => {
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    });
    try {
      return await Promise.race([exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };

  const server = {
    url,
    appsUrl,
    port,
    appsPort,
    pid: child.pid,
    dataDir: dir,
    env: fullEnv,
    exited,
    logs,
    /** Runs `koumpa <args>` with the server's environment and data dir. */
    run: (subArgs, opts = {}) => runKoumpa(subArgs, { ...opts, env: { ...fullEnv, ...(opts.env || {}) } }),
    /** SIGTERM, wait, and throw unless the process exited with code 0. */
    async stop({ keepData = false } = {}) {
      if (!exitInfo) child.kill('SIGTERM');
      let info = await waitExit(STOP_TIMEOUT_MS);
      if (!info) {
        child.kill('SIGKILL');
        info = await exited;
        await cleanup(true);
        throw new Error(`server did not stop within ${STOP_TIMEOUT_MS} ms after SIGTERM\n--- server output ---\n${logs()}`);
      }
      if (info.code !== 0) {
        await cleanup(true);
        throw new Error(
          `server exited with code ${info.code}${info.signal ? ` (signal ${info.signal})` : ''}` +
            `\n--- server output (data kept in ${dir}) ---\n${logs()}`,
        );
      }
      await cleanup(keepData);
    },
    /** Sends a signal (default SIGKILL) and waits for the exit; keeps the data dir (see remove()). */
    async kill(signal = 'SIGKILL') {
      if (!exitInfo) child.kill(signal);
      return exited;
    },
    /** Removes the data dir this harness created (after kill(), or a stop({ keepData: true })). */
    async remove() {
      await cleanup(false);
    },
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  let lastTry = 'no attempt';
  for (;;) {
    if (exitInfo) {
      if (/cannot listen on [^ ]+: Address already in use/.test(logs())) {
        await cleanup(false);
        throw new PortTakenError(`port taken: ${logs()}`);
      }
      await cleanup(true);
      throw new Error(`server exited during start-up (code ${exitInfo.code})\n--- server output ---\n${logs()}`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      const ours = [port, addrPort(fullEnv.KOUMPA_APPS_ADDR)].filter((p) => p > 0);
      if (res.status === 200 && listensOn(child.pid, ours)) return server;
      lastTry = res.status === 200 ? `another process answers on port ${port}` : `${res.status} ${body}`;
    } catch (e) {
      // not listening yet, or not answering; the cause says which (its code, else its own message)
      lastTry = `${e.name}: ${e.message}${e.cause ? ` (${e.cause.code || e.cause.message || e.cause})` : ''}`;
    }
    if (Date.now() > deadline) {
      const threads = diagnose(child.pid);
      child.kill('SIGKILL');
      await exited;
      await cleanup(true);
      throw new Error(
        `server did not answer /healthz within ${START_TIMEOUT_MS} ms (last try: ${lastTry})` +
          `\n--- server output ---\n${logs()}\n--- its threads ---\n${threads}`,
      );
    }
    await sleep(WRAPPED ? 250 : 50);
  }
}

/**
 * One API call. body: an object (sent as JSON), a string or a Buffer (sent
 * as is). Returns { status, headers, json, text } (json is null when the
 * body is not JSON). Fails after timeoutMs (60 s, 300 s under a wrapper)
 * rather than hanging on a stuck server.
 */
export async function api(
  server,
  method,
  urlPath,
  { token, body, headers = {}, timeoutMs = WRAPPED ? 300_000 : 60_000 } = {},
) {
  const h = { ...headers };
  let payload;
  if (token) h.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    if (typeof body === 'string' || body instanceof Uint8Array) {
      payload = body;
    } else {
      payload = JSON.stringify(body);
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
    }
  }
  const base = urlPath.startsWith('http') ? '' : server.url;
  let res;
  let text;
  try {
    res = await fetch(base + urlPath, {
      method,
      headers: h,
      body: payload,
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
  } catch (e) {
    if (e.name !== 'TimeoutError' || !server?.pid) throw e;
    throw new Error(
      `${method} ${urlPath}: no answer within ${timeoutMs} ms\n--- server output ---\n${server.logs()}` +
        `\n--- its threads ---\n${diagnose(server.pid)}`,
    );
  }
  let json = null;
  if ((res.headers.get('content-type') || '').includes('json')) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** A unique e-mail address for a test user. */
export function uniqueEmail(prefix = 'user') {
  return `${prefix}-${randomBytes(6).toString('hex')}@example.com`;
}

/** Signs up a user (201 expected); returns { token, user, email, password }. */
export async function signup(server, email = uniqueEmail(), password = 'correct horse battery staple') {
  const res = await api(server, 'POST', '/v1/auth/signup', { body: { email, password } });
  if (res.status !== 201 || !res.json?.token)
    throw new Error(`signup of ${email} failed: ${res.status} ${res.text}`);
  return { token: res.json.token, user: res.json.user, email, password };
}

/** Polls GET /v1/projects/{id} until version n is no longer generating; asserts it is ready. Returns the project. */
export async function waitReady(server, token, id, n) {
  for (let i = 0; i < 300; i++) {
    const r = await api(server, 'GET', `/v1/projects/${id}`, { token });
    const v = r.json.versions.find((x) => x.n === n);
    if (v && v.status !== 'generating') {
      assert.equal(v.status, 'ready', JSON.stringify(v.error));
      return r.json;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('still generating');
}
