// deploy-dashboard.test.mjs - scripts/deploy-dashboard.sh, with a fake `aws` on PATH that records
// its arguments: each file type is synced with its Content-Type and Cache-Control: no-cache,
// config.json (Terraform's) is never uploaded nor deleted, /* is invalidated when a distribution
// is given, and a file of an unknown type or a bad destination stops it before any upload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { REPO } from './check.mjs';

let dir;
let web;
let log;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'koumpa-deploy-'));
  web = path.join(dir, 'web');
  log = path.join(dir, 'aws.log');
  mkdirSync(path.join(web, 'js'), { recursive: true });
  for (const f of ['index.html', 'app.css', 'js/main.js', 'favicon.svg', 'config.json']) writeFileSync(path.join(web, f), 'x');
  mkdirSync(path.join(dir, 'bin'));
  writeFileSync(path.join(dir, 'bin/aws'), `#!/bin/sh\nfor a in "$@"; do printf '%s|' "$a"; done >> "${log}"\necho >> "${log}"\n`);
  chmodSync(path.join(dir, 'bin/aws'), 0o755);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function deploy(args) {
  rmSync(log, { force: true });
  const r = spawnSync('bash', [path.join(REPO, 'scripts/deploy-dashboard.sh'), ...args], {
    env: { ...process.env, PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`, KOUMPA_WEB_DIR: web },
    encoding: 'utf8',
  });
  const calls = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split('|').slice(0, -1)) : [];
  return { ...r, calls };
}

test('each type with its Content-Type and no-cache; config.json left to Terraform; /* invalidated', () => {
  const r = deploy(['s3://bucket/web/', 'E123']);
  assert.equal(r.status, 0, r.stderr);
  const syncs = r.calls.filter((c) => c[0] === 's3');
  const typeOf = (ext) => syncs.find((c) => c.includes(`*.${ext}`));
  assert.equal(typeOf('js')[typeOf('js').indexOf('--content-type') + 1], 'text/javascript; charset=utf-8');
  assert.equal(typeOf('html')[typeOf('html').indexOf('--content-type') + 1], 'text/html; charset=utf-8');
  assert.equal(typeOf('svg')[typeOf('svg').indexOf('--content-type') + 1], 'image/svg+xml');
  for (const c of syncs) {
    assert.deepEqual(c.slice(0, 4), ['s3', 'sync', web, 's3://bucket/web/']);
    assert.equal(c[c.indexOf('--cache-control') + 1], 'no-cache');
    assert.ok(c.includes('config.json') && c[c.indexOf('config.json') - 1] === '--exclude', c.join(' '));
  }
  assert.equal(syncs.filter((c) => c.includes('--delete')).length, 1);
  assert.deepEqual(r.calls.at(-1).slice(0, 5), ['cloudfront', 'create-invalidation', '--distribution-id', 'E123', '--paths']);
});

test('an unknown file type or a bad destination stops it before any upload', () => {
  writeFileSync(path.join(web, 'notes.xyz'), 'x');
  try {
    const r = deploy(['s3://bucket/web/']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no Content-Type known for: .*notes\.xyz/);
    assert.deepEqual(r.calls, []);
  } finally {
    rmSync(path.join(web, 'notes.xyz'));
  }
  for (const bad of ['bucket/web/', 's3://bucket/web', 's3:///']) {
    const r = deploy([bad]);
    assert.equal(r.status, 2, bad);
    assert.match(r.stderr, /S3_URI must be s3:\/\/BUCKET\/PREFIX\//);
    assert.deepEqual(r.calls, []);
  }
});
