// The login screen (#/login): email and password for a token (POST /v1/auth/login).
import { h } from '../dom.js';
import { authForm } from './auth-form.js';

export function render(root, ctx) {
  const other = h('p', {}, 'New here? ', h('a', { href: '#/signup' }, 'Create an account'));
  return authForm(root, ctx, { title: 'Log in', button: 'Log in', path: '/v1/auth/login', passwordAutocomplete: 'current-password', other });
}
