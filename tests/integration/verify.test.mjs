// verify.test.mjs - e-mail verification against a real SMTP server (the npm
// `smtp-server` package, on 127.0.0.1): sign-up sends a mail with a link;
// the link's token verifies the address once; tokens expire; a new mail
// replaces the old link; only a verified address gets the daily bonus (when
// SMTP is configured) and admin rights from KOUMPA_ADMIN_EMAILS.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, signup, startServer, uniqueEmail } from './harness.mjs';
import { startMailbox } from './mailbox.mjs';

const VERIFY_URL = 'https://app.example.com/verify';
const FROM = 'koumpa@example.com';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The token of the verification link in a message. */
function tokenOf(message) {
  const m = message.raw.match(/https:\/\/app\.example\.com\/verify\?token=([A-Za-z0-9_-]+)/);
  assert.ok(m, `no verification link in:\n${message.raw}`);
  return m[1];
}

const me = async (server, token) => {
  const res = await api(server, 'GET', '/v1/me', { token });
  assert.equal(res.status, 200, res.text);
  return res.json;
};
const verify = (server, token) => api(server, 'POST', '/v1/auth/verify', { body: { token } });

describe('e-mail verification (KOUMPA_SMTP_URL set)', () => {
  let box;
  let server;
  before(async () => {
    box = await startMailbox();
    server = await startServer({
      env: {
        KOUMPA_SMTP_URL: box.url,
        KOUMPA_SMTP_FROM: FROM,
        KOUMPA_VERIFY_URL: VERIFY_URL,
        KOUMPA_ADMIN_EMAILS: 'boss@example.com',
      },
    });
  });
  after(async () => {
    await server?.stop();
    await box?.close();
  });

  test('sign-up mails a link; its token verifies the address once, and the day\'s bonus follows', async () => {
    const user = await signup(server, uniqueEmail('verify'));
    assert.equal(user.user.email_verified, false);
    const before = await me(server, user.token);
    assert.equal(before.email_verified, false);
    assert.equal(before.credits.daily, 0, 'the bonus waits for a verified address');

    const mail = await box.waitFor(user.email);
    assert.equal(mail.from, FROM);
    assert.deepEqual(mail.to, [user.email]);
    assert.match(mail.raw, /^Subject: Confirm your e-mail address for Koumpa\r$/m);
    assert.match(mail.raw, /^To: <[^>]+>\r$/m);
    const token = tokenOf(mail);

    const ok = await verify(server, token);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.email_verified, true);
    assert.equal(ok.json.user.email, user.email);
    const after = await me(server, user.token);
    assert.equal(after.email_verified, true);
    assert.equal(after.credits.daily, 5);

    const again = await verify(server, token);
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.error.code, 'token_used');
    assert.equal((await me(server, user.token)).credits.daily, 5, 'no second bonus');

    const resend = await api(server, 'POST', '/v1/auth/verify/resend', { token: user.token });
    assert.equal(resend.status, 409, resend.text);
    assert.equal(resend.json.error.code, 'already_verified');
  });

  test('`koumpa daily-bonus` skips an address waiting for verification, and grants it once verified', async () => {
    const user = await signup(server, uniqueEmail('daily'));
    const ledger = async () => {
      const res = await api(server, 'GET', '/v1/me/ledger?limit=100', { token: user.token });
      assert.equal(res.status, 200, res.text);
      return res.json.entries;
    };
    const waiting = await server.run(['daily-bonus', '--date', '2033-01-01']);
    assert.equal(waiting.code, 0, waiting.stderr);
    assert.equal((await me(server, user.token)).credits.daily, 0, 'no bonus before the address is verified');
    assert.equal((await ledger()).length, 0);

    const ok = await verify(server, tokenOf(await box.waitFor(user.email)));
    assert.equal(ok.status, 200, ok.text);
    const granted = await server.run(['daily-bonus', '--date', '2033-01-02']);
    assert.equal(granted.code, 0, granted.stderr);
    const entries = await ledger();
    assert.deepEqual(
      entries.map((e) => e.reason),
      ['daily_bonus', 'daily_bonus'],
      'the welcome bonus at verification, then the run of 2033-01-02',
    );
    assert.equal(entries[0].delta_daily, 0, 'daily is set to the bonus (5), which it already held');
    assert.equal((await me(server, user.token)).credits.daily, 5);
    const again = await server.run(['daily-bonus', '--date', '2033-01-02']);
    assert.match(again.stdout, /: 0 users granted/);
    assert.equal((await ledger()).length, 2);
  });

  test('a token that was never issued, or altered, is refused', async () => {
    const user = await signup(server, uniqueEmail('forged'));
    const token = tokenOf(await box.waitFor(user.email));
    const altered = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    for (const bad of [altered, 'short', 'x'.repeat(43)]) {
      const res = await verify(server, bad);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.error.code, 'invalid_token');
    }
    assert.equal((await me(server, user.token)).email_verified, false);
  });

  test('a new mail replaces the old link; resending is limited to 3 an hour', async () => {
    const user = await signup(server, uniqueEmail('resend'));
    const first = tokenOf(await box.waitFor(user.email, 1));
    for (let i = 0; i < 3; i++) {
      const res = await api(server, 'POST', '/v1/auth/verify/resend', { token: user.token });
      assert.equal(res.status, 202, res.text);
    }
    const limited = await api(server, 'POST', '/v1/auth/verify/resend', { token: user.token });
    assert.equal(limited.status, 429, limited.text);
    assert.match(limited.headers.get('retry-after') ?? '', /^\d+$/);
    const latest = tokenOf(await box.waitFor(user.email, 4));
    assert.notEqual(latest, first);
    const old = await verify(server, first);
    assert.equal(old.status, 400, old.text);
    const ok = await verify(server, latest);
    assert.equal(ok.status, 200, ok.text);
  });

  // Issue 9, item 2: the list grants admin to a verified address only.
  test('a listed address is admin only once verified', async () => {
    const boss = await signup(server, ' Boss@Example.com ');
    assert.equal(boss.user.is_admin, false);
    assert.equal((await me(server, boss.token)).is_admin, false);
    const denied = await api(server, 'PUT', '/v1/admin/plans/pro', { token: boss.token, body: { daily_bonus: 6 } });
    assert.equal(denied.status, 403, denied.text);

    const ok = await verify(server, tokenOf(await box.waitFor('boss@example.com')));
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.user.is_admin, true);
    assert.equal((await me(server, boss.token)).is_admin, true);
  });
});

describe('an expired verification link (KOUMPA_VERIFY_TTL=1)', () => {
  let box;
  let server;
  before(async () => {
    box = await startMailbox();
    server = await startServer({
      env: { KOUMPA_SMTP_URL: box.url, KOUMPA_SMTP_FROM: FROM, KOUMPA_VERIFY_URL: VERIFY_URL, KOUMPA_VERIFY_TTL: '1' },
    });
  });
  after(async () => {
    await server?.stop();
    await box?.close();
  });

  test('is refused with 410 and verifies nothing', async () => {
    const user = await signup(server, uniqueEmail('late'));
    const token = tokenOf(await box.waitFor(user.email));
    await sleep(2100); // past the 1 s lifetime (whole seconds)
    const res = await verify(server, token);
    assert.equal(res.status, 410, res.text);
    assert.equal(res.json.error.code, 'token_expired');
    assert.match(res.json.error.message, /expired/);
    const now = await me(server, user.token);
    assert.equal(now.email_verified, false);
    assert.equal(now.credits.daily, 0);
  });
});

test('without SMTP, accounts work as before: the bonus at once, the address unverified, no resend', async () => {
  const server = await startServer();
  try {
    const user = await signup(server, uniqueEmail('nosmtp'));
    const now = await me(server, user.token);
    assert.equal(now.email_verified, false);
    assert.equal(now.credits.daily, 5);
    const res = await api(server, 'POST', '/v1/auth/verify/resend', { token: user.token });
    assert.equal(res.status, 503, res.text);
    assert.equal(res.json.error.code, 'verification_unavailable');
  } finally {
    await server.stop();
  }
});
