// account-ui.js - what the account screens (views/billing.js, views/admin.js)
// share on top of js/dom.js: a day's date, a plan's price, and the message
// regions each of their forms has (role="status" for progress and outcomes,
// role="alert" for errors, filled by dom.js showErrorIn so a 402 or a lost
// connection reads the same as everywhere in the dashboard).
import { alertBox, h, showErrorIn } from '../dom.js';

// A date from the API (RFC 3339, UTC) as a day in the reader's locale.
export function formatDay(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleDateString(undefined, { dateStyle: 'long' });
}

// A plan's monthly price ("Free" at 0).
export function formatPrice(plan) {
  if (!plan.price_cents) return 'Free';
  let amount;
  try {
    amount = new Intl.NumberFormat(undefined, { style: 'currency', currency: plan.currency || 'EUR' }).format(
      plan.price_cents / 100,
    );
  } catch {
    amount = `${(plan.price_cents / 100).toFixed(2)} ${plan.currency}`;
  }
  return `${amount} a month`;
}

// The live regions of a form or screen: say(text) for progress and outcomes
// (empty clears), fail(err) for an API error or a string, ok() clears errors.
export function messageRegions() {
  const status = h('p', { role: 'status', class: 'muted acct-status' });
  const alert = alertBox();
  return {
    nodes: [alert, status],
    say(text) {
      status.textContent = text || '';
    },
    fail(err) {
      status.textContent = '';
      if (typeof err === 'string') alert.textContent = err;
      else showErrorIn(alert, err);
    },
    ok() {
      showErrorIn(alert, null);
    },
  };
}
