// The e-mail verification screen (#/verify?token=...): where the link of the verification mail
// lands (KOUMPA_VERIFY_URL defaults to {KOUMPA_PUBLIC_URL}/#/verify, so the token rides in the
// URL's fragment and never reaches a server's access log). It takes the token out of the address
// bar at once, posts it to POST /v1/auth/verify and says what happened: verified (200), already
// used (409), expired (410) or not valid (400). When the link did not work and the user is signed
// in with an unverified address, "Resend the link" asks for a new mail (POST
// /v1/auth/verify/resend); signed out, a link to log in. Works signed in or not (main.js routes
// #/verify without a session).
import { h, alertBox, showErrorIn } from '../dom.js';
import { getToken } from '../session.js';

/**
 * The token of a verification link's hash ('#/verify?token=abc' -> 'abc'), or null. Parameters
 * follow the first '?' or '&' after the route (a KOUMPA_VERIFY_URL with a query of its own gets
 * '&token=').
 */
export function tokenFromHash(hash) {
  const route = String(hash || '').replace(/^#/, '');
  const at = route.search(/[?&]/);
  if (at < 0) return null;
  const token = new URLSearchParams(route.slice(at + 1)).get('token');
  return token && token.trim() ? token.trim() : null;
}

/** What a failed POST /v1/auth/verify means to the person who opened the link. */
function failure(err) {
  switch (err && err.code) {
    case 'token_expired':
      return { title: 'This link has expired.', message: 'Verification links work for a limited time; ask for a new one.' };
    case 'token_used':
      return { title: 'This link has already been used.', message: 'Your address may already be verified; log in to check.' };
    case 'invalid_token':
    case 'invalid_request':
      return {
        title: 'This link is not valid.',
        message: 'It may be mistyped or cut short, or a newer mail replaced it. Use the latest link you received.',
      };
    default:
      return err; // network, server errors: described by errors.js
  }
}

export async function render(root, ctx) {
  const token = tokenFromHash(location.hash);
  // the token is single-use and secret: out of the address bar (and the history) right away
  if (token) history.replaceState(history.state, '', `${location.pathname}${location.search}#/verify`);
  const heading = h('h1', { tabindex: '-1' }, 'Verify your address');
  const status = h('p', { role: 'status' });
  const alert = alertBox();
  const actions = h('div', { class: 'actions' });
  root.append(h('section', { class: 'auth' }, heading, h('div', { class: 'card narrow' }, status, alert, actions)));
  heading.focus();

  if (!token) {
    showErrorIn(alert, {
      title: 'This link has no token.',
      message: 'Open the link from your verification mail exactly as it was sent.',
    });
    offerNext(actions, await whoAmI(ctx), ctx, false);
    return;
  }
  status.textContent = 'Verifying your address…';
  try {
    const res = await ctx.api('POST', '/v1/auth/verify', { body: { token } });
    const email = res && res.user && res.user.email;
    status.textContent = email ? `Your address ${email} is verified. Thank you.` : 'Your address is verified. Thank you.';
    if (ctx.me) await ctx.refreshMe();
    actions.append(ctx.me ? h('a', { href: '#/projects' }, 'Go to your projects') : h('a', { href: '#/login' }, 'Log in'));
  } catch (err) {
    status.textContent = '';
    showErrorIn(alert, failure(err));
    offerNext(actions, await whoAmI(ctx), ctx, err && err.status >= 400 && err.status < 500);
  }
}

/** GET /v1/me when signed in (asked again if the session began after the page loaded), or null. */
async function whoAmI(ctx) {
  if (ctx.me || !getToken()) return ctx.me;
  return ctx.refreshMe();
}

/** After a failure: "Resend the link" for a signed-in, unverified user; else where to go next. */
function offerNext(actions, me, ctx, canResend) {
  if (!me) {
    actions.append(h('a', { href: '#/login' }, 'Log in'), h('span', { class: 'muted' }, 'to ask for a new link.'));
    return;
  }
  if (!canResend || me.email_verified) {
    actions.append(h('a', { href: '#/projects' }, 'Go to your projects'));
    return;
  }
  const sent = h('p', { role: 'status', class: 'muted' });
  const problem = alertBox();
  const resend = h('button', { type: 'button' }, 'Resend the link');
  resend.addEventListener('click', async () => {
    showErrorIn(problem, null);
    resend.disabled = true;
    sent.textContent = 'Sending…';
    try {
      const res = await ctx.api('POST', '/v1/auth/verify/resend');
      sent.textContent = `A new link is on its way to ${(res && res.email) || 'your address'}.`;
    } catch (err) {
      sent.textContent = '';
      showErrorIn(problem, err);
      resend.disabled = false;
    }
  });
  actions.append(resend);
  actions.after(sent, problem);
}
