// views/billing.js - "Credits and plan" (#/billing): the caller's balance
// (daily and monthly buckets, GET /v1/me), the subscription Stripe's webhooks
// last described, the plans (GET /v1/plans) with the current one marked and an
// "Upgrade to <plan>" button for each paid one (POST /v1/billing/checkout, then
// the browser goes to Stripe Checkout), "Manage billing" (POST
// /v1/billing/portal, Stripe's customer portal), and the credit history
// (GET /v1/me/ledger, a page at a time).
//
// Stripe sends the browser back to {KOUMPA_PUBLIC_URL}/?checkout=success&
// session_id=...#/billing or /?checkout=cancel#/billing (api/billing_routes.c),
// and the portal to /#/billing. This screen reads checkout= once, says what
// happened in its status region, removes the query with
// history.replaceState, and after a success re-reads /v1/me a few times:
// the plan and credits change when Stripe's webhook arrives, not with the
// redirect.
import { formatDate, h as el } from '../dom.js';
import { formatDay, formatPrice, messageRegions } from './account-ui.js';

const LEDGER_PAGE = 20;
const WEBHOOK_POLLS = 5; // re-reads of /v1/me after a paid checkout
const WEBHOOK_POLL_MS = 2000;
// Stripe statuses under which the user already pays: plan changes go through the portal.
const LIVE_SUBSCRIPTION = new Set(['active', 'trialing', 'past_due', 'unpaid', 'incomplete']);

// What a ledger reason means to a person.
export function reasonLabel(reason) {
  const [kind, detail] = String(reason).split(/:(.*)/s);
  const words = (s) => s.replace(/_/g, ' ');
  switch (kind) {
    case 'daily_bonus':
      return 'Daily bonus';
    case 'generation':
      return 'Generation';
    case 'subscription':
      return 'Monthly credits (subscription)';
    case 'admin_grant':
      return 'Granted by an admin';
    case 'refund':
      return `Refund: ${words(detail || '')}`;
    case 'charge':
      return `Charged: ${words(detail || '')}`;
    default:
      return words(reason);
  }
}

// The checkout outcome in this page's query ("success", "cancel" or null).
export function checkoutOutcome(search) {
  const v = new URLSearchParams(search).get('checkout');
  return v === 'success' || v === 'cancel' ? v : null;
}

// A sentence on the subscription's state.
export function subscriptionText(sub) {
  if (!sub) return 'You have no subscription.';
  const end = formatDay(sub.current_period_end);
  let text = `Subscription status: ${sub.status.replace(/_/g, ' ')}.`;
  if (end && sub.cancel_at_period_end) text += ` It is cancelled and ends on ${end}.`;
  else if (end && LIVE_SUBSCRIPTION.has(sub.status)) text += ` It renews on ${end}.`;
  return text;
}

function signed(n) {
  return n > 0 ? `+${n}` : String(n);
}

function balanceSection(me) {
  const c = me.credits;
  return el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'acct-balance-h' },
    el('h2', { id: 'acct-balance-h' }, 'Balance'),
    el(
      'dl',
      { class: 'acct-balance' },
      el('div', {}, el('dt', {}, 'Daily credits'), el('dd', {}, String(c.daily))),
      el('div', {}, el('dt', {}, 'Monthly credits'), el('dd', {}, String(c.monthly))),
      el('div', {}, el('dt', {}, 'Total'), el('dd', {}, String(c.total))),
    ),
    el(
      'p',
      { class: 'muted' },
      `Daily credits are reset to your plan's daily bonus (${me.plan.daily_bonus}) every day at 00:00 UTC ` +
        'and are spent first; monthly credits come with each paid month and carry over.',
    ),
  );
}

// Sends the browser to the URL the API answered (Stripe Checkout or portal).
async function redirectThrough(ctx, msg, button, path, body, going) {
  msg.ok();
  msg.say(going);
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    const res = await ctx.api('POST', path, body ? { body } : {});
    globalThis.location.assign(res.url);
  } catch (err) {
    msg.fail(err);
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

function subscriptionSection(ctx, me, msg) {
  const manage = el('button', { type: 'button', class: 'secondary' }, 'Manage billing');
  manage.addEventListener('click', () =>
    redirectThrough(ctx, msg, manage, '/v1/billing/portal', null, 'Opening Stripe’s billing portal…'),
  );
  return el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'acct-sub-h' },
    el('h2', { id: 'acct-sub-h' }, 'Subscription'),
    el('p', {}, 'Your plan: ', el('strong', {}, me.plan.name), me.plan.price_cents ? ` (${formatPrice(me.plan)}).` : '.'),
    el('p', { class: 'acct-sub-state' }, subscriptionText(me.subscription)),
    me.subscription
      ? el('p', {}, manage, ' ', el('span', { class: 'muted' }, 'Change plan, payment method or cancel.'))
      : null,
  );
}

function planCard(ctx, plan, me, msg) {
  const current = plan.id === me.plan.id;
  const subscribed = me.subscription && LIVE_SUBSCRIPTION.has(me.subscription.status);
  let action = null;
  if (current) {
    action = el('p', { class: 'acct-current' }, 'Your current plan');
  } else if (plan.price_cents > 0 && !subscribed) {
    const b = el('button', { type: 'button' }, `Upgrade to ${plan.name}`);
    b.addEventListener('click', () =>
      redirectThrough(ctx, msg, b, '/v1/billing/checkout', { plan_id: plan.id }, 'Opening Stripe Checkout…'),
    );
    action = b;
  } else if (plan.price_cents > 0) {
    action = el('p', { class: 'muted' }, 'Switch with “Manage billing”.');
  }
  return el(
    'li',
    { class: current ? 'acct-plan acct-plan-current' : 'acct-plan', 'aria-current': current ? 'true' : null },
    el('h3', {}, plan.name),
    el('p', { class: 'acct-price' }, formatPrice(plan)),
    el(
      'ul',
      { class: 'acct-plan-facts' },
      el('li', {}, `${plan.monthly_credits} credits a month`),
      el('li', {}, `${plan.daily_bonus} free credits a day`),
      el(
        'li',
        {},
        `${plan.max_concurrent_generations} generation${plan.max_concurrent_generations === 1 ? '' : 's'} at once`,
      ),
    ),
    action,
  );
}

function plansSection(ctx, plans, me, msg) {
  return el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'acct-plans-h' },
    el('h2', { id: 'acct-plans-h' }, 'Plans'),
    el(
      'ul',
      { class: 'acct-plans' },
      plans.map((p) => planCard(ctx, p, me, msg)),
    ),
  );
}

function ledgerRow(e) {
  return el(
    'tr',
    {},
    el('td', {}, formatDate(e.created_at)),
    el('td', {}, reasonLabel(e.reason)),
    el('td', { class: 'num' }, signed(e.delta)),
    el('td', { class: 'num' }, String(e.balance.daily)),
    el('td', { class: 'num' }, String(e.balance.monthly)),
  );
}

// The credit history, with "Show older entries" while there are more.
function ledgerSection(ctx, signal) {
  const body = el('tbody');
  const state = el('p', { role: 'status', class: 'muted' });
  const more = el('button', { type: 'button', class: 'secondary', hidden: true }, 'Show older entries');
  let cursor = '';
  async function load() {
    more.disabled = true;
    state.textContent = 'Loading credit history…';
    try {
      const q = new URLSearchParams({ limit: String(LEDGER_PAGE) });
      if (cursor) q.set('cursor', cursor);
      const page = await ctx.api('GET', `/v1/me/ledger?${q}`, { signal });
      body.append(...page.entries.map(ledgerRow));
      cursor = page.next_cursor || '';
      more.hidden = !cursor;
      state.textContent = body.rows.length ? '' : 'No credit changes yet.';
    } catch (err) {
      if (err.name === 'AbortError') return;
      state.textContent = `Could not load the credit history: ${err.message}`;
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', load);
  const table = el(
    'table',
    { class: 'acct-ledger' },
    el('caption', { class: 'visually-hidden' }, 'Credit history, newest first'),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th', { scope: 'col' }, 'When'),
        el('th', { scope: 'col' }, 'What'),
        el('th', { scope: 'col', class: 'num' }, 'Change'),
        el('th', { scope: 'col', class: 'num' }, 'Daily after'),
        el('th', { scope: 'col', class: 'num' }, 'Monthly after'),
      ),
    ),
    body,
  );
  const section = el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'acct-ledger-h' },
    el('h2', { id: 'acct-ledger-h' }, 'Credit history'),
    el('div', { class: 'acct-scroll', tabindex: '0', role: 'region', 'aria-label': 'Credit history table' }, table),
    state,
    more,
  );
  return { section, load };
}

// Reads ?checkout= once, says what happened and removes it from the address bar.
function takeCheckoutOutcome(msg) {
  const outcome = checkoutOutcome(globalThis.location.search);
  if (!outcome) return null;
  globalThis.history.replaceState(null, '', globalThis.location.pathname + '#/billing');
  msg.say(
    outcome === 'success'
      ? 'Thank you: your payment went through. Your plan and credits change as soon as Stripe confirms it, ' +
          'usually within seconds.'
      : 'Checkout was cancelled: nothing was charged.',
  );
  return outcome;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

export async function render(root, ctx) {
  const aborter = new AbortController();
  const msg = messageRegions();
  const main = el('div', { class: 'acct-sections' });
  root.replaceChildren(el('h1', {}, 'Credits and plan'), ...msg.nodes, main);
  const outcome = takeCheckoutOutcome(msg);
  if (!outcome) msg.say('Loading your credits and plans…');

  async function draw() {
    const [me, plans] = await Promise.all([
      ctx.api('GET', '/v1/me', { signal: aborter.signal }),
      ctx.api('GET', '/v1/plans', { signal: aborter.signal }),
    ]);
    const ledger = ledgerSection(ctx, aborter.signal);
    main.replaceChildren(
      balanceSection(me),
      subscriptionSection(ctx, me, msg),
      plansSection(ctx, plans.plans, me, msg),
      ledger.section,
    );
    await ledger.load();
    return me;
  }

  try {
    const before = await draw();
    if (!outcome) msg.say('');
    if (outcome === 'success') {
      // The webhook, not the redirect, changes the account: look again a few times.
      for (let i = 0; i < WEBHOOK_POLLS && !aborter.signal.aborted; i++) {
        await sleep(WEBHOOK_POLL_MS, aborter.signal);
        if (aborter.signal.aborted) break;
        const me = await ctx.api('GET', '/v1/me', { signal: aborter.signal });
        if (me.plan.id !== before.plan.id || JSON.stringify(me.subscription) !== JSON.stringify(before.subscription)) {
          await draw();
          msg.say(`Your plan is now ${me.plan.name}.`);
          if (ctx.refreshMe) ctx.refreshMe();
          break;
        }
      }
    }
  } catch (err) {
    if (err.name !== 'AbortError') msg.fail(err);
  }
  return () => aborter.abort();
}
