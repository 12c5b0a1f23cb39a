/*
 * fake_secrets.h - a secrets service (secrets/secrets.h) over an in-memory
 * table, for unit tests: put a value, rotate it, and the service's next
 * kp_secrets_get sees it at once (each put moves the service's clock past its
 * TTL), with no environment variables or files involved.
 */
#ifndef KP_FAKE_SECRETS_H
#define KP_FAKE_SECRETS_H

#include "secrets/secrets.h"

typedef struct kp_fake_secrets kp_fake_secrets;

/* A new table and its service; aborts the test on failure. */
kp_fake_secrets *kp_fake_secrets_new(void);

/* The service (owned by f). */
kp_secrets *kp_fake_secrets_service(kp_fake_secrets *f);

/* Sets name to value (NULL: not set); the service reads it on its next get.
 * (Unsetting a name the service has read does not unset it there: the service
 * keeps a value it has, see secrets.h. Use a new table instead.) */
void kp_fake_secrets_put(kp_fake_secrets *f, const char *name, const char *value);

/* How many times the service read name from the table. */
int kp_fake_secrets_reads(kp_fake_secrets *f, const char *name);

/* Frees the service, then the table. NULL is fine. */
void kp_fake_secrets_free(kp_fake_secrets *f);

#endif
