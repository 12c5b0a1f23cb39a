// fake-common.mjs - what the fake LLM servers (fake-anthropic.mjs,
// fake-openai.mjs) share: an HTTP server (node:http only) that records every
// API request, picks a scenario per request, writes streamed answers cut into
// chunks of arbitrary byte sizes (so SSE lines and UTF-8 characters are split
// across chunks), and exposes control endpoints for tests in other processes.
//
// Scenarios, chosen per API request in this order:
//   - the request header x-fake-scenario: a JSON scenario, or just its type;
//   - a function given to setScenario(fn): fn(recordedRequest) -> scenario;
//   - the queue given to setScenario(s): an object is used for every request,
//     an array [a, b, c] gives a, then b, then c for every request after;
//   - the fake's default scenario.
// One scenario type works the same in every fake: {type: 'reset'} resets the
// connection (TCP RST) as soon as the request has arrived, before any answer.
//
// Control endpoints (not recorded; also under the base URL's path, e.g. /v1/__requests):
//   POST /__scenario   body: a scenario object or an array (as setScenario)
//   GET  /__requests   the recorded requests: [{method, path, headers, body, rawBody, scenario, httpVersion}]
//   POST /__reset      forget the requests, back to the default scenario
//   GET  /__health     "ok"
//   GET  /__connections {total, open}: TCP connections accepted since start, and open now
//
// HTTP/2: startFake({http2: true}) serves HTTP/2 without TLS and without
// upgrade (h2c with prior knowledge, node:http2's createServer) through the
// same request/response API, so a client that multiplexes shows up as fewer
// connections than requests (/__connections). With tls: {cert, key} (PEM
// file paths, e.g. from selfSigned()) it serves https: HTTP/2 to clients that
// offer h2 in TLS's ALPN, HTTP/1.1 to the others, as api.anthropic.com does.
//
// CLI (see cliMain): --port N (0: any), --host H, --api-key K (require this
// key), --http2, --cert FILE --key FILE (https), --exit-on-stdin-close; prints the
// base URL on stdout, one line.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';

export const DEFAULT_CHUNK_SIZES = [5, 1, 17, 3, 64, 2, 31, 7];

/** A self-signed certificate for 127.0.0.1 (its own CA), made with openssl in dir: { cert, key } file paths. */
export function selfSigned(dir, name) {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', `/CN=koumpa test ${name}`, '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function randomId(prefix, n = 12) {
  return prefix + randomBytes(n).toString('hex');
}

/** Code points, so that "chars" never cut a character in two. */
export function chars(text) {
  return Array.from(text);
}

/** Splits text into pieces of 1..maxChars code points (pseudo-random, reproducible). */
export function pieces(text, maxChars = 6) {
  const cps = chars(text);
  const out = [];
  let seed = 7;
  for (let i = 0; i < cps.length; ) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (seed % Math.max(1, maxChars));
    out.push(cps.slice(i, i + n).join(''));
    i += n;
  }
  return out;
}

/** A text of about `bytes` UTF-8 bytes, with multi-byte characters. */
export function filler(bytes) {
  const unit = 'The quick brown fox jumps over the lazy dog; déjà vu, 日本語, 😀.\n';
  let s = '';
  while (Buffer.byteLength(s) + Buffer.byteLength(unit) <= bytes) s += unit;
  for (const c of unit) {
    if (Buffer.byteLength(s + c) > bytes) break;
    s += c;
  }
  return s;
}

/** Byte chunks of buf, sizes taken in turn from sizes. */
export function chunk(buf, sizes = DEFAULT_CHUNK_SIZES) {
  const out = [];
  let i = 0;
  for (let k = 0; i < buf.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length] || buf.length);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

/**
 * Writes frames (strings or Buffers) as one byte stream cut by chunkSizes,
 * pausing delayMs between chunks (or durationMs spread over all of them).
 * cut: destroy the socket instead of ending the response, after half of the
 * last frame. gate: a promise awaited before the last chunk (the stream holds
 * its end until the test opens the gate). Stops quietly if the client went away.
 */
export async function writeStream(res, frames, { chunkSizes, delayMs = 0, durationMs, cut = false, gate } = {}) {
  const bufs = frames.map((f) => (Buffer.isBuffer(f) ? f : Buffer.from(f, 'utf8')));
  if (cut && bufs.length > 0) {
    const last = bufs.pop();
    bufs.push(last.subarray(0, Math.max(1, Math.floor(last.length / 2))));
  }
  const chunks = chunk(Buffer.concat(bufs), chunkSizes || DEFAULT_CHUNK_SIZES);
  const pause = durationMs !== undefined ? durationMs / Math.max(1, chunks.length) : delayMs;
  const started = Date.now();
  for (const [i, c] of chunks.entries()) {
    if (gate && i === chunks.length - 1) await gate;
    if (res.destroyed || res.stream?.destroyed || res.socket?.destroyed) return;
    res.write(c);
    // with durationMs, chunk i+1 is due at its own time from the start: a busy
    // process sends late, but its lateness does not add up over the stream
    const wait = durationMs !== undefined ? started + (i + 1) * pause - Date.now() : pause;
    if (wait > 0) await sleep(wait);
    else await new Promise((resolve) => setImmediate(resolve));
  }
  if (cut) {
    await sleep(20); // let the bytes go out before the connection dies
    res.socket?.destroy();
  } else {
    res.end();
  }
}

export function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

async function readBody(req) {
  const parts = [];
  for await (const p of req) parts.push(p);
  return Buffer.concat(parts).toString('utf8');
}

function scenarioFromHeader(value) {
  if (!value) return undefined;
  try {
    const v = JSON.parse(value);
    return typeof v === 'string' ? { type: v } : v;
  } catch {
    return { type: value };
  }
}

/** The server: h2c with http2 alone, https (h2 by ALPN, else HTTP/1.1) with tls, else HTTP/1.1. */
function createServer(handler, useHttp2, tls) {
  const settings = { maxConcurrentStreams: 1000 };
  if (tls) {
    const creds = { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
    return useHttp2 ? http2.createSecureServer({ ...creds, allowHTTP1: true, settings }, handler) : https.createServer(creds, handler);
  }
  return useHttp2 ? http2.createServer({ settings }, handler) : http.createServer(handler);
}

/**
 * Starts a fake: api(req, res, rec, scenario, ctx) answers the API requests
 * (rec is the recorded request: {method, path, headers, body, rawBody}; once
 * its answer is over, closedByClient says whether the client left before its end).
 * http2: serve HTTP/2, tls: https (above); record: false keeps no requests (benchmarks).
 * Returns {url, requests, connections, setScenario(s), reset(), openGate(name), close()}:
 * a scenario with gate: NAME holds the end of its stream until openGate(NAME).
 */
export async function startFake({ api, defaultScenario, host = '127.0.0.1', port = 0, urlPath = '', apiKey, http2: useHttp2 = false, tls, record = true } = {}) {
  const requests = [];
  const connections = { total: 0, open: 0 };
  let queue = [];
  let pick = null;
  const sockets = new Set();
  const gates = new Map(); // name -> {promise, open}
  const gate = (name) => {
    if (!gates.has(name)) {
      let open;
      const promise = new Promise((resolve) => (open = resolve));
      gates.set(name, { promise, open });
    }
    return gates.get(name);
  };

  function setScenario(s) {
    pick = typeof s === 'function' ? s : null;
    queue = pick ? [] : Array.isArray(s) ? [...s] : s ? [s] : [];
  }

  function nextScenario(rec) {
    const fromHeader = scenarioFromHeader(rec.headers['x-fake-scenario']);
    if (fromHeader) return fromHeader;
    if (pick) return pick(rec) || defaultScenario;
    if (queue.length > 1) return queue.shift();
    return queue[0] || defaultScenario;
  }

  async function control(req, res, path) {
    if (path === '/__health') return res.end('ok');
    if (path === '/__requests') return sendJson(res, 200, requests);
    if (path === '/__connections') return sendJson(res, 200, connections);
    if (path === '/__reset' && req.method === 'POST') {
      requests.length = 0;
      setScenario(null);
      return res.writeHead(204).end();
    }
    if (path === '/__scenario' && req.method === 'POST') {
      try {
        setScenario(JSON.parse(await readBody(req)));
      } catch (e) {
        return sendJson(res, 400, { error: `bad scenario: ${e.message}` });
      }
      return res.writeHead(204).end();
    }
    return sendJson(res, 404, { error: 'unknown control endpoint' });
  }

  const handler = async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path.startsWith('/__')) return control(req, res, path);
    if (urlPath && path.startsWith(`${urlPath}/__`)) return control(req, res, path.slice(urlPath.length));
    let rawBody;
    try {
      rawBody = await readBody(req);
    } catch {
      return; // the client left before the whole request arrived
    }
    let body = null;
    try {
      body = JSON.parse(rawBody);
    } catch {
      body = null;
    }
    const rec = { method: req.method, path, headers: { ...req.headers }, body, rawBody, time: Date.now(), httpVersion: req.httpVersion };
    const scenario = nextScenario(rec);
    rec.scenario = scenario;
    if (record) requests.push(rec);
    // the client went away before the answer ended (e.g. it cancelled the call)
    res.on('close', () => (rec.closedByClient = !res.writableEnded));
    if (scenario.type === 'reset') return useHttp2 ? req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR) : req.socket.resetAndDestroy();
    try {
      await api(req, res, rec, scenario, { apiKey, gate: (name) => gate(name).promise });
    } catch (e) {
      if (!res.headersSent) sendJson(res, 500, { error: `fake server bug: ${e.message}` });
      else res.socket?.destroy();
    }
  };
  const server = createServer(handler, useHttp2, tls);
  server.on('connection', (s) => {
    sockets.add(s);
    connections.total++;
    connections.open++;
    s.on('close', () => {
      sockets.delete(s);
      connections.open--;
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  const url = `${tls ? 'https' : 'http'}://${host}:${addr.port}${urlPath}`;
  return {
    url,
    port: addr.port,
    requests,
    connections,
    setScenario,
    openGate(name) {
      gate(name).open();
    },
    reset() {
      requests.length = 0;
      setScenario(null);
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Runs a fake from the command line when moduleUrl is the main module. */
export async function cliMain(moduleUrl, start) {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
  };
  const fake = await start({
    port: Number(opt('--port', '0')),
    host: opt('--host', '127.0.0.1'),
    apiKey: opt('--api-key', undefined),
    http2: args.includes('--http2'),
    tls: opt('--cert') ? { cert: opt('--cert'), key: opt('--key') } : undefined,
  });
  process.stdout.write(`${fake.url}\n`);
  const stop = async () => {
    await fake.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (args.includes('--exit-on-stdin-close')) {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }
}
