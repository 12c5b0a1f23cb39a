// streams.mjs - test helper for tests/web: a fetch Response whose text/event-stream body sends the
// given chunks one per read, then ends, or fails as a dropped connection does (fail: true).
export function sseResponse(chunks, { fail = false, headers = {} } = {}) {
  const enc = new TextEncoder();
  let i = 0;
  const body = new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(enc.encode(chunks[i++]));
      else if (fail) c.error(new TypeError('network error'));
      else c.close();
    },
  });
  return new Response(body, { headers: { 'Content-Type': 'text/event-stream', ...headers } });
}
