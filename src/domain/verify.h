/*
 * verify.h - e-mail address verification: single-use, expiring tokens sent
 * in a link, and what a verified address unlocks.
 *
 * A token is 256 random bits (base64url, 43 characters) that exists only in
 * the mail; the database keeps its BLAKE2b-256 hash, so a database leak
 * verifies nobody. Issuing a token drops the user's earlier unused ones (the
 * latest mail is the one that works). Consuming one, in one transaction,
 * marks it used and the address verified; then the user gets today's daily
 * bonus if it was waiting for this (verification_required), with the same
 * ledger key as the daily run, so it is never granted twice.
 *
 * A verified address is what KOUMPA_ADMIN_EMAILS trusts (accounts.h).
 */
#ifndef KP_VERIFY_H
#define KP_VERIFY_H

#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "store/store.h"

#define KP_VERIFY_TOKEN_MAX 64 /* a token's text fits, with its '\0' */

typedef enum kp_verify_outcome {
    KP_VERIFY_DONE = 0, /* the address is now verified */
    KP_VERIFY_UNKNOWN,  /* no such token (mistyped, or replaced by a newer mail) */
    KP_VERIFY_USED,     /* already used: single use */
    KP_VERIFY_EXPIRED
} kp_verify_outcome;

/* Makes a token for user_id valid for ttl_s seconds from now and stores its
 * hash; token receives the text for the link. */
kp_status kp_verify_issue(kp_store *s, const char *user_id, int64_t ttl_s, char token[KP_VERIFY_TOKEN_MAX],
                          kp_err *err);

/* Consumes token at time now (unix seconds). KP_OK with *outcome saying what
 * happened (and *user, may be NULL, the verified user when DONE); an error
 * status only when the database fails. */
kp_status kp_verify_consume(kp_store *s, const char *token, int64_t now, kp_verify_outcome *outcome, kp_user *user,
                            kp_err *err);

/* The verification mail for token: subject and plain-text body with the link
 * {cfg->verify_url}?token={token}. */
int kp_verify_mail(const kp_config *cfg, const char *token, kp_buf *subject, kp_buf *body);

#endif
