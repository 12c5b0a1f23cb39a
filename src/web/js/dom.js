// Small DOM helpers for the views: h() builds elements (text is always set as text, never as
// HTML), alertBox() renders describeError() output in a role="alert" element.
import { describeError } from './errors.js';

/** h('p', { class: 'x', onclick: fn }, 'text', child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Fills an element with describeError(err) (title, message and the action link), or empties it. */
export function showErrorIn(el, err) {
  el.replaceChildren(); // empty: hidden by CSS (.alert:empty), so the live region stays in place
  if (!err) return;
  const d = describeError(err);
  el.append(h('strong', {}, /[.!?…]$/.test(d.title) ? d.title : d.title + '.'), ' ', d.message);
  if (d.action) el.append(' ', h('a', { href: d.action.href }, d.action.label));
}

/** A role="alert" box, empty (and not shown) until showErrorIn fills it. */
export function alertBox() {
  return h('div', { class: 'alert', role: 'alert' });
}

export function formatDate(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/**
 * A card with a labelled textarea and a submit button. submit(text, status) runs on submit with the
 * trimmed text (an empty one is refused); while it runs the button is disabled, and what it throws
 * is shown in the form's alert. Returns the form.
 */
export function promptForm({ id, label, button, emptyMessage, submit, rows = 4 }) {
  const alert = alertBox();
  const prompt = h('textarea', { id, name: 'prompt', rows, required: true });
  const go = h('button', { type: 'submit' }, button);
  const status = h('p', { role: 'status', class: 'muted' });
  const form = h(
    'form',
    { class: 'card' },
    h('div', { class: 'field' }, h('label', { for: id }, label), prompt),
    alert,
    h('div', { class: 'actions' }, go),
    status,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showErrorIn(alert, null);
    const text = prompt.value.trim();
    if (!text) {
      showErrorIn(alert, { title: 'Nothing to send.', message: emptyMessage });
      prompt.focus();
      return;
    }
    go.disabled = true;
    try {
      await submit(text, status);
    } catch (err) {
      status.textContent = '';
      showErrorIn(alert, err);
      go.disabled = false;
    }
  });
  return form;
}
