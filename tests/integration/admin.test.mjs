// admin.test.mjs - what admins do over HTTP (change plans, move users, find
// users, grant or remove the admin right) and who is an admin: verified addresses in KOUMPA_ADMIN_EMAILS (see
// verify.test.mjs for the verification), and users granted with
// `koumpa admin grant`.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, signup, startServer, uniqueEmail } from './harness.mjs';

const ADMIN_EMAIL = 'chief@example.com';
const TEAM = { name: 'Team', price_cents: 9900, monthly_credits: 700, daily_bonus: 10, max_concurrent_generations: 20 };

function assertError(res, status, code, messagePattern) {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  if (messagePattern) assert.match(res.json.error.message, messagePattern);
}

describe('admin', () => {
  let server;
  let admin;
  let user;

  const plans = async () => (await api(server, 'GET', '/v1/plans')).json.plans;
  const me = async (token) => {
    const res = await api(server, 'GET', '/v1/me', { token });
    assert.equal(res.status, 200, res.text);
    return res.json;
  };

  let listedBeforeGrant;
  before(async () => {
    // the list is normalised like any email: spaces and case do not matter
    server = await startServer({ env: { KOUMPA_ADMIN_EMAILS: ` someone@example.org , Chief@Example.COM ` } });
    admin = await signup(server, ` ${ADMIN_EMAIL.toUpperCase()} `);
    user = await signup(server, uniqueEmail('member'));
    listedBeforeGrant = {
      signup: admin.user.is_admin,
      me: await me(admin.token),
      put: await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: { monthly_credits: 1 } }),
    };
    // without SMTP nobody can verify an address: the first admin is made by hand
    const grant = await server.run(['admin', 'grant', ADMIN_EMAIL]);
    assert.equal(grant.code, 0, grant.stderr);
  });
  after(async () => {
    await server?.stop();
  });

  // Issue 9, item 2: whoever signed up first with a listed address became admin.
  test('signing up with a listed address (any case, spaces) does not make an admin until verified or granted', async () => {
    assert.equal(listedBeforeGrant.signup, false);
    assert.equal(listedBeforeGrant.me.is_admin, false);
    assert.equal(listedBeforeGrant.me.email_verified, false);
    assertError(listedBeforeGrant.put, 403, 'forbidden');
    assert.equal((await me(admin.token)).is_admin, true, 'koumpa admin grant did');
    assert.equal(user.user.is_admin, false);
    assert.equal((await me(user.token)).is_admin, false);
  });

  // Each HTTP worker's requests of one loop turn share a read snapshot, ended with the turn
  // (docs/ARCHITECTURE.md, "Request flow"): a worker that goes idle must hold none, or its next
  // requests would see the data of its last busy turn.
  test('a change by another process shows in the next requests, on every worker', async () => {
    const member = await signup(server, uniqueEmail('turns'));
    const burst = () => Promise.all(Array.from({ length: 24 }, () => me(member.token)));
    for (const seen of await burst()) assert.equal(seen.is_admin, false);
    const grant = await server.run(['admin', 'grant', member.email]);
    assert.equal(grant.code, 0, grant.stderr);
    for (const seen of await burst()) assert.equal(seen.is_admin, true, 'a worker answered from an old snapshot');
    const revoke = await server.run(['admin', 'revoke', member.email]);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.equal((await me(member.token)).is_admin, false);
  });

  test('PUT /v1/admin/plans/pro changes monthly_credits and GET /v1/plans shows it', async () => {
    const res = await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: { monthly_credits: 120 } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, {
      id: 'pro',
      name: 'Pro',
      price_cents: 2500,
      currency: 'EUR',
      monthly_credits: 120,
      daily_bonus: 5,
      max_concurrent_generations: 3,
      stripe_price_id: '',
      active: true,
    });
    const pro = (await plans()).find((p) => p.id === 'pro');
    assert.equal(pro.monthly_credits, 120);
    assert.equal(pro.price_cents, 2500, 'fields left out keep their value');
  });

  test('PUT of a new plan creates it (201), a second PUT changes it (200)', async () => {
    const created = await api(server, 'PUT', '/v1/admin/plans/team', { token: admin.token, body: TEAM });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.json, { id: 'team', currency: 'EUR', stripe_price_id: '', active: true, ...TEAM });
    assert.deepEqual(
      (await plans()).find((p) => p.id === 'team'),
      created.json,
    );

    const changed = await api(server, 'PUT', '/v1/admin/plans/team', {
      token: admin.token,
      body: { id: 'team', price_cents: 8900, stripe_price_id: 'price_123', currency: 'USD' },
    });
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.json.price_cents, 8900);
    assert.equal(changed.json.stripe_price_id, 'price_123');
    assert.equal(changed.json.currency, 'USD');
    assert.equal(changed.json.monthly_credits, 700);
  });

  test('a deactivated plan disappears from the list and comes back when reactivated', async () => {
    const off = await api(server, 'PUT', '/v1/admin/plans/team', { token: admin.token, body: { active: false } });
    assert.equal(off.status, 200, off.text);
    assert.equal(off.json.active, false);
    assert.equal((await plans()).some((p) => p.id === 'team'), false);
    const on = await api(server, 'PUT', '/v1/admin/plans/team', { token: admin.token, body: { active: true } });
    assert.equal(on.status, 200, on.text);
    assert.equal((await plans()).some((p) => p.id === 'team'), true);
  });

  test('invalid plan edits are a 400 naming the field, and change nothing', async () => {
    const cases = [
      ['pro', { prize_cents: 10 }, /prize_cents/],
      ['pro', { price_cents: -1 }, /price_cents/],
      ['pro', { price_cents: 'ten' }, /price_cents/],
      ['pro', { price_cents: 12.5 }, /price_cents/],
      ['pro', { monthly_credits: null }, /monthly_credits/],
      ['pro', { daily_bonus: 100001 }, /daily_bonus/],
      ['pro', { max_concurrent_generations: 0 }, /max_concurrent_generations/],
      ['pro', { name: '' }, /name/],
      ['pro', { name: 42 }, /name/],
      ['pro', { currency: 'euro' }, /currency/],
      ['pro', { active: 'yes' }, /active/],
      ['pro', { id: 'business' }, /\bid\b/],
      ['gold', { name: 'Gold', price_cents: 1, daily_bonus: 1, max_concurrent_generations: 1 }, /monthly_credits/],
      ['gold', { price_cents: 1, monthly_credits: 1, daily_bonus: 1, max_concurrent_generations: 1 }, /name/],
      ['Gold', TEAM, /plan id/],
      ['gold.plan', TEAM, /plan id/],
      ['g'.repeat(64), TEAM, /plan id/],
    ];
    for (const [id, body, field] of cases) {
      const res = await api(server, 'PUT', `/v1/admin/plans/${encodeURIComponent(id)}`, { token: admin.token, body });
      assertError(res, 400, 'invalid_request', field);
    }
    const listed = await plans();
    assert.equal(listed.some((p) => p.id === 'gold'), false);
    const pro = listed.find((p) => p.id === 'pro');
    assert.equal(pro.price_cents, 2500);
    assert.equal(pro.max_concurrent_generations, 3);

    const notObject = await api(server, 'PUT', '/v1/admin/plans/pro', { token: admin.token, body: '[1,2]', headers: { 'Content-Type': 'application/json' } });
    assertError(notObject, 400, 'invalid_json');
  });

  test('non-admins get 403 on every admin endpoint; no token gets 401', async () => {
    const calls = [
      ['PUT', '/v1/admin/plans/pro', { monthly_credits: 1 }],
      ['PUT', `/v1/admin/users/${user.user.id}/plan`, { plan_id: 'business' }],
      ['GET', `/v1/admin/users?email=${encodeURIComponent(user.email)}`, undefined],
    ];
    for (const [method, path, body] of calls) {
      assertError(await api(server, method, path, { token: user.token, body }), 403, 'forbidden');
      const anonymous = await api(server, method, path, { body });
      assertError(anonymous, 401, 'unauthorized');
      assert.match(anonymous.headers.get('www-authenticate'), /^Bearer/);
    }
    assert.equal((await plans()).find((p) => p.id === 'pro').monthly_credits, 120, 'the 403 changed nothing');
    assert.equal((await me(user.token)).plan.id, 'free');
  });

  test("PUT /v1/admin/users/{id}/plan moves the user; their /v1/me shows the new plan", async () => {
    const target = await signup(server, uniqueEmail('mover'));
    const res = await api(server, 'PUT', `/v1/admin/users/${target.user.id}/plan`, {
      token: admin.token,
      body: { plan_id: 'pro' },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.id, target.user.id);
    assert.equal(res.json.email, target.email);
    assert.equal(res.json.plan_id, 'pro');
    const moved = await me(target.token);
    assert.equal(moved.plan.id, 'pro');
    assert.equal(moved.plan.monthly_credits, 120);
    assert.deepEqual(moved.credits, { daily: 5, monthly: 0, total: 5 }, 'moving does not grant credits by itself');
  });

  test('moving a user to an unknown plan or an unknown user is a 404; a bad body is a 400', async () => {
    assertError(
      await api(server, 'PUT', `/v1/admin/users/${user.user.id}/plan`, { token: admin.token, body: { plan_id: 'gold' } }),
      404,
      'not_found',
      /gold/,
    );
    assertError(
      await api(server, 'PUT', '/v1/admin/users/usr_000000000000000000000000/plan', {
        token: admin.token,
        body: { plan_id: 'pro' },
      }),
      404,
      'not_found',
    );
    for (const body of [{}, { plan_id: 7 }, { plan: 'pro' }]) {
      assertError(
        await api(server, 'PUT', `/v1/admin/users/${user.user.id}/plan`, { token: admin.token, body }),
        400,
        'invalid_request',
        /plan_id/,
      );
    }
    assert.equal((await me(user.token)).plan.id, 'free');
  });

  test('GET /v1/admin/users?email= finds a user by normalised email', async () => {
    const res = await api(server, 'GET', `/v1/admin/users?email=${encodeURIComponent(` ${user.email.toUpperCase()} `)}`, {
      token: admin.token,
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.users.length, 1);
    assert.equal(res.json.users[0].id, user.user.id);
    assert.equal(res.json.users[0].email, user.email);
    assert.equal(res.json.users[0].plan_id, 'free');
    assert.equal(res.json.users[0].is_admin, false);

    const none = await api(server, 'GET', `/v1/admin/users?email=${encodeURIComponent(uniqueEmail('ghost'))}`, {
      token: admin.token,
    });
    assert.equal(none.status, 200, none.text);
    assert.deepEqual(none.json, { users: [] });

    assertError(await api(server, 'GET', '/v1/admin/users', { token: admin.token }), 400, 'invalid_request', /email/);
    assertError(
      await api(server, 'GET', '/v1/admin/users?email=not-an-email', { token: admin.token }),
      400,
      'invalid_request',
      /email/,
    );
  });

  test('`koumpa admin grant EMAIL` makes a user an admin; `revoke` undoes it', async () => {
    const target = await signup(server, uniqueEmail('promoted'));
    const denied = await api(server, 'PUT', '/v1/admin/plans/pro', { token: target.token, body: { daily_bonus: 6 } });
    assert.equal(denied.status, 403);

    const grant = await server.run(['admin', 'grant', target.email.toUpperCase()]);
    assert.equal(grant.code, 0, grant.stderr);
    assert.match(grant.stdout, new RegExp(target.email.replace(/[.]/g, '\\.')));
    // the same token: admin rights are looked up on each request
    assert.equal((await me(target.token)).is_admin, true);
    const allowed = await api(server, 'PUT', '/v1/admin/plans/pro', { token: target.token, body: { daily_bonus: 6 } });
    assert.equal(allowed.status, 200, allowed.text);
    assert.equal(allowed.json.daily_bonus, 6);
    const found = await api(server, 'GET', `/v1/admin/users?email=${encodeURIComponent(target.email)}`, {
      token: admin.token,
    });
    assert.equal(found.json.users[0].is_admin, true);

    const revoke = await server.run(['admin', 'revoke', target.email]);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.equal((await me(target.token)).is_admin, false);
    const deniedAgain = await api(server, 'PUT', '/v1/admin/plans/pro', { token: target.token, body: { daily_bonus: 5 } });
    assert.equal(deniedAgain.status, 403);
  });

  test('PUT /v1/admin/users/{id}/admin grants and removes the right; nobody removes their own', async () => {
    const target = await signup(server, uniqueEmail('api-admin'));
    const path = `/v1/admin/users/${target.user.id}/admin`;
    assertError(await api(server, 'PUT', path, { token: user.token, body: { is_admin: true } }), 403, 'forbidden');
    assert.equal((await me(target.token)).is_admin, false);

    const grant = await api(server, 'PUT', path, { token: admin.token, body: { is_admin: true } });
    assert.equal(grant.status, 200, grant.text);
    assert.equal(grant.json.id, target.user.id);
    assert.equal(grant.json.email, target.email);
    assert.equal(grant.json.is_admin, true);
    assert.equal((await me(target.token)).is_admin, true);
    const allowed = await api(server, 'GET', `/v1/admin/users?email=${encodeURIComponent(user.email)}`, { token: target.token });
    assert.equal(allowed.status, 200, 'the new admin may call admin routes');

    // neither the new admin nor the first one can remove their own right
    assertError(
      await api(server, 'PUT', path, { token: target.token, body: { is_admin: false } }),
      409,
      'conflict',
      /your own admin right/,
    );
    assert.equal((await me(target.token)).is_admin, true);
    assertError(
      await api(server, 'PUT', `/v1/admin/users/${admin.user.id}/admin`, { token: admin.token, body: { is_admin: false } }),
      409,
      'conflict',
      /your own admin right/,
    );

    const revoke = await api(server, 'PUT', path, { token: admin.token, body: { is_admin: false } });
    assert.equal(revoke.status, 200, revoke.text);
    assert.equal(revoke.json.is_admin, false);
    assert.equal((await me(target.token)).is_admin, false);
    assertError(await api(server, 'GET', '/v1/admin/users?email=x@example.com', { token: target.token }), 403, 'forbidden');

    for (const body of [{}, { is_admin: 'yes' }, { is_admin: 1 }, { is_admin: null }])
      assertError(await api(server, 'PUT', path, { token: admin.token, body }), 400, 'invalid_request', /is_admin/);
    assertError(
      await api(server, 'PUT', '/v1/admin/users/usr_nobody/admin', { token: admin.token, body: { is_admin: true } }),
      404,
      'not_found',
      /usr_nobody/,
    );
  });

  test('`koumpa admin grant` of an unknown email fails and says so', async () => {
    const email = uniqueEmail('nobody');
    const res = await server.run(['admin', 'grant', email]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, new RegExp(email.replace(/[.]/g, '\\.')));
  });

  test('`koumpa admin set-plan EMAIL PLAN` moves a user', async () => {
    const target = await signup(server, uniqueEmail('cli-plan'));
    const res = await server.run(['admin', 'set-plan', target.email, 'business']);
    assert.equal(res.code, 0, res.stderr);
    const now = await me(target.token);
    assert.equal(now.plan.id, 'business');
    assert.equal(now.plan.daily_bonus, 10);
    const bad = await server.run(['admin', 'set-plan', target.email, 'gold']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /gold/);
    assert.equal((await me(target.token)).plan.id, 'business');
  });
});
