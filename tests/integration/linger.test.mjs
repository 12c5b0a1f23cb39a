// linger.test.mjs - a response that closes the connection while the client is
// still sending (a 413 answered on the declared Content-Length) is followed by
// a lingering close (RFC 9112 section 9.6): the server shuts its write side
// down and reads and discards what keeps arriving for a bounded time, so the
// client reads the whole response and then EOF, not a connection reset.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { startServer } from './harness.mjs';
import { parse } from './rawhttp.mjs';

const WRITE = 256 * 1024; // bytes per write
const WRITES = 16; // 4 MiB written before reading anything

/*
 * Sends a head declaring a 50 MB body, then writes WRITES large pieces of it
 * (waiting for 'drain' between them) without reading, then reads. Resolves
 * { raw, error, eof }.
 */
function oversizedUpload(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.pause(); // read nothing until the body has been written
    const parts = [];
    let error = null;
    let eof = false;
    const timer = setTimeout(() => sock.destroy(new Error('timed out')), 30_000);
    sock.on('error', (e) => {
      error = error || e;
    });
    sock.on('end', () => {
      eof = true;
      sock.end();
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ raw: Buffer.concat(parts).toString('latin1'), error, eof });
    });
    sock.on('connect', async () => {
      sock.write('POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n');
      const piece = Buffer.alloc(WRITE, 0x20);
      for (let i = 0; i < WRITES && !sock.destroyed && !error; i++) {
        if (!sock.write(piece)) await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
      }
      sock.on('data', (d) => parts.push(d));
      sock.resume();
    });
  });
}

/*
 * A hostile client: declares a 50 MB body and keeps sending it (half-open:
 * it goes on writing after the server's EOF) without ever stopping. Resolves
 * { raw, error, written } once the server has dropped the connection.
 */
function endlessUpload(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const parts = [];
    let error = null;
    let written = 0;
    const timer = setTimeout(() => sock.destroy(new Error('timed out')), 30_000);
    sock.on('data', (d) => parts.push(d));
    sock.on('error', (e) => {
      error = error || e;
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ raw: Buffer.concat(parts).toString('latin1'), error, written });
    });
    sock.on('connect', async () => {
      sock.write('POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n');
      const piece = Buffer.alloc(64 * 1024, 0x20);
      for (let i = 0; i < 800 && !sock.destroyed && !error; i++) {
        written += piece.length;
        if (!sock.write(piece)) await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
        // as a real client, read while writing: without a turn of the event loop the 413 could sit
        // unread in the kernel until the final reset discards it
        await new Promise((r) => setImmediate(r));
      }
      sock.destroy();
    });
  });
}

for (const port of ['api', 'apps']) {
  describe(`lingering close on the ${port} port`, () => {
    let server;
    let p;
    before(async () => {
      server = await startServer();
      p = port === 'api' ? server.port : server.appsPort;
    });
    after(async () => {
      await server?.stop();
    });

    test('a client still sending its body reads the 413 and then EOF, not a reset', async () => {
      const r = await oversizedUpload(p);
      assert.equal(r.error, null, `the client saw ${r.error?.code || r.error?.message}`);
      assert.equal(r.eof, true);
      const res = parse(r.raw);
      assert.equal(res.status, 413);
      assert.match(res.body, /payload_too_large|exceeds/);
    });

    test('a client that never stops sending is dropped after a bounded amount', async () => {
      const r = await endlessUpload(p);
      assert.equal(parse(r.raw).status, 413, `got ${JSON.stringify(r.raw.slice(0, 200))}, ${r.error?.code}, ${r.written} bytes`);
      assert.ok(r.error && ['ECONNRESET', 'EPIPE'].includes(r.error.code), `the client saw ${r.error?.code || r.error?.message}`);
      assert.ok(r.written < 40 * 1024 * 1024, `${r.written} bytes were accepted`);
    });

    test('the server still answers afterwards', async () => {
      const res = await fetch(`http://127.0.0.1:${p}/healthz`);
      assert.ok(res.status === 200 || res.status === 404, `status ${res.status}`);
      await res.arrayBuffer();
    });
  });
}
