#!/usr/bin/env node
// extract-aws-schema.mjs - writes the part of the AWS provider's schema that terraform/ uses
// (tests/terraform/aws-schema.json), read from @cdktf/provider-aws's generated lib/*/index.js.
//
// `make test` checks every resource, data source and argument in terraform/ against that JSON
// (tests/terraform/check.mjs), without the provider package (400 MB) and without a terraform
// binary (Debian has none). Each generated lib/NAME/index.js holds one resource's (or data source's)
// class: `Class.tfResourceType = "aws_..."`, a comment per argument and attribute
// ("// name - computed: X, optional: Y, required: Z") and synthesizeAttributes(), whose keys are the
// arguments and blocks; a block's keys come from its `xxxToTerraform(struct)` converter.
//
// Run it again after changing terraform/ (a new resource type) or to move to a newer provider:
//   (cd "$(mktemp -d)" && npm init -y >/dev/null && npm install @cdktf/provider-aws@21.22.1 && pwd)
//   node scripts/extract-aws-schema.mjs --provider-dir /that/dir/node_modules/@cdktf/provider-aws
// Options: --all writes every type (about 1,500 resources; large), --out FILE (default
// tests/terraform/aws-schema.json), --tf DIR (default terraform/) the tree whose types are kept.
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const o = { all: false, out: path.join(ROOT, 'tests/terraform/aws-schema.json'), tf: path.join(ROOT, 'terraform') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--all') o.all = true;
    else if (argv[i] === '--provider-dir') o.providerDir = argv[++i];
    else if (argv[i] === '--out') o.out = argv[++i];
    else if (argv[i] === '--tf') o.tf = argv[++i];
    else throw new Error(`unknown option ${argv[i]}`);
  }
  if (!o.providerDir) throw new Error('--provider-dir DIR (node_modules/@cdktf/provider-aws) is required');
  return o;
}

// The body of `{ ... }` starting at text[open] (a '{'), braces balanced.
function braceBody(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error('unbalanced braces');
}

// The keys of a `return { key: expr, ... }` body, and for each the converter function it calls, if any.
function returnedKeys(body) {
  const keys = {};
  for (const m of body.matchAll(/^\s*([a-z0-9_]+): (.*),$/gm)) {
    const own = m[2].match(/(?<!cdktf\.)\b([a-z][A-Za-z0-9_]*ToTerraform)\b/);
    keys[m[1]] = own ? own[1] : null;
  }
  return keys;
}

// A block's schema from its converter: { args: [...], blocks: {name: schema} }.
function blockSchema(text, fn, depth) {
  const at = text.indexOf(`function ${fn}(struct) {`);
  if (at < 0 || depth > 8) return { args: [], blocks: {} };
  const body = braceBody(text, text.indexOf('{', at));
  const ret = body.slice(body.lastIndexOf('return {'));
  return shape(text, returnedKeys(braceBody(ret, ret.indexOf('{'))), depth + 1);
}

function shape(text, keys, depth) {
  const s = { args: [], blocks: {} };
  for (const [k, conv] of Object.entries(keys)) {
    if (conv) s.blocks[k] = blockSchema(text, conv, depth);
    else s.args.push(k);
  }
  s.args.sort();
  return s;
}

// The top-level arguments the Config interface of index.d.ts declares without '?' (required).
function requiredArgs(dts, cls) {
  if (!existsSync(dts)) return [];
  const text = readFileSync(dts, 'utf8');
  const at = text.indexOf(`export interface ${cls}Config `);
  if (at < 0) return [];
  const body = braceBody(text, text.indexOf('{', at));
  const req = [];
  for (const m of body.matchAll(/#([a-z0-9_]+) [A-Za-z0-9]+#[a-z0-9_]+\}[\s\S]*?\*\/\s*readonly (\w+)(\??):/g)) {
    if (!m[3]) req.push(m[1]);
  }
  return req.sort();
}

// One generated file: [{kind, type, schema}] for its main class (resource, data source or provider).
function extractFile(file) {
  const text = readFileSync(file, 'utf8');
  const m = text.match(/^(\w+)\.tfResourceType = "([a-z0-9_]+)";$/m);
  if (!m) return null;
  const cls = m[1];
  const start = text.search(new RegExp(`^class ${cls} extends cdktf\\.Terraform(Resource|DataSource|Provider) \\{`, 'm'));
  if (start < 0) return null;
  const kind = text.slice(start).match(/extends cdktf\.Terraform(\w+)/)[1];
  const classText = text.slice(start, text.indexOf(m[0]));
  const synth = classText.indexOf('synthesizeAttributes() {');
  const ret = braceBody(classText, classText.indexOf('{', synth));
  const schema = shape(text, returnedKeys(braceBody(ret, ret.indexOf('{'))), 0);
  // every attribute an expression can read: the getters' attribute names and output references
  const attrs = new Set([...schema.args, ...Object.keys(schema.blocks)]);
  for (const a of classText.matchAll(/Attribute\('([a-z0-9_]+)'\)|\(this, "([a-z0-9_]+)"/g)) attrs.add(a[1] || a[2]);
  schema.attrs = [...attrs].sort();
  schema.required = requiredArgs(file.replace(/\.js$/, '.d.ts'), cls);
  return { kind, type: m[2], schema };
}

// The resource and data source types terraform/ names (resource "T" / data "T").
function usedTypes(dir) {
  const used = { resource: new Set(), data: new Set() };
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.tf')) {
        for (const m of readFileSync(p, 'utf8').matchAll(/^\s*(resource|data)\s+"([a-z0-9_]+)"/gm)) used[m[1]].add(m[2]);
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return used;
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const pkg = JSON.parse(readFileSync(path.join(o.providerDir, 'package.json'), 'utf8'));
  const lib = path.join(o.providerDir, 'lib');
  const used = usedTypes(o.tf);
  const out = { source: `@cdktf/provider-aws ${pkg.version}`, provider_version: null, provider: null, resource: {}, data: {} };
  for (const name of readdirSync(lib).sort()) {
    const file = path.join(lib, name, 'index.js');
    if (!existsSync(file)) continue;
    const r = extractFile(file);
    if (!r) continue;
    if (r.kind === 'Provider') {
      out.provider = r.schema;
      continue;
    }
    const kind = r.kind === 'DataSource' ? 'data' : 'resource';
    if (o.all || used[kind].has(r.type)) out[kind][r.type] = r.schema;
    if (!out.provider_version) {
      const v = readFileSync(file, 'utf8').match(/providerVersion: '([0-9.]+)'/);
      if (v) out.provider_version = v[1];
    }
  }
  for (const kind of ['resource', 'data']) {
    for (const t of used[kind]) if (!out[kind][t]) console.error(`extract-aws-schema: ${kind} type ${t} is not in the provider`);
  }
  writeFileSync(o.out, JSON.stringify(out) + '\n');
  console.log(`extract-aws-schema: ${Object.keys(out.resource).length} resource and ${Object.keys(out.data).length} data source types from ${out.source} (AWS provider ${out.provider_version}) -> ${path.relative(ROOT, o.out)}`);
}

main();
