/*
 * accounts.h - sign-up, login and turning a verified token into a user.
 *
 * Local accounts: email (normalised: trimmed, lower-case) + password hashed
 * with Argon2id (libsodium crypto_pwhash_str, cost from the config). Wrong
 * email and wrong password fail identically (same message, similar time).
 * Identity-provider users are created on first sight of their subject, their
 * address verified when the provider says so (email_verified).
 * A new user gets today's daily bonus at once - except, when e-mail
 * verification is on (KOUMPA_SMTP_URL), a local account: its bonus waits for
 * the verified address (domain/verify.h).
 */
#ifndef KP_ACCOUNTS_H
#define KP_ACCOUNTS_H

#include "core/config.h"
#include "store/store.h"

#define KP_PASSWORD_MIN 8
#define KP_PASSWORD_MAX 1024

/* Normalises email into out and validates it; KP_EINVAL with a message naming the field. */
kp_status kp_accounts_normalise_email(const char *email, char out[KP_EMAIL_MAX], kp_err *err);

/* Creates a local account. KP_EINVAL (field message), KP_ECONFLICT (email taken). */
kp_status kp_accounts_signup(kp_store *s, const kp_config *cfg, const char *email, const char *password, kp_user *out,
                             kp_err *err);

/* Checks credentials. KP_EAUTH "invalid email or password" on any mismatch. */
kp_status kp_accounts_login(kp_store *s, const kp_config *cfg, const char *email, const char *password, kp_user *out,
                            kp_err *err);

/* The account (user, plan, balance) behind a user id, e.g. a local token's
 * subject. KP_EAUTH if the user is gone. The password hash is not read. */
kp_status kp_accounts_account(kp_store *s, const char *user_id, kp_account *out, kp_err *err);

/* The user behind an identity-provider subject, created on first sight.
 * issuer + sub identify it; email may be "" or NULL. */
kp_status kp_accounts_external_user(kp_store *s, const char *issuer, const char *sub, const char *email, kp_user *out,
                                    kp_err *err);

/* Whether u is an admin: its flag (koumpa admin grant), or its address in
 * KOUMPA_ADMIN_EMAILS (compared normalised: case, surrounding spaces) - but
 * only once the address is verified (a verification link, or an identity
 * provider's email_verified). Signing up with a listed address proves
 * nothing. */
int kp_accounts_is_admin(const kp_config *cfg, const kp_user *u);

/* Admin actions on users, by email. */
kp_status kp_accounts_set_admin(kp_store *s, const char *email, int is_admin, kp_user *out, kp_err *err);
/*
 * An admin (actor_id) grants or removes user_id's admin flag (PUT
 * /v1/admin/users/{id}/admin); *out is the user as it is then. KP_ENOTFOUND:
 * no such user. KP_ECONFLICT, nothing changed: the actor removing their own
 * right (nobody locks themselves out: another admin must do it), or removing
 * the flag of a user who is an admin through KOUMPA_ADMIN_EMAILS anyway.
 */
kp_status kp_accounts_set_admin_by_id(kp_store *s, const kp_config *cfg, const char *actor_id, const char *user_id,
                                      int is_admin, kp_user *out, kp_err *err);
kp_status kp_accounts_set_plan(kp_store *s, const char *user_id, const char *plan_id, kp_err *err);

#endif
