/*
 * jwks.c - fetch, parse and cache an identity provider's JSON Web Key Set.
 *
 * Keys are held in an immutable kp_jwks_keyset that is swapped whole under
 * the mutex when a fetch succeeds; lookups take their own reference to the
 * EVP_PKEY before unlocking, so a swap never frees a key in use. Fetches
 * (libcurl, blocking, up to the transfer timeout) run on one refresher thread
 * per cache, never on a caller's: a lookup that wants new keys sets
 * `requested` and answers from the keys it has, at once. At most one fetch is
 * requested or in flight; every request, failed fetch or not, starts the
 * refetch interval, measured on the monotonic clock.
 */
#include "auth/jwks.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/curl_defaults.h"
#include "core/log.h"

#define DEFAULT_REFETCH_S 30
#define DEFAULT_MAX_AGE_S 3600
#define DEFAULT_CONNECT_TIMEOUT_S 5
#define DEFAULT_TIMEOUT_S 10
#define MIN_RSA_BITS 2048

typedef struct jwk_entry {
    char *kid;
    EVP_PKEY *key;   /* NULL when unusable */
    const char *why; /* static reason when unusable */
} jwk_entry;

struct kp_jwks_keyset {
    jwk_entry *items;
    size_t n;
};

struct kp_jwks {
    char *url;
    long refetch_interval_s;
    long max_age_s;
    long connect_timeout_s;
    long timeout_s;
    int64_t (*clock)(void *arg);
    void *clock_arg;

    pthread_t thread; /* the refresher */
    int thread_started;
    atomic_int stopping; /* set once, by kp_jwks_free */

    pthread_mutex_t mu;
    pthread_cond_t wake; /* the refresher waits here for a request */
    pthread_cond_t idle; /* signalled when a fetch ends */
    /* guarded by mu: */
    kp_jwks_keyset *keys; /* NULL until the first successful fetch */
    int64_t loaded_at;    /* when keys was fetched */
    int64_t last_attempt; /* when the last fetch was requested */
    int attempted;        /* a fetch has been requested at least once */
    int requested;        /* a fetch is requested, not yet started */
    int fetching;         /* a fetch is in flight */
    unsigned long fetches;
};

/* ---- key set parsing ---- */

static EVP_PKEY *rsa_public_key(const unsigned char *n, size_t n_len, const unsigned char *e, size_t e_len)
{
    BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL);
    BIGNUM *bn_e = BN_bin2bn(e, (int)e_len, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *key = NULL;

    if (!bn_n || !bn_e || !bld)
        goto cleanup;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
        goto cleanup;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto cleanup;
    /* SP 800-56B partial public key validation: odd n, sane e. */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (!check || EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(key);
        key = NULL;
    }

cleanup:
    ERR_clear_error();
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return key;
}

/* Decodes a base64url big-endian integer member of a JWK. */
static int jwk_bytes(const json_t *jwk, const char *name, unsigned char **out, size_t *out_len)
{
    const char *s = json_string_value(json_object_get(jwk, name));

    if (!s || !*s)
        return -1;
    if (kp_jwt_b64url_decode(s, strlen(s), out, out_len) != 0)
        return -1;
    return 0;
}

/* Builds the RS256 verification key of one JWK, or says why it cannot. */
static EVP_PKEY *jwk_to_key(const json_t *jwk, const char **why)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const json_t *alg = json_object_get(jwk, "alg");
    const json_t *use = json_object_get(jwk, "use");
    unsigned char *n = NULL, *e = NULL;
    size_t n_len = 0, e_len = 0;
    EVP_PKEY *key = NULL;

    *why = NULL;
    if (!kty || strcmp(kty, "RSA") != 0) {
        *why = "not an RSA key";
    } else if (alg && (!json_is_string(alg) || strcmp(json_string_value(alg), "RS256") != 0)) {
        *why = "key algorithm is not RS256";
    } else if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) {
        *why = "key is not for signatures";
    } else if (jwk_bytes(jwk, "n", &n, &n_len) != 0 || jwk_bytes(jwk, "e", &e, &e_len) != 0 || n_len == 0 ||
               e_len == 0 || n_len > 2048 || e_len > 8) {
        *why = "malformed RSA key";
    } else if (!(key = rsa_public_key(n, n_len, e, e_len))) {
        *why = "invalid RSA key";
    } else if (EVP_PKEY_get_bits(key) < MIN_RSA_BITS) {
        *why = "RSA key shorter than 2048 bits";
        EVP_PKEY_free(key);
        key = NULL;
    }
    free(n);
    free(e);
    return key;
}

static const jwk_entry *keyset_entry(const kp_jwks_keyset *ks, const char *kid)
{
    size_t i;

    if (!ks || !kid)
        return NULL;
    for (i = 0; i < ks->n; i++)
        if (strcmp(ks->items[i].kid, kid) == 0)
            return &ks->items[i];
    return NULL;
}

kp_status kp_jwks_parse(const char *json, size_t len, kp_jwks_keyset **out, kp_err *err)
{
    json_t *doc = NULL;
    const json_t *keys;
    kp_jwks_keyset *ks = NULL;
    json_error_t jerr;
    kp_status st;
    size_t i, n;

    *out = NULL;
    doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    keys = json_object_get(doc, "keys");
    if (!json_is_object(doc) || !json_is_array(keys)) {
        st = kp_err_set(err, KP_EINVAL, "JWKS is not an object with a \"keys\" array");
        goto cleanup;
    }
    n = json_array_size(keys);
    if (n > KP_JWKS_MAX_KEYS)
        n = KP_JWKS_MAX_KEYS;
    ks = calloc(1, sizeof *ks);
    if (!ks || (n && !(ks->items = calloc(n, sizeof *ks->items)))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (i = 0; i < n; i++) {
        const json_t *jwk = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        jwk_entry *ent;

        /* Without a kid a key cannot be selected; a repeated kid is ambiguous,
         * the first one stays. */
        if (!json_is_object(jwk) || !kid || !*kid || keyset_entry(ks, kid))
            continue;
        ent = &ks->items[ks->n];
        ent->kid = strdup(kid);
        if (!ent->kid) {
            st = kp_err_set(err, KP_ENOMEM, "out of memory");
            goto cleanup;
        }
        ent->key = jwk_to_key(jwk, &ent->why);
        ks->n++;
    }
    *out = ks;
    ks = NULL;
    st = KP_OK;

cleanup:
    kp_jwks_keyset_free(ks);
    json_decref(doc);
    return st;
}

EVP_PKEY *kp_jwks_keyset_find(const kp_jwks_keyset *ks, const char *kid, const char **why_unusable)
{
    const jwk_entry *ent = keyset_entry(ks, kid);

    if (why_unusable)
        *why_unusable = ent ? ent->why : NULL;
    return ent ? ent->key : NULL;
}

size_t kp_jwks_keyset_usable(const kp_jwks_keyset *ks)
{
    size_t i, n = 0;

    for (i = 0; ks && i < ks->n; i++)
        if (ks->items[i].key)
            n++;
    return n;
}

void kp_jwks_keyset_free(kp_jwks_keyset *ks)
{
    size_t i;

    if (!ks)
        return;
    for (i = 0; i < ks->n; i++) {
        free(ks->items[i].kid);
        EVP_PKEY_free(ks->items[i].key);
    }
    free(ks->items);
    free(ks);
}

/* ---- fetching ---- */

typedef struct body_sink {
    kp_buf buf;
    int too_large;
} body_sink;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    body_sink *sink = arg;
    size_t n = size * nmemb;

    if (sink->buf.len + n > KP_JWKS_MAX_BYTES) {
        sink->too_large = 1;
        return 0;
    }
    if (kp_buf_append(&sink->buf, data, n) != 0)
        return 0;
    return n;
}

/* Aborts the transfer once kp_jwks_free has begun, so shutdown never waits
 * for an unresponsive provider's timeout. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    kp_jwks *j = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(&j->stopping) ? 1 : 0;
}

/* Downloads the JWKS document into sink (no lock held). */
static kp_status download(const kp_jwks *j, body_sink *sink, kp_err *err)
{
    char curl_msg[CURL_ERROR_SIZE] = "";
    CURL *curl = kp_curl_defaults(curl_easy_init());
    CURLcode rc;
    long code = 0;
    kp_status st;

    if (!curl)
        return kp_err_set(err, KP_ENOMEM, "cannot create HTTP client");
    curl_easy_setopt(curl, CURLOPT_URL, j->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http,file");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, j->connect_timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, j->timeout_s);
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KP_JWKS_MAX_BYTES);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "koumpa");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)j);

    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (sink->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        st = kp_err_set(err, KP_EIO, "JWKS response larger than %d bytes", KP_JWKS_MAX_BYTES);
    else if (rc != CURLE_OK)
        st = kp_err_set(err, KP_EIO, "JWKS fetch failed: %s", curl_msg[0] ? curl_msg : curl_easy_strerror(rc));
    else if (code != 0 && code != 200) /* 0: file:// has no status */
        st = kp_err_set(err, KP_EIO, "JWKS fetch failed: HTTP %ld", code);
    else
        st = KP_OK;
    curl_easy_cleanup(curl);
    return st;
}

static kp_status fetch_keyset(const kp_jwks *j, kp_jwks_keyset **out, kp_err *err)
{
    body_sink sink = {KP_BUF_INIT, 0};
    kp_status st = download(j, &sink, err);

    if (st == KP_OK)
        st = kp_jwks_parse(sink.buf.data ? sink.buf.data : "", sink.buf.len, out, err);
    kp_buf_free(&sink.buf);
    return st;
}

static void log_fetch(const kp_jwks *j, const kp_jwks_keyset *ks, kp_status st, const kp_err *ferr)
{
    json_t *fields = json_object();

    json_object_set_new(fields, "url", json_string(j->url));
    if (st == KP_OK) {
        json_object_set_new(fields, "keys", json_integer((json_int_t)kp_jwks_keyset_usable(ks)));
        kp_log_json(KP_LOG_INFO, "jwks fetched", fields);
    } else {
        json_object_set_new(fields, "error", json_string(ferr->msg));
        kp_log_json(KP_LOG_WARN, "jwks fetch failed", fields);
    }
}

/* Installs a fetch's outcome and wakes whoever waits for the refresher to be
 * idle. Lock held. */
static void install_locked(kp_jwks *j, kp_jwks_keyset *fresh, kp_status st)
{
    kp_jwks_keyset *old = NULL;

    if (st == KP_OK) {
        old = j->keys;
        j->keys = fresh;
        j->loaded_at = j->clock(j->clock_arg);
    }
    j->fetching = 0;
    pthread_cond_broadcast(&j->idle);
    /* no lookup holds a borrowed pointer into old: they up-ref under the lock */
    kp_jwks_keyset_free(old);
}

/* The refresher thread: runs each requested fetch, with the lock released. */
static void *refresher(void *arg)
{
    kp_jwks *j = arg;

    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->requested && !atomic_load(&j->stopping))
            pthread_cond_wait(&j->wake, &j->mu);
        if (atomic_load(&j->stopping))
            break;
        j->requested = 0;
        j->fetching = 1;
        pthread_mutex_unlock(&j->mu);

        kp_jwks_keyset *fresh = NULL;
        kp_err ferr;
        kp_err_clear(&ferr);
        kp_status st = fetch_keyset(j, &fresh, &ferr);
        log_fetch(j, fresh, st, &ferr);

        pthread_mutex_lock(&j->mu);
        install_locked(j, fresh, st);
    }
    j->requested = 0;
    pthread_cond_broadcast(&j->idle);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static int may_fetch_locked(const kp_jwks *j, int64_t now)
{
    return !j->attempted || now - j->last_attempt >= j->refetch_interval_s;
}

/* Asks the refresher for a fetch, unless one is pending or the refetch
 * interval forbids it. Every request, whatever its outcome later, starts the
 * interval. Lock held. */
static void request_refresh_locked(kp_jwks *j, int64_t now)
{
    if (j->requested || j->fetching || !may_fetch_locked(j, now))
        return;
    j->requested = 1;
    j->attempted = 1;
    j->last_attempt = now;
    j->fetches++;
    pthread_cond_signal(&j->wake);
}

/* Fills *key_out from the current set or says why not. Lock held. */
static kp_status take_key_locked(const kp_jwks *j, const char *kid, EVP_PKEY **key_out, kp_err *err)
{
    const char *why = NULL;
    EVP_PKEY *key = kp_jwks_keyset_find(j->keys, kid, &why);

    if (key) {
        if (EVP_PKEY_up_ref(key) != 1)
            return kp_err_set(err, KP_EINTERNAL, "cannot reference key");
        *key_out = key;
        return KP_OK;
    }
    if (why)
        return kp_err_set(err, KP_EAUTH, "signing key not usable: %s", why);
    if (!j->keys)
        return kp_err_set(err, KP_EAUTH, "signing keys unavailable");
    return kp_err_set(err, KP_EAUTH, "unknown signing key");
}

kp_status kp_jwks_get(kp_jwks *j, const char *kid, EVP_PKEY **key_out, kp_err *err)
{
    kp_status st;

    *key_out = NULL;
    if (!kid || !*kid)
        return kp_err_set(err, KP_EAUTH, "token has no key id");
    pthread_mutex_lock(&j->mu);
    int64_t now = j->clock(j->clock_arg);
    int known = keyset_entry(j->keys, kid) != NULL;
    int fresh = j->keys && now - j->loaded_at < j->max_age_s;
    /* an unknown kid (rotation?) or a stale set: fetch in the background, answer now */
    if (!known || !fresh)
        request_refresh_locked(j, now);
    st = take_key_locked(j, kid, key_out, err);
    pthread_mutex_unlock(&j->mu);
    return st;
}

void kp_jwks_prefetch(kp_jwks *j)
{
    pthread_mutex_lock(&j->mu);
    request_refresh_locked(j, j->clock(j->clock_arg));
    pthread_mutex_unlock(&j->mu);
}

void kp_jwks_wait_idle(kp_jwks *j)
{
    pthread_mutex_lock(&j->mu);
    while ((j->requested || j->fetching) && !atomic_load(&j->stopping))
        pthread_cond_wait(&j->idle, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

/* ---- lifecycle ---- */

static int64_t monotonic_clock(void *arg)
{
    (void)arg;
    return kp_clock_mono_s();
}

static int supported_url(const char *url)
{
    return url &&
           (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0 || strncmp(url, "file://", 7) == 0);
}

kp_status kp_jwks_new(const kp_jwks_options *opt, kp_jwks **out, kp_err *err)
{
    kp_jwks *j;

    *out = NULL;
    if (!opt || !supported_url(opt->url))
        return kp_err_set(err, KP_EINVAL, "JWKS URL must start with https://, http:// or file://");
    j = calloc(1, sizeof *j);
    if (!j)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    j->url = strdup(opt->url);
    if (!j->url) {
        free(j);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    j->refetch_interval_s = opt->refetch_interval_s > 0 ? opt->refetch_interval_s : DEFAULT_REFETCH_S;
    j->max_age_s = opt->max_age_s > 0 ? opt->max_age_s : DEFAULT_MAX_AGE_S;
    j->connect_timeout_s = opt->connect_timeout_s > 0 ? opt->connect_timeout_s : DEFAULT_CONNECT_TIMEOUT_S;
    j->timeout_s = opt->timeout_s > 0 ? opt->timeout_s : DEFAULT_TIMEOUT_S;
    j->clock = opt->clock ? opt->clock : monotonic_clock;
    j->clock_arg = opt->clock ? opt->clock_arg : NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->wake, NULL);
    pthread_cond_init(&j->idle, NULL);
    /* Reference-counted; thread-safe in this libcurl (>= 7.84). */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_create(&j->thread, NULL, refresher, j) != 0) {
        kp_jwks_free(j);
        return kp_err_set(err, KP_EINTERNAL, "cannot start the JWKS refresher thread");
    }
    j->thread_started = 1;
    *out = j;
    return KP_OK;
}

unsigned long kp_jwks_fetch_count(kp_jwks *j)
{
    unsigned long n;

    pthread_mutex_lock(&j->mu);
    n = j->fetches;
    pthread_mutex_unlock(&j->mu);
    return n;
}

void kp_jwks_free(kp_jwks *j)
{
    if (!j)
        return;
    if (j->thread_started) {
        pthread_mutex_lock(&j->mu);
        atomic_store(&j->stopping, 1); /* also aborts a fetch in flight (on_progress) */
        pthread_cond_signal(&j->wake);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    kp_jwks_keyset_free(j->keys);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->idle);
    pthread_mutex_destroy(&j->mu);
    free(j->url);
    free(j);
    curl_global_cleanup();
}
