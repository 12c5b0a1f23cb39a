// The sign-up screen (#/signup): a new local account (POST /v1/auth/signup), logged in at once.
import { h } from '../dom.js';
import { authForm } from './auth-form.js';

export function render(root, ctx) {
  const other = h('p', {}, 'Already have an account? ', h('a', { href: '#/login' }, 'Log in instead'));
  return authForm(root, ctx, { title: 'Sign up', button: 'Sign up', path: '/v1/auth/signup', passwordAutocomplete: 'new-password', other });
}
