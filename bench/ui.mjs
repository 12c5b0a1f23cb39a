// bench/ui.mjs - the dashboard's first load, against the real `koumpa serve` (with the fake
// Anthropic and Stripe of the test tree, tests/browser/harness.mjs), in Debian's chromium:
//
//   1. the bytes on the wire of a first load (cold cache, a new browser context) of the login
//      screen and of the projects screen signed in (a user with 3 projects): the sum of every
//      response's encodedDataLength (headers + compressed body, CDP Network.loadingFinished),
//      per request and in total, beside the goal (< 100 KB);
//   2. Lighthouse 12.8.2 (programmatic, chrome-launcher starting /usr/bin/chromium with
//      --headless=new --no-sandbox) on the projects screen signed in: performance (goal >= 95)
//      and accessibility (goal 100), with Lighthouse's default (mobile, simulated throttling)
//      and desktop settings.
//
// Prints figures; never fails on them (exit 1 only when it cannot measure).
//
//   make bench-ui            (KOUMPA_BUILD=build node bench/ui.mjs)
import * as chromeLauncher from 'chrome-launcher';
import lighthouse from 'lighthouse';
import desktopConfig from 'lighthouse/core/config/desktop-config.js';
import { chromium } from 'playwright-core';

import { SCENARIOS } from '../tests/browser/apps.mjs';
import { CHROMIUM, api, dashboardUrl, signup, startStack, waitVersion } from '../tests/browser/harness.mjs';

const GOAL_BYTES = 100 * 1024;
const GOAL_PERFORMANCE = 95;
const GOAL_ACCESSIBILITY = 100;

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

/** Puts the token where the dashboard keeps it (js/session.js) before any page script runs. */
function seedToken(token) {
  return (t) => localStorage.setItem('koumpa.token', t);
}

/** A first load of url in a fresh context: [{url, bytes}] for every response, once the page is idle. */
async function firstLoad(browser, url, { token, ready }) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (token) await context.addInitScript(seedToken(token), token);
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  const urls = new Map();
  const loads = [];
  cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
  cdp.on('Network.loadingFinished', (e) => loads.push({ id: e.requestId, bytes: e.encodedDataLength }));
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  await page.goto(url, { waitUntil: 'networkidle' });
  await ready(page);
  await page.waitForLoadState('networkidle');
  await context.close();
  return loads.map((l) => ({ url: urls.get(l.id) || l.id, bytes: l.bytes }));
}

function printLoad(title, rows, base) {
  const total = rows.reduce((s, r) => s + r.bytes, 0);
  console.log(`\n${title}: ${rows.length} requests, ${kb(total)} transferred (goal < ${kb(GOAL_BYTES)}: ${total < GOAL_BYTES ? 'met' : 'NOT met'})`);
  for (const r of [...rows].sort((a, b) => b.bytes - a.bytes))
    console.log(`  ${String(r.bytes).padStart(8)} B  ${r.url.startsWith(base) ? r.url.slice(base.length) || '/' : r.url}`);
  return total;
}

/** Lighthouse's performance and accessibility scores (0-100) for url, signed in with token. */
async function lighthouseScores(url, token, config) {
  const chrome = await chromeLauncher.launch({ chromePath: CHROMIUM, chromeFlags: ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage'] });
  try {
    // the token, in the dashboard origin's localStorage, before Lighthouse loads the page
    const browser = await chromium.connectOverCDP(`http://127.0.0.1:${chrome.port}`);
    const page = await browser.contexts()[0].newPage();
    await page.goto(new URL('/config.json', url).href);
    await page.evaluate(seedToken(token), token);
    await page.close();
    await browser.close();
    const flags = { port: chrome.port, output: 'json', logLevel: 'error', onlyCategories: ['performance', 'accessibility'], disableStorageReset: true };
    const result = await lighthouse(url, flags, config);
    const { categories, audits } = result.lhr;
    if (!audits['network-requests'].details.items.some((i) => i.url.includes('/v1/projects')))
      throw new Error('Lighthouse did not load the projects screen signed in (no GET /v1/projects)');
    const failing = Object.values(audits).filter((a) => a.scoreDisplayMode === 'binary' && a.score === 0 && categories.accessibility.auditRefs.some((r) => r.id === a.id));
    return {
      performance: Math.round(categories.performance.score * 100),
      accessibility: Math.round(categories.accessibility.score * 100),
      metrics: ['first-contentful-paint', 'largest-contentful-paint', 'total-blocking-time', 'cumulative-layout-shift'].map((id) => `${audits[id].title} ${audits[id].displayValue}`),
      failing: failing.map((a) => `${a.id}: ${a.title}`),
    };
  } finally {
    chrome.kill();
  }
}

const stack = await startStack({ scenario: SCENARIOS });
let failed = false;
try {
  if (stack.skip) throw new Error(stack.skip);
  const base = stack.server.url;
  const user = await signup(stack.server);
  for (const prompt of ['A to-do list', 'A tip calculator', 'A memory game']) {
    const res = await api(stack.server, 'POST', '/v1/projects', { token: user.token, body: { prompt } });
    if (res.status !== 202) throw new Error(`generation refused: ${res.status} ${res.text}`);
    await waitVersion(stack, user.token, res.json.id, 1);
  }
  console.log(`koumpa serve at ${base}; chromium ${stack.browser.version()}`);

  const login = await firstLoad(stack.browser, dashboardUrl(stack, '#/login'), {
    ready: (page) => page.getByRole('button', { name: 'Log in' }).waitFor(),
  });
  printLoad('First load, login screen', login, base);
  const projects = await firstLoad(stack.browser, dashboardUrl(stack, '#/projects'), {
    token: user.token,
    ready: (page) => page.getByRole('link', { name: /memory game/i }).waitFor(),
  });
  printLoad('First load, projects screen (signed in, 3 projects)', projects, base);

  for (const [name, config] of [
    ['mobile (Lighthouse default)', undefined],
    ['desktop', desktopConfig],
  ]) {
    const s = await lighthouseScores(dashboardUrl(stack, '#/projects'), user.token, config);
    console.log(`\nLighthouse 12.8.2, projects screen, ${name}:`);
    console.log(`  performance   ${String(s.performance).padStart(3)}  (goal >= ${GOAL_PERFORMANCE}: ${s.performance >= GOAL_PERFORMANCE ? 'met' : 'NOT met'})`);
    console.log(`  accessibility ${String(s.accessibility).padStart(3)}  (goal ${GOAL_ACCESSIBILITY}: ${s.accessibility >= GOAL_ACCESSIBILITY ? 'met' : 'NOT met'})`);
    console.log(`  ${s.metrics.join('; ')}`);
    for (const f of s.failing) console.log(`  accessibility audit failed: ${f}`);
  }
} catch (e) {
  console.error(`bench-ui: could not measure: ${e.message}`);
  failed = true;
} finally {
  await stack.close();
}
process.exitCode = failed ? 1 : 0;
