// The generation panel of the project screen: the model's text streaming in, each file as it is
// written, progress, "Reconnecting…" when the connection drops, and "Cancel generation". It shows
// the follower's state (js/generation.js) first, then each new event once.
import { h, alertBox, showErrorIn } from '../dom.js';
import { describeError } from '../errors.js';

export function livePanel(work, ctx, project, version, live, rerender) {
  const s = live.state;
  const status = h('p', { role: 'status', class: 'live-status' });
  const count = h('span', { class: 'muted' });
  const text = h('pre', { class: 'stream', tabindex: '0', 'aria-label': 'The model’s output' }, s.text);
  const files = h('ul', { class: 'files', 'aria-label': 'Files written' });
  const alert = alertBox();
  const cancel = h('button', { type: 'button', class: 'danger' }, 'Cancel generation');
  for (const f of s.files) files.append(fileItem(f));
  const panel = h(
    'section',
    { class: 'card live', 'aria-labelledby': 'live-h' },
    h('h2', { id: 'live-h' }, `Generating version ${version.n}`),
    h('p', { class: 'muted' }, version.prompt),
    h('progress', { 'aria-label': 'Generation progress' }),
    status,
    h('div', { class: 'actions' }, cancel, count),
    alert,
    h('h3', {}, 'Files written'),
    files,
    h('h3', {}, 'The model’s output'),
    text,
  );
  work.append(panel);

  const say = () => {
    count.textContent = `${s.chars.toLocaleString()} characters`;
  };
  const progress = () => {
    const n = s.files.length;
    status.textContent = n === 0 ? 'Writing…' : `Writing… ${n} file${n === 1 ? '' : 's'} written, the last ${s.files[n - 1].path}.`;
  };
  say();
  progress();
  text.scrollTop = text.scrollHeight;

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    showErrorIn(alert, null);
    status.textContent = 'Cancelling…';
    try {
      await ctx.api('POST', `/v1/projects/${encodeURIComponent(project.id)}/cancel`);
    } catch (err) {
      if (err.code === 'not_generating') return rerender();
      showErrorIn(alert, err);
      cancel.disabled = false;
    }
  });

  const unsubscribe = live.subscribe((kind, payload) => {
    if (kind === 'event') {
      const { event, data } = payload;
      if (event === 'delta' && typeof data.text === 'string') {
        const atEnd = text.scrollTop + text.clientHeight >= text.scrollHeight - 24;
        text.append(data.text);
        if (atEnd) text.scrollTop = text.scrollHeight;
        say();
      } else if (event === 'file') {
        files.append(fileItem(data));
        progress();
      } else if (event === 'done') {
        status.textContent = `Version ${data.version} is ready.`;
      } else if (event === 'error') {
        status.textContent = `The generation failed: ${data.message}${data.refunded ? ' The credit was given back.' : ''}`;
      }
    } else if (kind === 'connection') {
      if (payload.state === 'reconnecting') {
        status.textContent = 'Reconnecting…';
        if (payload.error) showErrorIn(alert, payload.error);
      } else {
        showErrorIn(alert, null);
        progress();
      }
    } else if (kind === 'finished') {
      if (payload.how !== 'aborted') rerender();
    } else if (kind === 'failed') {
      status.textContent = describeError(payload).title;
      showErrorIn(alert, payload);
    }
  });
  return () => unsubscribe();
}

function fileItem(f) {
  return h('li', {}, h('code', {}, f.path), h('span', { class: 'muted' }, ` ${Number(f.bytes).toLocaleString()} bytes`));
}
