// origins.test.mjs - each generated app on its own origin (KOUMPA_APPS_URL=http://{project}.localhost:<port>):
// in one browser, two apps cannot read each other's localStorage, and what an app keeps there
// survives a reload. Needs no dashboard: the apps are generated through the API and opened at
// the URLs the API gives. Skipped, saying so, when the binary has only the path form.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { PROMPTS, SCENARIOS } from './apps.mjs';
import { api, signup, startStack, waitVersion } from './harness.mjs';

const stack = await startStack({ scenario: SCENARIOS });
after(() => stack.close());

async function generate(token, prompt) {
  const res = await api(stack.server, 'POST', '/v1/projects', { token, body: { prompt } });
  assert.equal(res.status, 202, res.text);
  const { project, version } = await waitVersion(stack, token, res.json.id, 1);
  assert.equal(version.status, 'ready', JSON.stringify(version));
  assert.ok(project.url, 'the project has a URL');
  return project;
}

describe('apps on their own origins', { skip: !stack.hostForm && 'needs KOUMPA_APPS_URL with {project} (the origins branch)' }, () => {
  let a;
  let b;
  before(async () => {
    const user = await signup(stack.server);
    a = await generate(user.token, PROMPTS.storeA);
    b = await generate(user.token, PROMPTS.storeB);
  });

  test('two apps have two origins and cannot read each other\'s localStorage; storage survives a reload', async () => {
    const originA = new URL(a.url).origin;
    const originB = new URL(b.url).origin;
    assert.notEqual(originA, originB);
    assert.match(new URL(a.url).hostname, /\.localhost$/);

    const page = await stack.newPage();
    const out = page.locator('#out');
    await page.goto(a.url);
    await assert.doesNotReject(out.filter({ hasText: 'owner=null visits=1' }).waitFor(), 'A starts empty');
    await page.reload();
    await out.filter({ hasText: 'owner=Store A visits=2' }).waitFor();

    // same browser, same context: B's origin sees nothing of A's
    await page.goto(b.url);
    await out.filter({ hasText: 'owner=null visits=1' }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.length), 2, "B's storage holds only B's two keys");
    assert.equal(await page.evaluate(() => localStorage.getItem('koumpa-test-owner')), 'Store B');

    // and A's storage is still A's after B wrote the same keys
    await page.goto(a.url);
    await out.filter({ hasText: 'owner=Store A visits=3' }).waitFor();
  });
});
