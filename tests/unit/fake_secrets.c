/*
 * fake_secrets.c - see fake_secrets.h. The table is the source's impl and
 * the clock's argument; its lock makes puts from the test thread safe while
 * a loop or HTTP thread reads.
 */
#include "fake_secrets.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define FAKE_SLOTS 8
#define FAKE_TTL_S 3600

typedef struct fake_slot {
    char *name;
    char *value; /* NULL: not set */
    int reads;
} fake_slot;

struct kp_fake_secrets {
    pthread_mutex_t lock;
    fake_slot slots[FAKE_SLOTS];
    int64_t now;
    kp_secrets *service;
};

/* The slot for name, made if new (called with the lock held). */
static fake_slot *slot_of(kp_fake_secrets *f, const char *name)
{
    for (int i = 0; i < FAKE_SLOTS; i++) {
        if (f->slots[i].name && strcmp(f->slots[i].name, name) == 0)
            return &f->slots[i];
        if (!f->slots[i].name) {
            f->slots[i].name = strdup(name);
            assert_non_null(f->slots[i].name);
            return &f->slots[i];
        }
    }
    fail_msg("fake_secrets: more than %d names", FAKE_SLOTS);
    return NULL;
}

static kp_status fake_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    kp_fake_secrets *f = impl;
    kp_status rc = KP_OK;
    pthread_mutex_lock(&f->lock);
    fake_slot *s = slot_of(f, name);
    s->reads++;
    if (!s->value)
        rc = kp_err_set(err, KP_ENOTFOUND, "%s is not set", name);
    else if (!(*out = strdup(s->value)))
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
    else
        *len = strlen(s->value);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static void fake_close(void *impl)
{
    (void)impl; /* the table outlives the service: kp_fake_secrets_free */
}

static const kp_secrets_source_ops fake_ops = {.read = fake_read, .close = fake_close};

static int64_t fake_clock(void *arg)
{
    kp_fake_secrets *f = arg;
    pthread_mutex_lock(&f->lock);
    int64_t now = f->now;
    pthread_mutex_unlock(&f->lock);
    return now;
}

kp_fake_secrets *kp_fake_secrets_new(void)
{
    kp_err err = {0};
    kp_fake_secrets *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    f->now = 1;
    kp_secrets_source src = {.ops = &fake_ops, .impl = f};
    if (kp_secrets_new(src, FAKE_TTL_S, &f->service, &err) != KP_OK)
        fail_msg("kp_secrets_new: %s", err.msg);
    kp_secrets_set_clock(f->service, fake_clock, f);
    return f;
}

kp_secrets *kp_fake_secrets_service(kp_fake_secrets *f)
{
    return f->service;
}

void kp_fake_secrets_put(kp_fake_secrets *f, const char *name, const char *value)
{
    pthread_mutex_lock(&f->lock);
    fake_slot *s = slot_of(f, name);
    free(s->value);
    s->value = value ? strdup(value) : NULL;
    f->now += FAKE_TTL_S;
    pthread_mutex_unlock(&f->lock);
}

int kp_fake_secrets_reads(kp_fake_secrets *f, const char *name)
{
    pthread_mutex_lock(&f->lock);
    int reads = slot_of(f, name)->reads;
    pthread_mutex_unlock(&f->lock);
    return reads;
}

void kp_fake_secrets_free(kp_fake_secrets *f)
{
    if (!f)
        return;
    kp_secrets_free(f->service);
    for (int i = 0; i < FAKE_SLOTS; i++) {
        free(f->slots[i].name);
        free(f->slots[i].value);
    }
    pthread_mutex_destroy(&f->lock);
    free(f);
}
