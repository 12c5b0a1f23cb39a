/*
 * secrets_env.h - the environment source of the secrets service
 * (secrets/secrets.h): a secret NAME is read from
 *
 *   NAME         the variable's value, or
 *   NAME_FILE    the content of the file it names, ONE trailing newline
 *                ("\n" or "\r\n") stripped: how Docker and Kubernetes hand
 *                secrets to a container (/run/secrets/..., a mounted volume),
 *   a fallback   a file the server chose for that name (e.g.
 *                {data_dir}/jwt_secret, generated at first start), read the
 *                same way, only when neither variable is set.
 *
 * An empty variable counts as unset, and so does an empty file (also what a
 * file being rewritten in place looks like for an instant). Both NAME and
 * NAME_FILE set is an error naming both: which one is meant cannot be
 * guessed, and silently preferring one hides a mistake. A file that cannot
 * be read (missing, no permission, a directory, over 64 KiB) is an error
 * naming the variable and the file; a missing fallback file is "not set".
 * No message ever holds a value. Files are read again on every call: the
 * service's cache decides how often that is.
 */
#ifndef KP_SECRETS_ENV_H
#define KP_SECRETS_ENV_H

#include <stddef.h>

#include "core/err.h"
#include "secrets/secrets.h"

#define KP_SECRETS_MAX_LEN 65536 /* bytes: a longer file is an error, not a secret */

typedef struct kp_secrets_env_fallback {
    const char *name; /* e.g. KP_SECRET_JWT_SECRET */
    const char *path; /* the file read when neither NAME nor NAME_FILE is set */
} kp_secrets_env_fallback;

/* A source reading the environment (and the *_FILE files), with n fallback
 * files (copied; fallbacks may be NULL when n is 0). Hand it to
 * kp_secrets_new, which closes it. */
kp_status kp_secrets_env_new(const kp_secrets_env_fallback *fallbacks, size_t n, kp_secrets_source *out, kp_err *err);

#endif
