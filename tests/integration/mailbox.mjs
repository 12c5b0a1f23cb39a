// mailbox.mjs - a real SMTP server for the tests (the npm `smtp-server` package, on 127.0.0.1)
// that keeps every message it receives: the verification mail of tests/integration/verify.test.mjs
// and tests/browser/verify.test.mjs.
//
//   const box = await startMailbox();   // box.url: smtp://127.0.0.1:<port> (KOUMPA_SMTP_URL)
//   const mail = await box.waitFor(email);  // { from, to, raw }
//   await box.close();
import { SMTPServer } from 'smtp-server';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An SMTP server that keeps every message it receives. */
export async function startMailbox() {
  const box = { messages: [] };
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        box.messages.push({
          from: session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  await new Promise((resolve) => smtp.listen(0, '127.0.0.1', resolve));
  box.url = `smtp://127.0.0.1:${smtp.server.address().port}`;
  box.close = () => new Promise((resolve) => smtp.close(resolve));
  /** The n-th message to `to` (1-based), waiting for it a bounded while. */
  box.waitFor = async (to, n = 1) => {
    for (let i = 0; i < 400; i++) {
      const got = box.messages.filter((m) => m.to.includes(to));
      if (got.length >= n) return got[n - 1];
      await sleep(25);
    }
    throw new Error(`no message ${n} to ${to} (have ${box.messages.length})`);
  };
  return box;
}
