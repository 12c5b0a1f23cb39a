// blob-s3.test.mjs - the blob contract (tests/unit/test_blob_contract.c) on the S3 backend
// (src/blob/s3/): the contract binary runs its S3 group against moto_server behind the verifying
// SigV4 front (aws-front.mjs), so every request the backend makes is checked by
// @smithy/signature-v4; then the start-up check of a missing bucket. Without moto_server on the
// PATH this file is skipped, saying so (scripts/install-deps.sh --test installs moto).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { BUILD } from './harness.mjs';
import { startS3 } from './s3-peer.mjs';

const CONTRACT = path.join(BUILD, 'tests', 'test_blob_contract');
const WRAPPER = (process.env.KOUMPA_TEST_WRAPPER || '').split(/\s+/).filter(Boolean);

function run(argv, env, timeoutMs) {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('error', reject);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

describe('blob contract on S3 (moto behind the verifying front)', () => {
  let s3;
  before(async () => {
    s3 = await startS3({ buckets: ['koumpa-contract'] });
  });
  after(async () => {
    await s3?.stop();
  });

  // Under `make valgrind` skipped: that stage checks koumpa itself, and `make sanitize` already runs this
  // binary under ASan + LeakSanitizer.
  const skip = WRAPPER.length > 0 && 'the contract binary is leak-checked by make sanitize; valgrind wraps koumpa only';
  test('every contract test passes on S3, every request signed right', { skip }, async (t) => {
    if (s3.skipReason) return t.skip(s3.skipReason);
    const r = await run([CONTRACT, 's3'], s3.env({ KOUMPA_TEST_S3_BUCKET: 'koumpa-contract' }), 300_000);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /\[  PASSED  \] 12 test\(s\)\./);
    assert.equal(s3.front.stats.rejected, 0, JSON.stringify(s3.front.stats.rejections));
    assert.ok(s3.front.stats.byService.s3 > 1000, JSON.stringify(s3.front.stats.byService));
  });

  test('a missing bucket fails the open with a clear message', async (t) => {
    if (s3.skipReason) return t.skip(s3.skipReason);
    const r = await run([...WRAPPER, CONTRACT, 's3'], s3.env({ KOUMPA_TEST_S3_BUCKET: 'koumpa-nope' }),
      60_000);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /S3 bucket koumpa-nope does not exist/);
  });
});
