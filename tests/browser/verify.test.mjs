// verify.test.mjs - the verification mail's link in chromium: koumpa serve with a real SMTP server
// (tests/integration/mailbox.mjs) and the default KOUMPA_VERIFY_URL ({public url}/#/verify). The
// link from the captured mail opens the dashboard's #/verify screen, which verifies the address
// (GET /v1/me says email_verified) and takes the token out of the address bar; an altered token
// shows the error, with "Log in" when signed out and "Resend the link" (a second mail) when signed
// in; an expired link (a second server, KOUMPA_VERIFY_TTL=1) says so and offers the resend. axe-core
// on each outcome.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { startServer } from '../integration/harness.mjs';
import { startMailbox } from '../integration/mailbox.mjs';
import { api, checkA11y, signup, signupInUi, startStack, uniqueEmail, viewMissing } from './harness.mjs';

const box = await startMailbox();
const stack = await startStack({ env: { KOUMPA_SMTP_URL: box.url, KOUMPA_SMTP_FROM: 'koumpa@example.com' } });
after(async () => {
  await stack.close();
  await box.close();
});
const noView = await viewMissing(stack, 'verify');

/** The verification link of the n-th mail to email: {server url}/#/verify?token=... */
async function linkFor(email, n = 1, server = stack.server) {
  const mail = await box.waitFor(email, n);
  const escaped = server.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = mail.raw.match(new RegExp(`${escaped}/#/verify\\?token=[A-Za-z0-9_-]+`));
  assert.ok(m, `no ${server.url}/#/verify?token= link in:\n${mail.raw}`);
  return m[0];
}

/** The same link with its token's last character changed. */
const altered = (link) => link.slice(0, -1) + (link.endsWith('A') ? 'B' : 'A');

const emailVerified = async (token) => {
  const me = await api(stack.server, 'GET', '/v1/me', { token });
  assert.equal(me.status, 200, me.text);
  return me.json.email_verified;
};

async function heading(page) {
  const h1 = page.getByRole('heading', { level: 1, name: 'Verify your address' });
  await h1.waitFor();
  return h1;
}

describe('the verification link (#/verify)', { skip: stack.skip || noView }, () => {
  test('signed out: an altered token is refused, the real one verifies the address', async () => {
    const user = await signup(stack.server, uniqueEmail('verify-out'));
    const link = await linkFor(user.email);
    assert.equal(await emailVerified(user.token), false);

    const page = await stack.newPage();
    await page.goto(altered(link));
    await heading(page);
    await page.getByRole('alert').filter({ hasText: 'This link is not valid.' }).waitFor();
    await page.getByRole('link', { name: 'Log in' }).waitFor();
    assert.ok(page.url().endsWith('/#/verify'), `the token left the address bar: ${page.url()}`);
    await checkA11y(page, 'verify (invalid link)');
    assert.equal(await emailVerified(user.token), false);

    const again = await stack.newPage();
    await again.goto(link);
    const h1 = await heading(again);
    await again.getByRole('status').filter({ hasText: `Your address ${user.email} is verified.` }).waitFor();
    assert.ok(again.url().endsWith('/#/verify'), `the token left the address bar: ${again.url()}`);
    assert.ok(await h1.evaluate((el) => document.activeElement === el), 'focus on the heading');
    await checkA11y(again, 'verify (verified)');
    assert.equal(await emailVerified(user.token), true);
  });

  test('signed in: an altered token offers "Resend the link"; the new mail\'s link verifies', async () => {
    const page = await stack.newPage();
    const { email } = await signupInUi(page, stack, uniqueEmail('verify-in'));
    const token = await page.evaluate(() => localStorage.getItem('koumpa.token'));
    const first = await linkFor(email);

    await page.goto(altered(first));
    await heading(page);
    await page.getByRole('alert').filter({ hasText: 'This link is not valid.' }).waitFor();
    await page.getByRole('button', { name: 'Resend the link' }).click();
    await page.getByRole('status').filter({ hasText: `A new link is on its way to ${email}.` }).waitFor();
    await checkA11y(page, 'verify (resent)');
    const second = await linkFor(email, 2);
    assert.notEqual(second, first, 'a new token');

    await page.goto(second);
    await page.getByRole('status').filter({ hasText: `Your address ${email} is verified.` }).waitFor();
    await page.getByRole('link', { name: 'Go to your projects' }).waitFor();
    assert.equal(await emailVerified(token), true);
  });

  test('signed in, an expired link: "This link has expired." and "Resend the link"', async () => {
    const short = await startServer({
      env: { KOUMPA_SMTP_URL: box.url, KOUMPA_SMTP_FROM: 'koumpa@example.com', KOUMPA_VERIFY_TTL: '1' },
    });
    try {
      const user = await signup(short, uniqueEmail('verify-expired'));
      const link = await linkFor(user.email, 1, short);
      await new Promise((resolve) => setTimeout(resolve, 2100)); // past the 1 s lifetime (whole seconds)
      const page = await stack.newPage();
      await page.goto(`${short.url}/#/login`);
      await page.evaluate((token) => localStorage.setItem('koumpa.token', token), user.token);
      await page.goto(link);
      await heading(page);
      await page.getByRole('alert').filter({ hasText: 'This link has expired.' }).waitFor();
      await page.getByRole('button', { name: 'Resend the link' }).click();
      await page.getByRole('status').filter({ hasText: `A new link is on its way to ${user.email}.` }).waitFor();
      await linkFor(user.email, 2, short);
      await checkA11y(page, 'verify (expired)');
    } finally {
      await short.stop();
    }
  });
});
