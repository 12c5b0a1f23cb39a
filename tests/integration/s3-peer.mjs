// s3-peer.mjs - an S3 for the S3 blob backend's tests: moto_server behind the verifying SigV4
// front (aws-front.mjs), with the buckets made (on moto itself, as Terraform would make them) and
// the environment that points Koumpa at the front.
//
//   const s3 = await startS3({ buckets: ['b'] });   // s3.skipReason when moto_server is absent
//   s3.vars({ KOUMPA_S3_BUCKET: 'b' })              // the variables that point at the front (path style)
//   s3.env({ ... })                                 // the process env without inherited AWS_*, plus vars()
//   await s3.keys('b', 'apps/')                      // the keys under a prefix, read from moto
//   await s3.get('b', 'apps/x')                      // a signed GetObject through the front: a Response
//   s3.front.stats                                   // requests verified / rejected
//   await s3.stop()
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

import { startMoto, startFront } from './aws-front.mjs';

export const S3_KEY = { accessKeyId: 'AKIDKOUMPABLOB', secretAccessKey: 'blob/test+secret' };

export async function startS3({ buckets = [] } = {}) {
  const moto = await startMoto();
  if (!moto) {
    const skipReason = 'moto_server not found (scripts/install-deps.sh --test installs it): skipped';
    console.log(`# ${skipReason}`);
    return { skipReason, stop: async () => {} };
  }
  const front = await startFront({ target: moto.url, credentials: [S3_KEY] });
  for (const b of buckets) {
    const r = await fetch(`${moto.url}/${b}`, { method: 'PUT' });
    if (r.status !== 200) throw new Error(`cannot create bucket ${b}: ${r.status} ${await r.text()}`);
  }
  return {
    moto,
    front,
    vars(extra = {}) {
      return { AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL_S3: front.url,
        AWS_ACCESS_KEY_ID: S3_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_KEY.secretAccessKey,
        KOUMPA_S3_PATH_STYLE: '1', ...extra };
    },
    env(extra = {}) {
      const env = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_')) env[k] = v;
      return { ...env, ...this.vars(extra) };
    },
    async keys(bucket, prefix) {
      const r = await fetch(`${moto.url}/${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}`);
      const xml = await r.text();
      return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
    },
    async get(bucket, key) {
      const url = new URL(`${front.url}/${bucket}/${key}`);
      const signer = new SignatureV4({ credentials: S3_KEY, region: 'us-east-1', service: 's3', sha256: Sha256,
        uriEscapePath: false, applyChecksum: false });
      const signed = await signer.sign({ method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port),
        path: url.pathname, query: {}, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } });
      const headers = { ...signed.headers };
      delete headers.host;
      return fetch(url, { headers });
    },
    async stop() {
      await front.stop();
      await moto.stop();
    },
  };
}
