// bench/sse-readers.mjs - a worker process of bench/generations.mjs: opens its
// share of the generations (POST /v1/projects, Accept: text/event-stream) over
// plain node:http and reads each event stream to its end, then sends back one
// record per generation: {outcome, seconds, maxGapMs, gapAtMs, doneLagMs,
// headersMs, secondMs}.
//
// outcome: done; error:CODE (the stream's error event); http_STATUS:CODE (an
// answer other than 200); network:CODE (the connection failed: ECONNRESET,
// ECONNREFUSED, EMFILE...); no_done (the stream ended without done or error).
//
// Message in: {url, jobs: [{token, i}], spreadMs, total, startAt}; out: {results, cpuSeconds}.
import http from 'node:http';

const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/** The name and data of the last event in text. */
function lastEvent(text) {
  const i = text.lastIndexOf('\nevent: ', text.length - 2);
  const m = /event: (\w+)\ndata: (.*)/.exec(text.slice(i >= 0 ? i + 1 : 0));
  return m ? { name: m[1], data: m[2] } : null;
}

function outcomeOf(last) {
  if (!last) return 'no_done';
  if (last.name === 'done') return 'done';
  if (last.name !== 'error') return 'no_done';
  try {
    return `error:${JSON.parse(last.data).code}`;
  } catch {
    return 'error:unparsed';
  }
}

/** One generation read to its end. */
function generate(url, token, i) {
  return new Promise((resolve) => {
    const started = Date.now();
    const body = JSON.stringify({ prompt: `A to-do app, number ${i}` });
    const req = http.request(`${url}/v1/projects`, {
      method: 'POST',
      agent,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream', 'content-length': Buffer.byteLength(body) },
    });
    const done = (outcome, extra = {}) => resolve({ outcome, seconds: (Date.now() - started) / 1000, ...extra });
    req.on('error', (e) => done(`network:${e.code || e.message}`));
    req.on('response', (res) => {
      let tail = ''; // the last events only: enough for the outcome
      let errBody = '';
      let prev = 0;
      let maxGap = 0; // the longest pause between two chunks...
      let maxGapBefore = 0; // ...before the last one
      let lastGap = 0; // the pause before the last chunk (done: its own publishing)
      let gapAt = 0; // when the longest pause began (ms after the request)
      let gapAtBefore = 0;
      let chunks = 0;
      let secondAt = 0; // when the chunk after the first came (ms after the request): the provider's first text
      const headersAt = Date.now() - started;
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        if (res.statusCode !== 200) {
          errBody += chunk;
          return;
        }
        const now = Date.now();
        if (++chunks === 2) secondAt = now - started;
        if (prev) {
          lastGap = now - prev;
          maxGapBefore = maxGap;
          gapAtBefore = gapAt;
          if (lastGap > maxGap) {
            maxGap = lastGap;
            gapAt = prev - started;
          }
        }
        prev = now;
        tail = (tail + chunk).slice(-4096);
      });
      res.on('error', (e) => done(`network:${e.code || e.message}`));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          let code = '';
          try {
            code = JSON.parse(errBody).error.code;
          } catch {
            code = 'unparsed';
          }
          return done(`http_${res.statusCode}:${code}`);
        }
        done(outcomeOf(lastEvent(tail)), { maxGapMs: maxGapBefore, gapAtMs: gapAtBefore, doneLagMs: lastGap, headersMs: headersAt, secondMs: secondAt });
      });
    });
    req.end(body);
  });
}

process.on('message', async ({ url, jobs, spreadMs, total, startAt }) => {
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
  const results = await Promise.all(
    jobs.map(async ({ token, i }) => {
      if (spreadMs > 0) await new Promise((r) => setTimeout(r, (i * spreadMs) / total));
      return generate(url, token, i);
    }),
  );
  const { user, system } = process.cpuUsage(); // this process's CPU since it started (µs)
  process.send({ results, cpuSeconds: (user + system) / 1e6 }, () => process.exit(0));
});
