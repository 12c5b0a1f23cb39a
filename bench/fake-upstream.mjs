// bench/fake-upstream.mjs - the fake Anthropic API (tests/integration/fake-anthropic.mjs)
// in several processes sharing one port (node:cluster), so that serving
// thousands of streams is not what limits a benchmark.
//
//   node bench/fake-upstream.mjs WORKERS   (environment: FAKE_SCENARIO, a JSON scenario;
//                                           FAKE_HTTP2=1; FAKE_CERT and FAKE_KEY: https)
// prints its base URL on stdout once every worker listens; exits when stdin closes.
import cluster from 'node:cluster';

import { startFakeAnthropic } from '../tests/integration/fake-anthropic.mjs';

if (cluster.isPrimary) {
  const workers = Math.max(1, Number(process.argv[2] || 2));
  let listening = 0;
  let port = 0;
  cluster.on('listening', (w, address) => {
    port = address.port;
    if (++listening === workers) process.stdout.write(`${process.env.FAKE_CERT ? 'https' : 'http'}://127.0.0.1:${port}\n`);
  });
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  };
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
} else {
  const tls = process.env.FAKE_CERT ? { cert: process.env.FAKE_CERT, key: process.env.FAKE_KEY } : undefined;
  await startFakeAnthropic({
    port: 0, // every worker of a cluster gets the same port
    http2: process.env.FAKE_HTTP2 === '1',
    tls,
    record: false,
    scenario: JSON.parse(process.env.FAKE_SCENARIO || '{"type":"text"}'),
  });
}
