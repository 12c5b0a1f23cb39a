// dashboard.test.mjs - a new user's first session in the dashboard, in chromium, against the real
// koumpa serve and the fake Anthropic API: sign up → prompt → the generation streams (text, then
// files) while the model's stream is held → reload mid-generation: it resumes, nothing shown twice
// → the stream ends: the preview iframe (apps origin) runs the app → follow-up → versions and what
// changed (added / changed / deleted) → download (the zip's entries) → log out, log in: the project
// is listed. axe-core on every screen; screenshots of the screens (harness.mjs shot()).
//
// The page is found by the accessible names the screens keep (docs/DEVELOPMENT.md, "The browser
// suite": labels "Email", "Password", "Describe your app", "What should change?"; buttons "Sign up",
// "Log in", "Log out", "Generate", "Send", "Cancel generation"; link "Download zip"; iframe title
// "App preview"; an h1 per screen).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { INTRO, PROMPTS, SCENARIOS } from './apps.mjs';
import {
  api,
  checkA11y,
  countVisible,
  dashboardUrl,
  loginInUi,
  projectIdOf,
  shot,
  signupInUi,
  startStack,
  viewMissing,
  waitVersion,
} from './harness.mjs';

const stack = await startStack({ scenario: SCENARIOS });
after(() => stack.close());
const noProjectScreen = await viewMissing(stack, 'project');

const FILES_V1 = ['index.html', 'style.css', 'app.js'];
const KINDS = { added: /\b(added|new)\b/, changed: /\b(changed|modified)\b/, deleted: /\b(deleted|removed)\b/ };

/** The token the dashboard keeps (localStorage "koumpa.token", js/session.js). */
const tokenOf = (page) => page.evaluate(() => localStorage.getItem('koumpa.token'));

/**
 * The kinds of change (added / changed / deleted) written nearest to each place the page shows
 * `file`: for each visible text node naming it, the first ancestor whose text names any kind.
 */
function changeKindsNear(page, file) {
  const kinds = Object.fromEntries(Object.entries(KINDS).map(([k, re]) => [k, re.source]));
  return page.evaluate(
    ({ file, kinds }) => {
      const out = [];
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        if (!n.textContent.includes(file) || !n.parentElement?.checkVisibility()) continue;
        for (let el = n.parentElement; el && el !== document.body; el = el.parentElement) {
          const text = el.innerText.toLowerCase();
          const found = Object.keys(kinds).filter((k) => new RegExp(kinds[k]).test(text));
          if (found.length > 0) {
            out.push(found.join(','));
            break;
          }
        }
      }
      return out;
    },
    { file, kinds },
  );
}

describe('the dashboard: a first session', { skip: stack.skip }, () => {
  let page;
  let user;
  let id;
  let token;
  const preview = () => page.frameLocator('iframe[title="App preview"]');

  before(async () => {
    page = await stack.newPage();
  });

  test('sign up: the login and sign-up screens are accessible; sign-up lands on Projects', async () => {
    await page.goto(dashboardUrl(stack, '#/login'));
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await checkA11y(page, 'login');
    await shot(page, 'login');
    await page.goto(dashboardUrl(stack, '#/signup'));
    await page.getByRole('button', { name: 'Sign up' }).waitFor();
    await checkA11y(page, 'signup');
    user = await signupInUi(page, stack);
    token = await tokenOf(page);
    assert.ok(token, 'the token is kept in localStorage');
    assert.ok(!page.url().includes(token), 'the token is not in the URL');
    await checkA11y(page, 'projects (empty)');
  });

  test('prompt → the text and the files stream in; a reload mid-generation resumes, nothing twice', { skip: noProjectScreen }, async () => {
    await page.getByLabel('Describe your app').fill(PROMPTS.live);
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.waitForURL(/#\/projects\/prj_[0-9a-z]+/);
    id = projectIdOf(page);
    // the fake holds the end of its stream: everything below is seen while the version is generating
    await page.getByText(INTRO).first().waitFor();
    for (const f of FILES_V1) await page.getByText(f, { exact: true }).first().waitFor();
    await page.getByRole('button', { name: 'Cancel generation' }).waitFor();
    const v = await api(stack.server, 'GET', `/v1/projects/${id}`, { token });
    assert.equal(v.json.versions[0].status, 'generating', 'the stream is held, so the version is still generating');
    assert.equal(await countVisible(page, INTRO), 1);
    await checkA11y(page, 'generation (live)');
    await shot(page, 'generation-live');

    await page.reload();
    await page.getByText(INTRO).first().waitFor();
    for (const f of FILES_V1) await page.getByText(f, { exact: true }).first().waitFor();
    await page.getByText('Click the button.').first().waitFor();
    assert.equal(await countVisible(page, INTRO), 1, 'the text streamed before the reload is shown once');
    assert.equal(await countVisible(page, 'Click the button.'), 1, 'the last delta is shown once');
  });

  test('the stream ends: the preview iframe runs the app from the apps origin', { skip: noProjectScreen }, async () => {
    stack.anthropic.openGate('live');
    const { version } = await waitVersion(stack, token, id, 1);
    assert.equal(version.status, 'ready');
    const frame = page.locator('iframe[title="App preview"]');
    await frame.waitFor();
    const src = await frame.getAttribute('src');
    assert.notEqual(new URL(src, page.url()).origin, new URL(stack.server.url).origin, 'the app is not on the dashboard origin');
    assert.notEqual(await frame.getAttribute('sandbox'), null, 'the preview is sandboxed');
    await preview().getByRole('heading', { name: 'Counter app' }).waitFor();
    await preview().getByRole('button', { name: '0' }).click();
    await preview().getByRole('button', { name: '1' }).waitFor();
    await page.getByRole('heading', { level: 1 }).waitFor();
    await checkA11y(page, 'project');
    await shot(page, 'project');
  });

  test('follow-up → version 2 in the preview; the versions and what changed', { skip: noProjectScreen }, async () => {
    await page.getByLabel('What should change?').fill(PROMPTS.update);
    await page.getByRole('button', { name: 'Send' }).click();
    const { version } = await waitVersion(stack, token, id, 2);
    assert.equal(version.status, 'ready');
    // version 2's app.js counts down from 10: the first click shows 9 (version 1's showed 1)
    await preview().getByRole('button', { name: '0' }).click();
    await preview().getByRole('button', { name: '9' }).waitFor();
    // the versions with their prompts
    await page.getByText(PROMPTS.live).first().waitFor();
    await page.getByText(PROMPTS.update).first().waitFor();

    await page.goto(dashboardUrl(stack, `#/projects/${id}/v/2`));
    await page.getByText('about.html').first().waitFor();
    for (const [file, kind] of [
      ['about.html', 'added'],
      ['app.js', 'changed'],
      ['style.css', 'deleted'],
    ]) {
      const near = await changeKindsNear(page, file);
      assert.ok(near.includes(kind), `${file} is shown as ${kind} (kinds written near it: ${JSON.stringify(near)})`);
    }
    await checkA11y(page, 'version 2');
    await shot(page, 'version-diff');
  });

  test('download: the zip of the version holds its files', { skip: noProjectScreen }, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'koumpa-download-'));
    try {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('link', { name: 'Download zip' }).click(),
      ]);
      assert.match(download.suggestedFilename(), /\.zip$/);
      const file = path.join(dir, 'app.zip');
      await download.saveAs(file);
      const names = execFileSync('unzip', ['-Z1', file], { encoding: 'utf8' })
        .split('\n')
        .filter((n) => n && !n.endsWith('/'))
        .map((n) => path.posix.basename(n))
        .sort();
      assert.deepEqual(names, ['about.html', 'app.js', 'index.html']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('log out, log in: the project is listed', async () => {
    if (!id) {
      // without the project screen the steps above were skipped: a project made through the API
      const res = await api(stack.server, 'POST', '/v1/projects', { token, body: { prompt: 'A click counter' } });
      assert.equal(res.status, 202, res.text);
      id = res.json.id;
      await waitVersion(stack, token, id, 1);
    }
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    assert.equal(await tokenOf(page), null, 'logging out forgets the token');
    await loginInUi(page, stack, user.email, user.password);
    const project = await api(stack.server, 'GET', `/v1/projects/${id}`, { token: await tokenOf(page) });
    assert.equal(project.status, 200);
    await page.getByRole('link', { name: project.json.name || id }).waitFor();
    await checkA11y(page, 'projects');
    await shot(page, 'projects');
  });
});
