// Live generations, shared by the screens: one follower per project that reads the generation's
// events (js/sse.js follow(): the streamed POST first when the API streams it, then
// GET /v1/projects/{id}/events with Last-Event-ID after a drop) and keeps what they said - the
// version, the model's text, the files written, how it ended - in sessionStorage under
// koumpa.live.<project id>, together with the id of the last event applied. A reload therefore
// shows the same text and resumes after that id: nothing is shown twice, nothing is missed.
import { api, request, ApiError } from './api.js';
import { follow } from './sse.js';
import { onChange } from './session.js';

const KEY_PREFIX = 'koumpa.live.';
const MAX_TEXT = 100000; // characters of the model's text kept for display (the end of it)
const lives = new Map();

// signed out (here or in another tab): stop following, the next user must not see these
onChange((token) => {
  if (token) return;
  for (const live of lives.values()) live.stop();
  lives.clear();
  try {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith(KEY_PREFIX)) sessionStorage.removeItem(key);
    }
  } catch {
    /* storage disabled: nothing kept */
  }
});

const isFinal = (ev) => ev.event === 'done' || ev.event === 'error';
const fresh = () => ({ version: null, lastId: '', text: '', chars: 0, files: [], end: null });

function load(projectId) {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY_PREFIX + projectId) || 'null');
    return s && typeof s === 'object' && typeof s.lastId === 'string' ? { ...fresh(), ...s } : null;
  } catch {
    return null;
  }
}

class Live {
  constructor(projectId, state) {
    this.projectId = projectId;
    this.state = state || fresh();
    this.subs = new Set();
    this.ac = new AbortController();
    this.connection = 'connecting';
    this.failure = null;
    this.finished = false;
    this.idKnown = null;
  }

  subscribe(fn) {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }

  emit(kind, payload) {
    for (const fn of [...this.subs]) fn(kind, payload, this);
  }

  save() {
    if (!this.projectId) return;
    try {
      sessionStorage.setItem(KEY_PREFIX + this.projectId, JSON.stringify(this.state));
    } catch {
      /* storage full or disabled: a reload then starts from the first event */
    }
  }

  apply(ev) {
    let data = {};
    try {
      data = JSON.parse(ev.data);
    } catch {
      /* not JSON: shown as an event without details */
    }
    const s = this.state;
    if (ev.event === 'project') {
      s.version = data.version;
      if (!this.projectId && data.project_id) {
        this.projectId = data.project_id;
        lives.set(this.projectId, this);
        this.idKnown?.resolve(this.projectId);
      }
    } else if (ev.event === 'delta' && typeof data.text === 'string') {
      s.text += data.text;
      s.chars += data.text.length;
      if (s.text.length > MAX_TEXT) s.text = s.text.slice(-MAX_TEXT);
    } else if (ev.event === 'file') {
      s.files.push({ path: data.path, bytes: data.bytes });
    } else if (isFinal(ev)) {
      s.end = { event: ev.event, data };
    }
    s.lastId = ev.id;
    this.save();
    this.emit('event', { event: ev.event, data });
  }

  start(firstResponse) {
    let first = firstResponse;
    const signal = this.ac.signal;
    return follow({
      lastEventId: this.state.lastId,
      signal,
      isFinal,
      connect: (lastId) => {
        if (first) {
          const res = first;
          first = null;
          return Promise.resolve(res);
        }
        if (!this.projectId) {
          // nothing to resume from: the project list shows the project if it was created
          throw new ApiError(410, 'stream_lost', 'the connection was lost before the server named the project; see your projects');
        }
        const headers = { Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        return request('GET', `/v1/projects/${this.projectId}/events`, { headers, signal, stream: true });
      },
      onEvent: (ev) => this.apply(ev),
      onState: (state, info) => {
        this.connection = state;
        this.emit('connection', { state, ...info });
      },
      onEnd: async () => {
        // the stream ended without done/error: go on only while the version still generates
        const p = await api('GET', `/v1/projects/${this.projectId}`, { signal });
        const v = p.versions[p.versions.length - 1];
        if (v.n !== this.state.version && this.state.version !== null) return false;
        return v.status === 'generating';
      },
    })
      .then((how) => {
        this.finished = how !== 'aborted';
        if (how === 'final' && this.projectId) sessionStorage.removeItem(KEY_PREFIX + this.projectId);
        this.emit('finished', { how });
      })
      .catch((err) => {
        this.failure = err;
        this.idKnown?.reject(err);
        this.emit('failed', err);
      })
      .finally(() => {
        if (this.projectId && lives.get(this.projectId) === this) lives.delete(this.projectId);
      });
  }

  stop() {
    this.ac.abort();
  }
}

/**
 * Starts a generation: POST path {prompt} (a new project, or a project's next version), asking
 * for the events as a stream. Resolves { projectId } once the project is known; the follower
 * keeps reading in the background (see liveFor). Throws ApiError when the API refuses.
 */
export async function startGeneration(ctx, path, prompt, projectId = null) {
  const res = await request('POST', path, {
    body: { prompt },
    headers: { Accept: 'text/event-stream' },
    stream: true,
  });
  const type = res.headers.get('Content-Type') || '';
  if (!type.startsWith('text/event-stream')) {
    // 202: the generation runs in the server; the project screen follows its events
    const project = await res.json();
    if (projectId) sessionStorage.removeItem(KEY_PREFIX + projectId);
    return { projectId: project.id };
  }
  // Location names the project (readable on the same origin, or when CORS exposes it)
  const located = /\/v1\/projects\/([A-Za-z0-9_-]+)/.exec(res.headers.get('Location') || '');
  projectId = projectId || (located && located[1]) || null;
  const live = new Live(projectId, fresh());
  if (projectId) {
    lives.get(projectId)?.stop();
    lives.set(projectId, live);
    live.save();
  }
  const known = projectId
    ? Promise.resolve(projectId)
    : new Promise((resolve, reject) => (live.idKnown = { resolve, reject }));
  live.start(res);
  return { projectId: await known };
}

/**
 * The follower of a project whose latest version (n) is generating: the one already running in
 * this page, or a new one resuming from what sessionStorage kept about version n.
 */
export function liveFor(projectId, n) {
  let live = lives.get(projectId);
  if (live && live.state.version !== null && live.state.version !== n) {
    live.stop();
    live = null;
  }
  if (!live) {
    const saved = load(projectId);
    live = new Live(projectId, saved && saved.version === n ? saved : fresh());
    lives.set(projectId, live);
    live.start(null);
  }
  return live;
}

/** Forgets what was kept about a project (deleted, or its generation seen to the end). */
export function forget(projectId) {
  lives.get(projectId)?.stop();
  lives.delete(projectId);
  try {
    sessionStorage.removeItem(KEY_PREFIX + projectId);
  } catch {
    /* nothing kept */
  }
}
