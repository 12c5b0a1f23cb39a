// The form shared by the login and sign-up screens: Email, Password and one button; on success it
// keeps the token (js/session.js) and goes where the user was headed (or to the projects).
import { h, alertBox, showErrorIn } from '../dom.js';
import { setToken } from '../session.js';

export async function authForm(root, ctx, { title, button, path, passwordAutocomplete, other }) {
  const alert = alertBox();
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'username', required: true });
  const password = h('input', {
    id: 'password',
    name: 'password',
    type: 'password',
    autocomplete: passwordAutocomplete,
    required: true,
    minlength: path.endsWith('signup') ? 8 : null,
    'aria-describedby': path.endsWith('signup') ? 'password-hint' : null,
  });
  const submit = h('button', { type: 'submit' }, button);
  const status = h('p', { role: 'status', class: 'muted' });
  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'email' }, 'Email'), email),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'password' }, 'Password'),
      password,
      path.endsWith('signup') ? h('small', { id: 'password-hint', class: 'muted' }, 'At least 8 characters.') : null,
    ),
    alert,
    h('div', { class: 'actions' }, submit),
    status,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showErrorIn(alert, null);
    if (!email.value.trim() || !password.value) {
      showErrorIn(alert, { title: 'Missing details.', message: 'Enter your email and password.' });
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    status.textContent = button === 'Sign up' ? 'Creating your account…' : 'Logging in…';
    try {
      const res = await ctx.api('POST', path, { body: { email: email.value.trim(), password: password.value } });
      setToken(res.token);
      status.textContent = '';
      await ctx.refreshMe();
      const next = sessionStorage.getItem('koumpa.next');
      sessionStorage.removeItem('koumpa.next');
      ctx.navigate(next && !/^#\/(login|signup)/.test(next) ? next : '#/projects');
    } catch (err) {
      status.textContent = '';
      showErrorIn(alert, err);
      submit.disabled = false;
    }
  });
  const section = h('section', { class: 'auth' }, h('h1', {}, title), form, other);
  root.append(section);
  email.focus();
  const oauth = await oauthButton(ctx);
  if (oauth) form.before(oauth); // the provider's "Sign in" is the primary action
}

/** Where the server signs in through an identity provider (config.oauth), js/oauth.js (owned by the
 * billing/admin screens' author) may add its own button: it exports renderSignIn(container, ctx). */
async function oauthButton(ctx) {
  if (!ctx.config.oauth) return null;
  const box = h('div', { class: 'oauth' });
  try {
    const mod = await import('../oauth.js');
    if (typeof mod.renderSignIn === 'function') await mod.renderSignIn(box, ctx);
  } catch {
    return null;
  }
  return box;
}
