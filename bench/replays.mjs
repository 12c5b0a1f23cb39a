// bench/replays.mjs - many replays of one large ended version.
//
// Makes one version whose events weigh about BENCH_REPLAY_MB (default 1) MiB
// (the fake Anthropic API writes that much text), then opens N replays of it
// at once (GET /v1/projects/{id}/events, each read to its end by this
// process) while timing GET /v1/me with curl, and samples the server's RSS
// from /proc.
// Prints figures; asserts nothing.
//
//   node bench/replays.mjs [N=1000]     (KOUMPA_BUILD=build, BENCH_REPLAY_MB=1)
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { startFakeAnthropic } from '../tests/integration/fake-anthropic.mjs';
import { api, signup, startServer } from '../tests/integration/harness.mjs';

const N = Number(process.argv[2] || 1000);
const MB = Number(process.env.BENCH_REPLAY_MB || 1);
const text = `A page.\n<file path="index.html">\n<p>x</p>\n</file>\n${'Words about the page, at length.\n'.repeat((MB * 1024 * 1024) / 33)}`;
const run = promisify(execFile);
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

const fake = await startFakeAnthropic({ scenario: { type: 'text', text, pieceChars: 60000, chunkSizes: [65536] } });
const server = await startServer({ env: { ANTHROPIC_API_KEY: 'sk-bench', ANTHROPIC_BASE_URL: fake.url, KOUMPA_LOG_LEVEL: 'warn' } });
try {
  const u = await signup(server);
  const created = await api(server, 'POST', '/v1/projects', { token: u.token, body: { prompt: 'a big one' } });
  const id = created.json.id;
  for (let i = 0; i < 600; i++) {
    const p = await api(server, 'GET', `/v1/projects/${id}`, { token: u.token });
    if (p.json.status === 'ready') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const rss0 = rss(server.pid);
  let peak = rss0;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(server.pid))), 50);
  const headers = { Authorization: `Bearer ${u.token}`, Accept: 'text/event-stream' };
  const t0 = Date.now();
  const statuses = {};
  const lens = [];
  const replays = Array.from({ length: N }, async () => {
    try {
      const res = await fetch(`${server.url}/v1/projects/${id}/events`, { headers });
      statuses[res.status] = (statuses[res.status] || 0) + 1;
      const n = (await res.arrayBuffer()).byteLength;
      lens.push(n);
    } catch (e) {
      statuses[e.cause?.code || e.message] = (statuses[e.cause?.code || e.message] || 0) + 1;
    }
  });
  const me = [];
  let running = true;
  const all = Promise.all(replays).then(() => (running = false));
  while (running) {
    // timed by curl in its own process: this one is busy reading the replays
    const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{time_total}', '-H', `Authorization: Bearer ${u.token}`, `${server.url}/v1/me`]);
    me.push(Math.round(Number(stdout) * 1000));
    await new Promise((r) => setTimeout(r, 100));
  }
  await all;
  clearInterval(sampler);
  me.sort((a, b) => a - b);
  const whole = lens.filter((n) => n === Math.max(...lens)).length;
  console.log(`replays:    ${N} of one version (${(Math.max(...lens) / 1048576).toFixed(2)} MiB), ${whole} read whole, in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${JSON.stringify(statuses)}`);
  console.log(`server RSS: ${rss0.toFixed(0)} MiB before, ${peak.toFixed(0)} MiB peak`);
  console.log(`GET /v1/me meanwhile: ${me.length} calls, median ${me[me.length >> 1]} ms, max ${me.at(-1)} ms`);
} finally {
  await server.stop();
  await fake.close();
}
