// What changed between two versions of an app, from their manifests (Version.files:
// [{path, size, content_type, sha256?}]). A file is "changed" when both sides have a sha256 and
// they differ, or, when either lacks one (versions made before manifests carried it), when the
// sizes differ. No DOM here (tests/web/diff.test.mjs runs it under node).

/**
 * diffFiles(previous, current) -> { added, changed, deleted, unchanged }: arrays of paths, sorted.
 * previous may be null or empty (the first version: everything is added).
 */
export function diffFiles(previous, current) {
  const before = new Map((previous || []).map((f) => [f.path, f]));
  const after = new Map((current || []).map((f) => [f.path, f]));
  const out = { added: [], changed: [], deleted: [], unchanged: [] };
  for (const [path, f] of after) {
    const old = before.get(path);
    if (!old) out.added.push(path);
    else if (differs(old, f)) out.changed.push(path);
    else out.unchanged.push(path);
  }
  for (const path of before.keys()) if (!after.has(path)) out.deleted.push(path);
  for (const k of Object.keys(out)) out[k].sort();
  return out;
}

function differs(a, b) {
  if (a.sha256 && b.sha256) return a.sha256.toLowerCase() !== b.sha256.toLowerCase();
  return a.size !== b.size;
}

/** The ready version before version n (failed ones are skipped), or null. */
export function previousReady(versions, n) {
  let prev = null;
  for (const v of versions || []) if (v.n < n && v.status === 'ready' && (!prev || v.n > prev.n)) prev = v;
  return prev;
}
