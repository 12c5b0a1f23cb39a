// The project screen (#/projects/{id}, #/projects/{id}/v/{n}): the generation live while a version
// generates (js/generation.js), then the app: the preview (an iframe on the apps origin), the
// selected version's files with their sources, what changed from the previous ready version
// (js/diff.js), the versions with their prompts and messages, the follow-up prompt, "Download zip"
// and "Delete project".
import { h, alertBox, showErrorIn, formatDate, promptForm } from '../dom.js';
import { request } from '../api.js';
import { diffFiles, previousReady } from '../diff.js';
import { startGeneration, liveFor, forget } from '../generation.js';
import { livePanel } from './live.js';

const enc = encodeURIComponent;

export async function render(root, ctx) {
  const { id } = ctx.params;
  const ac = new AbortController();
  const cleanups = [() => ac.abort()];
  const project = await ctx.api('GET', `/v1/projects/${enc(id)}`, { signal: ac.signal });
  const versions = project.versions;
  const latest = versions[versions.length - 1];
  const wanted = ctx.params.n ? versions.find((v) => v.n === ctx.params.n) : null;
  const selected = wanted || versions.filter((v) => v.status === 'ready').pop() || latest;
  const rerender = () => ctx.navigate(location.hash); // the router renders the screen again

  const work = h('div', { class: 'work' });
  const side = h('div', { class: 'preview' });
  root.append(
    h('h1', {}, project.name || project.id),
    h('p', { class: 'muted' }, 'Created ', h('time', { datetime: project.created_at }, formatDate(project.created_at))),
    h('div', { class: 'project' }, side, work),
  );

  const generating = latest.status === 'generating';
  if (generating) {
    // beside the preview while there is one; in its place (the wide column) until the first is ready
    const live = liveFor(project.id, latest.n);
    cleanups.push(livePanel(project.url ? work : side, ctx, project, latest, live, rerender));
  }
  work.append(followUp(ctx, project, rerender));
  if (project.url || !generating) side.append(preview(selected, project));
  work.append(versionSection(ctx, project, selected));
  work.append(versionList(project, selected));
  work.append(dangerZone(ctx, project));
  return () => cleanups.forEach((fn) => fn());
}

function followUp(ctx, project, rerender) {
  return promptForm({
    id: 'follow-up',
    label: 'What should change?',
    button: 'Send',
    rows: 3,
    emptyMessage: 'Say what should change first.',
    submit: async (text) => {
      await startGeneration(ctx, `/v1/projects/${enc(project.id)}/versions`, text, project.id);
      if (location.hash !== '#/projects/' + project.id) ctx.navigate('#/projects/' + project.id);
      else rerender();
    },
  });
}

function preview(version, project) {
  const url = version.status === 'ready' ? version.url : project.url;
  const box = h('section', { 'aria-labelledby': 'preview-h' }, h('h2', { id: 'preview-h' }, 'Preview'));
  if (!url) {
    box.append(h('p', { class: 'muted' }, 'The preview appears once a version is ready.'));
    return box;
  }
  const target = new URL(url, location.href);
  if (target.origin === location.origin) {
    // never run generated code on the dashboard's origin
    box.append(h('p', { class: 'muted' }, 'The apps origin is the dashboard’s own, so the preview is not shown here: ', h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, 'open the app')));
    return box;
  }
  box.append(
    h('iframe', {
      title: 'App preview',
      src: target.href,
      sandbox: 'allow-scripts allow-forms allow-same-origin allow-popups',
      referrerpolicy: 'no-referrer',
    }),
    h('p', {}, h('a', { href: target.href, target: '_blank', rel: 'noopener noreferrer' }, `Open version ${version.status === 'ready' ? version.n : project.latest_ready_version} in a new tab`)),
  );
  return box;
}

function versionSection(ctx, project, v) {
  const box = h('section', { class: 'card', 'aria-labelledby': 'version-h' }, h('h2', { id: 'version-h' }, `Version ${v.n}`));
  if (v.status !== 'ready') {
    box.append(h('p', { class: 'muted' }, v.status === 'generating' ? 'Its files appear once it is ready.' : 'It failed, so it has no files.'));
    return box;
  }
  const prev = previousReady(project.versions, v.n);
  const d = diffFiles(prev ? prev.files : null, v.files);
  const kind = {};
  for (const k of ['added', 'changed', 'deleted']) for (const p of d[k]) kind[p] = k;
  const changes = h('ul', { class: 'changes' });
  for (const k of ['added', 'changed', 'deleted'])
    for (const p of d[k]) changes.append(h('li', { class: 'change-' + k }, h('code', {}, p), ` ${k}`));
  box.append(
    h('h3', {}, prev ? `What changed since version ${prev.n}` : 'What changed (the first version)'),
    changes.children.length ? changes : h('p', { class: 'muted' }, 'No file changed.'),
    h('h3', {}, 'Files'),
    fileList(project, v, kind),
    h('p', {}, downloadLink(ctx, project, v)),
  );
  return box;
}

function fileList(project, v, kind) {
  const list = h('ul', { class: 'files' });
  const viewer = h('div', { class: 'viewer' });
  const alert = alertBox();
  let open = null;
  for (const f of v.files) {
    const button = h('button', { type: 'button', class: 'link', 'aria-expanded': 'false', 'aria-controls': 'file-viewer' }, f.path);
    button.addEventListener('click', async () => {
      showErrorIn(alert, null);
      if (open === button) {
        viewer.replaceChildren();
        button.setAttribute('aria-expanded', 'false');
        open = null;
        return;
      }
      open?.setAttribute('aria-expanded', 'false');
      open = button;
      button.setAttribute('aria-expanded', 'true');
      viewer.replaceChildren(h('p', { role: 'status' }, `Loading ${f.path}…`));
      try {
        const res = await request('GET', `/v1/projects/${enc(project.id)}/versions/${v.n}/file?path=${enc(f.path)}`);
        const type = res.headers.get('Content-Type') || f.content_type || '';
        const text = /^text\/|json|javascript|xml|svg/.test(type) ? await res.text() : null;
        if (open !== button) return;
        viewer.replaceChildren(
          h('h4', {}, f.path),
          text === null ? h('p', { class: 'muted' }, `${type}, ${f.size} bytes: not shown as text.`) : h('pre', { tabindex: '0', 'aria-label': `Source of ${f.path}` }, text),
        );
      } catch (err) {
        viewer.replaceChildren();
        showErrorIn(alert, err);
      }
    });
    list.append(h('li', {}, button, h('span', { class: 'muted' }, ` ${f.size} bytes${kind[f.path] ? ' · ' + kind[f.path] : ''}`)));
  }
  viewer.id = 'file-viewer';
  return h('div', {}, list, alert, viewer);
}

function downloadLink(ctx, project, v) {
  const link = h('a', { href: `#/projects/${project.id}/v/${v.n}`, class: 'button secondary' }, 'Download zip');
  const alert = alertBox();
  link.addEventListener('click', async (e) => {
    e.preventDefault();
    showErrorIn(alert, null);
    link.setAttribute('aria-busy', 'true');
    try {
      // fetched with the bearer token, then saved from an object URL: the token is never in a URL
      const res = await request('GET', `/v1/projects/${enc(project.id)}/versions/${v.n}/download`);
      const blob = await res.blob();
      const m = /filename="?([^";]+)"?/.exec(res.headers.get('Content-Disposition') || '');
      const name = m ? m[1] : `${project.id}-v${v.n}.zip`;
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      showErrorIn(alert, err);
    }
    link.removeAttribute('aria-busy');
  });
  return h('span', {}, link, alert);
}

function versionList(project, selected) {
  const list = h('ol', { class: 'versions', reversed: true });
  for (const v of [...project.versions].reverse()) {
    const title = v.status === 'ready'
      ? h('a', { href: `#/projects/${project.id}/v/${v.n}`, 'aria-current': v.n === selected.n ? 'true' : null }, `Version ${v.n}`)
      : h('strong', {}, `Version ${v.n}`);
    list.append(
      h(
        'li',
        { class: 'card' },
        h('div', { class: 'actions' }, title, h('span', { class: 'badge ' + v.status }, v.status), h('time', { class: 'muted', datetime: v.created_at }, formatDate(v.created_at))),
        h('p', {}, h('span', { class: 'muted' }, 'Prompt: '), v.prompt),
        v.message ? h('p', {}, h('span', { class: 'muted' }, 'Reply: '), v.message) : null,
        v.error ? h('p', { class: 'error-text' }, `${v.error.message}${v.error.refunded ? ' (credit given back)' : ''}`) : null,
      ),
    );
  }
  return h('section', { 'aria-labelledby': 'versions-h' }, h('h2', { id: 'versions-h' }, 'Versions'), list);
}

function dangerZone(ctx, project) {
  const alert = alertBox();
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete project');
  const confirmBox = h('div', { class: 'confirm', hidden: true });
  const yes = h('button', { type: 'button', class: 'danger' }, 'Yes, delete it');
  const no = h('button', { type: 'button', class: 'secondary' }, 'Keep it');
  confirmBox.append(h('p', { id: 'delete-q' }, `Delete “${project.name}”, all its versions and its app? This cannot be undone.`), h('div', { class: 'actions' }, yes, no));
  confirmBox.setAttribute('role', 'group');
  confirmBox.setAttribute('aria-labelledby', 'delete-q');
  del.addEventListener('click', () => {
    confirmBox.hidden = false;
    del.setAttribute('aria-expanded', 'true');
    no.focus();
  });
  no.addEventListener('click', () => {
    confirmBox.hidden = true;
    del.setAttribute('aria-expanded', 'false');
    del.focus();
  });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    showErrorIn(alert, null);
    try {
      await ctx.api('DELETE', `/v1/projects/${enc(project.id)}`);
      forget(project.id);
      ctx.navigate('#/projects');
    } catch (err) {
      showErrorIn(alert, err);
      yes.disabled = false;
    }
  });
  return h('section', { class: 'card', 'aria-labelledby': 'danger-h' }, h('h2', { id: 'danger-h' }, 'Delete'), del, confirmBox, alert);
}
