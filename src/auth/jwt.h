/*
 * jwt.h - compact JWS (RFC 7515) parsing, signature checks and HS256 signing
 * for JSON Web Tokens (RFC 7519).
 *
 * This module knows the token format and the two signature algorithms Koumpa
 * accepts; it does not decide which key or algorithm applies to a token (that
 * is the policy in auth.c, following RFC 8725: the key decides the algorithm,
 * never the token). Parsing is strict: exactly three segments, unpadded
 * base64url with no stray characters or non-zero trailing bits, header and
 * payload JSON objects without duplicate names, non-empty signature, and
 * nothing is decoded from a token longer than KP_JWT_MAX_LEN.
 *
 * All failures return KP_EAUTH with a short message fit for a 401 body
 * (never the token itself), except allocation failures (KP_ENOMEM) and
 * misuse by the caller (KP_EINVAL / KP_EINTERNAL).
 */
#ifndef KP_JWT_H
#define KP_JWT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define KP_JWT_MAX_LEN 8192 /* longer tokens are refused before any decoding */

/* A parsed, not yet verified token. header and payload are owned (decref'd by
 * kp_jwt_free); signing_input points into the caller's token string, which
 * must outlive the kp_jwt. */
typedef struct kp_jwt {
    json_t *header;
    json_t *payload;
    const char *signing_input; /* "<header>.<payload>" as it appeared in the token */
    size_t signing_input_len;
    unsigned char *sig; /* decoded signature, owned */
    size_t sig_len;
} kp_jwt;

#define KP_JWT_INIT                                                                                                    \
    {                                                                                                                  \
        NULL, NULL, NULL, 0, NULL, 0                                                                                   \
    }

/* Splits and decodes a compact JWS. On failure out is left empty (still safe
 * to kp_jwt_free). Does not check the signature or any claim. */
kp_status kp_jwt_parse(const char *token, kp_jwt *out, kp_err *err);

/* Releases what kp_jwt_parse allocated; jwt becomes empty. NULL-safe. */
void kp_jwt_free(kp_jwt *jwt);

/* A header member if it is a string, else NULL (borrowed from jwt). */
const char *kp_jwt_header_string(const kp_jwt *jwt, const char *name);

/* A string claim of the payload, or NULL if absent or not a string (borrowed). */
const char *kp_jwt_claim_string(const kp_jwt *jwt, const char *name);

/* Checks the registered time claims against now (seconds since the epoch)
 * with leeway seconds of tolerance for clock skew: "exp" is required and
 * must be a number with now < exp + leeway; "nbf", if present, a number with
 * nbf <= now + leeway; "iat", if present, a number with iat <= now + leeway.
 * On success *exp_out (if non-NULL) is the token's expiry. */
kp_status kp_jwt_check_times(const kp_jwt *jwt, int64_t now, long leeway, int64_t *exp_out, kp_err *err);

/* Checks an HMAC-SHA256 signature with key (key_len > 0) in constant time.
 * Does not look at the header's alg: the caller has already required it. */
kp_status kp_jwt_verify_hs256(const kp_jwt *jwt, const unsigned char *key, size_t key_len, kp_err *err);

/* Checks an RSASSA-PKCS1-v1_5 SHA-256 signature with an RSA public key of at
 * least 2048 bits (smaller or non-RSA keys are refused). */
kp_status kp_jwt_verify_rs256(const kp_jwt *jwt, EVP_PKEY *key, kp_err *err);

/* Builds a compact HS256 JWS: header {"alg":"HS256","typ":"JWT"} and payload
 * (serialised compactly; not consumed). *token_out is a new heap string the
 * caller frees with free(). */
kp_status kp_jwt_sign_hs256(const json_t *payload, const unsigned char *key, size_t key_len, char **token_out,
                            kp_err *err);

/* Decodes strict unpadded base64url (RFC 7515 section 2). Returns a new heap
 * buffer (caller frees; never NULL on success, even for empty input) and its
 * length; -1 on malformed input or allocation failure. */
int kp_jwt_b64url_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len);

/* Encodes bytes as unpadded base64url into a new heap C string (caller
 * frees); NULL on allocation failure. */
char *kp_jwt_b64url_encode(const unsigned char *in, size_t in_len);

#endif
