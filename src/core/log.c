/* log.c - see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static kp_log_level min_level = KP_LOG_INFO;

void kp_log_set_level(kp_log_level level) { min_level = level; }

int kp_log_enabled(kp_log_level level) { return level >= min_level; }

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

static void format_now(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + len, n - len, ".%03dZ", (int)(tv.tv_usec / 1000));
}

void kp_log_json(kp_log_level level, const char *msg, json_t *fields)
{
    if (level < min_level) {
        json_decref(fields);
        return;
    }
    char ts[40];
    format_now(ts, sizeof ts);
    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(ts));
    json_object_set_new(line, "level", json_string(level_name(level)));
    json_object_set_new(line, "msg", json_string(msg));
    if (fields)
        json_object_update(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* overwrite the NUL: one write per line */
    ssize_t rc = write(STDERR_FILENO, text, len + 1);
    (void)rc;
    free(text);
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
