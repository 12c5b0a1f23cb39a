// rawhttp.mjs - raw TCP helpers for the tests that must send what an HTTP
// client library would refuse to send (smuggling-shaped heads, slow heads,
// idle sockets): one exchange on a fresh socket, parsed just enough to check
// the status line and the headers.
import net from 'node:net';

/**
 * Sends `data` (string or Buffer, or an array of parts sent `gapMs` apart)
 * and collects what comes back until the server closes or `timeoutMs` passes.
 * Resolves { raw, status, headers, body, closed }.
 */
export function exchange(port, data, { timeoutMs = 10_000, gapMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const parts = [];
    let closed = false;
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on('data', (d) => parts.push(d));
    sock.on('error', (e) => {
      if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ ...parse(Buffer.concat(parts).toString('latin1')), closed });
    });
    sock.on('end', () => {
      closed = true;
    });
    sock.on('connect', async () => {
      const list = Array.isArray(data) ? data : [data];
      for (let i = 0; i < list.length && !sock.destroyed; i++) {
        if (i > 0 && gapMs) await new Promise((r) => setTimeout(r, gapMs));
        if (!sock.destroyed) sock.write(list[i]);
      }
    });
  });
}

/** Splits a response stream into its first response's status, headers and body. */
export function parse(raw) {
  const end = raw.indexOf('\r\n\r\n');
  const head = end >= 0 ? raw.slice(0, end) : raw;
  const lines = head.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] || '');
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { raw, status: m ? Number(m[1]) : 0, headers, body: end >= 0 ? raw.slice(end + 4) : '' };
}

/** How many responses a raw stream holds (status lines). */
export function countResponses(raw) {
  return (raw.match(/HTTP\/1\.1 \d{3} /g) || []).length;
}
