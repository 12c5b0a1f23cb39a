// bench/lambda-node-runtime.mjs - a minimal Node.js custom runtime, for bench/lambda-coldstart.mjs to
// compare with: the Runtime API loop (GET next, POST response) over node:http, answering an API
// Gateway 2.0 event with a small JSON body (the caller's claims, or a fixed plan list) and no database.
// It is what any Node.js function does at the least before its own code runs.
import http from 'node:http';

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const base = '/2018-06-01/runtime/invocation';
const agent = new http.Agent({ keepAlive: true });

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, agent }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(parts).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function handle(event) {
  const claims = event.requestContext?.authorizer?.jwt?.claims;
  const doc = claims ? { id: claims.sub, email: claims.email } : { plans: [{ id: 'free', credits_per_day: 5 }] };
  return { statusCode: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(doc) };
}

for (;;) {
  let next;
  try {
    next = await request('GET', `${base}/next`);
  } catch {
    process.exit(0); // the runtime went away
  }
  const id = next.headers['lambda-runtime-aws-request-id'];
  await request('POST', `${base}/${id}/response`, JSON.stringify(handle(JSON.parse(next.body))));
}
