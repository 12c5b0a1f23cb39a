// account.test.mjs - credits, billing and admin in the dashboard, in chromium, against the real
// koumpa serve with the fake Anthropic and fake Stripe APIs: a user out of credits is told so with
// an Upgrade action (the API's 402) → the billing screen → "Upgrade to Pro" sends the browser to
// the Checkout Session's URL the fake Stripe made → an admin edits a plan on the admin screen, and
// the API says the plan changed. axe-core on each screen; screenshots (billing, admin).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { SCENARIOS } from './apps.mjs';
import { api, checkA11y, loginInUi, shot, signupInUi, startStack, viewMissing, waitVersion } from './harness.mjs';

const stack = await startStack({ scenario: SCENARIOS });
after(() => stack.close());
const noBilling = await viewMissing(stack, 'billing');
const noAdmin = await viewMissing(stack, 'admin');

/** Spends every credit the user has with generations through the API (one credit each). */
async function spendAll(token) {
  for (let i = 0; i < 100; i++) {
    const me = await api(stack.server, 'GET', '/v1/me', { token });
    if (me.json.credits.total === 0) return;
    const res = await api(stack.server, 'POST', '/v1/projects', { token, body: { prompt: `A counter, number ${i + 1}` } });
    assert.equal(res.status, 202, res.text);
    await waitVersion(stack, token, res.json.id, 1);
  }
  throw new Error('credits never reached 0');
}

describe('the dashboard: credits, billing, admin', { skip: stack.skip }, () => {
  let page;
  let upgrade;

  test('out of credits: the API\'s 402 is shown with an Upgrade action', async () => {
    page = await stack.newPage();
    await signupInUi(page, stack);
    await spendAll(await page.evaluate(() => localStorage.getItem('koumpa.token')));

    await page.getByLabel('Describe your app').fill('One more counter');
    await page.getByRole('button', { name: 'Generate' }).click();
    const alert = page.getByRole('alert').filter({ hasText: /out of credits/i });
    await alert.waitFor();
    upgrade = alert.getByRole('link', { name: 'Upgrade', exact: true }).or(alert.getByRole('button', { name: 'Upgrade', exact: true }));
    await upgrade.waitFor();
    await checkA11y(page, 'out of credits');
    await shot(page, 'out-of-credits');
  });

  test('Upgrade → billing → "Upgrade to Pro" goes to the Stripe Checkout Session', { skip: noBilling }, async () => {
    await upgrade.click();
    await page.getByRole('heading', { level: 1, name: 'Credits and plan' }).waitFor();
    await page.getByRole('button', { name: 'Upgrade to Pro' }).waitFor();
    await checkA11y(page, 'billing');
    await shot(page, 'billing');

    // Checkout is Stripe's page: answered here, the browser never leaves the machine
    await page.route('https://checkout.stripe.com/**', (route) =>
      route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>Checkout (test)</title><h1>Checkout</h1>' }),
    );
    const sessions = stack.stripe.sessions.length;
    await page.getByRole('button', { name: 'Upgrade to Pro' }).click();
    await page.waitForURL(/^https:\/\/checkout\.stripe\.com\//);
    assert.equal(stack.stripe.sessions.length, sessions + 1, 'one Checkout Session');
    assert.equal(page.url(), stack.stripe.sessions.at(-1).url);
  });

  test('an admin edits a plan on the admin screen', { skip: noAdmin }, async () => {
    const admin = await stack.newPage();
    await loginInUi(admin, stack, stack.admin.email, stack.admin.password);
    await admin.getByRole('link', { name: 'Admin' }).click();
    await admin.getByRole('heading', { level: 1, name: 'Admin' }).waitFor();
    await checkA11y(admin, 'admin');
    await shot(admin, 'admin');

    const plans = async () => (await api(stack.server, 'GET', '/v1/plans')).json.plans;
    const free = (await plans()).find((p) => p.id === 'free');
    const was = (await plans()).find((p) => p.id === 'pro');
    const bonus = was.daily_bonus + 7;
    // the plan editor (views/admin.js): pick the plan, change a field, save
    await admin.getByLabel('Plan to edit').selectOption('pro');
    await admin.getByLabel('Daily bonus').fill(String(bonus));
    await admin.getByRole('button', { name: 'Save plan' }).click();
    await admin.getByRole('status').filter({ hasText: 'Saved plan Pro (pro)' }).waitFor();
    const now = (await plans()).find((p) => p.id === 'pro');
    assert.equal(now.daily_bonus, bonus, 'the API has the new daily bonus');
    assert.equal(now.stripe_price_id, was.stripe_price_id, 'the other fields are kept');
    assert.equal(now.monthly_credits, was.monthly_credits, 'the other fields are kept');
    assert.deepEqual((await plans()).find((p) => p.id === 'free'), free, 'the other plans are kept');
  });
});
