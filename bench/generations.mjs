// bench/generations.mjs - many concurrent generations with live SSE readers.
//
// Starts the fake Anthropic server (tests/integration/fake-anthropic.mjs)
// streaming a realistic app (about 8 KB of file blocks over 20 s per
// generation), starts `koumpa serve` against it, and opens N generations at
// once (POST /v1/projects with Accept: text/event-stream), each read to its
// end. While they run it samples the server's memory and CPU and measures
// GET /v1/me with wrk; it measures /v1/me idle first for comparison.
// Prints figures; asserts nothing.
//
// A slow disk (`make bench-slow-disk`): BENCH_FSYNC_DELAY_MS > 0 runs the
// server with bench/slowfsync.c preloaded (every fsync sleeps that long first),
// and BENCH_SPREAD_MS spreads the starts so that generations end (and publish)
// while others stream. Stream latency is what the readers see: the longest
// pause between two events of a generation before its end (a loop frozen by
// another generation's publishing shows up there), and the wait from its last
// event to done (its own publishing).
//
//   node bench/generations.mjs [N=1000]     (BENCH_STREAM_MS=20000, KOUMPA_BUILD=build,
//                                            BENCH_SPREAD_MS=0, BENCH_FSYNC_DELAY_MS=0, BENCH_CHUNK_BYTES=4096,
//                                            BENCH_NO_WRK)
import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { api, signup, startServer } from '../tests/integration/harness.mjs';

const run = promisify(execFile);
const N = Number(process.argv[2] || 1000);
const STREAM_MS = Number(process.env.BENCH_STREAM_MS || 20000);
const SPREAD_MS = Number(process.env.BENCH_SPREAD_MS || 0);
const FSYNC_DELAY_MS = Number(process.env.BENCH_FSYNC_DELAY_MS || 0);
const CHUNK_BYTES = Number(process.env.BENCH_CHUNK_BYTES || 4096);

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

function serverPid() {
  return run('pgrep', ['-n', '-f', 'koumpa serve']).then((r) => Number(r.stdout.trim()));
}

function memKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

async function wrkMe(server, token, seconds) {
  const { stdout } = await run('wrk', ['-t2', '-c64', `-d${seconds}s`, '--latency', '-H', `Authorization: Bearer ${token}`, `${server.url}/v1/me`]);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)[1]);
  const p99 = /99%\s+([\d.]+\w+)/.exec(stdout)[1];
  return { rps, p99 };
}

/* One generation, read as SSE to its end; resolves with the last event name. */
const durations = [];
const maxGaps = []; // per generation: the longest pause between two events before its end, ms
const doneLags = []; // per generation: from its last event to done, ms
async function generate(server, token, i) {
  if (SPREAD_MS > 0) await new Promise((r) => setTimeout(r, (i * SPREAD_MS) / N));
  const started = Date.now();
  const res = await fetch(`${server.url}/v1/projects`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify({ prompt: `A to-do app, number ${i}` }),
  });
  if (res.status !== 200) return `http_${res.status}`;
  const arrivals = []; // [time, event name]
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of res.body) {
    const now = Date.now();
    const piece = decoder.decode(chunk, { stream: true });
    for (const m of piece.matchAll(/^event: (\w+)$/gm)) arrivals.push([now, m[1]]);
    text += piece;
  }
  durations.push((Date.now() - started) / 1000);
  if (arrivals.length >= 2) {
    let gap = 0;
    for (let k = 2; k < arrivals.length - 1; k++) gap = Math.max(gap, arrivals[k][0] - arrivals[k - 1][0]);
    maxGaps.push(gap);
    doneLags.push(arrivals.at(-1)[0] - arrivals.at(-2)[0]);
  }
  const events = [...text.matchAll(/^event: (\w+)\ndata: (.*)$/gm)];
  const last = events.at(-1);
  if (!last) return 'none';
  if (last[1] !== 'error') return last[1];
  return `error:${JSON.parse(last[2]).code}`;
}

/* p50 / p99 / max of a list of numbers. */
function quantiles(list, f = (x) => x.toFixed(0)) {
  if (list.length === 0) return 'n/a';
  const v = [...list].sort((a, b) => a - b);
  const q = (p) => f(v[Math.min(v.length - 1, Math.floor(p * v.length))]);
  return `p50 ${q(0.5)}, p99 ${q(0.99)}, max ${q(1)}`;
}

/* The slow disk: bench/slowfsync.c built into a preload library. */
function slowDiskEnv() {
  if (FSYNC_DELAY_MS <= 0) return {};
  const lib = `/tmp/koumpa-slowfsync-${process.pid}.so`;
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', lib, 'bench/slowfsync.c', '-ldl']);
  return { LD_PRELOAD: lib, SLOWFSYNC_MS: String(FSYNC_DELAY_MS) };
}

/* The fake runs in a process of its own, so that serving the streams and
 * reading the generations' SSE do not compete for one node thread. */
async function startFake() {
  const child = spawn(process.execPath, ['tests/integration/fake-anthropic.mjs', '--port', '0', '--api-key', 'sk-bench', '--exit-on-stdin-close'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [line] = await once(child.stdout, 'data');
  const url = line.toString().trim();
  // whole events per write, as the real API sends them (the tests split them at every byte instead)
  const scenario = { type: 'slow', text: appText(), durationMs: STREAM_MS, pieceChars: 24, chunkSizes: [CHUNK_BYTES] };
  const res = await fetch(`${url}/__scenario`, { method: 'POST', body: JSON.stringify(scenario) });
  if (!res.ok) throw new Error(`fake scenario: ${res.status} ${await res.text()}`);
  return { url, close: () => child.stdin.end() };
}

const fake = await startFake();
const server = await startServer({
  env: {
    ANTHROPIC_BASE_URL: fake.url,
    ANTHROPIC_API_KEY: 'sk-bench',
    KOUMPA_ADMIN_EMAILS: 'admin@bench.test',
    KOUMPA_LOG_LEVEL: 'warn',
    ...slowDiskEnv(),
  },
});
try {
  const admin = await signup(server, 'admin@bench.test');
  const user = await signup(server);
  const plan = { name: 'Bench', price_cents: 0, monthly_credits: 0, daily_bonus: N + 10, max_concurrent_generations: N };
  await api(server, 'PUT', '/v1/admin/plans/bench', { token: admin.token, body: plan });
  await api(server, 'PUT', `/v1/admin/users/${user.user.id}/plan`, { token: admin.token, body: { plan_id: 'bench' } });
  await server.run(['daily-bonus', '--date', '2099-01-01']); // sets the user's daily credits to the bench plan's bonus

  const pid = await serverPid();
  const idle = await wrkMe(server, user.token, 5);
  const rss0 = memKiB(pid);
  const cpu0 = cpuSeconds(pid);
  const t0 = Date.now();

  let peak = rss0;
  const sampler = setInterval(() => { peak = Math.max(peak, memKiB(pid)); }, 200);
  const all = Array.from({ length: N }, (_, i) => generate(server, user.token, i));
  await new Promise((r) => setTimeout(r, Math.min(5000, STREAM_MS / 4)));
  const busy = process.env.BENCH_NO_WRK ? null : await wrkMe(server, user.token, Math.max(2, Math.floor(STREAM_MS / 2000)));
  const outcomes = await Promise.all(all);
  clearInterval(sampler);
  const wall = (Date.now() - t0) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;

  const counts = outcomes.reduce((m, o) => ((m[o] = (m[o] || 0) + 1), m), {});
  const me = await api(server, 'GET', '/v1/me', { token: user.token });
  console.log(`generations: ${N} concurrent, each ~${(appText().length / 1024).toFixed(1)} KB streamed over ${STREAM_MS / 1000} s`);
  if (SPREAD_MS > 0 || FSYNC_DELAY_MS > 0) console.log(`             started over ${SPREAD_MS / 1000} s; every fsync delayed ${FSYNC_DELAY_MS} ms`);
  console.log(`outcomes:    ${JSON.stringify(counts)}  (credits left: ${me.json.credits.total})`);
  durations.sort((a, b) => a - b);
  const q = (f) => durations[Math.min(durations.length - 1, Math.floor(f * durations.length))].toFixed(1);
  console.log(`wall time:   ${wall.toFixed(1)} s; per generation (request to last event) p50 ${q(0.5)} s, p99 ${q(0.99)} s, max ${q(1)} s`);
  console.log(`stream:      longest pause between two events of a generation (ms): ${quantiles(maxGaps)}`);
  console.log(`             last event to done, its own publishing (ms): ${quantiles(doneLags)}`);
  console.log(`server RSS:  ${(rss0 / 1024).toFixed(1)} MiB idle, ${(peak / 1024).toFixed(1)} MiB peak → ${((peak - rss0) / N).toFixed(1)} KiB per in-flight generation`);
  console.log(`server CPU:  ${cpu.toFixed(1)} s over ${wall.toFixed(1)} s (${((100 * cpu) / wall).toFixed(0)} % of one core)`);
  if (busy)
    console.log(`GET /v1/me:  idle ${idle.rps.toFixed(0)} req/s (p99 ${idle.p99}); during generations ${busy.rps.toFixed(0)} req/s (p99 ${busy.p99}) → ${((100 * busy.rps) / idle.rps).toFixed(0)} % of idle`);
} finally {
  await server.stop();
  await fake.close();
}
