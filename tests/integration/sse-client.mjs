// sse-client.mjs - the client side of the generation endpoints' Server-Sent
// Events, for tests: open a stream with fetch, read its events.

/** Reads SSE events from a fetch Response until it ends (or stop(event) says so). */
export async function readEvents(res, stop = () => false) {
  const events = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = { comment: false };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) ev.comment = true;
        else if (line.startsWith('id: ')) ev.id = Number(line.slice(4));
        else if (line.startsWith('event: ')) ev.event = line.slice(7);
        else if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6));
      }
      if (ev.comment) continue;
      events.push(ev);
      if (stop(ev)) return events;
    }
  }
  return events;
}

export function sse(server, method, urlPath, { token, body, headers = {}, signal } = {}) {
  const h = { Authorization: `Bearer ${token}`, Accept: 'text/event-stream', ...headers };
  if (body) h['Content-Type'] = 'application/json';
  return fetch(server.url + urlPath, { method, headers: h, body: body ? JSON.stringify(body) : undefined, signal });
}
