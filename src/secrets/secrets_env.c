/*
 * secrets_env.c - see secrets_env.h. A file is read whole into a buffer of
 * KP_SECRETS_MAX_LEN + 1 bytes (never grown: growing would leave copies of
 * the secret in freed memory), then copied out at its exact length; the
 * buffer is wiped before it is freed.
 */
#include "secrets/secrets_env.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"

typedef struct env_fallback {
    char *name;
    char *path;
} env_fallback;

typedef struct env_source {
    env_fallback *fallbacks;
    size_t n;
} env_source;

/* A variable's value, NULL when unset or empty. */
static const char *env_value(const char *var)
{
    const char *v = getenv(var);
    return v && *v ? v : NULL;
}

/* Reads the whole of fd into buf (cap bytes); -1 with errno on failure. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* One trailing "\n" or "\r\n" goes; anything before it stays. */
static size_t strip_newline(const char *s, size_t len)
{
    if (len && s[len - 1] == '\n')
        len--;
    else
        return len;
    if (len && s[len - 1] == '\r')
        len--;
    return len;
}

/* The content of path, for the secret that var names (var names the file in
 * messages). KP_ENOTFOUND when the file is empty, or missing and
 * missing_is_unset. */
static kp_status read_secret_file(const char *var, const char *path, int missing_is_unset, char **out, size_t *len,
                                  kp_err *err)
{
    char *buf = NULL;
    kp_status rc = KP_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && missing_is_unset)
            return kp_err_set(err, KP_ENOTFOUND, "%s is not set", var);
        return kp_err_set(err, KP_EIO, "cannot read the %s file %s: %s", var, path, strerror(errno));
    }
    buf = malloc(KP_SECRETS_MAX_LEN + 1);
    if (!buf) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    ssize_t got = read_all(fd, buf, KP_SECRETS_MAX_LEN + 1);
    if (got < 0) {
        rc = kp_err_set(err, KP_EIO, "cannot read the %s file %s: %s", var, path, strerror(errno));
        goto cleanup;
    }
    if (got > KP_SECRETS_MAX_LEN) {
        rc = kp_err_set(err, KP_EIO, "the %s file %s is larger than %d bytes", var, path, KP_SECRETS_MAX_LEN);
        goto cleanup;
    }
    size_t n = strip_newline(buf, (size_t)got);
    if (n == 0) {
        rc = kp_err_set(err, KP_ENOTFOUND, "%s is not set (its file %s is empty)", var, path);
        goto cleanup;
    }
    *out = malloc(n + 1);
    if (!*out) {
        rc = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *len = n;

cleanup:
    if (buf)
        sodium_memzero(buf, KP_SECRETS_MAX_LEN + 1);
    free(buf);
    close(fd);
    return rc;
}

static const char *fallback_path(const env_source *src, const char *name)
{
    for (size_t i = 0; i < src->n; i++)
        if (strcmp(src->fallbacks[i].name, name) == 0)
            return src->fallbacks[i].path;
    return NULL;
}

static kp_status copy_env_value(const char *value, char **out, size_t *len, kp_err *err)
{
    size_t n = strlen(value);
    *out = malloc(n + 1);
    if (!*out)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    memcpy(*out, value, n + 1);
    *len = n;
    return KP_OK;
}

static kp_status env_read(void *impl, const char *name, char **out, size_t *len, kp_err *err)
{
    const env_source *src = impl;
    kp_buf file_var = KP_BUF_INIT;
    kp_status rc;
    *out = NULL;
    *len = 0;
    if (kp_buf_printf(&file_var, "%s_FILE", name) != 0)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    const char *value = env_value(name);
    const char *file = env_value(kp_buf_cstr(&file_var));
    const char *fallback = fallback_path(src, name);
    if (value && file)
        rc = kp_err_set(err, KP_EINVAL, "both %s and %s are set: set only one", name, kp_buf_cstr(&file_var));
    else if (value)
        rc = copy_env_value(value, out, len, err);
    else if (file)
        rc = read_secret_file(kp_buf_cstr(&file_var), file, 0, out, len, err);
    else if (fallback)
        rc = read_secret_file(name, fallback, 1, out, len, err);
    else
        rc = kp_err_set(err, KP_ENOTFOUND, "%s is not set (nor %s)", name, kp_buf_cstr(&file_var));
    kp_buf_free(&file_var);
    return rc;
}

static void env_close(void *impl)
{
    env_source *src = impl;
    if (!src)
        return;
    for (size_t i = 0; i < src->n; i++) {
        free(src->fallbacks[i].name);
        free(src->fallbacks[i].path);
    }
    free(src->fallbacks);
    free(src);
}

static const kp_secrets_source_ops env_ops = {.read = env_read, .close = env_close};

kp_status kp_secrets_env_new(const kp_secrets_env_fallback *fallbacks, size_t n, kp_secrets_source *out, kp_err *err)
{
    env_source *src = calloc(1, sizeof *src);
    if (src && n)
        src->fallbacks = calloc(n, sizeof *src->fallbacks);
    if (!src || (n && !src->fallbacks)) {
        env_close(src);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++, src->n++) {
        src->fallbacks[i].name = strdup(fallbacks[i].name);
        src->fallbacks[i].path = strdup(fallbacks[i].path);
        if (!src->fallbacks[i].name || !src->fallbacks[i].path) {
            src->n++;
            env_close(src);
            return kp_err_set(err, KP_ENOMEM, "out of memory");
        }
    }
    out->ops = &env_ops;
    out->impl = src;
    return KP_OK;
}
