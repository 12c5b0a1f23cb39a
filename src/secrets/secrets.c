/*
 * secrets.c - the caching secrets service (see secrets.h for the rules).
 *
 * One entry per name ever asked for, in a short list (the server reads a
 * handful of names): the list has one lock, taken only to find or add an
 * entry; each entry has its own lock, held while its value is copied out or
 * read again from the source. So one slow source read (a network source)
 * holds up only the callers of that name.
 *
 * With a refresher (kp_secrets_refresh_in_background), an expired entry that
 * holds an answer is read again by a job on the refresher's one thread while
 * callers keep getting the cached answer: the job reads the source without
 * the entry's lock (its `refreshing` flag keeps it the only reader of that
 * name) and takes the lock only to install what it read.
 *
 * Invariants: an entry's value is NULL (not set, or never read) or a
 * malloc'd NUL-terminated copy of len bytes that nobody else points to; it is
 * wiped before it is freed or replaced. read_at is when the entry last asked
 * the source (successfully or not, see secrets.h), on the monotonic clock.
 */
#include "secrets/secrets.h"

#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/pool.h"

#define REFRESHER_QUEUE 16

typedef struct secret_entry {
    struct secret_entry *next;
    kp_secrets *owner;
    pthread_mutex_t lock;
    char *name;
    char *value; /* NULL: not set */
    size_t len;
    int read;        /* the source was asked at least once with an answer kept */
    int64_t read_at; /* when, on s->clock */
    int refreshing;  /* a background read of this name is queued or running */
} secret_entry;

struct kp_secrets {
    pthread_mutex_t lock; /* guards entries (the list, not the values) */
    secret_entry *entries;
    kp_secrets_source source;
    int64_t ttl_s;
    int64_t (*clock)(void *arg);
    void *clock_arg;
    kp_pool *refresher; /* NULL: expired entries are read again by the caller */
    int closing;        /* set (under lock) by kp_secrets_free: queued refreshes do nothing */
};

static int64_t mono_clock(void *arg)
{
    (void)arg;
    return kp_clock_mono_s();
}

kp_status kp_secrets_new(kp_secrets_source source, long ttl_s, kp_secrets **out, kp_err *err)
{
    *out = NULL;
    if (!source.ops || !source.ops->read || ttl_s < 1) {
        if (source.ops && source.ops->close)
            source.ops->close(source.impl);
        return kp_err_set(err, KP_EINVAL, "a secrets service needs a source and a ttl of at least 1 s");
    }
    kp_secrets *s = calloc(1, sizeof *s);
    if (!s) {
        if (source.ops->close)
            source.ops->close(source.impl);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&s->lock, NULL);
    s->source = source;
    s->ttl_s = ttl_s;
    s->clock = mono_clock;
    *out = s;
    return KP_OK;
}

void kp_secrets_set_clock(kp_secrets *s, int64_t (*clock)(void *arg), void *arg)
{
    s->clock = clock ? clock : mono_clock;
    s->clock_arg = clock ? arg : NULL;
}

void kp_secrets_value_free(char *value, size_t len)
{
    if (!value)
        return;
    sodium_memzero(value, len);
    free(value);
}

static void entry_forget_value(secret_entry *e)
{
    kp_secrets_value_free(e->value, e->len);
    e->value = NULL;
    e->len = 0;
}

/* The entry for name, added if new; NULL when out of memory. */
static secret_entry *find_entry(kp_secrets *s, const char *name)
{
    pthread_mutex_lock(&s->lock);
    secret_entry *e = s->entries;
    while (e && strcmp(e->name, name) != 0)
        e = e->next;
    if (!e && (e = calloc(1, sizeof *e)) != NULL) {
        e->name = strdup(name);
        if (e->name) {
            pthread_mutex_init(&e->lock, NULL);
            e->owner = s;
            e->next = s->entries;
            s->entries = e;
        } else {
            free(e);
            e = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

/* Installs what a read of the source answered (rc, value: taken, why);
 * called with e->lock held. KP_OK when the entry now holds the answer to give
 * (a value, or "not set"); else the read's error, nothing cached. */
static kp_status install(secret_entry *e, kp_status rc, char *value, size_t len, const kp_err *why, int64_t now,
                         kp_err *err)
{
    if (rc == KP_OK) {
        entry_forget_value(e);
        e->value = value;
        e->len = len;
    } else if (e->value) {
        kp_log_json(
            KP_LOG_WARN, "secret could not be read again: the cached value is kept",
            json_pack("{s:s,s:s}", "secret", e->name, "error", rc == KP_ENOTFOUND ? "it is no longer set" : why->msg));
    } else if (rc != KP_ENOTFOUND) {
        *err = *why;
        return rc;
    }
    e->read = 1;
    e->read_at = now;
    return KP_OK;
}

/* Asks the source again and installs the answer; called with e->lock held. */
static kp_status refresh(kp_secrets *s, secret_entry *e, int64_t now, kp_err *err)
{
    char *value = NULL;
    size_t len = 0;
    kp_err why = {0};
    kp_status rc = s->source.ops->read(s->source.impl, e->name, &value, &len, &why);
    return install(e, rc, value, len, &why, now, err);
}

/* The refresher's job: reads e's source without e's lock, then installs. A
 * failure while "not set" is cached has no caller to go to: it is logged and
 * tried again a TTL later, the entry still answering "not set". */
static void refresh_job(void *arg)
{
    secret_entry *e = arg;
    kp_secrets *s = e->owner;
    char *value = NULL;
    size_t len = 0;
    kp_err why = {0}, err = {0};
    pthread_mutex_lock(&s->lock);
    int closing = s->closing;
    pthread_mutex_unlock(&s->lock);
    kp_status rc = closing ? KP_EUNAVAILABLE : s->source.ops->read(s->source.impl, e->name, &value, &len, &why);
    pthread_mutex_lock(&e->lock);
    if (!closing && install(e, rc, value, len, &why, s->clock(s->clock_arg), &err) != KP_OK) {
        kp_log_json(KP_LOG_WARN, "secret could not be read again: it stays not set",
                    json_pack("{s:s,s:s}", "secret", e->name, "error", err.msg));
        e->read_at = s->clock(s->clock_arg);
    }
    e->refreshing = 0;
    pthread_mutex_unlock(&e->lock);
}

kp_status kp_secrets_refresh_in_background(kp_secrets *s, kp_err *err)
{
    if (s->refresher)
        return KP_OK;
    return kp_pool_new("secrets", 1, REFRESHER_QUEUE, &s->refresher, err);
}

/* An expired entry: read again now (first read, or no refresher), or queue a
 * background read and answer from the cache. Called with e->lock held. */
static kp_status renew(kp_secrets *s, secret_entry *e, int64_t now, kp_err *err)
{
    if (!s->refresher || !e->read)
        return refresh(s, e, now, err);
    if (!e->refreshing) {
        e->refreshing = 1;
        if (kp_pool_submit(s->refresher, refresh_job, e) != 0)
            e->refreshing = 0; /* queue full or stopping: the next call tries again */
    }
    return KP_OK;
}

static kp_status copy_value(const secret_entry *e, char **out, size_t *len, kp_err *err)
{
    if (!e->value)
        return kp_err_set(err, KP_ENOTFOUND, "%s is not set", e->name);
    char *copy = malloc(e->len + 1);
    if (!copy)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    memcpy(copy, e->value, e->len);
    copy[e->len] = '\0';
    *out = copy;
    *len = e->len;
    return KP_OK;
}

kp_status kp_secrets_get(kp_secrets *s, const char *name, char **out, size_t *len, kp_err *err)
{
    *out = NULL;
    *len = 0;
    if (!s)
        return kp_err_set(err, KP_EUNAVAILABLE, "no secrets service");
    if (!name || !*name)
        return kp_err_set(err, KP_EINVAL, "no secret name");
    secret_entry *e = find_entry(s, name);
    if (!e)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    pthread_mutex_lock(&e->lock);
    int64_t now = s->clock(s->clock_arg);
    kp_status rc = KP_OK;
    if (!e->read || now - e->read_at >= s->ttl_s || now < e->read_at)
        rc = renew(s, e, now, err);
    if (rc == KP_OK)
        rc = copy_value(e, out, len, err);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

int kp_secrets_has(kp_secrets *s, const char *name)
{
    char *value = NULL;
    size_t len = 0;
    kp_err err = {0};
    if (kp_secrets_get(s, name, &value, &len, &err) != KP_OK)
        return 0;
    kp_secrets_value_free(value, len);
    return 1;
}

void kp_secrets_describe(kp_secrets *s, json_t *summary)
{
    static const char *const names[] = {KP_SECRET_ANTHROPIC_API_KEY, KP_SECRET_JWT_SECRET, KP_SECRET_STRIPE_SECRET_KEY,
                                        KP_SECRET_STRIPE_WEBHOOK_SECRET};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (kp_secrets_has(s, names[i]))
            json_object_set_new(summary, names[i], json_string("(set)"));
}

void kp_secrets_free(kp_secrets *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->closing = 1;
    pthread_mutex_unlock(&s->lock);
    kp_pool_free(s->refresher); /* waits for a read in progress; queued ones do nothing */
    secret_entry *e = s->entries;
    while (e) {
        secret_entry *next = e->next;
        entry_forget_value(e);
        pthread_mutex_destroy(&e->lock);
        free(e->name);
        free(e);
        e = next;
    }
    if (s->source.ops->close)
        s->source.ops->close(s->source.impl);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
