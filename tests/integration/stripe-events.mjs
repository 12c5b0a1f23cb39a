// stripe-events.mjs - Stripe webhook events for the tests, shaped like the
// events in Stripe's API reference, in the current field layout (API version
// 2026-10-28.endive, the one stripe-node pins; basil and later) or the legacy
// one (before 2025-03-31), signed with the official `stripe` package.
//
//   current: a subscription's current_period_end on items.data[], an
//            invoice's subscription and metadata under
//            parent.subscription_details, a line's price under
//            pricing.price_details.price;
//   legacy:  subscription.current_period_end, invoice.subscription,
//            invoice.subscription_details.metadata, lines.data[].price.
import { randomBytes } from 'node:crypto';

import Stripe from 'stripe';

import { api } from './harness.mjs';

export const CURRENT_API_VERSION = '2026-10-28.endive';
export const LEGACY_API_VERSION = '2024-06-20';
const MONTH = 30 * 24 * 3600;
const stripe = new Stripe('sk_test_unused_the_tests_never_call_stripe');

/** A Stripe-like id: prefix + random characters. */
export function stripeId(prefix) {
  return `${prefix}_test_${randomBytes(9).toString('hex')}`;
}

export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

function envelope(type, object, { id = stripeId('evt'), created = nowSeconds(), legacy = false, previous } = {}) {
  return {
    id,
    object: 'event',
    api_version: legacy ? LEGACY_API_VERSION : CURRENT_API_VERSION,
    created,
    data: previous ? { object, previous_attributes: previous } : { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  };
}

/**
 * customer.subscription.{created,updated,deleted}.
 * s: { id, customer, status, price, userId (metadata; omit for none), periodStart, cancelAtPeriodEnd }.
 */
export function subscriptionEvent(kind, s, opts = {}) {
  const start = s.periodStart ?? opts.created ?? nowSeconds();
  const price = {
    id: s.price,
    object: 'price',
    active: true,
    currency: 'eur',
    product: 'prod_test_koumpa',
    recurring: { interval: 'month', interval_count: 1 },
    type: 'recurring',
    unit_amount: 2500,
  };
  const item = {
    id: `si_${s.id.slice(4)}`,
    object: 'subscription_item',
    price,
    quantity: 1,
    subscription: s.id,
  };
  const sub = {
    id: s.id,
    object: 'subscription',
    billing_cycle_anchor: start,
    cancel_at: null,
    cancel_at_period_end: s.cancelAtPeriodEnd ?? false,
    canceled_at: kind === 'deleted' ? opts.created ?? nowSeconds() : null,
    collection_method: 'charge_automatically',
    created: start,
    currency: 'eur',
    customer: s.customer,
    items: { object: 'list', data: [item], has_more: false, url: `/v1/subscription_items?subscription=${s.id}` },
    latest_invoice: s.latestInvoice ?? null,
    livemode: false,
    metadata: s.userId ? { koumpa_user_id: s.userId } : {},
    start_date: start,
    status: kind === 'deleted' ? 'canceled' : s.status,
  };
  if (opts.legacy) {
    sub.current_period_start = start;
    sub.current_period_end = start + MONTH;
    item.plan = { id: s.price, object: 'plan', amount: 2500, currency: 'eur', interval: 'month' };
  } else {
    item.current_period_start = start;
    item.current_period_end = start + MONTH;
  }
  return envelope(`customer.subscription.${kind}`, sub, opts);
}

/**
 * invoice.{paid,payment_failed}.
 * i: { id, customer, subscription, price, userId (subscription metadata; omit for none), amount }.
 */
export function invoiceEvent(kind, i, opts = {}) {
  const created = opts.created ?? nowSeconds();
  const paid = kind === 'paid';
  const line = {
    id: `il_${i.id.slice(3)}`,
    object: 'line_item',
    amount: i.amount ?? 2500,
    currency: 'eur',
    description: '1 × Koumpa (at €25.00 / month)',
    period: { start: created, end: created + MONTH },
    quantity: 1,
  };
  const invoice = {
    id: i.id,
    object: 'invoice',
    amount_due: i.amount ?? 2500,
    amount_paid: paid ? i.amount ?? 2500 : 0,
    amount_remaining: paid ? 0 : i.amount ?? 2500,
    attempt_count: 1,
    billing_reason: i.billingReason ?? 'subscription_cycle',
    collection_method: 'charge_automatically',
    created,
    currency: 'eur',
    customer: i.customer,
    livemode: false,
    status: paid ? 'paid' : 'open',
  };
  const metadata = i.userId ? { koumpa_user_id: i.userId } : {};
  if (opts.legacy) {
    invoice.subscription = i.subscription;
    invoice.subscription_details = { metadata };
    line.price = { id: i.price, object: 'price', currency: 'eur', product: 'prod_test_koumpa', unit_amount: 2500 };
    line.subscription = i.subscription;
    line.type = 'subscription';
  } else {
    invoice.parent = {
      type: 'subscription_details',
      quote_details: null,
      subscription_details: { metadata, subscription: i.subscription },
    };
    line.parent = {
      type: 'subscription_item_details',
      invoice_item_details: null,
      subscription_item_details: { proration: false, subscription: i.subscription, subscription_item: 'si_x' },
    };
    line.pricing = {
      type: 'price_details',
      price_details: { price: i.price, product: 'prod_test_koumpa' },
      unit_amount_decimal: '2500',
    };
  }
  invoice.lines = { object: 'list', data: [line], has_more: false, url: `/v1/invoices/${i.id}/lines` };
  return envelope(`invoice.${kind === 'failed' ? 'payment_failed' : kind}`, invoice, opts);
}

/** checkout.session.completed. c: { customer, subscription, userId (client_reference_id and metadata) }. */
export function checkoutCompletedEvent(c, opts = {}) {
  const session = {
    id: c.id ?? stripeId('cs'),
    object: 'checkout.session',
    client_reference_id: c.clientReferenceId ?? c.userId ?? null,
    customer: c.customer,
    customer_details: { email: c.email ?? null },
    livemode: false,
    metadata: c.userId ? { koumpa_user_id: c.userId } : {},
    mode: 'subscription',
    payment_status: 'paid',
    status: 'complete',
    subscription: c.subscription,
    success_url: 'http://127.0.0.1/billing/success',
  };
  return envelope('checkout.session.completed', session, opts);
}

/** Stripe-Signature for payload as Stripe makes it (stripe-node's test helper). */
export function signatureHeader(payload, secret, timestamp = nowSeconds()) {
  return stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp });
}

/**
 * POSTs an event (object: serialised once, signed as sent) to /v1/webhooks/stripe.
 * opts: secret, timestamp, header (overrides the signature; null: none), payload (raw text to send instead).
 */
export async function deliver(server, event, { secret, timestamp, header, payload } = {}) {
  const body = payload ?? JSON.stringify(event);
  const headers = { 'Content-Type': 'application/json; charset=utf-8' };
  const sig = header === undefined ? signatureHeader(body, secret, timestamp) : header;
  if (sig !== null) headers['Stripe-Signature'] = sig;
  return api(server, 'POST', '/v1/webhooks/stripe', { body, headers });
}
