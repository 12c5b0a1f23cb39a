// bench/lambda-coldstart.mjs - the Lambda functions' cold start: from exec to the first `next` request
// (the runtime's init), and the first invocation's duration (from the event's delivery to its
// response), for the get-user function answering GET /v1/me with Cognito claims and GET /v1/plans.
//
// Each run starts a fresh process on its own fake Runtime API (tests/integration/fake-lambda-runtime.mjs)
// with the event already queued, so the first `next` gets it at once. Runs, for each that exists:
//   - build/bootstrap (make's, dynamically linked against Debian's libraries)
//   - the shipped one, build/lambda/get-user/function.zip's `bootstrap` (static but libc; `make lambda`)
//   - a minimal Node.js 20 custom runtime (bench/lambda-node-runtime.mjs, `node` with no flags): its
//     own startup, an HTTP `next`, a JSON answer. It has no database (Node 20 ships no SQLite): it only
//     parses the event and echoes the claims. So it is Node.js 20's floor, not a Koumpa in Node: AWS's
//     managed nodejs20.x runtime adds its runtime interface client and the handler module's loading.
// The SQLite data directory is migrated (and the user created) by a first, unmeasured run: on AWS the
// functions use DynamoDB, whose table exists before any function starts.
// Prints median and p90 of N runs per figure beside the goals; asserts nothing.
//
//   node bench/lambda-coldstart.mjs [N=30]      (KOUMPA_BUILD=build)
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { startFakeRuntime } from '../tests/integration/fake-lambda-runtime.mjs';
import { BUILD } from '../tests/integration/harness.mjs';
import { claimsFor, functionEnv, httpEvent } from '../tests/integration/lambda-harness.mjs';

const N = Number(process.argv[2] || 30);
const GOAL_INIT_MS = 50; // exec -> first `next`
const GOAL_FIRST_MS = 50; // the first invocation
const user = { sub: randomUUID(), email: `coldstart-${Date.now()}@example.com` };
const EVENTS = {
  'GET /v1/me': () => httpEvent('GET', '/v1/me', { claims: claimsFor(user) }),
  'GET /v1/plans': () => httpEvent('GET', '/v1/plans'),
};

/** One cold start: spawns cmd on a fresh fake runtime with the event queued; the two durations in ms. */
async function coldStart(cmd, args, env, event) {
  let firstNext = 0;
  const rt = await startFakeRuntime({
    functionName: 'koumpa-get-user',
    onNext: () => {
      firstNext ||= performance.now();
    },
  });
  const answered = rt.invoke(event);
  const t0 = performance.now();
  const child = spawn(cmd, args, { env: { ...env, AWS_LAMBDA_RUNTIME_API: rt.api }, stdio: ['ignore', 'pipe', 'pipe'] });
  const err = [];
  child.stdout.on('data', (d) => err.push(d));
  child.stderr.on('data', (d) => err.push(d));
  const exited = new Promise((resolve) => child.once('close', resolve));
  let timer;
  const res = await Promise.race([
    answered,
    rt.initError.then((e) => ({ kind: `init error ${JSON.stringify(e)}` })),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'no answer in 30 s' }), 30_000);
    }),
  ]);
  const t2 = performance.now();
  clearTimeout(timer);
  child.kill('SIGTERM');
  await exited;
  await rt.close();
  if (res.kind !== 'response' || res.json?.statusCode !== 200)
    throw new Error(`${cmd}: ${res.kind} ${res.body ?? ''}\n${Buffer.concat(err).toString('utf8')}`);
  return { init: firstNext - t0, first: t2 - firstNext };
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return `median ${quantile(s, 0.5).toFixed(1).padStart(6)} ms, p90 ${quantile(s, 0.9).toFixed(1).padStart(6)} ms`;
}

/** The static bootstrap of build/lambda/get-user/function.zip, unpacked into dir; null when not built. */
function shippedBootstrap(dir) {
  const zip = path.join('build', 'lambda', 'get-user', 'function.zip');
  if (!existsSync(zip)) return null;
  execFileSync('unzip', ['-q', '-o', zip, '-d', dir]);
  return path.join(dir, 'bootstrap');
}

async function main() {
  const work = await mkdtemp(path.join(tmpdir(), 'koumpa-coldstart-'));
  const dataDir = path.join(work, 'data');
  await mkdir(dataDir);
  const env = functionEnv('get-user', '', dataDir, { KOUMPA_LOG_LEVEL: 'info' });
  const runtimes = [['build/bootstrap (dynamic, Debian)', path.join(BUILD, 'bootstrap'), []]];
  const shipped = shippedBootstrap(work);
  if (shipped) runtimes.push(['function.zip bootstrap (static)', shipped, []]);
  else console.log('(build/lambda/get-user/function.zip not built: `make lambda` adds the shipped bootstrap)');
  runtimes.push([`node ${process.version} runtime loop`, process.execPath, [path.join('bench', 'lambda-node-runtime.mjs')]]);

  try {
    // unmeasured: migrates the SQLite database and creates the user
    await coldStart(runtimes[0][1], [], env, EVENTS['GET /v1/me']());
    console.log(`cold starts of get-user, ${N} runs each (goals: init <= ${GOAL_INIT_MS} ms, first invocation <= ${GOAL_FIRST_MS} ms;` +
      ` load average ${loadavg()[0].toFixed(1)})`);
    for (const [label, cmd, args] of runtimes) {
      for (const [name, make] of Object.entries(EVENTS)) {
        const init = [];
        const first = [];
        for (let i = 0; i < N; i++) {
          const r = await coldStart(cmd, args, env, make());
          init.push(r.init);
          first.push(r.first);
        }
        console.log(`${label.padEnd(34)} ${name.padEnd(14)} exec->next: ${summary(init)} | first invocation: ${summary(first)}`);
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
