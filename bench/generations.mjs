// bench/generations.mjs - many concurrent generations with live SSE readers.
//
// Starts the fake Anthropic API (bench/fake-upstream.mjs: several processes on
// one port) streaming a realistic app (about 8 KB of file blocks over 20 s per
// generation), starts `koumpa serve` against it, and opens N generations at
// once (POST /v1/projects with Accept: text/event-stream, over as many users
// as a plan's 1,000 concurrent generations need), each read to its end by
// the readers (BENCH_READERS_IMPL: c, the default, is bench/sse_readers.c, one
// process on libevent's HTTP client; node is bench/sse-readers.mjs, which took
// 12 s of CPU at 8,000), so that neither side of the harness is what limits
// the server. While they run it samples the server's
// memory, descriptors and CPU and measures GET /v1/me with wrk; it measures
// /v1/me idle first for comparison. Prints each figure beside its goal and
// the failures by cause; asserts nothing.
//
// Upstream (BENCH_UPSTREAM): c (default) is the C fake (bench/fake_upstream.c:
// one process on libevent, plain HTTP/1.1, one connection per generation),
// cheap enough that 8,000 streams leave the two cores to the server; h2 is
// the Node.js fake over https with HTTP/2 (a self-signed certificate given to
// the server as KOUMPA_CA_BUNDLE): the server multiplexes its calls on a few
// connections, as with Anthropic's API; h1 is the Node.js fake over plain
// HTTP/1.1 (OpenAI-compatible servers). The Node.js fake takes a core of its
// own at 8,000 streams.
//
// A slow disk (`make bench-slow-disk`): BENCH_FSYNC_DELAY_MS > 0 runs the
// server with bench/slowfsync.c preloaded (every fsync sleeps that long first),
// and BENCH_SPREAD_MS spreads the starts so that generations end (and publish)
// while others stream. Stream latency is what the readers see: the longest
// pause between two chunks of a generation before its end (a loop frozen by
// another generation's publishing shows up there), and the wait before its
// last chunk (done: its own publishing).
//
// Runs back to back: a run ends by removing its data directory (N apps' files).
// On ext4 without a journal (this machine's disk), making a file skips the
// inodes freed in the last 60 s (300 s while their inode table block is not yet
// written back), reading each one's block to find out: a run that starts within
// that time after another publishes slower (the storage threads' CPU at 8,000:
// about 9 s instead of 7, p99 a second later). So the harness notes the end of
// each run (a file in the temporary directory) and says when the run before
// ended less than 5 minutes ago.
//
// Descriptors: the soft limit of this process, its children and the server is
// raised to the hard limit (prlimit); 8,000 generations over HTTP/1.1 need
// 16,000 in the server.
//
//   node bench/generations.mjs [N=GENERATIONS or 1000]
//        (BENCH_STREAM_MS=20000, BENCH_UPSTREAM=c, BENCH_FAKES=2 (Node.js fakes), BENCH_READERS_IMPL=c,
//         BENCH_READERS=1 (C) or 2 (Node.js), KOUMPA_BUILD=build,
//         BENCH_SPREAD_MS=0, BENCH_FSYNC_DELAY_MS=0, BENCH_CHUNK_BYTES=4096, BENCH_NO_WRK,
//         BENCH_RESULTS=FILE: every generation's record, as JSON; BENCH_LOG_LEVEL=warn and
//         BENCH_LOG_FILE: the server's log, BENCH_SERVER_ENV="NAME=VALUE ...": the server's settings)
import { execFile, execFileSync, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { selfSigned } from '../tests/integration/fake-common.mjs';
import { api, signup, startServer } from '../tests/integration/harness.mjs';

const run = promisify(execFile);
const N = Number(process.argv[2] || process.env.GENERATIONS || 1000);
const STREAM_MS = Number(process.env.BENCH_STREAM_MS || 20000);
const SPREAD_MS = Number(process.env.BENCH_SPREAD_MS || 0);
const FSYNC_DELAY_MS = Number(process.env.BENCH_FSYNC_DELAY_MS || 0);
const CHUNK_BYTES = Number(process.env.BENCH_CHUNK_BYTES || 4096);
const UPSTREAM = process.env.BENCH_UPSTREAM || 'c';
const FAKES = Number(process.env.BENCH_FAKES || 2);
const READERS_IMPL = process.env.BENCH_READERS_IMPL || 'c';
const READERS = Number(process.env.BENCH_READERS || (READERS_IMPL === 'c' ? 1 : 2));
const PLAN_MAX = 1000; // a plan's max_concurrent_generations (src/domain/plans.c)
if (!['c', 'h1', 'h2'].includes(UPSTREAM)) throw new Error(`BENCH_UPSTREAM=${UPSTREAM}: c, h1 or h2`);
if (!['c', 'node'].includes(READERS_IMPL)) throw new Error(`BENCH_READERS_IMPL=${READERS_IMPL}: c or node`);

/* A realistic small app: three files, about 8 KB. */
function appText() {
  const rows = Array.from({ length: 95 }, (_, i) => `      <li class="item" data-i="${i}">Task ${i}: water the plants</li>`).join('\n');
  const css = Array.from({ length: 40 }, (_, i) => `.c${i} { margin: ${i}px; color: #${(i * 4111).toString(16).padStart(6, '0').slice(0, 6)}; }`).join('\n');
  return `Here is a small to-do app.

<file path="index.html">
<!doctype html>
<html lang="en">
  <head><meta charset="utf-8"><title>To-do</title><link rel="stylesheet" href="style.css"></head>
  <body>
    <h1>To-do</h1>
    <ul id="list">
${rows}
    </ul>
    <script src="app.js"></script>
  </body>
</html>
</file>

<file path="style.css">
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
${css}
</file>

<file path="app.js">
document.querySelectorAll('.item').forEach((li) => li.addEventListener('click', () => li.classList.toggle('done')));
</file>
`;
}

function load1() {
  return readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
}

/** Raises pid's soft descriptor limit to its hard limit; returns the new limit. */
function raiseNofile(pid) {
  const hard = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--noheadings', '--output=HARD']).toString().trim();
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${hard}:${hard}`]);
  return Number(hard);
}

function memKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The fake upstream's CPU seconds (the C fake's process; the Node.js fake's parent only: null). */
function fakeCpuSeconds(fake) {
  return UPSTREAM === 'c' ? cpuSeconds(fake.pid) : null;
}

function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

/** CPU seconds by thread name (kp-loop, kp-storage, ...: threads of one name summed). */
function cpuByThread(pid) {
  const out = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      out[name] = (out[name] || 0) + (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

async function wrkMe(server, token, seconds) {
  const { stdout } = await run('wrk', ['-t2', '-c64', `-d${seconds}s`, '--latency', '-H', `Authorization: Bearer ${token}`, `${server.url}/v1/me`]);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)[1]);
  const p99 = /99%\s+([\d.]+\w+)/.exec(stdout)[1];
  return { rps, p99 };
}

/** The value at quantile p of a sorted list. */
function at(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/* p50 / p99 / max of a list of numbers. */
function quantiles(list, f = (x) => x.toFixed(0)) {
  if (list.length === 0) return 'n/a';
  const v = [...list].sort((a, b) => a - b);
  return `p50 ${f(at(v, 0.5))}, p99 ${f(at(v, 0.99))}, max ${f(at(v, 1))}`;
}

/* The slow disk: bench/slowfsync.c built into a preload library. */
/** BENCH_SERVER_ENV="KOUMPA_STORAGE_THREADS=4 ...": settings for the server under test (the harness drops
 * the caller's KOUMPA_ variables). */
function serverEnv() {
  const env = {};
  for (const pair of (process.env.BENCH_SERVER_ENV || '').split(/\s+/).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`BENCH_SERVER_ENV: ${pair} is not NAME=VALUE`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

function slowDiskEnv() {
  if (FSYNC_DELAY_MS <= 0) return {};
  const lib = `/tmp/koumpa-slowfsync-${process.pid}.so`;
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', lib, 'bench/slowfsync.c', '-ldl']);
  return { LD_PRELOAD: lib, SLOWFSYNC_MS: String(FSYNC_DELAY_MS) };
}

/* The C fake (bench/fake_upstream.c): one process, HTTP/1.1. */
async function startCFake(certDir) {
  const textFile = path.join(certDir, 'app.txt');
  writeFileSync(textFile, appText());
  const bin = path.join(process.env.KOUMPA_BUILD || 'build', 'bench', 'fake-upstream');
  const env = { ...process.env, FAKE_TEXT_FILE: textFile, FAKE_DURATION_MS: String(STREAM_MS), FAKE_CHUNK_BYTES: String(CHUNK_BYTES), FAKE_PIECE_CHARS: '24' };
  const child = spawn(bin, [], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = await once(child.stdout, 'data');
  return { url: line.toString().trim(), pid: child.pid, close: () => child.stdin.end() };
}

/* The fake API in FAKES processes (bench/fake-upstream.mjs); over https with HTTP/2 for h2. */
async function startFake(certDir) {
  if (UPSTREAM === 'c') return startCFake(certDir);
  // whole events per write, as the real API sends them (the tests split them at every byte instead)
  const scenario = { type: 'slow', text: appText(), durationMs: STREAM_MS, pieceChars: 24, chunkSizes: [CHUNK_BYTES] };
  const tls = UPSTREAM === 'h2' ? selfSigned(certDir, 'fake-upstream') : null;
  const env = { ...process.env, FAKE_SCENARIO: JSON.stringify(scenario), FAKE_HTTP2: UPSTREAM === 'h2' ? '1' : '0' };
  if (tls) Object.assign(env, { FAKE_CERT: tls.cert, FAKE_KEY: tls.key });
  const child = spawn(process.execPath, ['bench/fake-upstream.mjs', String(FAKES)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  raiseNofile(child.pid); // its workers inherit it
  const [line] = await once(child.stdout, 'data');
  return { url: line.toString().trim(), caBundle: tls?.cert, pid: child.pid, close: () => child.stdin.end() };
}

/** USERS users on a plan allowing their share of the N generations at once, with the credits for them. */
async function benchUsers(server) {
  const users = Math.ceil(N / PLAN_MAX);
  const share = Math.ceil(N / users);
  const admin = await signup(server, 'admin@bench.test');
  await server.run(['admin', 'grant', 'admin@bench.test']);
  const plan = { name: 'Bench', price_cents: 0, monthly_credits: 0, daily_bonus: share + 10, max_concurrent_generations: share };
  await api(server, 'PUT', '/v1/admin/plans/bench', { token: admin.token, body: plan });
  const tokens = [];
  for (let u = 0; u < users; u++) {
    const user = await signup(server);
    await api(server, 'PUT', `/v1/admin/users/${user.user.id}/plan`, { token: admin.token, body: { plan_id: 'bench' } });
    tokens.push(user.token);
  }
  await server.run(['daily-bonus', '--date', '2099-01-01']); // sets the users' daily credits to the bench plan's bonus
  return { tokens, share };
}

/** One process of the C readers (bench/sse_readers.c): the work as JSON on its stdin, {results, cpuSeconds} on its stdout. */
async function readersInC(work) {
  const bin = path.join(process.env.KOUMPA_BUILD || 'build', 'bench', 'sse-readers');
  const child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out = [];
  child.stdout.on('data', (d) => out.push(d));
  child.stdin.end(JSON.stringify(work));
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`${bin} exited with ${code}`);
  return JSON.parse(Buffer.concat(out).toString());
}

/** Runs the N generations in READERS processes; resolves with one record per generation and each
 * reader process's CPU seconds. */
async function runReaders(server, tokens, share) {
  const startAt = Date.now() + 1000;
  const parts = Array.from({ length: READERS }, () => []);
  for (let i = 0; i < N; i++) parts[i % READERS].push({ token: tokens[Math.floor(i / share)], i });
  const replies = await Promise.all(
    parts.map(async (jobs) => {
      const work = { url: server.url, jobs, spreadMs: SPREAD_MS, total: N, startAt };
      if (READERS_IMPL === 'c') return readersInC(work);
      const child = fork('bench/sse-readers.mjs', [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      raiseNofile(child.pid);
      child.send(work);
      const [msg] = await once(child, 'message');
      return msg;
    }),
  );
  return { results: replies.flatMap((m) => m.results), readersCpu: replies.map((m) => m.cpuSeconds) };
}

function goal(ok) {
  return ok ? 'met' : 'NOT met';
}

function report({ results, wall, cpu, cpuThreads, rss0, peak, fd0, fdPeak, idle, busy, credits, load, rssEvery5s, harness }) {
  const counts = results.reduce((m, r) => ((m[r.outcome] = (m[r.outcome] || 0) + 1), m), {});
  const failed = N - (counts.done || 0);
  const seconds = results.filter((r) => r.outcome === 'done').map((r) => r.seconds).sort((a, b) => a - b);
  const p99 = seconds.length ? at(seconds, 0.99) : Infinity;
  const perGen = (peak - rss0) / N;
  const limitP99 = (1.25 * STREAM_MS) / 1000;
  console.log(`generations: ${N} concurrent over ${Math.ceil(N / PLAN_MAX)} users, each ~${(appText().length / 1024).toFixed(1)} KB streamed over ${STREAM_MS / 1000} s; ` +
    `upstream ${UPSTREAM === 'h2' ? 'HTTP/2 over TLS' : 'HTTP/1.1'} (${UPSTREAM === 'c' ? 'the C fake' : `${FAKES} Node.js fake processes`}), ` +
    `${READERS} reader process${READERS === 1 ? '' : 'es'} (${READERS_IMPL === 'c' ? 'C' : 'Node.js'})`);
  if (SPREAD_MS > 0 || FSYNC_DELAY_MS > 0) console.log(`             started over ${SPREAD_MS / 1000} s; every fsync delayed ${FSYNC_DELAY_MS} ms`);
  console.log(`load:        1-minute load average ${load.start} at the start, ${load.end} at the end (2 cores, shared)`);
  console.log(`failed:      ${failed} of ${N} (goal 0: ${goal(failed === 0)})  (credits left: ${credits})`);
  console.log(`by cause:    ${JSON.stringify(counts)}`);
  console.log(`end to end:  request to last event p50 ${at(seconds, 0.5)?.toFixed(1)} s, p99 ${p99.toFixed(1)} s, max ${seconds.at(-1)?.toFixed(1)} s ` +
    `(goal p99 < 1.25 x ${STREAM_MS / 1000} s = ${limitP99} s: ${goal(p99 < limitP99)}); wall ${wall.toFixed(1)} s`);
  console.log(`stream:      longest pause between two chunks of a generation (ms): ${quantiles(results.filter((r) => r.maxGapMs !== undefined).map((r) => r.maxGapMs))}`);
  console.log(`             before done, its own publishing (ms): ${quantiles(results.filter((r) => r.doneLagMs !== undefined).map((r) => r.doneLagMs))}`);
  const seen = (k) => quantiles(results.filter((r) => r[k] !== undefined).map((r) => r[k]));
  console.log(`timeline:    ms after its request: answer ${seen('headersMs')}; first text ${seen('secondMs')}; longest pause began ${seen('gapAtMs')}`);
  console.log(`server RSS:  ${(rss0 / 1024).toFixed(1)} MiB idle, ${(peak / 1024).toFixed(1)} MiB peak -> ${perGen.toFixed(1)} KiB per in-flight generation (goal < 50 KiB: ${goal(perGen < 50)})`);
  console.log(`             RSS every 5 s (MiB): ${rssEvery5s.join(' ')}`);
  console.log(`server fds:  ${fd0} idle, ${fdPeak} peak (${((fdPeak - fd0) / N).toFixed(2)} per generation: its reader${UPSTREAM === 'h2' ? ', upstream multiplexed' : ' and its upstream connection'})`);
  console.log(`server CPU:  ${cpu.toFixed(1)} s over ${wall.toFixed(1)} s (${((100 * cpu) / wall).toFixed(0)} % of one core)`);
  const threads = Object.entries(cpuThreads).filter(([, s]) => s >= 0.1).sort((a, b) => b[1] - a[1]);
  console.log(`             by thread (s): ${threads.map(([name, s]) => `${name} ${s.toFixed(1)}`).join(', ')}`);
  // the harness shares the two cores: what it took is what the server could not have
  const readers = harness.readers.reduce((a, b) => a + b, 0);
  console.log(`harness CPU: fake upstream ${harness.fake === null ? 'n/a' : `${harness.fake.toFixed(1)} s`}, ` +
    `SSE readers ${readers.toFixed(1)} s (${harness.readers.map((s) => s.toFixed(1)).join(' + ')}) over ${wall.toFixed(1)} s`);
  if (busy) {
    const share = (100 * busy.rps) / idle.rps;
    console.log(`GET /v1/me:  idle ${idle.rps.toFixed(0)} req/s (p99 ${idle.p99}); during generations ${busy.rps.toFixed(0)} req/s (p99 ${busy.p99}) -> ` +
      `${share.toFixed(0)} % of idle (goal >= 50 %: ${goal(share >= 50)})`);
  }
}

/* When the run before removed its data directory (see "Runs back to back" above). */
const RUN_END_MARK = path.join(tmpdir(), 'koumpa-bench-generations.end');
const RECENT_S = 300;

function noteRecentRun() {
  let age;
  try {
    age = (Date.now() - statSync(RUN_END_MARK).mtimeMs) / 1000;
  } catch {
    return;
  }
  if (age >= 0 && age < RECENT_S)
    console.log(`pause:       the run before ended ${age.toFixed(0)} s ago (under ${RECENT_S} s): files are slower to make ` +
      'right after others were removed (ext4 without a journal), so publishing may measure slower');
}

noteRecentRun();
const nofile = raiseNofile(process.pid);
const certDir = mkdtempSync(path.join(tmpdir(), 'koumpa-bench-'));
const fake = await startFake(certDir);
const server = await startServer({
  logFile: process.env.BENCH_LOG_FILE,
  env: {
    ANTHROPIC_BASE_URL: fake.url,
    ANTHROPIC_API_KEY: 'sk-bench',
    KOUMPA_LOG_LEVEL: process.env.BENCH_LOG_LEVEL || 'warn',
    ...(fake.caBundle ? { KOUMPA_CA_BUNDLE: fake.caBundle } : {}),
    ...slowDiskEnv(),
    ...serverEnv(),
  },
});
try {
  const pid = server.pid;
  console.log(`descriptors: limit ${nofile} (harness), ${raiseNofile(pid)} (server)`);
  const { tokens, share } = await benchUsers(server);
  const idle = await wrkMe(server, tokens[0], 5);
  const rss0 = memKiB(pid);
  const fd0 = fdCount(pid);
  const cpu0 = cpuSeconds(pid);
  const cpuThreads0 = cpuByThread(pid);
  const load = { start: load1() };
  const t0 = Date.now();

  let peak = rss0;
  let fdPeak = fd0;
  const rssEvery5s = []; // the RSS over the run, to tell the streams' memory from the publishing burst's
  let samples = 0;
  const sampler = setInterval(() => {
    const rss = memKiB(pid);
    peak = Math.max(peak, rss);
    fdPeak = Math.max(fdPeak, fdCount(pid));
    if (samples++ % 25 === 0) rssEvery5s.push(Math.round(rss / 1024));
  }, 200);
  const fakeCpu0 = fakeCpuSeconds(fake);
  const all = runReaders(server, tokens, share);
  await new Promise((r) => setTimeout(r, Math.min(6000, 1000 + STREAM_MS / 4)));
  const busy = process.env.BENCH_NO_WRK ? null : await wrkMe(server, tokens[0], Math.max(2, Math.floor(STREAM_MS / 2000)));
  const { results, readersCpu } = await all;
  const fakeCpu = fakeCpuSeconds(fake);
  if (process.env.BENCH_RESULTS) writeFileSync(process.env.BENCH_RESULTS, JSON.stringify(results));
  clearInterval(sampler);
  load.end = load1();
  const wall = (Date.now() - t0) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  const cpuThreads = cpuByThread(pid);
  for (const [name, s] of Object.entries(cpuThreads0)) cpuThreads[name] = (cpuThreads[name] || 0) - s;
  let credits = 0;
  for (const token of tokens) credits += (await api(server, 'GET', '/v1/me', { token })).json.credits.total;
  const harness = { fake: fakeCpu === null ? null : fakeCpu - fakeCpu0, readers: readersCpu };
  report({ results, wall, cpu, cpuThreads, rss0, peak, fd0, fdPeak, idle, busy, credits, load, rssEvery5s, harness });
} finally {
  await server.stop();
  fake.close();
  rmSync(certDir, { recursive: true, force: true });
  writeFileSync(RUN_END_MARK, `${N}\n`);
}
