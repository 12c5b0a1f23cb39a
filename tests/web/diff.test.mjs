// diff.test.mjs - js/diff.js: files added, changed and deleted between two versions' manifests.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { diffFiles, previousReady } from '../../src/web/js/diff.js';

const f = (path, size, sha256) => ({ path, size, content_type: 'text/plain', ...(sha256 ? { sha256 } : {}) });

test('the first version: every file is added', () => {
  assert.deepEqual(diffFiles(null, [f('index.html', 3), f('app.js', 2)]), {
    added: ['app.js', 'index.html'],
    changed: [],
    deleted: [],
    unchanged: [],
  });
});

test('sha256 decides when both sides have it, whatever the sizes say', () => {
  const d = diffFiles(
    [f('a.js', 10, 'aa'), f('b.js', 10, 'bb'), f('c.js', 10, 'cc')],
    [f('a.js', 10, 'a2'), f('b.js', 99, 'BB'), f('c.js', 10, 'cc')],
  );
  assert.deepEqual(d.changed, ['a.js']); // same size, other content
  assert.deepEqual(d.unchanged, ['b.js', 'c.js']); // sizes differ but hashes match (case-insensitive hex)
});

test('size decides when either side lacks sha256 (older manifests)', () => {
  const d = diffFiles([f('a.js', 10), f('b.js', 10, 'bb')], [f('a.js', 11, 'a1'), f('b.js', 10)]);
  assert.deepEqual(d.changed, ['a.js']);
  assert.deepEqual(d.unchanged, ['b.js']);
});

test('added, changed and deleted at once, sorted', () => {
  const d = diffFiles(
    [f('index.html', 5, '11'), f('style.css', 3, '22'), f('z.js', 1, '33')],
    [f('index.html', 5, '12'), f('app.js', 4, '44'), f('a.js', 1, '55')],
  );
  assert.deepEqual(d, { added: ['a.js', 'app.js'], changed: ['index.html'], deleted: ['style.css', 'z.js'], unchanged: [] });
});

test('previousReady skips failed and generating versions', () => {
  const vs = [
    { n: 1, status: 'ready' },
    { n: 2, status: 'failed' },
    { n: 3, status: 'ready' },
    { n: 4, status: 'generating' },
    { n: 5, status: 'ready' },
  ];
  assert.equal(previousReady(vs, 5).n, 3);
  assert.equal(previousReady(vs, 3).n, 1);
  assert.equal(previousReady(vs, 1), null);
});
