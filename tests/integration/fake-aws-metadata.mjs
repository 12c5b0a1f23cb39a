// fake-aws-metadata.mjs - the two AWS credential endpoints that cannot be
// reached from here, faked after their documented wire formats:
//
// ECS container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI):
//   GET /creds with "Authorization: <token>" when a token is required
//   -> 200 {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}; wrong token -> 401
// EC2 IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT):
//   PUT  /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1..21600) -> the session token
//   GET  /latest/meta-data/iam/security-credentials/         -> the role name
//   GET  /latest/meta-data/iam/security-credentials/{role}   -> {"Code": "Success", "LastUpdated",
//        "Type": "AWS-HMAC", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
//   any GET without a valid X-aws-ec2-metadata-token -> 401 (IMDSv2 only, as hardened instances are)
//
// Each credentials answer hands out a new key (AKIDFAKE0001, 0002, ...), valid for
// `lifetimeS` seconds from now; `failAfter` answers 500 once that many have been given.
// requests records {method, path, headers}.
import http from 'node:http';

export async function startMetadataFake({ ecsToken, lifetimeS = 3600, role = 'koumpa-role', failAfter = Infinity } = {}) {
  const state = { issued: 0, requests: [], imdsTokens: new Set(), lifetimeS, failAfter };
  const credentials = () => {
    state.issued++;
    const n = String(state.issued).padStart(4, '0');
    return {
      AccessKeyId: `AKIDFAKE${n}`,
      SecretAccessKey: `secret-${n}`,
      Token: `token-${n}`,
      Expiration: new Date(Date.now() + state.lifetimeS * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    };
  };
  const json = (res, status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  const server = http.createServer((req, res) => {
    state.requests.push({ method: req.method, path: req.url, headers: req.headers });
    req.resume();
    req.on('end', () => {
      if (req.url === '/creds' && req.method === 'GET') {
        if (ecsToken && req.headers.authorization !== ecsToken) return json(res, 401, { message: 'bad token' });
        if (state.issued >= state.failAfter) return json(res, 500, { message: 'unavailable' });
        return json(res, 200, credentials());
      }
      if (req.url === '/latest/api/token' && req.method === 'PUT') {
        const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
        if (!(ttl >= 1 && ttl <= 21600)) return json(res, 400, { message: 'bad ttl' });
        const token = `imds-token-${state.imdsTokens.size + 1}`;
        state.imdsTokens.add(token);
        res.writeHead(200, { 'content-type': 'text/plain', 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
        return res.end(token);
      }
      const prefix = '/latest/meta-data/iam/security-credentials/';
      if (req.method === 'GET' && req.url.startsWith(prefix)) {
        if (!state.imdsTokens.has(req.headers['x-aws-ec2-metadata-token'])) {
          res.writeHead(401);
          return res.end();
        }
        const rest = req.url.slice(prefix.length);
        if (rest === '') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          return res.end(role);
        }
        if (rest !== role) return json(res, 404, { message: 'no such role' });
        if (state.issued >= state.failAfter) return json(res, 500, { message: 'unavailable' });
        return json(res, 200, { Code: 'Success', LastUpdated: new Date().toISOString(), Type: 'AWS-HMAC', ...credentials() });
      }
      res.writeHead(404);
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
