// check.mjs - the checks of terraform/ that `make test` runs (tests/terraform/terraform.test.mjs),
// since Debian packages no terraform binary: each check returns the list of what is wrong (empty:
// fine). They read the .tf files through @cdktf/hcl2json (HashiCorp's HCL parser as WebAssembly),
// the AWS provider's schema from aws-schema.json (scripts/extract-aws-schema.mjs), the C source
// and the store contract binary (the table's definition).
//
//   node tests/terraform/check.mjs [TERRAFORM_DIR]   prints every failure, exits 1 if any
//
// docs/DEVELOPMENT.md, "Terraform checks", says what each check compares.
import { parse } from '@cdktf/hcl2json';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../..');
export const PERMISSIONS = JSON.parse(readFileSync(path.join(HERE, 'function-permissions.json'), 'utf8'));
const SCHEMA = JSON.parse(readFileSync(path.join(HERE, 'aws-schema.json'), 'utf8'));
const ENVIRONMENTS = ['dev', 'staging', 'prod'];
const MODULES = ['database', 'auth', 'storage', 'api', 'cron'];
const META_ARGS = new Set(['count', 'for_each', 'depends_on', 'lifecycle', 'provider', 'provisioner', 'connection']);
const MODULE_META = new Set(['source', 'version', 'providers', 'count', 'for_each', 'depends_on']);

// ---------------------------------------------------------------- loading

function tfFiles(dir, rel = '') {
  const out = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) {
      if (e.name !== '.terraform') out.push(...tfFiles(dir, r));
    } else if (e.name.endsWith('.tf') || e.name.endsWith('.tfvars.example')) out.push(r);
  }
  return out;
}

// Merges one file's top-level blocks into its directory's (a Terraform module is a directory).
function merge(into, json) {
  for (const [kind, v] of Object.entries(json)) {
    if (kind === 'resource' || kind === 'data') {
      into[kind] ??= {};
      for (const [type, names] of Object.entries(v)) Object.assign((into[kind][type] ??= {}), names);
    } else if (kind === 'locals') {
      into.locals ??= {};
      for (const l of v) Object.assign(into.locals, l);
    } else if (typeof v === 'object' && !Array.isArray(v)) {
      Object.assign((into[kind] ??= {}), v);
    } else {
      (into[kind] ??= []).push(...v);
    }
  }
}

// Every .tf (and tfvars example) parsed: { files: {rel: {text, json}}, dirs: {relDir: merged}, failures }.
export async function load(root) {
  const tree = { root, files: {}, dirs: {}, failures: [] };
  if (!existsSync(root)) {
    tree.failures.push(`${root} does not exist`);
    return tree;
  }
  for (const rel of tfFiles(root)) {
    const text = readFileSync(path.join(root, rel), 'utf8');
    try {
      const json = await parse(rel, text);
      tree.files[rel] = { text, json };
      if (rel.endsWith('.tf')) merge((tree.dirs[path.dirname(rel)] ??= {}), json);
    } catch (e) {
      tree.failures.push(`${rel} does not parse: ${String(e.message || e).split('\n')[0]}`);
    }
  }
  return tree;
}

// ---------------------------------------------------------------- helpers

const first = (v) => (Array.isArray(v) ? v[0] : v);
const sorted = (a) => [...a].sort();
const same = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

function* blocksOf(dir, kind) {
  for (const [type, names] of Object.entries(dir[kind] || {})) {
    for (const [name, bodies] of Object.entries(names)) yield { type, name, body: first(bodies) };
  }
}

// Every string in a parsed value, with where it is.
function* strings(v, where = '') {
  if (typeof v === 'string') yield [v, where];
  else if (Array.isArray(v)) for (let i = 0; i < v.length; i++) yield* strings(v[i], where);
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) yield* strings(x, where ? `${where}.${k}` : k);
}

// The inside of every ${...} of a string (nested templates included), braces balanced.
function interpolations(s) {
  const out = [];
  for (let i = s.indexOf('${'); i >= 0; i = s.indexOf('${', i + 2)) {
    let depth = 0;
    for (let j = i + 1; j < s.length; j++) {
      if (s[j] === '{') depth++;
      else if (s[j] === '}' && --depth === 0) {
        out.push(s.slice(i + 2, j));
        break;
      }
    }
  }
  return out;
}

function moduleDirOf(root, fromDir, source) {
  return path.relative(root, path.resolve(root, fromDir, source));
}

// ---------------------------------------------------------------- checks

// Every resource and data source type, argument and block exists in the AWS provider's schema;
// the required top-level arguments are there; the provider block's arguments exist.
export function checkSchema(tree) {
  const f = [];
  const walk = (body, schema, where) => {
    for (const [k, v] of Object.entries(body || {})) {
      if (k === 'dynamic') {
        for (const [name, dyns] of Object.entries(v)) {
          if (!schema.blocks[name]) f.push(`${where}: no block "${name}" (dynamic)`);
          else for (const d of dyns) for (const c of d.content || []) walk(c, schema.blocks[name], `${where}.${name}`);
        }
      } else if (schema.blocks[k]) {
        for (const b of Array.isArray(v) ? v : [v]) if (b && typeof b === 'object') walk(b, schema.blocks[k], `${where}.${k}`);
      } else if (!schema.args.includes(k) && !(where.split('.').length === 1 && META_ARGS.has(k))) {
        f.push(`${where}: "${k}" is not an argument of the AWS provider ${SCHEMA.provider_version}`);
      }
    }
  };
  for (const [dir, d] of Object.entries(tree.dirs)) {
    for (const kind of ['resource', 'data']) {
      for (const { type, name, body } of blocksOf(d, kind)) {
        const where = `${dir}: ${kind === 'data' ? 'data.' : ''}${type}.${name}`;
        const schema = SCHEMA[kind][type];
        if (!schema) {
          f.push(`${where}: ${kind} type ${type} is not in the AWS provider ${SCHEMA.provider_version} (or not in tests/terraform/aws-schema.json: scripts/extract-aws-schema.mjs)`);
          continue;
        }
        walk(body, schema, where.split(': ')[1].replace(/\./g, '_'));
        for (const r of schema.required) if (!(r in body)) f.push(`${where}: the required argument "${r}" is missing`);
      }
    }
    for (const p of d.provider?.aws || []) {
      for (const k of Object.keys(p)) {
        if (!SCHEMA.provider.args.includes(k) && !SCHEMA.provider.blocks[k]) f.push(`${dir}: provider "aws": no argument "${k}"`);
      }
    }
  }
  return f;
}

// Every var., local., module. (and its output), data. and resource reference resolves, to an
// attribute the resource type has.
export function checkReferences(tree) {
  const f = [];
  for (const [dir, d] of Object.entries(tree.dirs)) {
    const vars = new Set(Object.keys(d.variable || {}));
    const locals = new Set(Object.keys(d.locals || {}));
    const mods = d.module || {};
    const declared = (kind, type, name) => Boolean(d[kind]?.[type]?.[name]);
    for (const [s, where] of strings(d)) {
      for (const expr of interpolations(s)) {
        const at = `${dir}: ${where}`;
        for (const m of expr.matchAll(/(?<![\w.])var\.([A-Za-z_][\w-]*)/g)) if (!vars.has(m[1])) f.push(`${at}: var.${m[1]} is not declared`);
        for (const m of expr.matchAll(/(?<![\w.])local\.([A-Za-z_][\w-]*)/g)) if (!locals.has(m[1])) f.push(`${at}: local.${m[1]} is not defined`);
        for (const m of expr.matchAll(/(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?/g)) {
          if (!mods[m[1]]) {
            f.push(`${at}: module.${m[1]} is not declared`);
            continue;
          }
          const target = tree.dirs[moduleDirOf(tree.root, dir, first(mods[m[1]]).source)];
          if (m[2] && target && !(target.output || {})[m[2]]) f.push(`${at}: module.${m[1]} has no output "${m[2]}"`);
        }
        for (const m of expr.matchAll(/(?<![\w.])data\.(aws_\w+)\.(\w+)(?:\[[^\]]*\])?(?:\.(\w+))?/g)) {
          if (!declared('data', m[1], m[2])) f.push(`${at}: data.${m[1]}.${m[2]} is not declared`);
          else if (m[3] && SCHEMA.data[m[1]] && !SCHEMA.data[m[1]].attrs.includes(m[3])) f.push(`${at}: data.${m[1]} has no attribute "${m[3]}"`);
        }
        for (const m of expr.matchAll(/(?<![\w.])(aws_\w+)\.(\w+)(?:\[[^\]]*\])?(?:\.(\w+))?/g)) {
          if (!declared('resource', m[1], m[2])) f.push(`${at}: ${m[1]}.${m[2]} is not declared`);
          else if (m[3] && SCHEMA.resource[m[1]] && !SCHEMA.resource[m[1]].attrs.includes(m[3])) f.push(`${at}: ${m[1]} has no attribute "${m[3]}"`);
        }
      }
    }
    for (const [name, out] of Object.entries(d.output || {})) if (!('value' in first(out))) f.push(`${dir}: output ${name} has no value`);
  }
  return f;
}

// Every module call's source exists and each input is a declared variable of the module; every
// variable without a default is passed; the environments call the same modules with the same inputs.
export function checkModules(tree) {
  const f = [];
  const inputsByEnv = {};
  for (const [dir, d] of Object.entries(tree.dirs)) {
    for (const [name, calls] of Object.entries(d.module || {})) {
      const call = first(calls);
      const target = moduleDirOf(tree.root, dir, call.source || '');
      const mod = tree.dirs[target];
      if (!mod) {
        f.push(`${dir}: module.${name}: source ${call.source} is not a module of terraform/`);
        continue;
      }
      const declared = mod.variable || {};
      const inputs = Object.keys(call).filter((k) => !MODULE_META.has(k));
      for (const k of inputs) if (!declared[k]) f.push(`${dir}: module.${name}: "${k}" is not a variable of ${target}`);
      for (const [v, body] of Object.entries(declared)) {
        if (!('default' in first(body)) && !inputs.includes(v)) f.push(`${dir}: module.${name}: the required input "${v}" is not passed`);
      }
      if (dir.startsWith('environments/')) (inputsByEnv[dir] ??= {})[name] = sorted(inputs);
    }
  }
  const envs = ENVIRONMENTS.map((e) => `environments/${e}`);
  for (const e of envs) if (!tree.dirs[e]) f.push(`${e} is missing`);
  const ref = JSON.stringify(inputsByEnv[envs[0]] || {});
  for (const e of envs.slice(1)) {
    if (JSON.stringify(inputsByEnv[e] || {}) !== ref) f.push(`${e} does not pass the same module inputs as ${envs[0]}`);
  }
  for (const m of MODULES) if (!tree.dirs[`modules/${m}`]) f.push(`modules/${m} is missing`);
  for (const m of ['main.tf', 'lambdas.tf', 'routes.tf']) if (!tree.files[`modules/api/${m}`]) f.push(`modules/api/${m} is missing`);
  return f;
}

// The environments differ only in their variables: the same main.tf, variables.tf and outputs.tf;
// each tfvars example sets known variables, every required one, and its own environment; the
// state is in S3 with native locking.
export function checkEnvironments(tree) {
  const f = [];
  for (const file of ['main.tf', 'variables.tf', 'outputs.tf']) {
    const texts = ENVIRONMENTS.map((e) => tree.files[`environments/${e}/${file}`]?.text);
    if (texts.some((t) => t === undefined)) f.push(`environments/*/${file}: missing in some environment`);
    else if (new Set(texts).size !== 1) f.push(`environments/*/${file}: the environments differ (they may differ only in terraform.tfvars)`);
  }
  for (const e of ENVIRONMENTS) {
    const dir = tree.dirs[`environments/${e}`];
    const ex = tree.files[`environments/${e}/terraform.tfvars.example`];
    if (!dir || !ex) {
      f.push(`environments/${e}: main.tf or terraform.tfvars.example missing`);
      continue;
    }
    const vars = dir.variable || {};
    for (const k of Object.keys(ex.json)) if (!vars[k]) f.push(`environments/${e}/terraform.tfvars.example: "${k}" is not a variable`);
    for (const [v, body] of Object.entries(vars)) {
      if (!('default' in first(body)) && !(v in ex.json)) f.push(`environments/${e}/terraform.tfvars.example: the required "${v}" is not set`);
    }
    if (ex.json.environment !== e) f.push(`environments/${e}/terraform.tfvars.example: environment is not "${e}"`);
    const backend = first(first(dir.terraform)?.backend?.s3);
    if (!backend || backend.use_lockfile !== true) f.push(`environments/${e}: no backend "s3" with use_lockfile = true`);
  }
  if (!tree.files['backend.tf']) f.push('backend.tf is missing');
  return f;
}

// The table equals the code's one definition (kp_ddb_table_definition, printed by
// `store_contract dynamodb PREFIX tables`); point-in-time recovery is on.
export function checkTable(tree, storeContract) {
  const f = [];
  if (!existsSync(storeContract)) return [`${storeContract} is missing: make ${path.relative(REPO, storeContract)}`];
  const outText = execFileSync(storeContract, ['dynamodb', 'x_', 'tables'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
  const def = JSON.parse(outText.split('\n').find((l) => l.startsWith('{'))).definition;
  const t = first(tree.dirs['modules/database']?.resource?.aws_dynamodb_table?.main);
  if (!t) return ['modules/database: no aws_dynamodb_table.main'];
  const want = (what, a, b) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) f.push(`modules/database: the table's ${what} is ${JSON.stringify(b)}; the code's is ${JSON.stringify(a)}`);
  };
  want('name', def.TableName.replace(/^x_/, '${var.table_prefix}'), t.name);
  const mode = { PAY_PER_REQUEST: 'PAY_PER_REQUEST', PROVISIONED: 'PROVISIONED' }[def.BillingMode];
  want('billing_mode', mode, t.billing_mode);
  const key = (ks, type) => ks.find((k) => k.KeyType === type)?.AttributeName;
  want('hash_key', key(def.KeySchema, 'HASH'), t.hash_key);
  want('range_key', key(def.KeySchema, 'RANGE'), t.range_key);
  const attrs = (list) => sorted(list.map((a) => `${a.name ?? a.AttributeName}:${a.type ?? a.AttributeType}`));
  want('attributes', attrs(def.AttributeDefinitions), attrs(t.attribute || []));
  const gsi = (g) => JSON.stringify({
    name: g.IndexName ?? g.name,
    hash: g.KeySchema ? key(g.KeySchema, 'HASH') : g.hash_key,
    range: g.KeySchema ? key(g.KeySchema, 'RANGE') : g.range_key,
    projection: g.Projection ? g.Projection.ProjectionType : g.projection_type,
    nonkey: sorted((g.Projection ? g.Projection.NonKeyAttributes : g.non_key_attributes) || []),
  });
  want('global secondary indexes', sorted((def.GlobalSecondaryIndexes || []).map(gsi)), sorted((t.global_secondary_index || []).map(gsi)));
  want('local secondary indexes', (def.LocalSecondaryIndexes || []).length, (t.local_secondary_index || []).length);
  if (first(t.point_in_time_recovery)?.enabled !== true) f.push('modules/database: point-in-time recovery is not enabled');
  return f;
}

// The plan items equal the code's seed: seed_plans() in ddb_tables.c (as kp_plan initialisers),
// SQLite's migration 1, and kp_ddb_plan_item()'s attributes and types.
export function checkSeed(tree, src = path.join(REPO, 'src')) {
  const f = [];
  const db = tree.dirs['modules/database'];
  const plans = db?.locals?.base_plans;
  const item = first(db?.resource?.aws_dynamodb_table_item?.plan);
  if (!plans || !item) return ['modules/database: no local.base_plans or aws_dynamodb_table_item.plan'];
  const fields = ['id', 'name', 'price_cents', 'currency', 'monthly_credits', 'daily_bonus', 'max_concurrent_generations'];
  const row = (vals) => Object.fromEntries(fields.map((k, i) => [k, /^-?\d+$/.test(vals[i]) ? Number(vals[i]) : vals[i]]));
  const tables = readFileSync(path.join(src, 'store/dynamodb/ddb_tables.c'), 'utf8');
  const seedBody = tables.slice(tables.indexOf('base[] = {'), tables.indexOf('};', tables.indexOf('base[] = {')));
  const fromC = [...seedBody.matchAll(/\{([^{}]+)\}/g)].map((m) => row(m[1].split(',').map((x) => x.trim().replace(/^"|"$/g, ''))));
  const mig = readFileSync(path.join(src, 'store/sqlite/migrations.c'), 'utf8');
  const ins = mig.slice(mig.indexOf('INSERT INTO plans'), mig.indexOf(';"', mig.indexOf('INSERT INTO plans')));
  const fromSql = [...ins.matchAll(/\('([^']*)', '([^']*)', (\d+), '([^']*)', (\d+), (\d+), (\d+),/g)].map((m) => row(m.slice(1)));
  const fromTf = Object.entries(plans).map(([id, p]) => ({ id, ...Object.fromEntries(fields.slice(1).map((k) => [k, p[k]])) }));
  const key = (a) => JSON.stringify(sorted(a.map((p) => JSON.stringify(p))));
  if (fromC.length !== 3) f.push(`src/store/dynamodb/ddb_tables.c: ${fromC.length} seed plans read, 3 expected`);
  if (key(fromC) !== key(fromTf)) f.push(`modules/database: the plans ${JSON.stringify(fromTf)} differ from seed_plans() ${JSON.stringify(fromC)}`);
  if (key(fromSql) !== key(fromTf)) f.push(`modules/database: the plans differ from SQLite's migration 1 ${JSON.stringify(fromSql)}`);
  // the item's attributes and their types, as kp_ddb_plan_item() writes them
  const items = readFileSync(path.join(src, 'store/dynamodb/ddb_items.c'), 'utf8');
  const fn = items.slice(items.indexOf('json_t *kp_ddb_plan_item('), items.indexOf('\n}', items.indexOf('json_t *kp_ddb_plan_item(')));
  const type = { s: 'S', n: 'N', bool: 'BOOL' };
  const codeAttrs = [...fn.matchAll(/"(\w+)",\s*kp_ddb_(s|n|bool)\(/g)].map((m) => `${m[1]}:${type[m[2]]}`);
  const tfAttrs = [...String(item.item).matchAll(/(\w+)\s*=\s*\{\s*(S|N|BOOL)\s*=/g)].map((m) => `${m[1]}:${m[2]}`);
  if (!codeAttrs.length || !same(codeAttrs, tfAttrs)) f.push(`modules/database: the plan item's attributes ${tfAttrs} are not kp_ddb_plan_item()'s ${codeAttrs}`);
  if (!/PK\s*=\s*\{\s*S\s*=\s*"PLAN"\s*\}/.test(item.item) || !/SK\s*=\s*\{\s*S\s*=\s*"PLAN#\$\{each\.key\}"\s*\}/.test(item.item)) {
    f.push('modules/database: the plan item\'s keys are not PK "PLAN", SK "PLAN#{id}" (KP_DDB_PLANS)');
  }
  return f;
}

// The AWS actions the C code calls: DynamoDB operations, S3 requests, Secrets Manager targets,
// Lambda Invoke.
export function codeActions(src = path.join(REPO, 'src')) {
  const found = new Map(); // action -> first place
  const add = (a, where) => { if (!found.has(a)) found.set(a, where); };
  const s3map = PERMISSIONS.s3_operations;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) { walk(p); continue; }
      if (!/\.[ch]$/.test(e.name)) continue;
      const text = readFileSync(p, 'utf8');
      const rel = path.relative(REPO, p);
      for (const m of text.matchAll(/kp_ddb_call\(\s*[^,()]+,\s*"(\w+)"/g)) add(`dynamodb:${m[1]}`, rel);
      for (const m of text.matchAll(/"secretsmanager\.(\w+)"/g)) add(`secretsmanager:${m[1]}`, rel);
      if (/2015-03-31\/functions\/[^"]*\/invocations/.test(text)) add('lambda:InvokeFunction', rel);
      const op = text.indexOf('static const char *operation(const s3_call');
      if (op >= 0) {
        const body = text.slice(op, text.indexOf('\n}', op));
        for (const m of body.matchAll(/"([A-Z][a-z]\w+)"/g)) add(s3map[m[1]] || `s3:?${m[1]}`, rel);
      }
    }
  };
  walk(src);
  return found;
}

function mappedActions(p) {
  return [...p.dynamodb, ...p.s3_bucket, ...p.s3_objects, ...(p.secrets.length ? ['secretsmanager:GetSecretValue'] : []),
    ...(p.invoke_self ? ['lambda:InvokeFunction'] : [])];
}

// Each function's IAM actions are what its code calls: function-permissions.json against the
// calls in src/, and lambdas.tf's local.permissions (whence the policies come) against the JSON.
export function checkIam(tree, src = path.join(REPO, 'src')) {
  const f = [];
  const code = codeActions(src);
  const fns = PERMISSIONS.functions;
  const union = new Set(Object.values(fns).flatMap(mappedActions));
  for (const [a, where] of code) {
    if (a.startsWith('s3:?')) f.push(`${where}: S3 operation ${a.slice(4)} has no IAM action in function-permissions.json s3_operations`);
    else if (PERMISSIONS.not_deployed[a]) continue;
    else if (!union.has(a)) f.push(`${where} calls ${a}, which no function is allowed`);
  }
  for (const a of union) {
    if (!code.has(a) && !PERMISSIONS.pending[a]) f.push(`a function is allowed ${a}, which src/ never calls`);
    if (code.has(a) && PERMISSIONS.pending[a]) f.push(`${a} is in src/ now: remove it from function-permissions.json "pending"`);
  }
  for (const a of Object.keys(PERMISSIONS.not_deployed)) if (!code.has(a)) f.push(`not_deployed ${a}: src/ no longer calls it`);
  const api = tree.dirs['modules/api'];
  const perms = api?.locals?.permissions;
  const functions = api?.locals?.functions;
  if (!perms || !functions) return [...f, 'modules/api: no local.permissions or local.functions'];
  if (!same(Object.keys(perms), Object.keys(fns)) || !same(Object.keys(functions), Object.keys(fns))) {
    f.push(`modules/api: the functions ${Object.keys(functions)} / permissions ${Object.keys(perms)} are not ${Object.keys(fns)}`);
  }
  for (const [name, p] of Object.entries(fns)) {
    const t = perms[name];
    if (!t) continue;
    for (const k of ['dynamodb', 's3_bucket', 's3_objects', 'secrets']) {
      if (!same(t[k] || [], p[k])) f.push(`modules/api: ${name}'s ${k} ${JSON.stringify(t[k])} are not what its code calls ${JSON.stringify(p[k])}`);
    }
    if (t.invoke_self !== p.invoke_self) f.push(`modules/api: ${name}'s invoke_self is ${t.invoke_self}, its code's ${p.invoke_self}`);
  }
  // the policy is built from local.permissions and grants nothing else
  const doc = first(api.data?.aws_iam_policy_document?.fn);
  const platform = new Set(['logs:CreateLogStream', 'logs:PutLogEvents']);
  const fromPerm = /^\$\{local\.permissions\[each\.key\]\.(dynamodb|s3_bucket|s3_objects)\}$/;
  const gated = { 'secretsmanager:GetSecretValue': 'secrets', 'lambda:InvokeFunction': 'invoke_self' };
  const statements = [...(doc?.statement || []).map((s) => [s, null]), ...(doc?.dynamic?.statement || []).flatMap((d) => (d.content || []).map((c) => [c, d.for_each]))];
  if (!statements.length) f.push('modules/api: no data.aws_iam_policy_document.fn');
  for (const [s, gate] of statements) {
    if (typeof s.actions === 'string') {
      if (!fromPerm.test(s.actions)) f.push(`modules/api: a policy statement's actions ${s.actions} do not come from local.permissions`);
      continue;
    }
    for (const a of s.actions || []) {
      if (platform.has(a)) continue;
      if (!gated[a]) f.push(`modules/api: the policy grants ${a} outside local.permissions`);
      else if (!String(gate).includes(`local.permissions[each.key].${gated[a]}`)) f.push(`modules/api: ${a} is granted without local.permissions[each.key].${gated[a]}`);
    }
  }
  for (const { type, name } of blocksOf(api, 'resource')) {
    if (/^aws_iam_(policy|role_policy_attachment|user_policy|group_policy)$/.test(type)) f.push(`modules/api: ${type}.${name}: the functions' permissions are their inline policy only`);
  }
  return f;
}

// routes.tf covers routes.c exactly (less not_routed), with the authorizer exactly on the routes
// that need a user, each to the function the Lambda host's own table gives it (`bootstrap routes
// --json`, src/host/lambda/functions.c): a route sent to another function would answer 404 there.
export function checkRoutes(tree, src = path.join(REPO, 'src'), bootstrap = undefined) {
  const f = [];
  const text = readFileSync(path.join(src, 'api/routes.c'), 'utf8');
  const code = new Map([...text.matchAll(/\{"([A-Z]+)", "([^"]+)", \w+, (KP_AUTH_\w+)(?:, \d+)?\}/g)].map((m) => [`${m[1]} ${m[2]}`, m[3]]));
  const routes = tree.dirs['modules/api']?.locals?.routes;
  const fns = Object.keys(PERMISSIONS.functions);
  if (!routes) return ['modules/api: no local.routes'];
  for (const r of Object.keys(PERMISSIONS.not_routed)) if (!code.has(r)) f.push(`not_routed ${r} is not a route of src/api/routes.c`);
  for (const [r, auth] of code) {
    if (PERMISSIONS.not_routed[r]) {
      if (routes[r]) f.push(`routes.tf routes ${r}, which is not routed on AWS`);
      continue;
    }
    if (!routes[r]) {
      f.push(`routes.tf: ${r} (src/api/routes.c) has no function`);
      continue;
    }
    if (routes[r].auth !== (auth !== 'KP_AUTH_NONE')) f.push(`routes.tf: ${r} has auth = ${routes[r].auth}, routes.c ${auth}`);
  }
  for (const [r, v] of Object.entries(routes)) {
    if (!code.has(r)) f.push(`routes.tf: ${r} is not a route of src/api/routes.c`);
    if (!fns.includes(v.function)) f.push(`routes.tf: ${r} goes to ${v.function}, not one of the functions`);
  }
  if (bootstrap) {
    const host = new Map(JSON.parse(execFileSync(bootstrap, ['routes', '--json'], { encoding: 'utf8' }))
      .map((e) => [e.route_key, e.function]));
    for (const [r, fn] of host) {
      if (!routes[r]) f.push(`routes.tf: ${r} (served by ${fn} in the Lambda host) is not routed`);
      else if (routes[r].function !== fn) f.push(`routes.tf: ${r} goes to ${routes[r].function}, the Lambda host serves it in ${fn}`);
    }
    for (const r of Object.keys(routes)) if (!host.has(r)) f.push(`routes.tf: ${r} is routed, but no function of the Lambda host serves it`);
  }
  return f;
}

// The CloudFront response headers policies send what the apps origin sends: apps["shared"] =
// kp_apps_default_headers (one shared origin), apps["own_origin"] = kp_apps_own_origin_headers
// (each app on its own origin: allow-same-origin), both in src/api/apps_origin.c; the policy's
// CSP is each.value of local.apps_csp.
export function checkAppsHeaders(tree, src = path.join(REPO, 'src')) {
  const f = [];
  const h = readFileSync(path.join(src, 'api/apps_origin.h'), 'utf8');
  const c = readFileSync(path.join(src, 'api/apps_origin.c'), 'utf8');
  // #define NAME "text" or NAME "text" ... (a concatenation of macros and literals)
  const macros = {};
  for (const m of h.matchAll(/#define (KP_\w+) ((?:(?:KP_\w+|"[^"]*")[ \t]*)+)$/gm)) {
    macros[m[1]] = [...m[2].matchAll(/"([^"]*)"|\b(KP_\w+)\b/g)].map((t) => t[1] ?? macros[t[2]] ?? '').join('');
  }
  const headersOf = (array) => {
    const start = c.indexOf(`${array}[] = {`);
    if (start < 0) return [];
    const arr = c.slice(start, c.indexOf('NULL}', start));
    return [...arr.slice(arr.indexOf('{')).matchAll(/"([^"]*)"|\b(KP_\w+)\b/g)].map((m) => m[1] ?? macros[m[2]]);
  };
  const storage = tree.dirs['modules/storage'];
  const policy = first(storage?.resource?.aws_cloudfront_response_headers_policy?.apps);
  if (!policy) return ['modules/storage: no aws_cloudfront_response_headers_policy.apps'];
  if (policy.for_each !== '${local.apps_csp}') f.push('modules/storage: aws_cloudfront_response_headers_policy.apps is not for_each = local.apps_csp');
  for (const [array, name] of [['kp_apps_default_headers', 'shared'], ['kp_apps_own_origin_headers', 'own_origin']]) {
    const items = headersOf(array);
    const sec = first(policy.security_headers_config) || {};
    const custom = (first(policy.custom_headers_config)?.items || []).map((i) => [i.header, i.value]);
    if (items.length < 2) f.push(`src/api/apps_origin.c: ${array} not found`);
    for (let i = 0; i + 1 < items.length; i += 2) {
      const [hname, value] = [items[i], items[i + 1]];
      let got;
      if (hname === 'Content-Security-Policy') {
        got = first(sec.content_security_policy)?.content_security_policy;
        if (got === '${each.value}') got = storage.locals?.apps_csp?.[name];
      }
      else if (hname === 'X-Content-Type-Options') got = sec.content_type_options ? 'nosniff' : undefined;
      else if (hname === 'Referrer-Policy') got = first(sec.referrer_policy)?.referrer_policy;
      else got = custom.find(([n]) => n.toLowerCase() === hname.toLowerCase())?.[1];
      if (got !== value) f.push(`modules/storage: CloudFront (apps["${name}"]) sends ${hname}: ${got}; the apps origin (${array}) sends ${value}`);
    }
    for (const k of ['content_security_policy', 'content_type_options', 'referrer_policy']) {
      if (sec[k] && first(sec[k]).override !== true) f.push(`modules/storage: ${name}: ${k} does not override the origin's`);
    }
  }
  return f;
}

// No secret value in any .tf or tfvars example, and no resource that would put one in the state.
export function checkNoSecrets(tree) {
  const f = [];
  const patterns = [
    [/\b[sr]k_(live|test)_[0-9A-Za-z]{8,}/, 'a Stripe key'],
    [/\bwhsec_[0-9A-Za-z]{8,}/, 'a Stripe webhook secret'],
    [/\bsk-ant-[0-9A-Za-z_-]{8,}/, 'an Anthropic key'],
    [/\b(AKIA|ASIA)[0-9A-Z]{16}\b/, 'an AWS access key id'],
    [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'a private key'],
  ];
  const base64 = /[A-Za-z0-9+/_-]{40,}={0,2}/g;
  for (const [rel, { text, json }] of Object.entries(tree.files)) {
    for (const [re, what] of patterns) if (re.test(text)) f.push(`${rel}: ${what}`);
    for (const [s, where] of strings(json)) {
      const bare = s.replace(/\$\{[^}]*\}/g, ' ');
      for (const m of bare.matchAll(base64)) {
        if (/[A-Z]/.test(m[0]) && /[a-z]/.test(m[0]) && /[0-9]/.test(m[0])) f.push(`${rel}: ${where}: a long base64 string, a secret?`);
      }
    }
    for (const type of ['aws_secretsmanager_secret_version', 'aws_ssm_parameter']) {
      if (json.resource?.[type]) f.push(`${rel}: ${type} puts a value into the state; set secrets with put-secret-value`);
    }
    for (const [, where] of strings(json)) if (/(^|\.)secret_string$|(^|\.)secret_binary$/.test(where)) f.push(`${rel}: ${where}`);
    for (const k of Object.keys(json.resource?.aws_secretsmanager_secret || {})) {
      const body = first(json.resource.aws_secretsmanager_secret[k]);
      for (const [s, where] of strings(body)) if (where !== 'name' && where !== 'description' && where !== 'tags' && !where.startsWith('tags.') && !s.startsWith('${')) {
        if (where !== 'kms_key_id') f.push(`${rel}: aws_secretsmanager_secret.${k}.${where} holds a literal`);
      }
    }
  }
  return f;
}

// Every check on one tree: { name: [failures] }.
export async function checkAll(root, { storeContract, bootstrap, src } = {}) {
  const tree = await load(root);
  return {
    parse: tree.failures,
    schema: checkSchema(tree),
    references: checkReferences(tree),
    modules: checkModules(tree),
    environments: checkEnvironments(tree),
    table: checkTable(tree, storeContract),
    seed: checkSeed(tree, src),
    iam: checkIam(tree, src),
    routes: checkRoutes(tree, src, bootstrap),
    apps_headers: checkAppsHeaders(tree, src),
    secrets: checkNoSecrets(tree),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = path.resolve(process.argv[2] || path.join(REPO, 'terraform'));
  const build = process.env.KOUMPA_BUILD || path.join(REPO, 'build');
  const results = await checkAll(root, {
    storeContract: path.resolve(build, 'tests/store_contract'),
    bootstrap: path.resolve(build, 'bootstrap'),
  });
  let n = 0;
  for (const [name, failures] of Object.entries(results)) {
    for (const x of failures) console.log(`${name}: ${x}`);
    n += failures.length;
    if (!failures.length) console.log(`${name}: ok`);
  }
  process.exit(n ? 1 : 0);
}
