// aws-front.mjs - what the AWS tests put between Koumpa and the local AWS
// peers (moto_server): a verifying front that recomputes every request's
// Signature Version 4 with @smithy/signature-v4 (the AWS SDK for
// JavaScript's own signer) and answers as AWS does when it does not match,
// then forwards the request unchanged to the peer, which checks nothing.
//
//   startMoto({ singleThreaded })    moto_server on a free loopback port (or moto_single.py: one request at a time); .stop()
//   startFront({ target, credentials }) the front; .url, .stats, .inject, .stop()
//   startMotoBehindFront({ credentials }) both: {moto, front}, or {skipReason} without moto_server
//
// The front checks, per request:
//   - an Authorization header "AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
//     SignedHeaders=..., Signature=..." whose AKID is one of `credentials` (else, as AWS answers: DynamoDB
//     400 UnrecognizedClientException, S3 403 InvalidAccessKeyId, others 403 InvalidClientTokenId)
//   - X-Amz-Content-Sha256, when present, equal to the body's hash (else 400 XAmzContentSHA256Mismatch)
//   - the signature smithy computes over exactly the signed headers, the path as received (S3: as is;
//     other services: normalised and encoded again), the query decoded then re-encoded, at the
//     request's X-Amz-Date: a mismatch answers 403 SignatureDoesNotMatch (XML for S3, JSON otherwise).
// stats counts {verified, rejected, byService, byTarget (X-Amz-Target, e.g. DynamoDB_20120810.GetItem),
// connections (TCP)}. While recording is true, log gets {target, body} of each verified request (the
// request budget test tells a transaction's items apart). inject is a queue of faults for the next requests:
// {status, code, message} answers that error instead of forwarding (after verifying). expired is a
// set of access key ids answered 400 ExpiredTokenException (S3: ExpiredToken), as AWS does for
// temporary credentials past their end. credentials is the list itself: push to it or splice it to
// make keys valid or unknown while the front runs.
// Faults by operation (the operation is X-Amz-Target's action for JSON services, e.g. GetItem or
// GetSecretValue; for S3 HeadBucket, GetObject, PutObject, ListObjectsV2, DeleteObjects, ...):
//   fail({ service, operation, times, status, code, message })  answers the next `times` matching
//       requests with that error, in the service's wire format (DynamoDB: JSON 1.0 with
//       "__type": "com.amazonaws.dynamodb.v20120810#Code"; Secrets Manager: JSON 1.1 with "__type": "Code";
//       S3: XML <Error><Code>), then passes them on again
//   hold({ service, operation })  keeps matching requests waiting (not answered) until .release()
//       (or after holdMs, 30 s by default, so that no test hangs); .held counts the ones waiting now
//       whose client is still connected, .total all that were held
//   operations  {"service Operation": n} requests verified, faults included
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';

export async function freeLoopbackPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// moto_server from the PATH, else from the virtualenv scripts/install-deps.sh --test makes.
function motoCommand() {
  const venv = process.env.KOUMPA_MOTO_VENV || path.join(homedir(), '.cache', 'koumpa', 'moto');
  const inVenv = path.join(venv, 'bin', 'moto_server');
  const onPath = (process.env.PATH || '').split(path.delimiter).some((d) => d && existsSync(path.join(d, 'moto_server')));
  return onPath || !existsSync(inVenv) ? 'moto_server' : inVenv;
}

// python3 with moto (the virtualenv's when moto_server comes from it) running moto_single.py.
function motoSingleCommand(port) {
  const venv = process.env.KOUMPA_MOTO_VENV || path.join(homedir(), '.cache', 'koumpa', 'moto');
  const py = motoCommand() === 'moto_server' ? 'python3' : path.join(venv, 'bin', 'python3');
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), 'moto_single.py');
  return [py, [script, '127.0.0.1', String(port)]];
}

// moto_server on 127.0.0.1:<free port>, ready when it answers. Resolves to
// null when moto_server is not installed (the caller skips, saying so).
// singleThreaded: one request at a time (moto_single.py), for tests that race on DynamoDB conditions.
export async function startMoto({ timeoutMs = 30_000, singleThreaded = false } = {}) {
  const port = await freeLoopbackPort();
  let proc;
  try {
    const [cmd, args] = singleThreaded ? motoSingleCommand(port) : [motoCommand(), ['-H', '127.0.0.1', '-p', String(port)]];
    // moto_single.py exits when its stdin (this pipe) ends, e.g. when this process is killed
    proc = spawn(cmd, args, { stdio: [singleThreaded ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
  } catch {
    return null;
  }
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const spawned = await new Promise((resolve) => {
    proc.once('spawn', () => resolve(true));
    proc.once('error', () => resolve(false));
  });
  if (!spawned) return null;
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) {
      if (/No module named '(moto|werkzeug)/.test(stderr)) return null; /* not installed: the caller skips */
      throw new Error(`moto_server exited: ${stderr}`);
    }
    try {
      const r = await fetch(`${url}/moto-api/`);
      await r.arrayBuffer();
      break;
    } catch {
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`moto_server did not answer within ${timeoutMs} ms: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    port,
    /** Lets the test's process exit while moto runs (then kill() it from an 'exit' handler). */
    unref() {
      proc.unref();
      proc.stderr.unref();
      proc.stdin?.unref?.();
    },
    /** SIGKILL, synchronously (for an 'exit' handler). */
    kill() {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    },
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

export const MOTO_SKIP = 'moto_server not found (scripts/install-deps.sh --test installs it): skipped';

// moto_server and a front verifying `credentials` before it: {moto, front}, or {skipReason} (printed)
// when moto_server is not installed.
export async function startMotoBehindFront({ credentials, ...motoOptions }) {
  const moto = await startMoto(motoOptions);
  if (!moto) {
    console.log(`# ${MOTO_SKIP}`);
    return { skipReason: MOTO_SKIP };
  }
  return { moto, front: await startFront({ target: moto.url, credentials }) };
}

const AUTH_RE = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/;

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  if (!m) return null;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

// The query as smithy expects it: decoded names -> decoded value(s); '+' stays a plus.
function parseQuery(raw) {
  const query = {};
  for (const part of raw.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const name = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
    if (name in query) query[name] = [].concat(query[name], value);
    else query[name] = value;
  }
  return query;
}

// The operation a request is (see the header comment).
function operationOf(req, service) {
  const target = req.headers['x-amz-target'];
  if (target) return target.slice(target.indexOf('.') + 1);
  if (service !== 's3') return 'unknown';
  const q = req.url.indexOf('?');
  const segments = (q < 0 ? req.url : req.url.slice(0, q)).split('/').filter(Boolean);
  const query = q < 0 ? '' : req.url.slice(q + 1);
  if (segments.length <= 1) {
    if (req.method === 'POST' && /(^|&)delete(=|&|$)/.test(query)) return 'DeleteObjects';
    if (req.method === 'GET' && /(^|&)list-type=2/.test(query)) return 'ListObjectsV2';
    return { HEAD: 'HeadBucket', PUT: 'CreateBucket', DELETE: 'DeleteBucket', GET: 'ListObjects' }[req.method] || req.method;
  }
  return { HEAD: 'HeadObject', GET: 'GetObject', PUT: 'PutObject', DELETE: 'DeleteObject' }[req.method] || req.method;
}

export function answerError(res, service, status, code, message) {
  if (service === 'dynamodb') {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'front-0001' });
    res.end(JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${code}`, message }));
  } else if (service === 'secretsmanager') {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'front-0001' });
    res.end(JSON.stringify({ __type: code, message }));
  } else if (service === 'lambda') {
    // Lambda's REST-JSON errors: the type in x-amzn-ErrorType, {Type, message} in the body
    res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-requestid': 'front-0001', 'x-amzn-errortype': code });
    res.end(JSON.stringify({ Type: status >= 500 ? 'Service' : 'User', message }));
  } else if (service === 's3') {
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>` +
      `<RequestId>front-0001</RequestId></Error>`;
    res.writeHead(status, { 'content-type': 'application/xml', 'x-amz-request-id': 'front-0001' });
    res.end(body);
  } else {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'front-0001' });
    res.end(JSON.stringify({ __type: `com.amazon.coral.service#${code}`, message }));
  }
}

// Verifies req (body: Buffer); returns null when it is good, else [status, code, message]. Exported for the
// fakes of AWS services that have no local peer (fake-lambda-invoke.mjs).
export async function verify(req, body, credentials, expired = new Set()) {
  const m = AUTH_RE.exec(req.headers.authorization || '');
  if (!m) return [403, 'MissingAuthenticationToken', 'no or malformed SigV4 Authorization header'];
  const [, akid, , region, service, signedHeaders, signature] = m;
  const cred = credentials.find((c) => c.accessKeyId === akid);
  if (!cred) {
    // as each service answers an access key id it does not know
    if (service === 'dynamodb') return [400, 'UnrecognizedClientException', 'The security token included in the request is invalid.'];
    if (service === 's3') return [403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.'];
    return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
  }
  if (expired.has(akid)) {
    return [400, service === 's3' ? 'ExpiredToken' : 'ExpiredTokenException', 'The security token included in the request is expired'];
  }
  const declared = req.headers['x-amz-content-sha256'];
  if (declared && declared !== 'UNSIGNED-PAYLOAD' && declared !== createHash('sha256').update(body).digest('hex')) {
    return [400, 'XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match the body.'];
  }
  if (cred.sessionToken && req.headers['x-amz-security-token'] !== cred.sessionToken) {
    return [403, 'InvalidClientTokenId', 'The security token included in the request is invalid.'];
  }
  const date = parseAmzDate(req.headers['x-amz-date']);
  if (!date) return [403, 'IncompleteSignature', 'no X-Amz-Date'];
  const headers = {};
  for (const name of signedHeaders.split(';')) {
    if (req.headers[name] === undefined) return [403, 'SignatureDoesNotMatch', `signed header ${name} is absent`];
    headers[name] = req.headers[name];
  }
  const q = req.url.indexOf('?');
  const request = {
    method: req.method,
    protocol: 'http:',
    hostname: (req.headers.host || '').replace(/:\d+$/, ''),
    path: q < 0 ? req.url : req.url.slice(0, q),
    query: q < 0 ? {} : parseQuery(req.url.slice(q + 1)),
    headers,
    body,
  };
  const signer = new SignatureV4({
    credentials: { accessKeyId: cred.accessKeyId, secretAccessKey: cred.secretAccessKey, sessionToken: cred.sessionToken },
    region,
    service,
    sha256: Sha256,
    uriEscapePath: service !== 's3',
    applyChecksum: false,
  });
  const signed = await signer.sign(request, { signingDate: date });
  const expected = /Signature=([0-9a-f]{64})/.exec(signed.headers.authorization)[1];
  const expectedHeaders = /SignedHeaders=([^,]+)/.exec(signed.headers.authorization)[1];
  if (expected !== signature || expectedHeaders !== signedHeaders) {
    return [403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided.'];
  }
  return null;
}

export async function startFront({ target, credentials }) {
  const expired = new Set();
  const stats = { verified: 0, rejected: 0, byService: {}, byTarget: {}, rejections: [], connections: 0 };
  const inject = [];
  const faults = [];
  const holds = [];
  const operations = {};
  const matches = (f, service, op) => (!f.service || f.service === service) && (!f.operation || f.operation === op);
  const targetUrl = new URL(target);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      const service = (AUTH_RE.exec(req.headers.authorization || '') || [])[4] || 'unknown';
      let failure;
      try {
        failure = await verify(req, body, credentials, expired);
      } catch (e) {
        failure = [403, 'SignatureDoesNotMatch', `cannot verify: ${e.message}`];
      }
      if (failure) {
        stats.rejected++;
        stats.rejections.push({ method: req.method, url: req.url, code: failure[1] });
        answerError(res, service, ...failure);
        return;
      }
      stats.verified++;
      stats.byService[service] = (stats.byService[service] || 0) + 1;
      const op = operationOf(req, service);
      operations[`${service} ${op}`] = (operations[`${service} ${op}`] || 0) + 1;
      const target = req.headers['x-amz-target'];
      if (target) stats.byTarget[target] = (stats.byTarget[target] || 0) + 1;
      if (front.recording) front.log.push({ target, body: body.toString('utf8') });
      const fault = inject.shift() || faults.find((f) => f.times > 0 && matches(f, service, op));
      if (fault) {
        if (fault.times !== undefined) fault.times--;
        answerError(res, service, fault.status, fault.code, fault.message || fault.code);
        return;
      }
      const hold = holds.find((h) => !h.released && matches(h, service, op));
      if (hold) {
        // held counts the requests waiting here whose client still waits too (a client that
        // gave up, its connection closed, no longer counts)
        let counted = true;
        const uncount = () => { if (counted) { counted = false; hold.held--; } };
        hold.held++;
        hold.total++;
        res.on('close', uncount);
        await new Promise((resolve) => {
          hold.waiting.push(resolve);
          setTimeout(resolve, hold.holdMs).unref();
        });
        res.off('close', uncount);
        uncount();
        if (res.destroyed) return;
      }
      const headers = { ...req.headers, host: targetUrl.host };
      const fwd = http.request({ host: targetUrl.hostname, port: targetUrl.port, method: req.method, path: req.url, headers },
        (up) => {
          // hop-by-hop headers stay on moto's side (werkzeug closes each connection; AWS keeps them)
          const { connection: _c, 'keep-alive': _k, 'transfer-encoding': _t, ...headersOut } = up.headers;
          res.writeHead(up.statusCode, headersOut);
          up.pipe(res);
        });
      fwd.on('error', (e) => answerError(res, service, 502, 'BadGateway', e.message));
      fwd.end(body);
    });
  });
  server.on('connection', () => { stats.connections++; });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const front = {
    url: `http://127.0.0.1:${server.address().port}`,
    stats,
    inject,
    expired,
    credentials,
    operations,
    fail({ service, operation, times = 1, status, code, message }) {
      const f = { service, operation, times, status, code, message };
      faults.push(f);
      return f;
    },
    hold({ service, operation, holdMs = 30_000 }) {
      const h = { service, operation, holdMs, held: 0, total: 0, waiting: [], released: false,
        release() {
          h.released = true;
          for (const resolve of h.waiting.splice(0)) resolve();
        } };
      holds.push(h);
      return h;
    },
    recording: false,
    log: [],
    /** Lets the test's process exit while the front listens. */
    unref() {
      server.unref();
    },
    async stop() {
      for (const h of holds) h.release();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
  return front;
}

// DynamoDB for the store's tests: moto answering one request at a time (the races test the code's
// conditions) behind a front that accepts credentials. { moto, front }, or { skipReason } without moto.
export async function startDynamoPeer({ credentials }) {
  const moto = await startMoto({ singleThreaded: true });
  if (!moto) return { skipReason: 'moto not found (scripts/install-deps.sh --test installs it): skipped' };
  return { moto, front: await startFront({ target: moto.url, credentials }) };
}
