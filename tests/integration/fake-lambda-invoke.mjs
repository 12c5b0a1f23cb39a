// fake-lambda-invoke.mjs - a fake of AWS Lambda's Invoke API for asynchronous invocations, in front of the
// fake Runtime API (fake-lambda-runtime.mjs). moto's Lambda runs functions in Docker, so it is no peer here;
// this follows the documented wire format (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html):
//
//   POST /2015-03-31/functions/{FunctionName}/invocations    X-Amz-Invocation-Type: Event
//        202, empty body, X-Amzn-RequestId; the event is queued as an invocation of the function on its
//        fake runtime (not waited for)
//
// Every request's SigV4 signature is verified as aws-front.mjs does (@smithy/signature-v4, service
// "lambda"); a bad one is answered as AWS does (403 InvalidSignatureException / SignatureDoesNotMatch...).
// Errors in Lambda's REST-JSON shape (x-amzn-ErrorType + {Type, message}): an unknown function 404
// ResourceNotFoundException; an invocation type other than Event 400 InvalidParameterValueException (only
// the asynchronous path is faked); a body that is not JSON 400 InvalidRequestContentException.
//
//   const fake = await startFakeLambdaInvoke({ credentials, functions: { 'koumpa-generate-app': rt } });
//   fake.url; fake.invocations  [{ functionName, headers, event, delivered (promise of the runtime's result
//                               or null while held) }]
//   fake.fail({ status, code, message, times })   answers the next `times` verified requests with that error
//   fake.holding = true                            queues events without delivering them; fake.deliver(inv)
//   fake.rejected                                  requests whose signature failed
import http from 'node:http';

import { answerError, verify } from './aws-front.mjs';

const PATH_RE = /^\/2015-03-31\/functions\/([^/?]+)\/invocations(\?.*)?$/;

export async function startFakeLambdaInvoke({ credentials, functions }) {
  const invocations = [];
  const faults = [];
  const rejected = [];
  const state = { holding: false };
  let seq = 0;

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      let failure;
      try {
        failure = await verify(req, body, credentials);
      } catch (e) {
        failure = [403, 'InvalidSignatureException', `cannot verify: ${e.message}`];
      }
      if (!failure && !/\/lambda\/aws4_request/.test(req.headers.authorization || ''))
        failure = [403, 'InvalidSignatureException', 'Credential should be scoped to correct service: \'lambda\'.'];
      if (failure) {
        rejected.push({ url: req.url, code: failure[1] });
        answerError(res, 'lambda', ...failure);
        return;
      }
      const m = req.method === 'POST' ? PATH_RE.exec(req.url) : null;
      if (!m) {
        answerError(res, 'lambda', 404, 'UnknownOperationException', `no such operation: ${req.method} ${req.url}`);
        return;
      }
      const fault = faults.find((f) => f.times > 0);
      if (fault) {
        fault.times--;
        answerError(res, 'lambda', fault.status, fault.code, fault.message || fault.code);
        return;
      }
      const name = decodeURIComponent(m[1]);
      const shortName = name.startsWith('arn:') ? name.split(':')[6] : name;
      const rt = functions[shortName];
      if (!rt) {
        answerError(res, 'lambda', 404, 'ResourceNotFoundException',
          `Function not found: arn:aws:lambda:eu-west-1:123456789012:function:${shortName}`);
        return;
      }
      const type = req.headers['x-amz-invocation-type'] || 'RequestResponse';
      if (type !== 'Event') {
        answerError(res, 'lambda', 400, 'InvalidParameterValueException', `this fake takes InvocationType Event only, not ${type}`);
        return;
      }
      let event;
      try {
        event = JSON.parse(body.toString('utf8'));
      } catch {
        answerError(res, 'lambda', 400, 'InvalidRequestContentException', 'Could not parse request body into json');
        return;
      }
      const inv = { functionName: name, headers: req.headers, event, rt, delivered: null };
      invocations.push(inv);
      if (!state.holding) inv.delivered = rt.invoke(event);
      seq++;
      res.writeHead(202, { 'content-type': 'application/json', 'content-length': '0', 'x-amzn-requestid': `invoke-${seq}` });
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    invocations,
    rejected,
    get holding() {
      return state.holding;
    },
    set holding(v) {
      state.holding = v;
    },
    /** Delivers a held invocation (or delivers one again: Lambda delivers events at least once). */
    deliver(inv) {
      inv.delivered = inv.rt.invoke(inv.event);
      return inv.delivered;
    },
    fail({ status, code, message, times = 1 }) {
      faults.push({ status, code, message, times });
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
