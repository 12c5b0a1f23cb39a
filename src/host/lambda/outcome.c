/*
 * outcome.c - see outcome.h. A line-at-a-time reader of the SSE fields that
 * matter here (event, data, the blank line ending an event); comments,
 * ids and everything else pass by.
 */
#include "host/lambda/outcome.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

/* error codes that are not the service's failure (outcome.h) */
static const char *const not_failures[] = {"canceled", "invalid_output", "too_long", NULL};

/* "name: value" or "name:value" (SSE: one optional space): the value, or NULL. */
static const char *field(const char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    return line + n + 1 + (line[n + 1] == ' ');
}

static void take_error(kp_lambda_outcome *o)
{
    json_t *doc = json_loads(o->data, 0, NULL);
    const char *code = json_string_value(json_object_get(doc, "code"));
    const char *message = json_string_value(json_object_get(doc, "message"));
    snprintf(o->code, sizeof o->code, "%s", code ? code : "unknown");
    snprintf(o->message, sizeof o->message, "%s", message ? message : "");
    json_decref(doc);
}

static void end_line(kp_lambda_outcome *o)
{
    const char *v;
    if (o->line_len > 0 && o->line[o->line_len - 1] == '\r')
        o->line_len--;
    o->line[o->line_len] = '\0';
    if (o->line_len == 0) { /* the blank line: the event is complete */
        if (o->event[0]) {
            snprintf(o->last, sizeof o->last, "%s", o->event);
            if (strcmp(o->event, "error") == 0)
                take_error(o);
        }
        o->event[0] = '\0';
        o->data[0] = '\0';
    } else if ((v = field(o->line, "event")) != NULL) {
        snprintf(o->event, sizeof o->event, "%s", v);
    } else if ((v = field(o->line, "data")) != NULL) {
        snprintf(o->data, sizeof o->data, "%s", v);
    }
    o->line_len = 0;
}

void kp_lambda_outcome_feed(kp_lambda_outcome *o, const char *data, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        size_t room = sizeof o->line - 1 - o->line_len;
        size_t keep = n < room ? n : room;
        memcpy(o->line + o->line_len, data, keep);
        o->line_len += keep;
        if (!nl)
            return;
        end_line(o);
        data = nl + 1;
        len -= n + 1;
    }
}

int kp_lambda_outcome_terminal(const kp_lambda_outcome *o)
{
    return strcmp(o->last, "done") == 0 || strcmp(o->last, "error") == 0;
}

const char *kp_lambda_outcome_failure(const kp_lambda_outcome *o, int ran_generation, char *msg, size_t msg_len)
{
    if (!kp_lambda_outcome_terminal(o)) {
        snprintf(msg, msg_len, "the stream ended before its last event (done or error)%s%s",
                 o->last[0] ? "; the last one was " : "", o->last);
        return "Koumpa.StreamInterrupted";
    }
    if (!ran_generation || strcmp(o->last, "error") != 0)
        return NULL;
    for (const char *const *c = not_failures; *c; c++)
        if (strcmp(o->code, *c) == 0)
            return NULL;
    snprintf(msg, msg_len, "the generation failed: %s: %s", o->code, o->message);
    return "Koumpa.GenerationFailed";
}
