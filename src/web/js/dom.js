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
  el.append(h('strong', {}, d.title), ' ', d.message);
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
