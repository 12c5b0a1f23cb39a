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
// Buffered responses only (streaming is a later round).
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

export const MAX_RESPONSE_BYTES = 6 * 1024 * 1024;
const PREFIX = '/2018-06-01/runtime';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

function send(res, status, doc) {
  const body = JSON.stringify(doc);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Starts the fake on 127.0.0.1. Options: functionName, timeoutMs (the function's timeout: each invocation's
 * deadline is now + timeoutMs), onTimeout({ requestId, deadlineMs }) (called when an invocation reaches its
 * deadline unanswered, before invoke() resolves: where Lambda stops the environment), onNext (called as each
 * `next` request arrives; bench/lambda-coldstart.mjs). Returns { api ("host:port"), invoke(event, { traceId }), initError (a promise
 * of { errorType, body }), polls (how many `next` requests arrived), close() }.
 * invoke() resolves to { kind: 'response', requestId, body (Buffer), json } | { kind: 'error', requestId,
 * errorType, json } | { kind: 'timeout', requestId }.
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

  const deliver = (res, inv) => {
    inv.deadlineMs = Date.now() + timeoutMs;
    inv.timer = setTimeout(() => {
      onTimeout?.({ requestId: inv.requestId, deadlineMs: inv.deadlineMs });
      finish(inv, { kind: 'timeout' });
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
    const body = await readBody(req);
    const url = req.url;
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
    invoke(event, { traceId = `Root=1-${Date.now().toString(16)}-${randomUUID().replace(/-/g, '').slice(0, 24)}` } = {}) {
      return new Promise((resolve) => {
        const inv = { requestId: randomUUID(), event, traceId, resolve };
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
