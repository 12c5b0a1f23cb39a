// Compares the route table in src/api/routes.c with the paths and methods of
// docs/api/openapi.yaml, so the API reference cannot drift from the server.
import { readFileSync } from 'node:fs';

const routes = readFileSync('src/api/routes.c', 'utf8');
const spec = readFileSync('docs/api/openapi.yaml', 'utf8');

const inCode = new Set();
for (const m of routes.matchAll(/\{"(GET|POST|PUT|DELETE|PATCH)", "([^"]+)"/g)) {
  inCode.add(`${m[1]} ${m[2]}`);
}

const inSpec = new Set();
let current = null;
const lines = spec.split('\n');
let inPaths = false;
for (const line of lines) {
  if (/^paths:\s*$/.test(line)) { inPaths = true; continue; }
  if (inPaths && /^\S/.test(line)) inPaths = false;
  if (!inPaths) continue;
  const p = line.match(/^  (\/[^:]*):\s*$/);
  if (p) { current = p[1]; continue; }
  const m = line.match(/^    (get|post|put|delete|patch):\s*$/);
  if (m && current) inSpec.add(`${m[1].toUpperCase()} ${current}`);
}

const missing = [...inCode].filter((r) => !inSpec.has(r));
const extra = [...inSpec].filter((r) => !inCode.has(r));
if (missing.length || extra.length) {
  if (missing.length) console.error(`routes not documented in openapi.yaml: ${missing.join(', ')}`);
  if (extra.length) console.error(`documented routes the server does not have: ${extra.join(', ')}`);
  process.exit(1);
}
console.log(`openapi.yaml documents all ${inCode.size} routes`);
