// Unit tests of the account screens' pure logic: views/billing.js (ledger
// reasons, the checkout return, the subscription sentence) and views/admin.js
// (which field an API validation message is about, and the PUT body of a plan
// edit: only what changed).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { checkoutOutcome, reasonLabel, subscriptionText } from '../../src/web/js/views/billing.js';
import { fieldFromMessage, planChanges, PLAN_FIELDS } from '../../src/web/js/views/admin.js';

const PRO = {
  id: 'pro',
  name: 'Pro',
  price_cents: 2500,
  currency: 'EUR',
  monthly_credits: 100,
  daily_bonus: 5,
  max_concurrent_generations: 3,
  stripe_price_id: '',
  active: true,
};

// The form's values for a plan, as the inputs hold them (strings, a checkbox).
function formValues(plan) {
  const v = {};
  for (const f of PLAN_FIELDS) v[f.name] = f.type === 'bool' ? plan.active : String(plan[f.name]);
  return v;
}

test('reasonLabel names every ledger reason the API writes', () => {
  assert.equal(reasonLabel('daily_bonus'), 'Daily bonus');
  assert.equal(reasonLabel('generation'), 'Generation');
  assert.equal(reasonLabel('subscription'), 'Monthly credits (subscription)');
  assert.equal(reasonLabel('admin_grant'), 'Granted by an admin');
  assert.equal(reasonLabel('refund:service_failure'), 'Refund: service failure');
  assert.equal(reasonLabel('charge:rejected_output_allowance_used'), 'Charged: rejected output allowance used');
  assert.equal(reasonLabel('something_new'), 'something new');
});

test('checkoutOutcome reads only success and cancel', () => {
  assert.equal(checkoutOutcome('?checkout=success&session_id=cs_test_1'), 'success');
  assert.equal(checkoutOutcome('?checkout=cancel'), 'cancel');
  assert.equal(checkoutOutcome('?checkout=<script>'), null);
  assert.equal(checkoutOutcome(''), null);
});

test('subscriptionText: none, renewing, cancelled at the period end', () => {
  assert.equal(subscriptionText(null), 'You have no subscription.');
  const sub = { status: 'active', plan_id: 'pro', current_period_end: '2026-12-02T08:12:40Z', cancel_at_period_end: false };
  assert.match(subscriptionText(sub), /^Subscription status: active\. It renews on .*2026/);
  assert.match(subscriptionText({ ...sub, cancel_at_period_end: true }), /It is cancelled and ends on .*2026/);
  assert.equal(subscriptionText({ ...sub, status: 'canceled', current_period_end: null }), 'Subscription status: canceled.');
  assert.match(subscriptionText({ ...sub, status: 'past_due' }), /past due\. It renews/);
});

test('fieldFromMessage maps the API 400 messages to their field', () => {
  assert.equal(fieldFromMessage('daily_bonus must be a whole number from 0 to 100000'), 'daily_bonus');
  assert.equal(fieldFromMessage('max_concurrent_generations must be a whole number from 1 to 1000'), 'max_concurrent_generations');
  assert.equal(fieldFromMessage('currency must be a 3-letter ISO 4217 code such as EUR'), 'currency');
  assert.equal(fieldFromMessage('name is required for a new plan'), 'name');
  assert.equal(fieldFromMessage('monthly_credits is required for a new plan'), 'monthly_credits');
  assert.equal(fieldFromMessage('active must be true or false'), 'active');
  assert.equal(fieldFromMessage('plan id must be 1 to 63 characters of a-z, 0-9, _ and -'), 'id');
  assert.equal(fieldFromMessage('unknown field prize_cents'), null);
  assert.equal(fieldFromMessage('unknown field name'), 'name');
  assert.equal(fieldFromMessage('the body must be a JSON object'), null);
});

test('planChanges sends only what differs from the loaded plan', () => {
  assert.deepEqual(planChanges(formValues(PRO), PRO), { body: {} });
  const v = { ...formValues(PRO), daily_bonus: ' 7 ', stripe_price_id: 'price_1', active: false };
  assert.deepEqual(planChanges(v, PRO), { body: { daily_bonus: 7, stripe_price_id: 'price_1', active: false } });
});

test('planChanges refuses a number that is not whole, naming the field', () => {
  assert.deepEqual(planChanges({ ...formValues(PRO), price_cents: '25.5' }, PRO), {
    field: 'price_cents',
    message: 'Price (cents a month) must be a whole number',
  });
  assert.equal(planChanges({ ...formValues(PRO), monthly_credits: '' }, PRO).field, 'monthly_credits');
});

test('planChanges for a plan not loaded sends the filled-in fields, active only when unticked', () => {
  const blank = Object.fromEntries(PLAN_FIELDS.map((f) => [f.name, f.type === 'bool' ? true : '']));
  assert.deepEqual(planChanges({ ...blank, name: 'Team', price_cents: '9900' }, null), {
    body: { name: 'Team', price_cents: 9900 },
  });
  assert.deepEqual(planChanges({ ...blank, active: false }, null), { body: { active: false } });
});
