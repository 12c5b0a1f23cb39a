/*
 * mailer.h - outgoing e-mail over SMTP (libcurl's SMTP support), sent from a
 * thread of its own so that no request waits for a mail server.
 *
 * kp_mailer_send() copies the message and queues it; the mailer's thread
 * connects (smtp:// with STARTTLS when the server offers it, or smtps://),
 * sends MAIL FROM / RCPT TO / DATA and logs the outcome. The queue is
 * bounded: when it is full the message is refused at once (the caller can
 * say "try again later"). At shutdown, a transfer in flight is aborted and
 * queued messages are dropped (logged), so a dead mail server never holds
 * the process.
 *
 * Thread-safe. Messages are plain text (UTF-8); addresses must already be
 * validated (no CR, LF or angle brackets: kp_accounts_normalise_email).
 */
#ifndef KP_MAILER_H
#define KP_MAILER_H

#include "core/err.h"

typedef struct kp_mailer kp_mailer;

typedef struct kp_mailer_options {
    const char *url;        /* smtp://host:port or smtps://host:port, with user:password@ if the server wants them */
    const char *from;       /* the sender's address */
    int queue;              /* messages that may wait (>= 0) */
    long timeout_s;         /* a whole transfer; <= 0: 30 */
    long connect_timeout_s; /* <= 0: 10 */
} kp_mailer_options;

/* Validates the options (URL scheme, sender) and starts the thread. Free with kp_mailer_free(). */
kp_status kp_mailer_new(const kp_mailer_options *opt, kp_mailer **out, kp_err *err);

/* Queues a message to one recipient. Returns 0, or -1 when the queue is full
 * or the mailer is stopping (nothing is sent). */
int kp_mailer_send(kp_mailer *m, const char *to, const char *subject, const char *body);

/* Sends a message now, on the calling thread (the mailer's own thread does
 * this; exposed for tests). KP_EIO with curl's reason on failure. */
kp_status kp_mailer_send_now(kp_mailer *m, const char *to, const char *subject, const char *body, kp_err *err);

/* Aborts a transfer in flight, drops what is queued, stops the thread. NULL is fine. */
void kp_mailer_free(kp_mailer *m);

#endif
