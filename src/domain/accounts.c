/* accounts.c - see accounts.h. */
#include "domain/accounts.h"

#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/id.h"
#include "domain/credits.h"

#define DEFAULT_PLAN "free"

kp_status kp_accounts_normalise_email(const char *email, char out[KP_EMAIL_MAX], kp_err *err)
{
    if (!email)
        return kp_err_set(err, KP_EINVAL, "email is required");
    while (isspace((unsigned char)*email))
        email++;
    size_t n = strlen(email);
    while (n && isspace((unsigned char)email[n - 1]))
        n--;
    if (n == 0)
        return kp_err_set(err, KP_EINVAL, "email is required");
    if (n > 254)
        return kp_err_set(err, KP_EINVAL, "email must be at most 254 characters");
    size_t at = n, ats = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)email[i];
        if (c <= ' ' || c == 0x7f || c == '"' || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';' ||
            c == '\\')
            return kp_err_set(err, KP_EINVAL, "email contains a character that is not allowed");
        if (c == '@') {
            ats++;
            at = i;
        }
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    const char *domain = out + at + 1;
    if (ats != 1 || at == 0 || at == n - 1 || !strchr(domain, '.') || domain[0] == '.' || out[n - 1] == '.')
        return kp_err_set(err, KP_EINVAL, "email must look like name@example.com");
    return KP_OK;
}

static kp_status validate_password(const char *password, kp_err *err)
{
    if (!password)
        return kp_err_set(err, KP_EINVAL, "password is required");
    size_t n = strlen(password);
    if (n < KP_PASSWORD_MIN)
        return kp_err_set(err, KP_EINVAL, "password must be at least %d characters", KP_PASSWORD_MIN);
    if (n > KP_PASSWORD_MAX)
        return kp_err_set(err, KP_EINVAL, "password must be at most %d characters", KP_PASSWORD_MAX);
    return KP_OK;
}

static kp_status hash_password(const kp_config *cfg, const char *password, char out[KP_PWHASH_MAX], kp_err *err)
{
    char hash[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(hash, password, strlen(password), (unsigned long long)cfg->pwhash_opslimit,
                              (size_t)cfg->pwhash_memlimit_kib * 1024, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return kp_err_set(err, KP_ENOMEM, "password hashing ran out of memory");
    snprintf(out, KP_PWHASH_MAX, "%s", hash);
    return KP_OK;
}

static void new_user(kp_user *u, const char *email, const char *sub)
{
    memset(u, 0, sizeof *u);
    kp_id_new("usr", u->id, sizeof u->id);
    snprintf(u->email, sizeof u->email, "%s", email ? email : "");
    snprintf(u->external_sub, sizeof u->external_sub, "%s", sub ? sub : "");
    snprintf(u->plan_id, sizeof u->plan_id, "%s", DEFAULT_PLAN);
    u->created_at = (int64_t)time(NULL);
}

kp_status kp_accounts_signup(kp_store *s, const kp_config *cfg, const char *email, const char *password, kp_user *out,
                             kp_err *err)
{
    char norm[KP_EMAIL_MAX];
    kp_user u;
    kp_status rc = kp_accounts_normalise_email(email, norm, err);
    if (rc == KP_OK)
        rc = validate_password(password, err);
    if (rc != KP_OK)
        return rc;
    new_user(&u, norm, NULL);
    u.verification_required = cfg->smtp_url != NULL; /* the day's bonus waits for the link */
    rc = hash_password(cfg, password, u.password_hash, err);
    if (rc != KP_OK)
        return rc;
    rc = kp_credits_create_user(s, &u, err); /* with today's bonus, in one transaction */
    if (rc == KP_ECONFLICT)
        return kp_err_set(err, KP_ECONFLICT, "an account with this email already exists");
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    if (rc == KP_OK && out)
        *out = u;
    return rc;
}

/* Verifies password against a throwaway hash made with the same cost, so an
 * unknown email takes as long as a wrong password. */
static void verify_dummy(const kp_config *cfg, const char *password)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char hash[crypto_pwhash_STRBYTES];
    static unsigned long long ops;
    static size_t mem;
    char copy[crypto_pwhash_STRBYTES];
    pthread_mutex_lock(&lock);
    if (!hash[0] || ops != (unsigned long long)cfg->pwhash_opslimit || mem != (size_t)cfg->pwhash_memlimit_kib * 1024) {
        ops = (unsigned long long)cfg->pwhash_opslimit;
        mem = (size_t)cfg->pwhash_memlimit_kib * 1024;
        if (crypto_pwhash_str_alg(hash, "not-a-password", 14, ops, mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
            hash[0] = '\0';
    }
    memcpy(copy, hash, sizeof copy);
    pthread_mutex_unlock(&lock);
    if (copy[0] && crypto_pwhash_str_verify(copy, password, strlen(password)) == 0)
        return; /* the dummy password itself: still a failure for the caller */
}

kp_status kp_accounts_login(kp_store *s, const kp_config *cfg, const char *email, const char *password, kp_user *out,
                            kp_err *err)
{
    char norm[KP_EMAIL_MAX];
    kp_user u;
    if (!password || kp_accounts_normalise_email(email, norm, NULL) != KP_OK)
        return kp_err_set(err, KP_EAUTH, "invalid email or password");
    kp_status rc = s->ops->user_get_by_email(s, norm, &u, err);
    if (rc != KP_OK && rc != KP_ENOTFOUND)
        return rc;
    if (rc == KP_ENOTFOUND || !u.password_hash[0]) {
        verify_dummy(cfg, password);
        return kp_err_set(err, KP_EAUTH, "invalid email or password");
    }
    if (crypto_pwhash_str_verify(u.password_hash, password, strlen(password)) != 0)
        return kp_err_set(err, KP_EAUTH, "invalid email or password");
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    if (out)
        *out = u;
    return KP_OK;
}

kp_status kp_accounts_account(kp_store *s, const char *user_id, kp_account *out, kp_err *err)
{
    kp_status rc = s->ops->account_get(s, user_id, out, err);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_EAUTH, "the token's user no longer exists");
    return rc;
}

kp_status kp_accounts_external_user(kp_store *s, const char *issuer, const char *sub, const char *email, kp_user *out,
                                    kp_err *err)
{
    char key[KP_SUB_MAX];
    char norm[KP_EMAIL_MAX] = "";
    if (!sub || !*sub)
        return kp_err_set(err, KP_EAUTH, "the token has no subject");
    if (snprintf(key, sizeof key, "%s|%s", issuer, sub) >= (int)sizeof key)
        return kp_err_set(err, KP_EAUTH, "the token's subject is too long");
    if (email && *email && kp_accounts_normalise_email(email, norm, NULL) != KP_OK)
        norm[0] = '\0';
    kp_status rc = s->ops->user_get_by_sub(s, key, out, err);
    if (rc == KP_OK && norm[0] && !out->email_verified && strcmp(out->email, norm) == 0) {
        /* the provider vouches for the address (accounts made before it was recorded) */
        rc = s->ops->user_set_email_verified(s, out->id, err);
        out->email_verified = rc == KP_OK;
    }
    if (rc != KP_ENOTFOUND)
        return rc;
    kp_user u;
    new_user(&u, norm, key);
    u.email_verified = norm[0] != '\0'; /* the token's email only comes with email_verified (auth.h) */
    rc = kp_credits_create_user(s, &u, err);
    if (rc == KP_ECONFLICT && norm[0]) {
        /* the email belongs to another account: keep the identity, not the email */
        kp_err_clear(err);
        u.email[0] = '\0';
        u.email_verified = 0;
        rc = kp_credits_create_user(s, &u, err);
    }
    if (rc == KP_ECONFLICT) /* created concurrently by another request */
        return s->ops->user_get_by_sub(s, key, out, err);
    if (rc == KP_OK)
        *out = u;
    return rc;
}

int kp_accounts_is_admin(const kp_config *cfg, const kp_user *u)
{
    /* an unverified address is anyone's claim: the list never trusts it */
    return u->is_admin || (u->email_verified && kp_config_is_admin_email(cfg, u->email));
}

kp_status kp_accounts_set_admin(kp_store *s, const char *email, int is_admin, kp_user *out, kp_err *err)
{
    char norm[KP_EMAIL_MAX];
    kp_status rc = kp_accounts_normalise_email(email, norm, err);
    if (rc == KP_OK)
        rc = s->ops->user_get_by_email(s, norm, out, err);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_ENOTFOUND, "no user with email %s", norm);
    if (rc == KP_OK)
        rc = s->ops->user_set_admin(s, out->id, is_admin, err);
    if (rc == KP_OK)
        out->is_admin = is_admin;
    return rc;
}

kp_status kp_accounts_set_admin_by_id(kp_store *s, const kp_config *cfg, const char *actor_id, const char *user_id,
                                      int is_admin, kp_user *out, kp_err *err)
{
    kp_status rc = s->ops->user_get(s, user_id, out, err);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_ENOTFOUND, "no user with id %s", user_id);
    if (rc != KP_OK)
        return rc;
    if (!is_admin && strcmp(actor_id, user_id) == 0)
        return kp_err_set(err, KP_ECONFLICT, "you cannot remove your own admin right: another admin must do it");
    if (!is_admin && out->email_verified && kp_config_is_admin_email(cfg, out->email))
        return kp_err_set(err, KP_ECONFLICT, "%s is an admin through KOUMPA_ADMIN_EMAILS: remove the address there",
                          out->email);
    rc = s->ops->user_set_admin(s, user_id, is_admin, err);
    if (rc == KP_ENOTFOUND) /* deleted meanwhile */
        return kp_err_set(err, KP_ENOTFOUND, "no user with id %s", user_id);
    if (rc == KP_OK)
        out->is_admin = is_admin;
    return rc;
}

kp_status kp_accounts_set_plan(kp_store *s, const char *user_id, const char *plan_id, kp_err *err)
{
    kp_plan p;
    kp_status rc = s->ops->plan_get(s, plan_id, &p, err);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_ENOTFOUND, "no plan with id %s", plan_id);
    if (rc != KP_OK)
        return rc;
    rc = s->ops->user_set_plan(s, user_id, plan_id, err);
    if (rc == KP_ENOTFOUND)
        return kp_err_set(err, KP_ENOTFOUND, "no user with id %s", user_id);
    return rc;
}
