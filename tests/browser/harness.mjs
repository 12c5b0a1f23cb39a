// harness.mjs - the browser suite's harness: the real `koumpa serve` (started by
// tests/integration/harness.mjs's startServer) with the fake Anthropic and fake
// Stripe servers of the test tree, Debian's chromium driven by playwright-core
// (no Playwright browser download: executablePath /usr/bin/chromium), axe-core
// checks and screenshots.
//
//   const stack = await startStack({ scenario });   // {server, anthropic, stripe, browser, hostForm, skip, ...}
//   const page = await stack.newPage();              // a fresh context (its own localStorage) at 1280x800
//   await checkA11y(page, 'projects');               // fails on serious or critical axe violations
//   await shot(page, 'projects');                    // <dir>/projects-desktop.png and -phone.png
//   await stack.close();
//
// Environment:
//   KOUMPA_CHROMIUM      the browser (default /usr/bin/chromium, installed by scripts/install-deps.sh --test)
//   KOUMPA_SCREENSHOTS   where shot() writes (default docs/screenshots; `make browser` sets
//                        build/screenshots so that `make test` leaves the tree clean, `make screenshots`
//                        refreshes docs/screenshots)
//   KOUMPA_BUILD, KOUMPA_TEST_*  as in tests/integration/harness.mjs
//
// The apps origin: when the binary knows the host form of KOUMPA_APPS_URL (`koumpa serve --help`
// mentions {project}), the server gets http://{project}.localhost:<appsPort> (each app on its own
// origin; chromium resolves *.localhost to loopback); otherwise the path form.
// stack.skip is a reason to skip the dashboard tests (GET / does not serve the SPA) or false.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { startFakeAnthropic } from '../integration/fake-anthropic.mjs';
import { startFakeStripe } from '../integration/fake-stripe.mjs';
import { ROOT, api, freePort, runKoumpa, signup, startServer, uniqueEmail } from '../integration/harness.mjs';

export { api, signup, uniqueEmail };

export const CHROMIUM = process.env.KOUMPA_CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = path.resolve(ROOT, process.env.KOUMPA_SCREENSHOTS || 'docs/screenshots');
export const VIEWPORTS = { desktop: { width: 1280, height: 800 }, phone: { width: 375, height: 812 } };
/** Flags for chromium as root in a container (no user namespaces for its sandbox). */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-dev-shm-usage'];
export const LLM_KEY = 'sk-test-browser';
export const STRIPE_KEY = 'sk_test_browser_0123456789';
export const STRIPE_WEBHOOK_SECRET = 'whsec_test_browser_0123456789abcdef';
export const PRICE_PRO = 'price_test_browser_pro';
export const PASSWORD = 'correct horse battery staple';
/** Bound for what the UI must show after an action (the fakes answer at once). */
export const UI_TIMEOUT_MS = 15_000;

const require = createRequire(import.meta.url);
let axeSource;

/** True when this koumpa takes KOUMPA_APPS_URL with a {project} placeholder (each app on its own origin). */
export async function hostFormSupported() {
  const res = await runKoumpa(['serve', '--help']);
  return `${res.stdout}${res.stderr}`.includes('{project}');
}

/** Why the dashboard cannot be tested against this server (GET / is not the SPA), or false. */
export async function dashboardMissing(server) {
  const res = await fetch(`${server.url}/`);
  const body = await res.text();
  if (res.status === 200 && /text\/html/.test(res.headers.get('content-type') || '') && body.includes('js/main.js'))
    return false;
  return `GET / does not serve the dashboard yet (${res.status}): needs the serve and webcore branches`;
}

/**
 * Why a screen cannot be tested yet: its view module (js/views/<name>.js, see the shared contract)
 * is not served, or the whole dashboard is missing (stack.skip); else false.
 */
export async function viewMissing(stack, name) {
  if (stack.skip) return stack.skip;
  const res = await fetch(`${stack.server.url}/js/views/${name}.js`);
  await res.arrayBuffer();
  return res.status !== 200 && `the dashboard has no js/views/${name}.js yet (${res.status})`;
}

/** Launches Debian's chromium, headless. */
export function launchChromium() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/**
 * Starts fake Anthropic (scenario: as setScenario), fake Stripe (price PRO_PRICE known), koumpa serve
 * wired to both (Pro's stripe_price_id set by an admin made here: stack.admin) and chromium.
 */
export async function startStack({ scenario, env = {} } = {}) {
  const anthropic = await startFakeAnthropic({ apiKey: LLM_KEY });
  if (scenario) anthropic.setScenario(scenario);
  const stripe = await startFakeStripe({ apiKey: STRIPE_KEY, prices: [PRICE_PRO] });
  const hostForm = await hostFormSupported();
  const appsPort = await freePort();
  const server = await startServer({
    env: {
      ANTHROPIC_API_KEY: LLM_KEY,
      ANTHROPIC_BASE_URL: anthropic.url,
      KOUMPA_LLM_RETRY_BASE_MS: '10',
      STRIPE_SECRET_KEY: STRIPE_KEY,
      STRIPE_API_BASE: stripe.url,
      STRIPE_WEBHOOK_SECRET,
      KOUMPA_APPS_ADDR: `127.0.0.1:${appsPort}`,
      KOUMPA_APPS_URL: hostForm ? `http://{project}.localhost:${appsPort}` : `http://127.0.0.1:${appsPort}`,
      ...env,
    },
  });
  const admin = await signup(server, uniqueEmail('admin'));
  const grant = await server.run(['admin', 'grant', admin.email]);
  if (grant.code !== 0) throw new Error(`admin grant failed: ${grant.stderr}`);
  const price = await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: { stripe_price_id: PRICE_PRO } });
  if (price.status !== 200) throw new Error(`setting Pro's price failed: ${price.status} ${price.text}`);
  const skip = await dashboardMissing(server);
  const browser = await launchChromium();
  const contexts = [];
  return {
    server,
    anthropic,
    stripe,
    admin,
    browser,
    hostForm,
    appsPort,
    skip,
    /** A page in a new browser context (its own storage), at the desktop size unless said. */
    async newPage({ viewport = VIEWPORTS.desktop, ...options } = {}) {
      const context = await browser.newContext({ viewport, acceptDownloads: true, ...options });
      contexts.push(context);
      context.setDefaultTimeout(UI_TIMEOUT_MS);
      return context.newPage();
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await browser?.close();
      await server.stop();
      await anthropic.close();
      await stripe.close();
    },
  };
}

/**
 * A scenario function for the fake Anthropic: the first [phrase, scenario] of table whose phrase
 * the latest user message contains; without one, fallback. Prompts stay plain sentences, as they
 * appear in the screenshots.
 */
export function byPrompt(table, fallback) {
  return (rec) => {
    const msgs = rec.body?.messages || [];
    const last = [...msgs].reverse().find((m) => m.role === 'user');
    const text = last ? JSON.stringify(last.content) : '';
    return table.find(([phrase]) => text.includes(phrase))?.[1] ?? fallback;
  };
}

/** The dashboard's URL for a hash route ('#/login'). */
export function dashboardUrl(stack, hash = '') {
  return `${stack.server.url}/${hash}`;
}

/**
 * Runs axe-core on the page and throws when it reports a serious or critical violation, listing
 * each (rule, impact, help, the offending nodes). The dashboard's CSP (script-src 'self') forbids
 * inline scripts, so axe.min.js is evaluated through the DevTools protocol (page.evaluate), which
 * the page's CSP does not govern, rather than injected as a <script> element.
 */
export async function checkA11y(page, screenName) {
  axeSource ??= await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }),
  );
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length > 0) {
    const lines = bad.map(
      (v) =>
        `- ${v.id} (${v.impact}): ${v.help} [${v.helpUrl}]\n` +
        v.nodes
          .slice(0, 5)
          .map((n) => `    ${n.target.join(' ')}: ${n.failureSummary.replace(/\n/g, ' ')}`)
          .join('\n'),
    );
    throw new Error(`axe: ${bad.length} serious or critical violation(s) on the ${screenName} screen\n${lines.join('\n')}`);
  }
  return result;
}

/**
 * Screenshots the page at the desktop (1280x800) and phone (375x812) widths into
 * SCREENSHOTS/<name>-desktop.png and <name>-phone.png, then puts the viewport back.
 */
export async function shot(page, name) {
  await mkdir(SCREENSHOTS, { recursive: true });
  const before = page.viewportSize();
  for (const [kind, size] of Object.entries(VIEWPORTS)) {
    await page.setViewportSize(size);
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await writeFile(path.join(SCREENSHOTS, `${name}-${kind}.png`), await page.screenshot({ animations: 'disabled' }));
  }
  if (before) await page.setViewportSize(before);
}

/** Signs up through the dashboard (#/signup: "Email", "Password", "Sign up"); returns { email, password }. */
export async function signupInUi(page, stack, email = uniqueEmail('ui')) {
  await page.goto(dashboardUrl(stack, '#/signup'));
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { level: 1, name: 'Projects' }).waitFor();
  return { email, password: PASSWORD };
}

/** Logs in through the dashboard (#/login); ends on the projects screen. */
export async function loginInUi(page, stack, email, password = PASSWORD) {
  await page.goto(dashboardUrl(stack, '#/login'));
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Projects' }).waitFor();
}

/** Waits (bounded) until the API says version n of project id is no longer generating; returns it. */
export async function waitVersion(stack, token, id, n, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await api(stack.server, 'GET', `/v1/projects/${id}`, { token });
    const v = res.json?.versions?.find((x) => x.n === n);
    if (v && v.status !== 'generating') return { project: res.json, version: v };
    if (Date.now() > deadline) throw new Error(`version ${n} of ${id} still generating`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The project id in the page's hash route (#/projects/{id}...), or null. */
export function projectIdOf(page) {
  const m = /#\/projects\/(prj_[0-9a-z]+)/.exec(page.url());
  return m ? m[1] : null;
}

/** Occurrences of needle in the visible text of the page. */
export async function countVisible(page, needle) {
  const text = await page.evaluate(() => document.body.innerText);
  return text.split(needle).length - 1;
}
