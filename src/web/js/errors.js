// What to tell a person about an error, and what they can do about it.
// describeError(err) -> { title, message, action: { label, href } | null }, for any thrown value,
// mostly ApiError (js/api.js). Views render it with role="alert" (dom.js alertBox).

/** "this needs 1 credit" -> "This needs 1 credit." */
function sentence(text) {
  const t = String(text || '').trim();
  if (!t) return '';
  return t[0].toUpperCase() + t.slice(1) + (/[.!?…]$/.test(t) ? '' : '.');
}

export function describeError(err) {
  const status = err && typeof err.status === 'number' ? err.status : null;
  const code = (err && err.code) || '';
  const apiMessage = sentence(err && err.message);
  if (err && typeof err.title === 'string') return { title: err.title, message: apiMessage, action: null }; // the view's own
  if (status === 0 || code === 'network') {
    return { title: 'Connection lost', message: 'Cannot reach the server. Reconnecting…', action: null };
  }
  if (status === 401) {
    if (err.details && err.details.authenticated === false) {
      return { title: 'Could not log in', message: apiMessage || 'Invalid email or password.', action: null };
    }
    return {
      title: 'Signed out',
      message: 'Your session has ended. Log in again.',
      action: { label: 'Log in', href: '#/login' },
    };
  }
  if (status === 402) {
    return {
      title: 'Out of credits',
      message: (apiMessage ? apiMessage + ' ' : '') + 'Upgrade your plan or wait for tomorrow’s bonus credits.',
      action: { label: 'Upgrade', href: '#/billing' },
    };
  }
  if (code === 'too_many_generations' || code === 'generation_in_progress') {
    return {
      title: 'A generation is already running',
      message: 'Wait for it to finish, or cancel it, then try again.',
      action: null,
    };
  }
  if (status === 429) {
    return { title: 'Too many requests', message: apiMessage || 'Wait a moment and try again.', action: null };
  }
  if (code === 'llm_not_configured') {
    return {
      title: 'No language model is configured',
      message: 'The server’s operator must configure a model provider. ' + apiMessage,
      action: null,
    };
  }
  if (status === 403) return { title: 'Not allowed', message: apiMessage, action: null };
  if (status === 404) return { title: 'Not found', message: apiMessage, action: { label: 'Projects', href: '#/projects' } };
  if (status >= 500) {
    const id = err.details && err.details.requestId;
    return {
      title: 'The server could not do it',
      message: `${apiMessage} Try again later${id ? ` (request ${id})` : ''}.`,
      action: null,
    };
  }
  if (status) return { title: 'That did not work', message: apiMessage, action: null };
  return { title: 'Something went wrong', message: apiMessage || String(err), action: null };
}
