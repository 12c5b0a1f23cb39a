// fake-lambda-runtime.mjs - a fake of the AWS Lambda Runtime API, the HTTP endpoint a custom runtime's
// bootstrap talks to (AWS_LAMBDA_RUNTIME_API). No emulator is packaged without Docker, so this follows
// the documented wire format: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
//
//   GET  /2018-06-01/runtime/invocation/next          long-polls until an invocation is queued; 200 with the
//        event as body and Lambda-Runtime-Aws-Request-Id, -Deadline-Ms, -Invoked-Function-Arn, -Trace-Id
//   POST /2018-06-01/runtime/invocation/{id}/response  202; 413 RequestEntityTooLarge over 6 MB (the
//        invocation stays open: the runtime may still report an error); 400 for an unknown id
//   POST /2018-06-01/runtime/invocation/{id}/error     202; keeps Lambda-Runtime-Function-Error-Type
//   POST /2018-06-01/runtime/init/error                202; keeps the error (the environment failed to start)
//
// The deadline is enforced: an invocation not answered by it ends as { kind: 'timeout' }. Real Lambda then
// stops the execution environment (the next invocation starts a new one); a test has that done with
// onTimeout (lambda-harness.mjs startFunction's killAtDeadline kills the bootstrap with SIGKILL).
//
// Streamed responses (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming,
// .../configuration-response-streaming.html): a `response` POST with Lambda-Runtime-Function-Response-Mode: streaming
// must be chunked (Transfer-Encoding: chunked). With Content-Type application/vnd.awslambda.http-integration-response
// (a function URL's HTTP response) its body starts with the prelude: JSON {statusCode, headers, cookies}, then
// exactly 8 NUL bytes (within the first 16 KiB), then the payload. invoke() resolves once the prelude has come
// (or at once for another content type) with { kind: 'stream', prelude, stream }, and the payload is seen chunk by
// chunk as it arrives (stream.chunks, stream.until(), stream.pause() to stop reading); stream.done resolves at its
// end with the trailers the runtime declared (Trailer:) and sent: Lambda-Runtime-Function-Error-Type and
// Lambda-Runtime-Function-Error-Body (base64 of the error JSON, decoded here). The answer, 202, comes after the
// body's end. A stream still open at the deadline ends as { complete: false, reason: 'timeout' }, its connection left
// as it is (a frozen environment does not read); one whose connection breaks first as reason 'aborted'.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

export const MAX_RESPONSE_BYTES = 6 * 1024 * 1024;
export const HTTP_INTEGRATION_TYPE = 'application/vnd.awslambda.http-integration-response';
const PRELUDE_MAX_BYTES = 16 * 1024;
const DELIMITER = Buffer.alloc(8);
const ERROR_TYPE_TRAILER = 'lambda-runtime-function-error-type';
const ERROR_BODY_TRAILER = 'lambda-runtime-function-error-body';
const PREFIX = '/2018-06-01/runtime';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

/** The prelude's JSON, checked as the function URL reads it: an object; statusCode a number, headers an object of
 * strings, cookies an array of strings, when present. Throws what is wrong. */
function parsePrelude(bytes) {
  const prelude = JSON.parse(bytes.toString('utf8'));
  if (typeof prelude !== 'object' || prelude === null || Array.isArray(prelude)) throw new Error('the prelude is not a JSON object');
  if ('statusCode' in prelude && !Number.isInteger(prelude.statusCode)) throw new Error('statusCode is not an integer');
  for (const [k, v] of Object.entries(prelude.headers ?? {}))
    if (typeof v !== 'string') throw new Error(`header ${k} is not a string`);
  if ('cookies' in prelude && !(Array.isArray(prelude.cookies) && prelude.cookies.every((c) => typeof c === 'string')))
    throw new Error('cookies is not an array of strings');
  return prelude;
}

/**
 * A streamed response as it arrives: chunks (Buffers of payload, after the prelude, as received), text() (the payload
 * so far), until(pred) (resolves with the text once pred(text) holds; rejects if the stream ends first), pause() /
 * resume() (stop / go on reading the runtime's request), done (see the file's comment).
 */
function receiveStream(req, res, inv, { onPrelude, onEnd }) {
  const integration = (req.headers['content-type'] || '').split(';')[0].trim() === HTTP_INTEGRATION_TYPE;
  const declared = (req.headers.trailer || '')
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
  let head = integration ? Buffer.alloc(0) : null; // the prelude's bytes until the delimiter
  const waiters = new Set();
  let ended = false;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  const stream = {
    chunks: [],
    chunkedEncoding: req.headers['transfer-encoding'] === 'chunked',
    declaredTrailers: declared,
    text: () => Buffer.concat(stream.chunks).toString('utf8'),
    until(pred) {
      if (pred(stream.text())) return Promise.resolve(stream.text());
      if (ended) return Promise.reject(new Error(`the stream ended first:\n${stream.text()}`));
      return new Promise((resolve, reject) => waiters.add({ pred, resolve, reject }));
    },
    pause: () => req.pause(),
    resume: () => req.resume(),
    done,
  };
  const wake = () => {
    for (const w of waiters) {
      if (w.pred(stream.text())) {
        waiters.delete(w);
        w.resolve(stream.text());
      } else if (ended) {
        waiters.delete(w);
        w.reject(new Error(`the stream ended first:\n${stream.text()}`));
      }
    }
  };
  const end = (result) => {
    if (ended) return;
    ended = true;
    if (head) onPrelude(stream, new Error(`the stream ended before its prelude's 8 NUL bytes (${head.length} bytes)`));
    resolveDone(result);
    wake();
    onEnd(result);
  };
  if (!integration) onPrelude(stream, null);
  req.on('data', (d) => {
    if (ended) return;
    if (head) {
      head = Buffer.concat([head, d]);
      const at = head.indexOf(DELIMITER);
      if (at < 0 && head.length <= PRELUDE_MAX_BYTES) return;
      let problem = null;
      if (at < 0 || at > PRELUDE_MAX_BYTES) problem = new Error('no 8 NUL bytes after the prelude within its first 16 KiB');
      else {
        try {
          stream.prelude = parsePrelude(head.subarray(0, at));
        } catch (e) {
          problem = new Error(`the prelude is not valid: ${e.message}`);
        }
      }
      const rest = head.subarray(at + DELIMITER.length);
      head = null;
      onPrelude(stream, problem);
      if (problem) return;
      if (inv.pauseAfterPrelude) req.pause();
      d = rest;
    }
    if (d.length) stream.chunks.push(d);
    wake();
  });
  req.on('end', () => {
    const trailers = req.trailers || {};
    const sent = Object.keys(trailers);
    const result = {
      complete: true,
      body: Buffer.concat(stream.chunks),
      trailers,
      undeclaredTrailers: sent.filter((t) => !declared.includes(t)),
      errorType: trailers[ERROR_TYPE_TRAILER],
    };
    if (trailers[ERROR_BODY_TRAILER]) result.errorBody = JSON.parse(Buffer.from(trailers[ERROR_BODY_TRAILER], 'base64').toString('utf8'));
    send(res, 202, { status: 'OK' });
    end(result);
  });
  req.on('close', () => end({ complete: false, reason: 'aborted', body: Buffer.concat(stream.chunks) }));
  inv.stream = { stream, end };
}

function send(res, status, doc) {
  const body = JSON.stringify(doc);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Starts the fake on 127.0.0.1. Options: functionName, timeoutMs (the function's timeout: each invocation's
 * deadline is now + timeoutMs), onTimeout({ requestId, deadlineMs }) (called when an invocation reaches its
 * deadline unanswered, a stream still open included, before invoke() resolves: where Lambda stops the
 * environment), onNext (called as each `next` request arrives; bench/lambda-coldstart.mjs). Returns { api
 * ("host:port"), invoke(event, { traceId, pauseAfterPrelude (a streamed response is not read past its prelude: the
 * runtime's writes back up) }), initError (a promise
 * of { errorType, body }), polls (how many `next` requests arrived), close() }.
 * invoke() resolves to { kind: 'response', requestId, body (Buffer), json } | { kind: 'error', requestId,
 * errorType, json } | { kind: 'timeout', requestId } | { kind: 'stream', requestId, prelude, problem (an Error when
 * the prelude is malformed), stream } (see receiveStream).
 */
export async function startFakeRuntime({ functionName = 'koumpa-test', timeoutMs = 30_000, onTimeout, onNext } = {}) {
  const queue = []; // invocations not yet taken by `next`
  const waiting = []; // `next` requests held open
  const open = new Map(); // requestId -> invocation taken, not answered
  let resolveInit;
  const initError = new Promise((resolve) => {
    resolveInit = resolve;
  });
  const state = { polls: 0 };

  const finish = (inv, result) => {
    clearTimeout(inv.timer);
    open.delete(inv.requestId);
    inv.resolve({ requestId: inv.requestId, ...result });
  };

  // a streamed response: invoke() resolves with its prelude; the invocation is over at the stream's end
  const streamed = (req, res, inv) => {
    let announced = false;
    receiveStream(req, res, inv, {
      onPrelude(stream, problem) {
        if (announced) return;
        announced = true;
        inv.resolve({ requestId: inv.requestId, kind: 'stream', prelude: stream.prelude ?? null, problem, stream });
      },
      onEnd() {
        clearTimeout(inv.timer);
        open.delete(inv.requestId);
      },
    });
  };

  const deliver = (res, inv) => {
    inv.deadlineMs = Date.now() + timeoutMs;
    inv.timer = setTimeout(() => {
      onTimeout?.({ requestId: inv.requestId, deadlineMs: inv.deadlineMs });
      if (inv.stream) {
        // the environment is frozen: the connection stays as it is, unread
        open.delete(inv.requestId);
        inv.stream.end({ complete: false, reason: 'timeout', body: Buffer.concat(inv.stream.stream.chunks) });
      } else finish(inv, { kind: 'timeout' });
    }, timeoutMs);
    open.set(inv.requestId, inv);
    const body = JSON.stringify(inv.event);
    const headers = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'Lambda-Runtime-Aws-Request-Id': inv.requestId,
      'Lambda-Runtime-Deadline-Ms': String(inv.deadlineMs),
      'Lambda-Runtime-Invoked-Function-Arn': `arn:aws:lambda:eu-west-1:123456789012:function:${functionName}`,
    };
    if (inv.traceId) headers['Lambda-Runtime-Trace-Id'] = inv.traceId;
    res.writeHead(200, headers);
    res.end(body);
  };

  const server = createServer(async (req, res) => {
    const url = req.url;
    const r = /^\/2018-06-01\/runtime\/invocation\/([^/]+)\/response$/.exec(url);
    if (req.method === 'POST' && r && /^streaming$/i.test(req.headers['lambda-runtime-function-response-mode'] || '')) {
      const inv = open.get(r[1]);
      if (!inv || inv.stream) {
        req.resume();
        send(res, 400, { errorMessage: `Invalid request ID: "${r[1]}"`, errorType: 'InvalidRequestID' });
        return;
      }
      if (req.headers['transfer-encoding'] !== 'chunked') {
        req.resume();
        send(res, 400, { errorMessage: 'a streamed response must be sent with Transfer-Encoding: chunked', errorType: 'InvalidStreamingOperation' });
        return;
      }
      streamed(req, res, inv);
      return;
    }
    const body = await readBody(req);
    if (req.method === 'GET' && url === `${PREFIX}/invocation/next`) {
      state.polls++;
      onNext?.();
      const inv = queue.shift();
      if (inv) deliver(res, inv);
      else waiting.push(res);
      return;
    }
    if (req.method === 'POST' && url === `${PREFIX}/init/error`) {
      resolveInit({ errorType: req.headers['lambda-runtime-function-error-type'], json: JSON.parse(body) });
      send(res, 202, { status: 'OK' });
      return;
    }
    const m = /^\/2018-06-01\/runtime\/invocation\/([^/]+)\/(response|error)$/.exec(url);
    if (req.method === 'POST' && m) {
      const inv = open.get(m[1]);
      if (!inv) {
        send(res, 400, { errorMessage: `Invalid request ID: "${m[1]}"`, errorType: 'InvalidRequestID' });
        return;
      }
      if (m[2] === 'response' && body.length > MAX_RESPONSE_BYTES) {
        send(res, 413, {
          errorMessage: `Exceeded maximum allowed payload size (${MAX_RESPONSE_BYTES} bytes).`,
          errorType: 'RequestEntityTooLarge',
        });
        return;
      }
      send(res, 202, { status: 'OK' });
      if (m[2] === 'response') {
        let json;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        finish(inv, { kind: 'response', body, json });
      } else {
        finish(inv, {
          kind: 'error',
          errorType: req.headers['lambda-runtime-function-error-type'],
          json: JSON.parse(body),
        });
      }
      return;
    }
    send(res, 404, { errorMessage: `no such Runtime API endpoint: ${req.method} ${url}`, errorType: 'NotFound' });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();

  return {
    api: `127.0.0.1:${port}`,
    initError,
    get polls() {
      return state.polls;
    },
    invoke(
      event,
      { traceId = `Root=1-${Date.now().toString(16)}-${randomUUID().replace(/-/g, '').slice(0, 24)}`, pauseAfterPrelude = false } = {},
    ) {
      return new Promise((resolve) => {
        const inv = { requestId: randomUUID(), event, traceId, pauseAfterPrelude, resolve };
        const res = waiting.shift();
        if (res) deliver(res, inv);
        else queue.push(inv);
      });
    },
    async close() {
      for (const res of waiting.splice(0)) res.destroy();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
