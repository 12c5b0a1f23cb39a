// The projects screen (#/projects): the user's projects, newest first, a page at a time
// (GET /v1/projects, next_cursor -> "More"), and the form that starts a new one (POST /v1/projects).
import { h, alertBox, showErrorIn, formatDate, promptForm } from '../dom.js';
import { startGeneration } from '../generation.js';

export async function render(root, ctx) {
  const form = promptForm({
    id: 'new-prompt',
    label: 'Describe your app',
    button: 'Generate',
    emptyMessage: 'Describe the app you want first.',
    submit: async (text, status) => {
      status.textContent = 'Starting the generation…';
      const { projectId } = await startGeneration(ctx, '/v1/projects', text);
      ctx.navigate('#/projects/' + projectId);
    },
  });
  const list = h('ul', { class: 'project-list', 'aria-label': 'Your projects' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'More');
  const listAlert = alertBox();
  const empty = h('p', { class: 'muted', hidden: true }, 'No projects yet: describe an app above.');
  root.append(h('h1', {}, 'Projects'), form, h('h2', {}, 'Your apps'), listAlert, empty, list, more);

  const ac = new AbortController();
  let cursor = null;

  async function loadPage(first = false) {
    more.disabled = true;
    showErrorIn(listAlert, null);
    try {
      const q = cursor ? '?cursor=' + encodeURIComponent(cursor) : '';
      const page = await ctx.api('GET', '/v1/projects' + q, { signal: ac.signal });
      for (const p of page.projects) list.append(row(p));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = list.children.length > 0;
    } catch (err) {
      if (first && err.status === 0) throw err; // the router shows it and tries again
      if (err.name !== 'AbortError') showErrorIn(listAlert, err);
    }
    more.disabled = false;
  }

  more.addEventListener('click', async () => {
    const before = list.children.length;
    await loadPage();
    list.children[before]?.querySelector('a')?.focus();
  });

  await loadPage(true);
  return () => ac.abort();
}

function row(p) {
  return h(
    'li',
    { class: 'card' },
    h('a', { href: '#/projects/' + p.id }, p.name || p.id),
    h('span', { class: 'badge ' + p.status }, p.status),
    h('span', { class: 'muted' }, 'v' + p.latest_version + ' · ', h('time', { datetime: p.updated_at }, formatDate(p.updated_at))),
  );
}
