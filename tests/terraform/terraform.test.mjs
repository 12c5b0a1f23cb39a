// terraform.test.mjs - terraform/ passes every check of check.mjs, and each check fails on a copy
// of terraform/ broken in the way it is there to catch (so none of them passes by saying nothing).
// Needs KOUMPA_BUILD/tests/store_contract (the table's definition) and KOUMPA_BUILD/bootstrap (the
// Lambda host's route table): `make test` builds them.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import { execFileSync } from 'node:child_process';
import * as check from './check.mjs';

const TF = path.join(check.REPO, 'terraform');
const STORE_CONTRACT = path.resolve(check.REPO, process.env.KOUMPA_BUILD || 'build', 'tests/store_contract');
const BOOTSTRAP = path.resolve(check.REPO, process.env.KOUMPA_BUILD || 'build', 'bootstrap');

describe('terraform/ passes every check', async () => {
  let results;
  before(async () => { results = await check.checkAll(TF, { storeContract: STORE_CONTRACT, bootstrap: BOOTSTRAP }); });
  for (const name of ['parse', 'schema', 'references', 'modules', 'environments', 'table', 'seed', 'iam', 'routes', 'apps_headers', 'secrets']) {
    test(name, () => assert.deepEqual(results[name], []));
  }
});

test('the tree has what the issue asks: 5 modules x 3 environments, api split in three, 6 functions, 19 routes', async () => {
  const tree = await check.load(TF);
  for (const m of ['database', 'auth', 'storage', 'api', 'cron']) assert.ok(tree.dirs[`modules/${m}`], m);
  for (const e of ['dev', 'staging', 'prod']) {
    for (const f of ['main.tf', 'variables.tf', 'outputs.tf', 'terraform.tfvars.example']) assert.ok(tree.files[`environments/${e}/${f}`], `${e}/${f}`);
  }
  const api = tree.dirs['modules/api'];
  assert.deepEqual(Object.keys(api.locals.functions).sort(),
    ['admin-update-plan', 'daily-bonus', 'generate-app', 'get-user', 'list-projects', 'stripe-webhook']);
  assert.equal(Object.keys(api.locals.routes).length, 19);
  const fn = api.resource.aws_lambda_function.fn[0];
  assert.equal(fn.runtime, 'provided.al2023');
  assert.equal(fn.handler, '${each.key}');
  const url = api.resource.aws_lambda_function_url.generate_app[0];
  assert.deepEqual([url.invoke_mode, url.authorization_type], ['RESPONSE_STREAM', 'NONE']);
  const rule = tree.dirs['modules/cron'].resource.aws_cloudwatch_event_rule.daily_bonus[0];
  assert.equal(rule.schedule_expression, 'cron(0 0 * * ? *)');
  const client = tree.dirs['modules/auth'].resource.aws_cognito_user_pool_client.web[0];
  assert.deepEqual([client.generate_secret, client.allowed_oauth_flows], [false, ['code']]);
  assert.equal(tree.dirs['modules/api'].resource.aws_cloudwatch_metric_alarm.api_5xx[0].metric_name, '5xx');
  const alarm = api.resource.aws_cloudwatch_metric_alarm.fn[0];
  assert.match(alarm.for_each, /setproduct\(keys\(local\.functions\), \["Errors", "Throttles"\]\)/);
  assert.equal(alarm.namespace, 'AWS/Lambda');
  // the real variables stay out of git
  for (const e of ['dev', 'staging', 'prod']) {
    execFileSync('git', ['check-ignore', '-q', `terraform/environments/${e}/terraform.tfvars`], { cwd: check.REPO });
  }
});

test('the code\'s AWS calls are found: 9 DynamoDB operations, 4 S3 actions, GetSecretValue', () => {
  const found = [...check.codeActions().keys()].sort();
  assert.deepEqual(found.filter((a) => a.startsWith('dynamodb:')), ['dynamodb:BatchGetItem', 'dynamodb:CreateTable',
    'dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:Scan',
    'dynamodb:TransactWriteItems', 'dynamodb:UpdateItem']);
  assert.deepEqual(found.filter((a) => a.startsWith('s3:')), ['s3:DeleteObject', 's3:GetObject', 's3:ListBucket', 's3:PutObject']);
  assert.ok(found.includes('secretsmanager:GetSecretValue'));
});

test('the apps origin\'s CloudFront Function maps the API\'s version URLs to the S3 keys', () => {
  const code = readFileSync(path.join(TF, 'modules/storage/apps-path.js'), 'utf8');
  const handler = vm.runInNewContext(`${code}; handler`);
  const uri = (u) => handler({ request: { uri: u } });
  assert.equal(uri('/prj_abc123/@v12/index.html').uri, '/prj_abc123/v12/index.html');
  assert.equal(uri('/prj_abc123/@v1/').uri, '/prj_abc123/v1/index.html');
  assert.equal(uri('/prj_abc123/@v3/assets/app.js').uri, '/prj_abc123/v3/assets/app.js');
  assert.equal(uri('/prj_abc123/@v3/docs/').uri, '/prj_abc123/v3/docs/index.html');
  assert.deepEqual([uri('/prj_abc123/@v3').statusCode, uri('/prj_abc123/@v3').headers.location.value], [301, '/prj_abc123/@v3/']);
  for (const bad of ['/prj_abc123/', '/prj_abc123/index.html', '/prj_ABC/@v1/', '/prj_abc/@v0/', '/other/@v1/', '/']) {
    assert.equal(uri(bad).statusCode, 404, bad);
  }
});

// A CloudFront Functions viewer-request event (the fields the functions read).
const viewerRequest = (host, uri) => ({
  version: '1.0',
  context: { eventType: 'viewer-request' },
  viewer: { ip: '192.0.2.1' },
  request: { method: 'GET', uri, querystring: {}, headers: host === undefined ? {} : { host: { value: host } }, cookies: {} },
});

test('each app on its own origin: apps-host.js maps prj-{id}.DOMAIN/@v{n}/{path} to the S3 keys', () => {
  const code = readFileSync(path.join(TF, 'modules/storage/apps-host.js'), 'utf8');
  const handler = vm.runInNewContext(`${code}; handler`);
  const at = (host, u) => handler(viewerRequest(host, u));
  const h = 'prj-abc123.apps.example.com';
  assert.equal(at(h, '/@v12/index.html').uri, '/prj_abc123/v12/index.html');
  assert.equal(at(h, '/@v1/').uri, '/prj_abc123/v1/index.html');
  assert.equal(at(h, '/@v3/assets/app.js').uri, '/prj_abc123/v3/assets/app.js');
  assert.equal(at(h, '/@v3/v2/').uri, '/prj_abc123/v3/v2/index.html'); // the app's own folder named v2
  assert.equal(at('PRJ-ABC123.Apps.Example.com', '/@v3/x.css').uri, '/prj_abc123/v3/x.css');
  const redirect = at(h, '/@v3');
  assert.deepEqual([redirect.statusCode, redirect.headers.location.value], [301, '/@v3/']);
  // no database at the edge: the latest (/) and anything unversioned is a 404 saying what to use
  for (const u of ['/', '/index.html', '/v2/', '/@v0/', '/@vx/', '/prj_abc123/@v1/', '/@v1x/']) {
    const r = at(h, u);
    assert.equal(r.statusCode, 404, u);
    assert.match(r.body.data, /\/@v\{n\}\//, u);
  }
  // a host that names no project: the distribution's own domain, another label, none
  for (const host of ['d111111abcdef8.cloudfront.net', 'apps.example.com', 'prj_abc123.apps.example.com', 'x.prj-abc123.apps.example.com', 'prj-.apps.example.com', undefined]) {
    const r = at(host, '/@v1/');
    assert.equal(r.statusCode, 404, host);
    assert.match(r.body.data, /no app at this host name/, host);
  }
});

test('the storage module: the wildcard apps domain, the dashboard and its config.json', async () => {
  const tree = await check.load(TF);
  const st = tree.dirs['modules/storage'];
  const apps = st.resource.aws_cloudfront_distribution.apps[0];
  assert.equal(apps.aliases, '${local.own_origins ? ["*.${var.apps_domain}"] : []}');
  assert.match(apps.viewer_certificate[0].acm_certificate_arn, /var\.apps_certificate_arn/);
  assert.equal(apps.default_cache_behavior[0].response_headers_policy_id, '${aws_cloudfront_response_headers_policy.apps[local.own_origins ? "own_origin" : "shared"].id}');
  const fn = st.resource.aws_cloudfront_function.apps_path[0];
  assert.equal(fn.runtime, 'cloudfront-js-2.0');
  assert.match(fn.code, /local\.own_origins \? file\("\$\{path\.module\}\/apps-host\.js"\) : file\("\$\{path\.module\}\/apps-path\.js"\)/);
  assert.equal(st.locals.apps_url, '${local.own_origins ? "https://{project}.${var.apps_domain}" : "https://${aws_cloudfront_distribution.apps.domain_name}"}');
  // the dashboard: its own distribution (never the apps' origin), web/ of the bucket, index.html at /
  const dash = st.resource.aws_cloudfront_distribution.dashboard[0];
  assert.equal(dash.default_root_object, 'index.html');
  assert.equal(dash.origin[0].origin_path, '/web');
  assert.equal(st.locals.dashboard_prefix, 'web/');
  assert.equal(dash.default_cache_behavior[0].response_headers_policy_id, '${aws_cloudfront_response_headers_policy.dashboard.id}');
  const csp = st.locals.dashboard_csp;
  for (const d of ["script-src 'self'", 'frame-src ${local.apps_frame_src}', "frame-ancestors 'none'", 'connect-src']) assert.ok(csp.includes(d), d);
  // config.json: the shape the dashboard reads (koumpa serve's /config.json), from the other modules
  const obj = st.resource.aws_s3_object.dashboard_config[0];
  assert.deepEqual([obj.key, obj.content_type, obj.cache_control, obj.content], ['${local.dashboard_prefix}config.json', 'application/json', 'no-cache', '${jsonencode(local.dashboard_config)}']);
  assert.deepEqual(Object.keys(st.locals.dashboard_config).sort(), ['api_base', 'apps_url', 'oauth', 'stream_base']);
  for (const k of ['authorize_url', 'token_url', 'client_id', 'scopes', 'logout_url']) assert.match(st.locals.oauth, new RegExp(`${k}\\s*=`), k);
  const env = tree.dirs['environments/dev'].module.storage[0];
  assert.deepEqual([env.api_url, env.stream_url, env.hosted_ui_url, env.oauth_client_id],
    ['${module.api.api_url}', '${module.api.generate_app_stream_url}', '${module.auth.hosted_ui_url}', '${module.auth.client_id}']);
  // only the dashboard's distribution reads web/*, only the apps' reads apps/*
  const statements = st.data.aws_iam_policy_document.apps_bucket[0].statement;
  const reads = statements.find((x) => x.sid === 'CloudFrontReadsDashboard');
  assert.deepEqual(reads.resources, ['${aws_s3_bucket.apps.arn}/${local.dashboard_prefix}*']);
  assert.deepEqual(reads.condition[0].values, ['${aws_cloudfront_distribution.dashboard.arn}']);
});

test('the dashboard\'s URL: KOUMPA_PUBLIC_URL, Cognito\'s callback and sign-out URLs, the API\'s origins, the CSP', async () => {
  const tree = await check.load(TF);
  const env = tree.dirs['environments/dev'];
  // from the variables, with the "/" (the SPA's redirect_uri is origin + pathname), never from the
  // storage module (a cycle: the dashboard's CSP names generate-app's function URL)
  assert.match(env.locals.dashboard_url, /^\$\{var\.dashboard_domain != "" \? "https:\/\/\$\{var\.dashboard_domain\}\/"/);
  assert.match(env.locals.dashboard_url, /"\$\{trimsuffix\(var\.dashboard_url, "\/"\)\}\/"/);
  assert.doesNotMatch(env.locals.dashboard_url, /module\./);
  assert.equal(env.module.api[0].dashboard_url, '${local.dashboard_url}');
  assert.equal(env.module.auth[0].dashboard_url, '${local.dashboard_url}');
  assert.equal(env.check.dashboard_url[0].assert[0].condition, '${local.dashboard_url != ""}');
  // the API sends people back to the dashboard (Stripe's return URLs, the mail links), not to itself
  const api = tree.dirs['modules/api'];
  assert.equal(api.locals.common_environment.match(/KOUMPA_PUBLIC_URL\s*=\s*(\S+)/)[1], 'local.public_url');
  assert.match(api.locals.public_url, /^\$\{var\.dashboard_url != "" \? trimsuffix\(var\.dashboard_url, "\/"\)/);
  assert.match(api.locals.cors_allow_origins, /regex\("\^https\?:\/\/\[\^\/\]\+", var\.dashboard_url\)/);
  assert.equal(api.resource.aws_apigatewayv2_api.main[0].cors_configuration[0].allow_origins, '${local.cors_allow_origins}');
  assert.equal(api.resource.aws_lambda_function_url.generate_app[0].cors[0].allow_origins, '${local.cors_allow_origins}');
  // Cognito: a public client (no secret), the code flow (the SPA adds PKCE's S256 challenge), openid
  // and email, the dashboard's own URL as callback and sign-out URL
  const auth = tree.dirs['modules/auth'];
  const client = auth.resource.aws_cognito_user_pool_client.web[0];
  assert.deepEqual([client.generate_secret, client.allowed_oauth_flows_user_pool_client, client.allowed_oauth_flows], [false, true, ['code']]);
  for (const s of ['openid', 'email']) assert.ok(client.allowed_oauth_scopes.includes(s), s);
  assert.deepEqual([client.callback_urls, client.logout_urls], ['${local.callback_urls}', '${local.logout_urls}']);
  assert.match(auth.locals.callback_urls, /concat\(\[var\.dashboard_url\], var\.callback_urls\)/);
  assert.match(auth.locals.logout_urls, /concat\(\[var\.dashboard_url\], var\.logout_urls\)/);
  // no example registers a path nothing serves, a query or a hash
  for (const e of ['dev', 'staging', 'prod']) {
    const ex = readFileSync(path.join(TF, `environments/${e}/terraform.tfvars.example`), 'utf8');
    assert.doesNotMatch(ex, /auth\/callback|auth_(callback|logout)_urls\s*=.*[?#]/, e);
  }
  // the dashboard's CSP: the API, the streams' function URL and the token endpoint's origin
  const csp = tree.dirs['modules/storage'].locals.dashboard_csp;
  assert.match(csp, /"connect-src 'self'", var\.api_url, local\.stream_base, var\.hosted_ui_url/);
  assert.match(tree.dirs['modules/storage'].locals.oauth, /token_url\s*=\s*"\$\{var\.hosted_ui_url\}\/oauth2\/token"/);
});

// ---------------------------------------------------------------- each check can fail

let work;
before(() => { work = mkdtempSync(path.join(tmpdir(), 'koumpa-tf-')); });
after(() => rmSync(work, { recursive: true, force: true }));

let copies = 0;
// A copy of terraform/ with edit(file text) applied to each named file; returns its root.
function broken(edits) {
  const root = path.join(work, `t${copies++}`);
  cpSync(TF, root, { recursive: true });
  for (const [file, edit] of Object.entries(edits)) {
    const p = path.join(root, file);
    const before = readFileSync(p, 'utf8');
    const after = edit(before);
    assert.notEqual(after, before, `the edit of ${file} changed nothing`);
    rmSync(p); // staging's and prod's main.tf link to dev's: the edit makes this one a file of its own
    writeFileSync(p, after);
  }
  return root;
}

// The copy fails `name` with a failure matching re (and the untouched tree passes it: above).
async function fails(name, edits, re) {
  const results = await check.checkAll(broken(edits), { storeContract: STORE_CONTRACT, bootstrap: BOOTSTRAP });
  assert.ok(results[name].some((x) => re.test(x)), `${name}: ${JSON.stringify(results[name])}`);
}

const sub = (from, to) => (t) => t.replace(from, to);

test('parse: an unclosed block', () => fails('parse', { 'modules/cron/main.tf': (t) => `${t}\nresource "aws_s3_bucket" "x" {\n` }, /does not parse/));

test('schema: an unknown resource type, argument, nested argument, dynamic block, missing required argument', async () => {
  await fails('schema', { 'modules/database/main.tf': sub('"aws_dynamodb_table" "main"', '"aws_dynamodb_tabel" "main"') }, /aws_dynamodb_tabel is not in the AWS provider/);
  await fails('schema', { 'modules/database/main.tf': sub('billing_mode', 'billing_mod') }, /"billing_mod" is not an argument/);
  await fails('schema', { 'modules/database/main.tf': sub('projection_type = "ALL"', 'projection = "ALL"') }, /global_secondary_index: "projection" is not an argument/);
  await fails('schema', { 'modules/api/lambdas.tf': sub('dynamic "statement"', 'dynamic "statements"') }, /no block "statements"/);
  await fails('schema', { 'modules/cron/main.tf': sub('  function_name = var.function_name\n', '') }, /required argument "function_name" is missing/);
});

test('references: an undeclared variable, local, module output, resource, attribute', async () => {
  await fails('references', { 'modules/database/main.tf': sub('${var.table_prefix}koumpa', '${var.table_prefx}koumpa') }, /var\.table_prefx is not declared/);
  await fails('references', { 'modules/api/routes.tf': sub('local.routed_functions\n', 'local.routed_function\n') }, /local\.routed_function is not defined/);
  await fails('references', { 'environments/dev/main.tf': sub('module.auth.issuer', 'module.auth.issuerx') }, /module\.auth has no output "issuerx"/);
  await fails('references', { 'modules/storage/main.tf': sub('aws_s3_bucket.apps.bucket_regional_domain_name', 'aws_s3_bucket.app.bucket_regional_domain_name') }, /aws_s3_bucket\.app is not declared/);
  await fails('references', { 'modules/storage/main.tf': sub('aws_s3_bucket.apps.bucket_regional_domain_name', 'aws_s3_bucket.apps.regional_domain') }, /aws_s3_bucket has no attribute "regional_domain"/);
});

test('modules: an input the module does not declare, a required input missing, environments that differ', async () => {
  await fails('modules', { 'environments/dev/main.tf': sub('  tags                = local.tags\n}', '  tags                = local.tags\n  table_class = "STANDARD"\n}') }, /"table_class" is not a variable of modules\/database/);
  await fails('modules', { 'environments/prod/main.tf': sub('  jwks_url                    = module.auth.jwks_url\n', '') }, /required input "jwks_url" is not passed|prod does not pass the same module inputs/);
  await fails('environments', { 'environments/staging/main.tf': sub('"koumpa-${var.environment}"', '"koumpa-stg"') }, /main\.tf: the environments differ/);
  await fails('environments', { 'environments/prod/terraform.tfvars.example': sub('region                  = "eu-west-3"\n', '') }, /the required "region" is not set/);
  await fails('environments', { 'environments/dev/main.tf': sub('use_lockfile = true', 'use_lockfile = false') }, /use_lockfile/);
});

test('table: a GSI projection, a key, an attribute or point-in-time recovery unlike the code', async () => {
  await fails('table', { 'modules/database/main.tf': sub('projection_type = "KEYS_ONLY"', 'projection_type = "ALL"') }, /global secondary indexes/);
  await fails('table', { 'modules/database/main.tf': sub('range_key    = "SK"', 'range_key    = "GSI1SK"') }, /range_key/);
  await fails('table', { 'modules/database/main.tf': sub('name = "GSI2SK"\n    type = "S"', 'name = "GSI2SK"\n    type = "N"') }, /attributes/);
  await fails('table', { 'modules/database/main.tf': sub('billing_mode = "PAY_PER_REQUEST"', 'billing_mode = "PROVISIONED"') }, /billing_mode/);
  await fails('table', { 'modules/database/main.tf': sub('point_in_time_recovery {\n    enabled = true', 'point_in_time_recovery {\n    enabled = false') }, /point-in-time recovery/);
});

test('seed: a plan figure or an item attribute unlike the code\'s seed', async () => {
  await fails('seed', { 'modules/database/main.tf': sub('daily_bonus                = 10', 'daily_bonus                = 11') }, /differ from seed_plans/);
  await fails('seed', { 'modules/database/main.tf': sub('max_generating  = { N', 'max_concurrent  = { N') }, /attributes/);
  await fails('seed', { 'modules/database/main.tf': sub('active          = { BOOL = true }', 'active          = { N = "1" }') }, /attributes/);
});

test('iam: an action the code does not call, one it calls missing, a policy not from the map', async () => {
  await fails('iam', { 'modules/api/lambdas.tf': sub('"dynamodb:Query", "dynamodb:Scan", ', '"dynamodb:Query", ') }, /daily-bonus's dynamodb/);
  await fails('iam', { 'modules/api/lambdas.tf': sub('s3_objects  = ["s3:GetObject"]', 's3_objects  = ["s3:GetObject", "s3:PutObject"]') }, /list-projects's s3_objects/);
  await fails('iam', { 'modules/api/lambdas.tf': sub('secrets     = ["jwt", "stripe"]', 'secrets     = ["anthropic", "jwt", "stripe"]') }, /stripe-webhook's secrets/);
  await fails('iam', { 'modules/api/lambdas.tf': sub('actions   = ["lambda:InvokeFunction"]', 'actions   = ["lambda:InvokeFunction", "dynamodb:DeleteItem"]') }, /grants dynamodb:DeleteItem outside/);
  await fails('iam', { 'modules/api/lambdas.tf': sub('actions   = local.permissions[each.key].dynamodb', 'actions   = ["dynamodb:*"]') }, /grants dynamodb:\* outside/);
});

test('iam: the permissions file is checked against the code\'s calls', () => {
  const saved = JSON.stringify(check.PERMISSIONS);
  try {
    check.PERMISSIONS.functions['daily-bonus'].dynamodb = check.PERMISSIONS.functions['daily-bonus'].dynamodb.filter((a) => a !== 'dynamodb:Scan');
    check.PERMISSIONS.functions['get-user'].dynamodb.push('dynamodb:DeleteItem');
    const f = check.checkIam({ dirs: {} });
    assert.ok(f.some((x) => /calls dynamodb:Scan, which no function is allowed/.test(x)), JSON.stringify(f));
    assert.ok(f.some((x) => /allowed dynamodb:DeleteItem, which src\/ never calls/.test(x)), JSON.stringify(f));
  } finally {
    Object.assign(check.PERMISSIONS, JSON.parse(saved));
  }
});

test('routes: a route of routes.c missing, one routes.c lacks, an authorizer unlike routes.c, a local route routed', async () => {
  await fails('routes', { 'modules/api/routes.tf': sub('    "GET /v1/me/ledger" = { function = "get-user", auth = true }\n', '') }, /GET \/v1\/me\/ledger \(src\/api\/routes\.c\) has no function/);
  await fails('routes', { 'modules/api/routes.tf': sub('"GET /v1/me/ledger"', '"GET /v1/me/ledgers"') }, /GET \/v1\/me\/ledgers is not a route/);
  await fails('routes', { 'modules/api/routes.tf': sub('"POST /v1/billing/portal"   = { function = "stripe-webhook", auth = true }', '"POST /v1/billing/portal"   = { function = "stripe-webhook", auth = false }') }, /POST \/v1\/billing\/portal has auth = false/);
  await fails('routes', { 'modules/api/routes.tf': sub('"GET /v1/plans"     =', '"POST /v1/auth/login" = { function = "get-user", auth = false }\n    "GET /v1/plans"     =') }, /routes POST \/v1\/auth\/login, which is not routed on AWS/);
  // a route sent to a function that does not serve it (the Lambda host's table says which does)
  await fails('routes', { 'modules/api/routes.tf': sub('"GET /v1/me/ledger" = { function = "get-user"', '"GET /v1/me/ledger" = { function = "list-projects"') }, /GET \/v1\/me\/ledger goes to list-projects, the Lambda host serves it in get-user/);
});

test('apps headers: a CSP or referrer policy unlike the apps origin\'s, nosniff missing', async () => {
  await fails('apps_headers', { 'modules/storage/main.tf': sub('allow-popups allow-modals"', 'allow-popups allow-modals allow-same-origin"') }, /Content-Security-Policy/);
  await fails('apps_headers', { 'modules/storage/main.tf': sub('referrer_policy = "no-referrer"', 'referrer_policy = "origin"') }, /Referrer-Policy/);
  await fails('apps_headers', { 'modules/storage/main.tf': sub('    content_type_options {\n      override = true\n    }\n', '') }, /X-Content-Type-Options/);
  // each app on its own origin: the CSP must allow same-origin, as kp_apps_own_origin_headers does
  await fails('apps_headers', { 'modules/storage/main.tf': sub('allow-modals allow-same-origin"', 'allow-modals"') }, /CloudFront \(apps\["own_origin"\]\) sends Content-Security-Policy/);
});

test('secrets: keys and long base64 in a .tf or an example, a secret version resource', async () => {
  const fake = ['sk', 'live', '4eC39HqLyjWDarjtT1zdp7dc'].join('_');
  await fails('secrets', { 'environments/dev/terraform.tfvars.example': (t) => `${t}\n# stripe = "${fake}"\n` }, /a Stripe key/);
  await fails('secrets', { 'modules/api/main.tf': (t) => `${t}\nlocals {\n  k = "${['whsec', 'abcdefghijklmnop'].join('_')}"\n}\n` }, /webhook secret/);
  await fails('secrets', { 'modules/api/main.tf': (t) => `${t}\nlocals {\n  k = "${['sk-ant-api03', 'abcdefghijklmnop'].join('-')}"\n}\n` }, /Anthropic key/);
  await fails('secrets', { 'modules/api/main.tf': (t) => `${t}\nlocals {\n  k = "${'AKIA'}IOSFODNN7EXAMPLE"\n}\n` }, /AWS access key id/);
  await fails('secrets', { 'modules/api/main.tf': (t) => `${t}\nlocals {\n  k = "dGhpcyBpcyBhIHNlY3JldCB2YWx1ZSBvZiBmb3J0eSBjaGFycyBvciBtb3Jl"\n}\n` }, /long base64/);
  await fails('secrets', { 'modules/api/main.tf': (t) => `${t}\nresource "aws_secretsmanager_secret_version" "jwt" {\n  secret_id     = aws_secretsmanager_secret.koumpa["jwt"].id\n  secret_string = var.name_prefix\n}\n` }, /puts a value into the state/);
});
