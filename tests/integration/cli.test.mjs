// cli.test.mjs - the koumpa binary's commands, black-box: version and help,
// usage errors (exit 2, one line), configuration errors, migrate, user,
// daily-bonus idempotency (twice in a row and two processes at once), the
// generated secret file, and the server's JSON log lines.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { api, localOnly, runKoumpa, signup, startServer, uniqueEmail } from './harness.mjs';

const WRAPPED = Boolean((process.env.KOUMPA_TEST_WRAPPER || '').trim());
const DROPPED_ENV = /^(KOUMPA_|ANTHROPIC_|OPENAI_)/;
const VALGRIND_LINE = /^==\d+==/;

/** A hermetic environment for a one-shot command on dataDir (like the harness's server env). */
function cliEnv(dataDir, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!DROPPED_ENV.test(k)) env[k] = v;
  return {
    ...env,
    KOUMPA_DATA_DIR: dataDir,
    KOUMPA_ADDR: '127.0.0.1:0',
    KOUMPA_APPS_ADDR: '127.0.0.1:0',
    KOUMPA_LOG_LEVEL: 'warn',
    KOUMPA_PWHASH_MEMLIMIT_KIB: '8192',
    KOUMPA_PWHASH_OPSLIMIT: '1',
    ...extra,
  };
}

async function tempDir() {
  return mkdtemp(path.join(tmpdir(), 'koumpa-cli-'));
}

/** stderr without valgrind's own lines (there are none unless it found something). */
const ownStderr = (res) =>
  res.stderr
    .split('\n')
    .filter((l) => !VALGRIND_LINE.test(l))
    .join('\n');

const granted = (res) => {
  const m = res.stdout.match(/(\d+) users? granted/);
  assert.ok(m, `no "N users granted" in ${JSON.stringify(res.stdout)}`);
  return Number(m[1]);
};

describe('koumpa commands without a server', () => {
  let dir;
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    if (!process.env.KOUMPA_TEST_KEEP) await rm(dir, { recursive: true, force: true });
  });

  test('`koumpa version` prints the version', async () => {
    for (const args of [['version'], ['--version']]) {
      const res = await runKoumpa(args, { env: cliEnv(dir) });
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /^koumpa \d+\.\d+\.\d+\S*\n$/);
    }
  });

  test('every command has --help, exiting 0 with a usage line on stdout', async () => {
    const missing = path.join(dir, 'help-must-not-create-this');
    const cases = [
      ['--help'],
      ['-h'],
      ['help'],
      ['serve', '--help'],
      ['migrate', '--help'],
      ['daily-bonus', '--help'],
      ['admin', '--help'],
      ['user', '--help'],
      ['version', '--help'],
      ['serve', '-h'],
    ];
    for (const args of cases) {
      const res = await runKoumpa(args, { env: cliEnv(missing), timeoutMs: WRAPPED ? 120_000 : 10_000 });
      assert.equal(res.timedOut, false, `${args.join(' ')} did not return`);
      assert.equal(res.code, 0, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stdout, /^usage: koumpa/, `${args.join(' ')}: ${res.stdout}`);
    }
    const top = await runKoumpa(['--help'], { env: cliEnv(missing) });
    for (const cmd of ['serve', 'migrate', 'daily-bonus', 'admin', 'user', 'version']) assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
    const serve = await runKoumpa(['serve', '--help'], { env: cliEnv(missing) });
    assert.match(serve.stdout, /--addr/);
    assert.match(serve.stdout, /--data-dir/);
    assert.equal(existsSync(missing), false, '--help touched the data directory');
  });

  test('wrong usage exits 2 with a one-line reason and no side effect', async () => {
    const untouched = path.join(dir, 'usage-must-not-create-this');
    const cases = [
      [[], /command/],
      [['frobnicate'], /frobnicate/],
      [['admin'], /action/],
      [['admin', 'promote', 'a@example.com'], /promote/],
      [['admin', 'grant'], /EMAIL/],
      [['admin', 'set-plan', 'a@example.com'], /PLAN/],
      [['user'], /action/],
      [['user', 'create'], /EMAIL/],
      [['user', 'delete', 'a@example.com'], /delete/],
      [['daily-bonus', '--date', '2026-13-01'], /date/],
      [['daily-bonus', '--date', '2026-02-30'], /date/],
      [['daily-bonus', '--date=yesterday'], /date/],
      [['daily-bonus', '--date'], /date/],
      [['version', 'extra'], /version/],
      [['migrate', '--no-such-flag'], /--no-such-flag/],
    ];
    for (const [args, reason] of cases) {
      const res = await runKoumpa(args, { env: cliEnv(untouched) });
      const label = `koumpa ${args.join(' ')}`;
      assert.equal(res.code, 2, `${label}: exit ${res.code}, stderr ${res.stderr}`);
      const err = ownStderr(res).trim();
      assert.ok(err.length > 0, `${label}: no reason given`);
      assert.equal(err.split('\n').length, 1, `${label}: more than one line: ${err}`);
      assert.match(err, reason, label);
      assert.equal(res.stdout, '', `${label}: printed to stdout`);
    }
    assert.equal(existsSync(untouched), false, 'a usage error touched the data directory');
  });

  test('invalid configuration stops serve with a message naming the variable', async () => {
    const cases = [
      [{ KOUMPA_LOG_LEVEL: 'loud' }, 'KOUMPA_LOG_LEVEL'],
      [{ KOUMPA_ADDR: 'nope' }, 'KOUMPA_ADDR'],
      [{ KOUMPA_ADDR: '127.0.0.1:99999' }, 'KOUMPA_ADDR'],
      [{ KOUMPA_LOGIN_RATE: 'many' }, 'KOUMPA_LOGIN_RATE'],
      [{ KOUMPA_THREADS: '-3' }, 'KOUMPA_THREADS'],
      [{ KOUMPA_JWT_ISSUER: 'https://idp.example' }, 'KOUMPA_JWT_AUDIENCE'],
      [{ KOUMPA_JWT_ISSUER: 'idp.example', KOUMPA_JWT_AUDIENCE: 'x' }, 'KOUMPA_JWT_ISSUER'],
      [{ KOUMPA_CA_BUNDLE: '/nonexistent/ca-bundle.crt' }, 'KOUMPA_CA_BUNDLE'],
    ];
    for (const [extra, name] of cases) {
      const res = await runKoumpa(['serve'], { env: cliEnv(path.join(dir, 'bad-config'), extra), timeoutMs: WRAPPED ? 120_000 : 20_000 });
      const label = JSON.stringify(extra);
      assert.equal(res.timedOut, false, `${label}: serve kept running`);
      assert.notEqual(res.code, 0, `${label}: exit 0`);
      assert.match(ownStderr(res), new RegExp(name), `${label}: ${res.stderr}`);
    }
    assert.equal(existsSync(path.join(dir, 'bad-config')), false, 'a refused configuration created the data directory');
  });

  test('an invalid secret is refused without being printed', async () => {
    const secret = `short-${randomBytes(4).toString('hex')}`;
    const res = await runKoumpa(['serve'], {
      env: cliEnv(path.join(dir, 'bad-secret'), { KOUMPA_JWT_SECRET: secret }),
      timeoutMs: WRAPPED ? 120_000 : 20_000,
    });
    assert.equal(res.timedOut, false);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /KOUMPA_JWT_SECRET/);
    assert.ok(!res.stderr.includes(secret) && !res.stdout.includes(secret), 'the secret was printed');
  });

  test('a flag overrides the environment', async () => {
    const data = path.join(dir, 'flag-override');
    const res = await runKoumpa(['migrate', '--log-level', 'warn'], { env: cliEnv(data, { KOUMPA_LOG_LEVEL: 'loud' }) });
    assert.equal(res.code, 0, res.stderr);
    const elsewhere = path.join(dir, 'flag-data-dir');
    const moved = await runKoumpa(['migrate', `--data-dir=${elsewhere}`], { env: cliEnv(data) });
    assert.equal(moved.code, 0, moved.stderr);
    assert.ok(existsSync(path.join(elsewhere, 'koumpa.db')), '--data-dir was not used');
  });

  test('`koumpa migrate` twice: the second run applies nothing', async () => {
    const data = path.join(dir, 'migrate');
    const first = await runKoumpa(['migrate'], { env: cliEnv(data) });
    assert.equal(first.code, 0, first.stderr);
    const m1 = first.stdout.match(/(\d+) migrations? applied/);
    assert.ok(m1, first.stdout);
    assert.ok(Number(m1[1]) >= 1, first.stdout);
    assert.ok(existsSync(path.join(data, 'koumpa.db')));

    const second = await runKoumpa(['migrate'], { env: cliEnv(data) });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /\b0 migrations applied/);
  });

  test('the generated secret file is mode 0600 and kept across runs', async () => {
    const data = path.join(dir, 'secret');
    const res = await runKoumpa(['migrate'], { env: cliEnv(data) });
    assert.equal(res.code, 0, res.stderr);
    const file = path.join(data, 'jwt_secret');
    const st = await stat(file);
    assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
    const secret = (await readFile(file, 'utf8')).trim();
    assert.ok(secret.length >= 32, 'secret too short');
    await runKoumpa(['migrate'], { env: cliEnv(data) });
    assert.equal((await readFile(file, 'utf8')).trim(), secret, 'the secret changed on a second run');
    assert.ok(!res.stdout.includes(secret) && !res.stderr.includes(secret), 'the secret was printed');
  });

  const commandsDb = localOnly('the commands write the data directory\'s SQLite, which the server then reads');
  test('`koumpa user create` reads the password on stdin; `user show` finds the user', { skip: commandsDb }, async () => {
    const data = path.join(dir, 'users');
    const email = uniqueEmail('cli');
    const password = `pw-${randomBytes(6).toString('hex')}`;
    const early = await runKoumpa(['user', 'create', email], { env: cliEnv(data), input: `${password}\n` });
    assert.notEqual(early.code, 0, 'user create on a database that was never migrated');
    assert.match(early.stderr, /koumpa migrate/, 'the message says what to do');
    const migrated = await runKoumpa(['migrate'], { env: cliEnv(data) });
    assert.equal(migrated.code, 0, migrated.stderr);

    const created = await runKoumpa(['user', 'create', email.toUpperCase()], { env: cliEnv(data), input: `${password}\n` });
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.match(/^id:\s+(\S+)$/m)?.[1];
    assert.ok(id, created.stdout);
    assert.ok(!created.stdout.includes(password) && !created.stderr.includes(password), 'the password was printed');

    const shown = await runKoumpa(['user', 'show', email], { env: cliEnv(data) });
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`^id:\\s+${id}$`, 'm'));
    assert.match(shown.stdout, new RegExp(`^email:\\s+${email.replace(/[.]/g, '\\.')}$`, 'm'));
    assert.match(shown.stdout, /^plan:\s+free$/m);
    assert.match(shown.stdout, /^admin:\s+no$/m);
    assert.match(shown.stdout, /^credits:\s+5 daily \+ 0 monthly$/m);

    const again = await runKoumpa(['user', 'create', email], { env: cliEnv(data), input: `${password}\n` });
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /exists/);
    const short = await runKoumpa(['user', 'create', uniqueEmail('cli')], { env: cliEnv(data), input: 'short\n' });
    assert.notEqual(short.code, 0);
    assert.match(short.stderr, /password/);
    const noInput = await runKoumpa(['user', 'create', uniqueEmail('cli')], { env: cliEnv(data), input: '' });
    assert.notEqual(noInput.code, 0);
    assert.match(noInput.stderr, /password/);
    const unknown = await runKoumpa(['user', 'show', uniqueEmail('ghost')], { env: cliEnv(data) });
    assert.notEqual(unknown.code, 0);

    // the server accepts the password the command stored
    const server = await startServer({ dataDir: data });
    try {
      const login = await api(server, 'POST', '/v1/auth/login', { body: { email, password } });
      assert.equal(login.status, 200, login.text);
      assert.equal(login.json.user.id, id);
    } finally {
      await server.stop();
    }
  });
});

describe('daily bonus', () => {
  let server;
  let business; // a user on the business plan: the bonus moves them from 5 to 10 daily
  let free;
  before(async () => {
    server = await startServer();
    business = await signup(server, uniqueEmail('biz'));
    free = await signup(server, uniqueEmail('free'));
    for (let i = 0; i < 4; i++) await signup(server);
    const moved = await server.run(['admin', 'set-plan', business.email, 'business']);
    assert.equal(moved.code, 0, moved.stderr);
  });
  after(async () => {
    await server?.stop();
  });

  const ledger = async (u) => {
    const res = await api(server, 'GET', '/v1/me/ledger?limit=100', { token: u.token });
    assert.equal(res.status, 200, res.text);
    return res.json.entries;
  };

  test('`koumpa daily-bonus --date D` twice grants once', async () => {
    const first = await server.run(['daily-bonus', '--date', '2032-03-04']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(granted(first), 6, first.stdout);
    const me = await api(server, 'GET', '/v1/me', { token: business.token });
    assert.deepEqual(me.json.credits, { daily: 10, monthly: 0, total: 10 });
    const entries = await ledger(business);
    assert.equal(entries.length, 2, JSON.stringify(entries));
    assert.deepEqual(
      { reason: entries[0].reason, delta_daily: entries[0].delta_daily, balance: entries[0].balance },
      { reason: 'daily_bonus', delta_daily: 5, balance: { daily: 10, monthly: 0 } },
    );

    const second = await server.run(['daily-bonus', '--date=2032-03-04']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(granted(second), 0, second.stdout);
    assert.equal((await ledger(business)).length, 2);
    assert.equal((await ledger(free)).length, 2);
    const shown = await server.run(['user', 'show', business.email]);
    assert.match(shown.stdout, /^credits:\s+10 daily \+ 0 monthly$/m);
  });

  test('two `koumpa daily-bonus --date D2` processes at once grant once in total', async () => {
    const counts = new Map([
      [free, (await ledger(free)).length],
      [business, (await ledger(business)).length],
    ]);
    const runs = await Promise.all([
      server.run(['daily-bonus', '--date', '2032-03-05']),
      server.run(['daily-bonus', '--date', '2032-03-05']),
    ]);
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    assert.equal(granted(runs[0]) + granted(runs[1]), 6, runs.map((r) => r.stdout).join(' | '));
    for (const u of [free, business]) {
      const entries = await ledger(u);
      assert.equal(entries.length, counts.get(u) + 1, JSON.stringify(entries));
    }
    const third = await server.run(['daily-bonus', '--date', '2032-03-05']);
    assert.equal(granted(third), 0);
  });

  test('the daily bonus resets daily credits: unused ones do not carry over', async () => {
    const me = await api(server, 'GET', '/v1/me', { token: business.token });
    assert.equal(me.json.credits.daily, 10, 'never above the plan daily bonus');
  });
});

describe('the server log', () => {
  test('is JSON lines with request ids matching X-Request-Id, and holds no password, token or secret', async () => {
    const secret = randomBytes(32).toString('hex');
    const server = await startServer({ env: { KOUMPA_LOG_LEVEL: 'info', KOUMPA_JWT_SECRET: secret } });
    let stopped = false;
    try {
      const password = `pw-${randomBytes(8).toString('hex')}`;
      const wrongPassword = `wrong-${randomBytes(8).toString('hex')}`;
      const u = await signup(server, uniqueEmail('logged'), password);
      const login = await api(server, 'POST', '/v1/auth/login', { body: { email: u.email, password } });
      assert.equal(login.status, 200);
      const failed = await api(server, 'POST', '/v1/auth/login', { body: { email: u.email, password: wrongPassword } });
      assert.equal(failed.status, 401);
      const traced = await api(server, 'GET', '/v1/me', { token: login.json.token, headers: { 'X-Request-Id': 'trace-log-42' } });
      assert.equal(traced.headers.get('x-request-id'), 'trace-log-42');
      const generated = await api(server, 'GET', '/v1/me', { token: u.token });
      const badToken = await api(server, 'GET', '/v1/me', { token: `${u.token.slice(0, -4)}AAAA` });
      assert.equal(badToken.status, 401);
      await server.stop();
      stopped = true;

      const lines = server
        .logs()
        .split('\n')
        .filter((l) => l.trim() && !VALGRIND_LINE.test(l));
      const records = lines.map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          assert.fail(`log line is not JSON: ${l}`);
        }
      });
      for (const r of records) {
        assert.equal(typeof r, 'object');
        assert.match(r.time, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/);
        assert.match(r.level, /^(debug|info|warn|error)$/);
        assert.equal(typeof r.msg, 'string');
      }
      for (const [res, user] of [[traced, u.user.id], [generated, u.user.id], [badToken, undefined]]) {
        const id = res.headers.get('x-request-id');
        const mine = records.filter((r) => r.request_id === id);
        assert.equal(mine.length, 1, `log lines for request ${id}: ${JSON.stringify(mine)}`);
        const [line] = mine;
        assert.equal(line.method, 'GET');
        assert.equal(line.route, '/v1/me');
        assert.equal(line.status, res.status);
        assert.equal(typeof line.duration_ms, 'number');
        assert.ok(line.duration_ms >= 0);
        assert.equal(line.user_id, user);
      }
      const signupLine = records.find((r) => r.route === '/v1/auth/signup' && r.status === 201);
      assert.ok(signupLine, 'no log line for the signup');

      const text = server.logs();
      for (const [name, value] of [
        ['password', password],
        ['wrong password', wrongPassword],
        ['JWT secret', secret],
        ['signup token', u.token],
        ['login token', login.json.token],
        ['token signature', login.json.token.split('.')[2]],
      ]) {
        assert.ok(!text.includes(value), `the log contains the ${name}`);
      }
    } finally {
      if (!stopped) await server.stop();
    }
  });
});

test('the secret file of a server is mode 0600 and tokens survive a restart', async () => {
  const first = await startServer();
  const dir = first.dataDir;
  try {
    const st = await stat(path.join(dir, 'jwt_secret'));
    assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
    const u = await signup(first);
    await first.stop({ keepData: true });
    const second = await startServer({ dataDir: dir });
    try {
      const me = await api(second, 'GET', '/v1/me', { token: u.token });
      assert.equal(me.status, 200, me.text);
      assert.equal(me.json.id, u.user.id);
    } finally {
      await second.stop();
    }
  } finally {
    if (!process.env.KOUMPA_TEST_KEEP) await rm(dir, { recursive: true, force: true });
  }
});
