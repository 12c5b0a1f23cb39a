/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Every line has "time" (RFC 3339 UTC, milliseconds), "level" and "msg"; callers
 * add fields as a jansson object (or as JSON text already written, kp_log_fields).
 * Never pass secrets, passwords or tokens.
 * Thread-safe: each line is written whole by a single write(2), alone or among
 * other whole lines of the same thread.
 *
 * Buffering (koumpa serve turns it on; off by default, so a short command or
 * the Lambda host, which may be frozen between invocations, writes at once):
 * each thread's debug and info lines collect in a buffer of its own (64 KiB),
 * written when it is full, when its oldest line is flush_ms old (a background
 * thread sees to it), before a warn or error line of the same thread (which is
 * written at once), by kp_log_flush(), at kp_log_buffering_stop(), at exit(),
 * and on a crash signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT: the handler
 * writes the complete lines with write(2), then the signal takes its default
 * action). Lines of different threads may reach the output out of time order.
 */
#ifndef KP_LOG_H
#define KP_LOG_H

#include <jansson.h>

#include "core/jsonw.h"

typedef enum kp_log_level { KP_LOG_DEBUG = 0, KP_LOG_INFO, KP_LOG_WARN, KP_LOG_ERROR } kp_log_level;

/* Sets the minimum level written (default INFO). */
void kp_log_set_level(kp_log_level level);
/* Parses "debug", "info", "warn", "error"; returns 0, or -1 if unknown. */
int kp_log_parse_level(const char *s, kp_log_level *out);
/* True when a line at this level would be written. */
int kp_log_enabled(kp_log_level level);

/* Where lines go (default stderr; the Lambda host: stdout, CloudWatch's). Set before threads start. */
void kp_log_set_output(int fd);
/* This thread's lines carry "aws_request_id": id from now on (NULL or "": no
 * more; an id with a quote, backslash or control character is not kept). */
void kp_log_set_request_id(const char *id);

/* Turns buffering on (see above); flush_ms > 0. Returns 0, or -1 when the
 * flushing thread could not start (lines are then written at once). The crash
 * handlers are installed only for signals whose action is still the default
 * (a sanitizer's own handler is kept). */
int kp_log_buffering_start(int flush_ms);
/* Writes every thread's buffered lines and turns buffering off. */
void kp_log_buffering_stop(void);
/* Writes every thread's buffered lines now. */
void kp_log_flush(void);

/* Writes one line. fields may be NULL; it is consumed (decref'd) either way. */
void kp_log_json(kp_log_level level, const char *msg, json_t *fields);

/* A line whose fields are written straight into it with a JSON writer, no
 * jansson tree (for a line written once per request): returns the writer,
 * placed after msg, or NULL when the level is off or memory is short. Write
 * the members, then kp_log_commit(w), on the same thread, with no other
 * kp_log call in between. */
kp_jsonw *kp_log_begin(kp_log_level level, const char *msg);
/* Ends and writes the line begun by kp_log_begin() (dropped if a write failed). */
void kp_log_commit(kp_jsonw *w);

/* Writes one line whose msg is printf-formatted; no extra fields. */
void kp_log(kp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
