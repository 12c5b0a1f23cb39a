// views/admin.js - "Admin" (#/admin), for admins only (GET /v1/me is_admin;
// the API answers 403 to anyone else whatever this screen shows):
//
// - Plans: the offered plans (GET /v1/plans) and one editor for a plan's name,
//   price, currency, credits, daily bonus, concurrency limit, Stripe price id
//   and active flag, saved with PUT /v1/admin/plans/{id}. Only the fields that
//   differ from the plan as loaded are sent (the API keeps the others), so a
//   hidden or new plan is edited by typing its id. The API validates; its 400
//   message starts with the field it is about ("daily_bonus must be a whole
//   number from 0 to 100000", "unknown field x", "name is required for a new
//   plan"), and fieldFromMessage() puts it under that field.
// - Users: find one by email (GET /v1/admin/users?email=), move them to a plan
//   (PUT /v1/admin/users/{id}/plan) and grant or revoke their admin right
//   (PUT /v1/admin/users/{id}/admin).
import { formatDate, h as el } from '../dom.js';
import { formatPrice, messageRegions } from './account-ui.js';

// The editable fields of a plan (docs/api/openapi.yaml PlanEdit), in form order.
export const PLAN_FIELDS = [
  { name: 'name', label: 'Name', type: 'text', maxlength: 100 },
  { name: 'price_cents', label: 'Price (cents a month)', type: 'int', min: 0, max: 100000000 },
  { name: 'currency', label: 'Currency', type: 'text', maxlength: 3, hint: 'A 3-letter code such as EUR.' },
  { name: 'monthly_credits', label: 'Monthly credits', type: 'int', min: 0, max: 1000000 },
  { name: 'daily_bonus', label: 'Daily bonus', type: 'int', min: 0, max: 100000 },
  { name: 'max_concurrent_generations', label: 'Concurrent generations', type: 'int', min: 1, max: 1000 },
  {
    name: 'stripe_price_id',
    label: 'Stripe price id',
    type: 'text',
    maxlength: 127,
    hint: 'price_… from Stripe; empty: the plan cannot be bought.',
  },
  { name: 'active', label: 'Offered to users (active)', type: 'bool' },
];

// The form field an API validation message is about, or null ("plan id ..." → "id").
export function fieldFromMessage(message) {
  const m = String(message || '');
  if (/^plan id\b/.test(m) || /^id\b/.test(m)) return 'id';
  const unknown = /^unknown field (\S+)/.exec(m);
  const name = unknown ? unknown[1] : (/^([a-z_]+)\b/.exec(m) || [])[1];
  return PLAN_FIELDS.some((f) => f.name === name) ? name : null;
}

// The body of PUT /v1/admin/plans/{id}: the form's values that differ from
// `loaded` (null for a plan not loaded: every filled-in field). Returns
// { body } or { field, message } for a value that is not a whole number.
export function planChanges(values, loaded) {
  const body = {};
  for (const f of PLAN_FIELDS) {
    const raw = values[f.name];
    let v;
    if (f.type === 'bool') v = Boolean(raw);
    else if (f.type === 'int') {
      const s = String(raw ?? '').trim();
      if (s === '') {
        if (loaded) return { field: f.name, message: `${f.label} must be a whole number` };
        continue;
      }
      if (!/^-?\d+$/.test(s)) return { field: f.name, message: `${f.label} must be a whole number` };
      v = Number(s);
    } else {
      v = String(raw ?? '').trim();
      if (!loaded && v === '') continue;
    }
    if (loaded && loaded[f.name] === v) continue;
    if (!loaded && f.type === 'bool' && v === true) continue; // a new plan is active by default
    body[f.name] = v;
  }
  return { body };
}

function fieldId(name) {
  return `admin-plan-${name.replace(/_/g, '-')}`;
}

// One labelled input with its own error line (aria-describedby).
function planInput(f) {
  const id = fieldId(f.name);
  const err = el('p', { id: `${id}-err`, class: 'field-error', hidden: true });
  const hint = f.hint ? el('p', { id: `${id}-hint`, class: 'muted' }, f.hint) : null;
  const describedBy = [hint && `${id}-hint`, `${id}-err`].filter(Boolean).join(' ');
  if (f.type === 'bool') {
    const input = el('input', { id, name: f.name, type: 'checkbox', 'aria-describedby': describedBy });
    return el('div', { class: 'field field-check' }, input, el('label', { for: id }, f.label), err);
  }
  const input = el('input', {
    id,
    name: f.name,
    type: 'text',
    inputmode: f.type === 'int' ? 'numeric' : null,
    maxlength: f.maxlength || null,
    autocomplete: 'off',
    'aria-describedby': describedBy,
  });
  return el('div', { class: 'field' }, el('label', { for: id }, f.label), input, hint, err);
}

function showFieldError(form, name, message) {
  const input = form.elements[name];
  const err = form.querySelector(`#${fieldId(name)}-err`);
  if (!input || !err) return false;
  input.setAttribute('aria-invalid', 'true');
  err.textContent = message;
  err.hidden = false;
  input.focus();
  return true;
}

function clearFieldErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) {
    e.textContent = '';
    e.hidden = true;
  }
  for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
}

function plansTable(plans) {
  return el(
    'div',
    { class: 'acct-scroll', tabindex: '0', role: 'region', 'aria-label': 'Offered plans' },
    el(
      'table',
      { class: 'acct-ledger' },
      el('caption', { class: 'visually-hidden' }, 'Offered plans'),
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          ['Plan', 'Price', 'Monthly', 'Daily', 'At once', 'Stripe price'].map((h) => el('th', { scope: 'col' }, h)),
        ),
      ),
      el(
        'tbody',
        {},
        plans.map((p) =>
          el(
            'tr',
            {},
            el('td', {}, `${p.name} (${p.id})`),
            el('td', {}, formatPrice(p)),
            el('td', { class: 'num' }, String(p.monthly_credits)),
            el('td', { class: 'num' }, String(p.daily_bonus)),
            el('td', { class: 'num' }, String(p.max_concurrent_generations)),
            el('td', {}, p.stripe_price_id || '(none)'),
          ),
        ),
      ),
    ),
  );
}

// The plan editor: pick a plan (or type another id), change fields, save.
function planEditor(ctx, plans, onSaved) {
  const msg = messageRegions();
  const known = new Map(plans.map((p) => [p.id, p]));
  const picker = el(
    'select',
    { id: 'admin-plan-pick' },
    plans.map((p) => el('option', { value: p.id }, `${p.name} (${p.id})`)),
    el('option', { value: '' }, 'Another plan (type its id)'),
  );
  const idErr = el('p', { id: 'admin-plan-id-err', class: 'field-error', hidden: true });
  const idInput = el('input', {
    id: 'admin-plan-id',
    name: 'id',
    type: 'text',
    autocomplete: 'off',
    pattern: '[a-z0-9_\\-]{1,63}',
    'aria-describedby': 'admin-plan-id-hint admin-plan-id-err',
  });
  const save = el('button', { type: 'submit' }, 'Save plan');
  const form = el(
    'form',
    { class: 'acct-form', novalidate: true, 'aria-labelledby': 'admin-plan-edit-h' },
    el('h3', { id: 'admin-plan-edit-h' }, 'Edit a plan'),
    el('div', { class: 'field' }, el('label', { for: 'admin-plan-pick' }, 'Plan to edit'), picker),
    el(
      'div',
      { class: 'field' },
      el('label', { for: 'admin-plan-id' }, 'Plan id'),
      idInput,
      el(
        'p',
        { id: 'admin-plan-id-hint', class: 'muted' },
        'a-z, 0-9, _ and -. A new id creates a plan (name, price, credits, bonus and limit required).',
      ),
      idErr,
    ),
    el('div', { class: 'acct-grid' }, PLAN_FIELDS.map(planInput)),
    ...msg.nodes,
    save,
  );

  function fill(plan) {
    idInput.value = plan ? plan.id : '';
    idInput.readOnly = Boolean(plan);
    for (const f of PLAN_FIELDS) {
      const input = form.elements[f.name];
      if (f.type === 'bool') input.checked = plan ? plan.active : true;
      else input.value = plan ? String(plan[f.name] ?? '') : '';
    }
    clearFieldErrors(form);
    msg.ok();
  }
  picker.addEventListener('change', () => {
    fill(known.get(picker.value) || null);
    msg.say('');
  });
  fill(plans[0] || null);
  if (!plans.length) picker.value = '';

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    msg.ok();
    const id = idInput.value.trim();
    if (!id) {
      showFieldError(form, 'id', 'Type the plan id.');
      msg.fail('Type the plan id.');
      return;
    }
    const values = {};
    for (const f of PLAN_FIELDS) {
      const input = form.elements[f.name];
      values[f.name] = f.type === 'bool' ? input.checked : input.value;
    }
    const loaded = known.get(id) || null;
    const changes = planChanges(values, loaded);
    if (changes.field) {
      showFieldError(form, changes.field, changes.message);
      msg.fail(changes.message);
      return;
    }
    if (!Object.keys(changes.body).length) {
      msg.say('Nothing changed: nothing to save.');
      return;
    }
    save.disabled = true;
    msg.say(`Saving plan ${id}…`);
    try {
      const plan = await ctx.api('PUT', `/v1/admin/plans/${encodeURIComponent(id)}`, { body: changes.body });
      msg.say(`Saved plan ${plan.name} (${plan.id}).`);
      onSaved(plan);
    } catch (err) {
      const field = err.status === 400 ? fieldFromMessage(err.message) : null;
      if (field) showFieldError(form, field, err.message);
      msg.fail(err.status === 400 ? `Not saved: ${err.message}` : err);
    } finally {
      save.disabled = false;
    }
  });
  return { form, fill, picker };
}

async function plansSection(ctx) {
  const section = el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'admin-plans-h' },
    el('h2', { id: 'admin-plans-h' }, 'Plans'),
  );
  const body = el('div');
  section.append(body);
  async function load(selectId) {
    const { plans } = await ctx.api('GET', '/v1/plans');
    const editor = planEditor(ctx, plans, (saved) => reload(saved.id, editor));
    body.replaceChildren(
      plansTable(plans),
      el('p', { class: 'muted' }, 'Only active plans are listed; edit a hidden one by typing its id.'),
      editor.form,
    );
    if (selectId && plans.some((p) => p.id === selectId)) {
      editor.picker.value = selectId;
      editor.fill(plans.find((p) => p.id === selectId));
    }
    return editor;
  }
  // After a save: redraw with the saved plan selected, keeping the saved message.
  async function reload(id, previous) {
    const said = previous.form.querySelector('[role="status"]').textContent;
    const editor = await load(id).catch(() => null);
    if (!editor) return;
    editor.form.querySelector('[role="status"]').textContent = said;
    editor.form.querySelector('button[type="submit"]').focus();
  }
  await load(null);
  return section;
}

function userCard(ctx, user, plans, msg, onChange) {
  const planIds = plans.map((p) => p.id);
  if (!planIds.includes(user.plan_id)) planIds.unshift(user.plan_id);
  const pick = el(
    'select',
    { id: 'admin-user-plan' },
    planIds.map((id) => {
      const p = plans.find((x) => x.id === id);
      return el('option', { value: id, selected: id === user.plan_id }, p ? `${p.name} (${id})` : id);
    }),
  );
  const change = el('button', { type: 'submit', class: 'secondary' }, 'Change plan');
  const planForm = el(
    'form',
    { class: 'acct-inline' },
    el('label', { for: 'admin-user-plan' }, 'Plan'),
    pick,
    change,
  );
  planForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    await act(change, '#admin-user-plan', `Moving ${user.email} to ${pick.value}…`, () =>
      ctx.api('PUT', `/v1/admin/users/${encodeURIComponent(user.id)}/plan`, { body: { plan_id: pick.value } }),
    );
  });
  const toggle = el(
    'button',
    { type: 'button', class: 'secondary', id: 'admin-user-admin' },
    user.is_admin ? 'Remove admin right' : 'Make admin',
  );
  toggle.addEventListener('click', () =>
    act(toggle, '#admin-user-admin', user.is_admin ? 'Removing the admin right…' : 'Granting the admin right…', () =>
      ctx.api('PUT', `/v1/admin/users/${encodeURIComponent(user.id)}/admin`, { body: { is_admin: !user.is_admin } }),
    ),
  );
  // Runs a change; the redrawn card gets the focus back on `refocus`.
  async function act(button, refocus, progress, call) {
    msg.ok();
    msg.say(progress);
    button.disabled = true;
    try {
      const updated = await call();
      if (ctx.me && updated.id === ctx.me.id && ctx.refreshMe) ctx.refreshMe(); // my own rights changed
      onChange(updated, refocus, `Saved: ${updated.email || updated.id} is on plan ${updated.plan_id}` +
        `${updated.is_admin ? ' and is an admin' : ' and is not an admin'}.`);
    } catch (err) {
      msg.fail(err.status === 400 || err.status === 404 ? `Not saved: ${err.message}` : err);
      button.disabled = false;
    }
  }
  return el(
    'div',
    { class: 'acct-user' },
    el(
      'dl',
      { class: 'acct-facts' },
      el('div', {}, el('dt', {}, 'Email'), el('dd', {}, user.email || '(none)')),
      el('div', {}, el('dt', {}, 'User id'), el('dd', {}, user.id)),
      el('div', {}, el('dt', {}, 'Email verified'), el('dd', {}, user.email_verified ? 'yes' : 'no')),
      el('div', {}, el('dt', {}, 'Admin'), el('dd', {}, user.is_admin ? 'yes' : 'no')),
      el('div', {}, el('dt', {}, 'Plan'), el('dd', {}, user.plan_id)),
      el('div', {}, el('dt', {}, 'Signed up'), el('dd', {}, formatDate(user.created_at))),
    ),
    planForm,
    el('p', {}, toggle),
  );
}

async function usersSection(ctx) {
  const { plans } = await ctx.api('GET', '/v1/plans');
  const msg = messageRegions();
  const result = el('div');
  const email = el('input', { id: 'admin-user-email', name: 'email', type: 'email', autocomplete: 'off' });
  const find = el('button', { type: 'submit' }, 'Find user');
  const form = el(
    'form',
    { class: 'acct-inline', role: 'search', 'aria-label': 'Find a user' },
    el('label', { for: 'admin-user-email' }, 'User’s email'),
    email,
    find,
  );
  function show(user, refocus, said) {
    result.replaceChildren(userCard(ctx, user, plans, msg, show));
    msg.say(said || '');
    if (refocus) result.querySelector(refocus).focus();
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.ok();
    result.replaceChildren();
    const q = email.value.trim();
    if (!q) {
      msg.fail('Type the email of the user to find.');
      email.focus();
      return;
    }
    find.disabled = true;
    msg.say('Looking…');
    try {
      const { users } = await ctx.api('GET', `/v1/admin/users?${new URLSearchParams({ email: q })}`);
      if (users.length) show(users[0], null, `Found ${users[0].email}.`);
      else msg.say(`No user has the email ${q}.`);
    } catch (err) {
      msg.fail(err.status === 400 ? err.message : err);
    } finally {
      find.disabled = false;
    }
  });
  return el(
    'section',
    { class: 'card acct-card', 'aria-labelledby': 'admin-users-h' },
    el('h2', { id: 'admin-users-h' }, 'Users'),
    form,
    ...msg.nodes,
    result,
  );
}

export async function render(root, ctx) {
  const msg = messageRegions();
  root.replaceChildren(el('h1', {}, 'Admin'), ...msg.nodes);
  let me = ctx.me;
  try {
    if (!me) me = await ctx.api('GET', '/v1/me');
  } catch (err) {
    msg.fail(err);
    return undefined;
  }
  if (!me.is_admin) {
    root.append(
      el(
        'p',
        { class: 'acct-notice' },
        'Admins only: this screen is for administrators. An admin can give your account the admin right, ' +
          'or an operator with “koumpa admin grant”.',
      ),
      el('p', {}, el('a', { href: '#/projects' }, 'Back to your projects')),
    );
    return undefined;
  }
  msg.say('Loading plans…');
  try {
    const [plans, users] = await Promise.all([plansSection(ctx), usersSection(ctx)]);
    root.append(el('div', { class: 'acct-sections' }, plans, users));
    msg.say('');
  } catch (err) {
    msg.fail(err);
  }
  return undefined;
}
