/* log.c - see log.h. */
#include "core/log.h"

#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6))

static kp_log_level min_level = KP_LOG_INFO;
static int out_fd = STDERR_FILENO;
static __thread char request_id[129]; /* the Lambda host's current invocation ("": none) */

void kp_log_set_output(int fd)
{
    out_fd = fd;
}

void kp_log_set_request_id(const char *id)
{
    snprintf(request_id, sizeof request_id, "%s", id ? id : "");
    for (const char *c = request_id; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
            request_id[0] = '\0'; /* not written into a JSON string unescaped */
            return;
        }
}

void kp_log_set_level(kp_log_level level)
{
    min_level = level;
}

int kp_log_enabled(kp_log_level level)
{
    return level >= min_level;
}

int kp_log_parse_level(const char *s, kp_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (kp_log_level)i;
            return 0;
        }
    }
    return -1;
}

static const char *level_name(kp_log_level level)
{
    switch (level) {
    case KP_LOG_DEBUG: return "debug";
    case KP_LOG_INFO: return "info";
    case KP_LOG_WARN: return "warn";
    default: return "error";
    }
}

/* RFC 3339 UTC with milliseconds. The part up to the seconds is cached per
 * thread, so a busy server formats a date once a second, not once a line. */
static void format_now(char *out, size_t n)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[32];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    snprintf(out, n, "%s.%03dZ", cached, (int)(tv.tv_usec / 1000));
}

/*
 * The line is {"time":…,"level":…,"msg":…, then the fields}: time and level
 * are fixed ASCII, msg and the fields are encoded by jansson, and the pieces
 * are joined as text so no second object is built per line.
 */
void kp_log_json(kp_log_level level, const char *msg, json_t *fields)
{
    if (level < min_level) {
        json_decref(fields);
        return;
    }
    char ts[40];
    format_now(ts, sizeof ts);
    json_t *m = json_string(msg);
    char *msg_text = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    char *fields_text = fields && json_object_size(fields) ? json_dumps(fields, LOG_DUMP_FLAGS) : NULL;
    json_decref(m);
    json_decref(fields);
    kp_buf line = KP_BUF_INIT;
    kp_buf_printf(&line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":%s", ts, level_name(level),
                  msg_text ? msg_text : "\"\"");
    if (request_id[0]) /* a sane id (no quote, no backslash): checked by the setter's caller */
        kp_buf_printf(&line, ",\"aws_request_id\":\"%s\"", request_id);
    if (fields_text) /* "{...}" -> ",..." */
        kp_buf_printf(&line, ",%s", fields_text + 1);
    else
        kp_buf_puts(&line, "}");
    kp_buf_puts(&line, "\n");
    if (line.data) {
        ssize_t rc = write(out_fd, line.data, line.len);
        (void)rc;
    }
    kp_buf_free(&line);
    free(msg_text);
    free(fields_text);
}

void kp_log(kp_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kp_log_json(level, msg, NULL);
}
