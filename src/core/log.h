/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Every line has "time" (RFC 3339 UTC, milliseconds), "level" and "msg"; callers
 * add fields as a jansson object. Never pass secrets, passwords or tokens.
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef KP_LOG_H
#define KP_LOG_H

#include <jansson.h>

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

/* Writes one line. fields may be NULL; it is consumed (decref'd) either way. */
void kp_log_json(kp_log_level level, const char *msg, json_t *fields);

/* Writes one line whose msg is printf-formatted; no extra fields. */
void kp_log(kp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
