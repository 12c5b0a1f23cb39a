/*
 * fuzz_stripe_sig.c - libFuzzer target for the Stripe-Signature header
 * parser and verifier (src/auth/stripe_sig.c), which reads what anyone on the
 * Internet may send to POST /v1/webhooks/stripe.
 *
 * The first byte chooses how the header is made (the rest of the input is
 * the header text):
 *   bit 0 clear: the header is the rest of the input, as a client sent it;
 *   bit 0 set:   ",v1=<the real signature at t=NOW>" is appended, so the
 *                fuzzer gets past the MAC check to the accepting path
 *                (bit 1 then flips one hex digit of it, which must fail).
 * Oracles, computed apart from stripe_sig.c (OpenSSL's HMAC, our own reading
 * of the timestamp): verification accepts exactly when the header parses,
 * its t is within the tolerance of NOW and one of its v1 is the HMAC of
 * "{t}.{body}" under one of the secrets; a parsed header has 1..8 v1 and a t
 * of at most 12 digits; a header over 4096 bytes never parses; the detail and
 * reason are set and never show a secret.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/stripe_sig.h"
#include "core/buf.h"
#include "harness.h"

#define NOW 1700000000
#define TOL 300
#define SECRET_A "whsec_fuzz_a_0123456789"
#define SECRET_B "whsec_fuzz_b_9876543210"
#define SECRETS SECRET_A ", " SECRET_B
#define BODY "{\"id\":\"evt_fuzz\",\"object\":\"event\"}"

static void mac_of(const char *secret, int64_t t, unsigned char mac[32])
{
    kp_buf msg = KP_BUF_INIT;
    size_t mac_len = 0;
    FZ_CHECK(kp_buf_printf(&msg, "%lld.%s", (long long)t, BODY) == 0, "out of memory");
    FZ_CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret), (const unsigned char *)msg.data,
                       msg.len, mac, 32, &mac_len) != NULL &&
                 mac_len == 32,
             "HMAC failed");
    kp_buf_free(&msg);
}

/* What verification must answer for a header that parsed as h. */
static int should_accept(const kp_stripe_sig_header *h)
{
    unsigned char a[32], b[32];
    if (h->timestamp < NOW - TOL || h->timestamp > NOW + TOL)
        return 0;
    mac_of(SECRET_A, h->timestamp, a);
    mac_of(SECRET_B, h->timestamp, b);
    for (size_t i = 0; i < h->n_v1; i++)
        if (CRYPTO_memcmp(h->v1[i], a, 32) == 0 || CRYPTO_memcmp(h->v1[i], b, 32) == 0)
            return 1;
    return 0;
}

static void append_signature(kp_buf *header, int tamper)
{
    unsigned char mac[32];
    mac_of(SECRET_B, NOW, mac);
    kp_buf_puts(header, ",v1=");
    for (size_t i = 0; i < 32; i++)
        kp_buf_printf(header, "%02x", mac[i]);
    if (tamper) {
        char *digit = &header->data[header->len - 1 - (mac[0] % 64)];
        *digit = *digit == '0' ? '1' : '0';
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kp_buf header = KP_BUF_INIT;
    kp_stripe_sig_header h;
    const char *parse_detail = NULL, *detail = NULL;
    if (size == 0)
        return 0;
    unsigned mode = data[0];
    FZ_CHECK(kp_buf_append(&header, data + 1, size - 1) == 0 && kp_buf_puts(&header, "") == 0, "out of memory");
    if (mode & 1)
        append_signature(&header, mode & 2);
    const char *text = kp_buf_cstr(&header);

    kp_stripe_sig_status parsed = kp_stripe_sig_parse(text, &h, &parse_detail);
    kp_stripe_sig_status st = kp_stripe_sig_verify(text, BODY, strlen(BODY), SECRETS, NOW, TOL, &detail);

    FZ_CHECK(parse_detail && detail, "no detail");
    FZ_CHECK(!strstr(detail, "whsec_") && !strstr(parse_detail, "whsec_"), "a detail shows a secret");
    FZ_CHECK(strcmp(kp_stripe_sig_reason(st), "unknown") != 0, "a status without a reason");
    FZ_CHECK(parsed <= KP_STRIPE_SIG_NO_V1, "parsing answered a verification status");
    if (strlen(text) > KP_STRIPE_SIG_HEADER_MAX)
        FZ_CHECK(parsed == KP_STRIPE_SIG_MALFORMED, "a header over the limit parsed");
    if (!*text)
        FZ_CHECK(parsed == KP_STRIPE_SIG_MISSING, "an empty header is not missing");
    if (parsed != KP_STRIPE_SIG_OK) {
        FZ_CHECK(st == parsed, "verification disagrees with parsing");
    } else {
        FZ_CHECK(h.n_v1 >= 1 && h.n_v1 <= KP_STRIPE_SIG_MAX_V1, "a parsed header with 0 or too many v1");
        FZ_CHECK(h.timestamp >= 0 && h.timestamp <= 999999999999LL, "a timestamp out of range");
        FZ_CHECK(strstr(text, "v1=") && strstr(text, "t="), "parsed without t= and v1=");
        FZ_CHECK((st == KP_STRIPE_SIG_OK) == should_accept(&h), "verification disagrees with the MAC oracle");
    }
    int whole = strlen(text) == header.len; /* no NUL hid the appended signature */
    if (whole && (mode & 3) == 1 && parsed == KP_STRIPE_SIG_OK && h.timestamp == NOW)
        FZ_CHECK(st == KP_STRIPE_SIG_OK, "the real signature at NOW was refused");
    if (whole && (mode & 3) == 3 && parsed == KP_STRIPE_SIG_OK && h.n_v1 == 1)
        FZ_CHECK(st != KP_STRIPE_SIG_OK, "a tampered signature was accepted");
    kp_buf_free(&header);
    return 0;
}
