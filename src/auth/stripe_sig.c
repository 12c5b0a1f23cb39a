/*
 * stripe_sig.c - see stripe_sig.h. The header is read in place, element by
 * element, without copying or allocating; hex from libsodium (sodium_hex2bin),
 * HMAC-SHA256 from libsodium (crypto_auth_hmacsha256_*, which takes a key of
 * any length, as Stripe's "whsec_..." secrets are used whole), comparison with
 * sodium_memcmp.
 *
 * The MAC is computed over the timestamp as Stripe's own libraries print it
 * (the decimal of the parsed number, so "t=0012" signs "12."), then ".", then
 * the body's bytes, streamed: the body is never copied.
 */
#include "auth/stripe_sig.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* One element of the header: [key, key+key_len) "=" [val, val+val_len). */
typedef struct element {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
} element;

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* [*start, *end) without surrounding spaces. */
static void trim(const char **start, const char **end)
{
    while (*start < *end && is_space(**start))
        (*start)++;
    while (*end > *start && is_space((*end)[-1]))
        (*end)--;
}

static int key_is(const element *e, const char *key)
{
    return e->key_len == strlen(key) && memcmp(e->key, key, e->key_len) == 0;
}

/* Splits [start, end) at its first '='. 0, or -1 when it is not key=value. */
static int split_element(const char *start, const char *end, element *e)
{
    trim(&start, &end);
    const char *eq = memchr(start, '=', (size_t)(end - start));
    if (!eq || eq == start)
        return -1;
    e->key = start;
    e->key_len = (size_t)(eq - start);
    e->val = eq + 1;
    e->val_len = (size_t)(end - eq - 1);
    return 0;
}

/* A whole number of 1..12 digits, no sign. 0, or -1. */
static int parse_timestamp(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 12)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Exactly 64 hex digits into 32 bytes. 0, or -1. */
static int parse_v1(const char *s, size_t len, unsigned char out[KP_STRIPE_SIG_LEN])
{
    size_t bin_len = 0;
    const char *end = NULL;
    if (len != 2 * KP_STRIPE_SIG_LEN)
        return -1;
    if (sodium_hex2bin(out, KP_STRIPE_SIG_LEN, s, len, NULL, &bin_len, &end) != 0)
        return -1;
    return bin_len == KP_STRIPE_SIG_LEN && end == s + len ? 0 : -1;
}

static kp_stripe_sig_status malformed(const char **detail, const char *why)
{
    if (detail)
        *detail = why;
    return KP_STRIPE_SIG_MALFORMED;
}

/* Takes one element into out; *have_t tracks t=. */
static kp_stripe_sig_status take_element(const element *e, kp_stripe_sig_header *out, int *have_t, const char **detail)
{
    if (key_is(e, "t")) {
        if (*have_t)
            return malformed(detail, "t= appears more than once");
        if (parse_timestamp(e->val, e->val_len, &out->timestamp) != 0)
            return malformed(detail, "t= is not a whole number of at most 12 digits");
        *have_t = 1;
    } else if (key_is(e, "v1")) {
        if (out->n_v1 == KP_STRIPE_SIG_MAX_V1)
            return malformed(detail, "more than 8 v1 signatures");
        if (parse_v1(e->val, e->val_len, out->v1[out->n_v1]) != 0)
            return malformed(detail, "a v1 signature is not 64 hex digits");
        out->n_v1++;
    } /* v0 and schemes Stripe may add later: ignored */
    return KP_STRIPE_SIG_OK;
}

kp_stripe_sig_status kp_stripe_sig_parse(const char *header, kp_stripe_sig_header *out, const char **detail)
{
    int have_t = 0;
    memset(out, 0, sizeof *out);
    if (detail)
        *detail = "";
    if (!header || !*header) {
        if (detail)
            *detail = "no Stripe-Signature header";
        return KP_STRIPE_SIG_MISSING;
    }
    size_t len = strnlen(header, KP_STRIPE_SIG_HEADER_MAX + 1);
    if (len > KP_STRIPE_SIG_HEADER_MAX)
        return malformed(detail, "header longer than 4096 bytes");
    const char *end = header + len;
    for (const char *p = header; p <= end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        element e;
        if (split_element(p, stop, &e) != 0)
            return malformed(detail, "an element is not key=value");
        kp_stripe_sig_status st = take_element(&e, out, &have_t, detail);
        if (st != KP_STRIPE_SIG_OK)
            return st;
        p = stop + 1;
    }
    if (!have_t)
        return malformed(detail, "no t= timestamp");
    if (out->n_v1 == 0) {
        if (detail)
            *detail = "no v1 signature (v0 and other schemes are not accepted)";
        return KP_STRIPE_SIG_NO_V1;
    }
    return KP_STRIPE_SIG_OK;
}

/* HMAC-SHA256 of "{t}.{body}" under key. */
static void sign(const char *key, size_t key_len, int64_t t, const void *body, size_t body_len,
                 unsigned char mac[KP_STRIPE_SIG_LEN])
{
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "%lld.", (long long)t);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, key_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)prefix, (unsigned long long)n);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

/* 1 when one of h's v1 signatures equals mac. Every one is compared. */
static int any_v1_equals(const kp_stripe_sig_header *h, const unsigned char mac[KP_STRIPE_SIG_LEN])
{
    int found = 0;
    for (size_t i = 0; i < h->n_v1; i++)
        found |= sodium_memcmp(h->v1[i], mac, KP_STRIPE_SIG_LEN) == 0;
    return found;
}

/* Tries every secret of the list. Returns OK, NO_MATCH or NO_SECRET. */
static kp_stripe_sig_status match_secrets(const kp_stripe_sig_header *h, const void *body, size_t body_len,
                                          const char *secrets)
{
    int tried = 0, found = 0;
    const char *end = secrets ? secrets + strlen(secrets) : NULL;
    for (const char *p = secrets; p && p <= end && !found;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *start = p, *stop = comma ? comma : end;
        trim(&start, &stop);
        if (stop > start) {
            unsigned char mac[KP_STRIPE_SIG_LEN];
            sign(start, (size_t)(stop - start), h->timestamp, body, body_len, mac);
            found = any_v1_equals(h, mac);
            sodium_memzero(mac, sizeof mac);
            tried = 1;
        }
        p = (comma ? comma : end) + 1;
    }
    if (!tried)
        return KP_STRIPE_SIG_NO_SECRET;
    return found ? KP_STRIPE_SIG_OK : KP_STRIPE_SIG_NO_MATCH;
}

static kp_stripe_sig_status check_time(int64_t t, int64_t now, int64_t tolerance_s, const char **detail)
{
    if (t < now && now - t > tolerance_s) {
        if (detail)
            *detail = "timestamp older than the tolerance (KOUMPA_STRIPE_TOLERANCE_S)";
        return KP_STRIPE_SIG_STALE;
    }
    if (t > now && t - now > tolerance_s) {
        if (detail)
            *detail = "timestamp further in the future than the tolerance (KOUMPA_STRIPE_TOLERANCE_S)";
        return KP_STRIPE_SIG_FUTURE;
    }
    return KP_STRIPE_SIG_OK;
}

kp_stripe_sig_status kp_stripe_sig_verify(const char *header, const void *body, size_t body_len, const char *secrets,
                                          int64_t now, int64_t tolerance_s, const char **detail)
{
    kp_stripe_sig_header h;
    kp_stripe_sig_status st = kp_stripe_sig_parse(header, &h, detail);
    if (st == KP_STRIPE_SIG_OK)
        st = check_time(h.timestamp, now, tolerance_s, detail);
    if (st == KP_STRIPE_SIG_OK) {
        st = match_secrets(&h, body, body_len, secrets);
        if (detail && st == KP_STRIPE_SIG_NO_MATCH)
            *detail = "no v1 signature matches a configured secret";
        else if (detail && st == KP_STRIPE_SIG_NO_SECRET)
            *detail = "no webhook secret is configured";
    }
    sodium_memzero(&h, sizeof h);
    return st;
}

const char *kp_stripe_sig_reason(kp_stripe_sig_status st)
{
    switch (st) {
    case KP_STRIPE_SIG_OK: return "ok";
    case KP_STRIPE_SIG_MISSING: return "missing_header";
    case KP_STRIPE_SIG_MALFORMED: return "malformed_header";
    case KP_STRIPE_SIG_NO_V1: return "no_v1_signature";
    case KP_STRIPE_SIG_STALE: return "timestamp_too_old";
    case KP_STRIPE_SIG_FUTURE: return "timestamp_in_future";
    case KP_STRIPE_SIG_NO_MATCH: return "no_matching_signature";
    case KP_STRIPE_SIG_NO_SECRET: return "no_secret";
    }
    return "unknown";
}
