/*
 * test_accounts.c - sign-up, login and users from tokens (domain/accounts.c)
 * on a real SQLite database: email normalisation and validation, password
 * bounds, duplicate accounts, login failures that all look the same,
 * identity-provider users created once, and who counts as an admin.
 *
 * Argon2id runs with the cheapest settings (1 pass, 8 MiB) to keep this fast.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/id.h"
#include "core/log.h"
#include "domain/accounts.h"
#include "domain/credits.h"
#include "domain/verify.h"
#include "store/sqlite/sqlite_store.h"
#include "testutil.h"

typedef struct fixture {
    char dir[256];
    char db[512];
    kp_store *s;
    kp_config cfg;
    char *admins[3];
} fixture;

#define ISSUER "https://idp.example.com"

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    kp_test_tmpdir(f->dir, sizeof f->dir);
    f->s = kp_test_db(f->dir, f->db, sizeof f->db);
    f->cfg.pwhash_opslimit = 1;
    f->cfg.pwhash_memlimit_kib = 8192;
    f->admins[0] = "boss@example.com";
    f->admins[1] = "ops@example.com";
    f->admins[2] = NULL;
    f->cfg.admin_emails = f->admins;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    f->s->ops->close(f->s);
    kp_test_rmrf(f->dir);
    free(f);
    return 0;
}

static void signup_ok(fixture *f, const char *email, const char *password, kp_user *out)
{
    kp_err err = {0};
    if (kp_accounts_signup(f->s, &f->cfg, email, password, out, &err) != KP_OK)
        fail_msg("signup %s: %s", email, err.msg);
}

/* ---- email ---- */

static void expect_email(const char *in, const char *want)
{
    char out[KP_EMAIL_MAX];
    kp_err err = {0};
    if (kp_accounts_normalise_email(in, out, &err) != KP_OK)
        fail_msg("\"%s\" refused: %s", in, err.msg);
    assert_string_equal(out, want);
}

static void expect_bad_email(const char *in)
{
    char out[KP_EMAIL_MAX];
    kp_err err = {0};
    if (kp_accounts_normalise_email(in, out, &err) == KP_OK)
        fail_msg("\"%s\" accepted as \"%s\"", in ? in : "(null)", out);
    assert_int_equal(err.status, KP_EINVAL);
    assert_non_null(strstr(err.msg, "email"));
}

static void test_email_normalised(void **state)
{
    (void)state;
    expect_email("alice@example.com", "alice@example.com");
    expect_email("  Alice@Example.COM\t\n", "alice@example.com");
    expect_email("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk");
    expect_email("a@b.c", "a@b.c");
    expect_email("O'Brien@Example.ie", "o'brien@example.ie");
}

static void test_email_invalid(void **state)
{
    (void)state;
    expect_bad_email(NULL);
    expect_bad_email("");
    expect_bad_email("   ");
    expect_bad_email("alice");
    expect_bad_email("alice.example.com");
    expect_bad_email("@example.com");
    expect_bad_email("alice@");
    expect_bad_email("alice@@example.com");
    expect_bad_email("a@b@example.com");
    expect_bad_email("alice@localhost"); /* no dot in the domain */
    expect_bad_email("alice@.example.com");
    expect_bad_email("alice@example.com.");
    expect_bad_email("al ice@example.com"); /* inner space */
    expect_bad_email("alice@exa\tmple.com");
    expect_bad_email("\"alice\"@example.com");
    expect_bad_email("Alice <alice@example.com>");
    expect_bad_email("a,b@example.com");
    expect_bad_email("a;b@example.com");
    expect_bad_email("a\\b@example.com");
    expect_bad_email("a(b)@example.com");
    expect_bad_email("a\x7f@example.com");
}

static void test_email_length(void **state)
{
    (void)state;
    char email[400], out[KP_EMAIL_MAX];
    kp_err err = {0};
    /* 254 characters: the most an address can have */
    memset(email, 'a', 242);
    memcpy(email + 242, "@example.com", 13);
    assert_int_equal(strlen(email), 254);
    assert_int_equal(kp_accounts_normalise_email(email, out, &err), KP_OK);
    assert_int_equal(strlen(out), 254);
    /* 255: too long */
    memset(email, 'a', 243);
    memcpy(email + 243, "@example.com", 13);
    assert_int_equal(kp_accounts_normalise_email(email, out, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "254"));
    /* surrounding spaces do not count against the limit */
    memset(email, ' ', 100);
    memset(email + 100, 'a', 242);
    memcpy(email + 342, "@example.com  ", 15);
    assert_int_equal(kp_accounts_normalise_email(email, out, &err), KP_OK);
    assert_int_equal(strlen(out), 254);
}

/* ---- sign-up ---- */

static void test_signup_creates_user_with_welcome_credits(void **state)
{
    fixture *f = *state;
    kp_user u, got;
    kp_err err = {0};
    signup_ok(f, "  New.User@Example.com ", "correct horse", &u);
    assert_memory_equal(u.id, "usr_", 4);
    assert_string_equal(u.email, "new.user@example.com");
    assert_string_equal(u.plan_id, "free");
    assert_string_equal(u.external_sub, "");
    assert_int_equal(u.is_admin, 0);
    assert_true(u.created_at > 0);
    /* stored, with an Argon2id hash (never the password) */
    assert_int_equal(f->s->ops->user_get_by_email(f->s, "new.user@example.com", &got, &err), KP_OK);
    assert_string_equal(got.id, u.id);
    assert_memory_equal(got.password_hash, "$argon2id$", 10);
    assert_null(strstr(got.password_hash, "correct horse"));
    /* like login, sign-up never hands the password hash back */
    assert_string_equal(u.password_hash, "");
    /* today's daily bonus of the free plan (5) is there at once */
    kp_balance b;
    assert_int_equal(kp_credits_balance(f->s, u.id, &b, &err), KP_OK);
    assert_int_equal(b.daily, 5);
    assert_int_equal(b.monthly, 0);
}

static void test_signup_password_bounds(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_err err = {0};
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, "p1@example.com", "1234567", &u, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "password"));
    assert_non_null(strstr(err.msg, "8"));
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, "p1@example.com", "", &u, &err), KP_EINVAL);
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, "p1@example.com", NULL, &u, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "password"));

    char *big = malloc(KP_PASSWORD_MAX + 2);
    memset(big, 'p', KP_PASSWORD_MAX + 1);
    big[KP_PASSWORD_MAX + 1] = '\0';
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, "p1@example.com", big, &u, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "1024"));
    /* nothing was created by the refusals */
    kp_user none;
    assert_int_equal(f->s->ops->user_get_by_email(f->s, "p1@example.com", &none, &err), KP_ENOTFOUND);
    /* the bounds themselves are accepted */
    big[KP_PASSWORD_MAX] = '\0';
    signup_ok(f, "p1@example.com", big, &u);
    signup_ok(f, "p2@example.com", "12345678", &u);
    free(big);
}

static void test_signup_invalid_email(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_err err = {0};
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, "not-an-email", "long enough pw", &u, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "email"));
}

static void test_signup_duplicate_email_any_case(void **state)
{
    fixture *f = *state;
    kp_user u, again;
    kp_err err = {0};
    signup_ok(f, "dup@example.com", "password-one", &u);
    assert_int_equal(kp_accounts_signup(f->s, &f->cfg, " DUP@Example.COM", "password-two", &again, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "already exists"));
    /* the first account's password still works, the second's does not */
    kp_user who;
    assert_int_equal(kp_accounts_login(f->s, &f->cfg, "dup@example.com", "password-one", &who, &err), KP_OK);
    assert_string_equal(who.id, u.id);
    assert_int_equal(kp_accounts_login(f->s, &f->cfg, "dup@example.com", "password-two", &who, &err), KP_EAUTH);
}

/* ---- login ---- */

static void test_login_success_any_case(void **state)
{
    fixture *f = *state;
    kp_user u, who;
    kp_err err = {0};
    signup_ok(f, "login@example.com", "s3cret-pass", &u);
    assert_int_equal(kp_accounts_login(f->s, &f->cfg, " LOGIN@example.COM ", "s3cret-pass", &who, &err), KP_OK);
    assert_string_equal(who.id, u.id);
    assert_string_equal(who.email, "login@example.com");
    assert_string_equal(who.password_hash, ""); /* never handed out */
    /* out may be NULL */
    assert_int_equal(kp_accounts_login(f->s, &f->cfg, "login@example.com", "s3cret-pass", NULL, &err), KP_OK);
}

static void test_login_failures_look_the_same(void **state)
{
    fixture *f = *state;
    kp_user u, who;
    signup_ok(f, "victim@example.com", "right-password", &u);
    /* an identity-provider user has an email but no password */
    kp_err err = {0};
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-x", "ext@example.com", &who, &err), KP_OK);

    struct {
        const char *email;
        const char *password;
    } cases[] = {
        {"victim@example.com", "wrong-password"},
        {"victim@example.com", "Right-password"},
        {"victim@example.com", ""},
        {"victim@example.com", NULL},
        {"nobody@example.com", "right-password"},
        {"not-an-email", "right-password"},
        {NULL, "right-password"},
        {"ext@example.com", ""},
        {"ext@example.com", "anything-at-all"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kp_err e = {0};
        kp_status rc = kp_accounts_login(f->s, &f->cfg, cases[i].email, cases[i].password, &who, &e);
        if (rc != KP_EAUTH)
            fail_msg("case %zu (%s): got %s", i, cases[i].email ? cases[i].email : "(null)", kp_status_name(rc));
        assert_int_equal(e.status, KP_EAUTH);
        assert_string_equal(e.msg, "invalid email or password");
    }
}

/* ---- users from tokens ---- */

static void test_local_user(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_account got;
    kp_err err = {0};
    signup_ok(f, "local@example.com", "password-123", &u);
    assert_int_equal(kp_accounts_account(f->s, u.id, &got, &err), KP_OK);
    assert_string_equal(got.user.email, "local@example.com");
    assert_string_equal(got.user.password_hash, ""); /* never read on this path */
    assert_string_equal(got.plan.id, "free");
    assert_int_equal(got.balance.daily, 5);
    /* a token whose user is gone is an authentication failure, not a 404 */
    assert_int_equal(kp_accounts_account(f->s, "usr_000000000000000000000000", &got, &err), KP_EAUTH);
    assert_int_equal(err.status, KP_EAUTH);
}

static void test_external_user_created_once(void **state)
{
    fixture *f = *state;
    kp_user a, b, c;
    kp_err err = {0};
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-123", " Ext.User@Example.com", &a, &err), KP_OK);
    assert_memory_equal(a.id, "usr_", 4);
    assert_string_equal(a.email, "ext.user@example.com");
    assert_string_equal(a.external_sub, ISSUER "|sub-123");
    assert_string_equal(a.plan_id, "free");
    assert_string_equal(a.password_hash, "");
    /* second sight: the same user, even if the email changed at the provider */
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-123", "other@example.com", &b, &err), KP_OK);
    assert_string_equal(b.id, a.id);
    /* one welcome grant only */
    kp_balance bal;
    assert_int_equal(kp_credits_balance(f->s, a.id, &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 5);
    kp_ledger_entry *entries = NULL;
    size_t n = 0;
    assert_int_equal(f->s->ops->ledger_list(f->s, a.id, 0, 10, &entries, &n, &err), KP_OK);
    assert_int_equal(n, 1);
    free(entries);
    /* the same sub from another issuer is someone else */
    assert_int_equal(kp_accounts_external_user(f->s, "https://other-idp.example", "sub-123", NULL, &c, &err), KP_OK);
    assert_string_not_equal(c.id, a.id);
    assert_string_equal(c.email, "");
}

static void test_external_user_email_edge_cases(void **state)
{
    fixture *f = *state;
    kp_user local, ext, bad, again;
    kp_err err = {0};
    signup_ok(f, "taken@example.com", "password-123", &local);
    /* the email belongs to a local account: the identity is kept, without the email */
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-taken", "Taken@example.com", &ext, &err), KP_OK);
    assert_string_not_equal(ext.id, local.id);
    assert_string_equal(ext.email, "");
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-taken", "taken@example.com", &again, &err), KP_OK);
    assert_string_equal(again.id, ext.id);
    /* an invalid email is dropped rather than refusing the user */
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-bad", "not an email", &bad, &err), KP_OK);
    assert_string_equal(bad.email, "");
    /* two users without email can coexist */
    assert_string_not_equal(bad.id, ext.id);
}

static void test_external_user_bad_subject(void **state)
{
    fixture *f = *state;
    kp_user u;
    kp_err err = {0};
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "", "a@example.com", &u, &err), KP_EAUTH);
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, NULL, "a@example.com", &u, &err), KP_EAUTH);
    char sub[300];
    memset(sub, 's', sizeof sub - 1);
    sub[sizeof sub - 1] = '\0';
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, sub, "a@example.com", &u, &err), KP_EAUTH);
    assert_non_null(strstr(err.msg, "too long"));
}

/* ---- admins ---- */

/* Issue 9, item 2: whoever signed up first with a listed address (any case,
 * with spaces) became admin. The list trusts verified addresses only. */
static void test_admin_from_config_list(void **state)
{
    fixture *f = *state;
    kp_user boss, worker, ext, unverified_ext;
    kp_err err = {0};
    kp_verify_outcome outcome;
    char token[KP_VERIFY_TOKEN_MAX];
    signup_ok(f, "  Boss@Example.com ", "password-123", &boss);
    signup_ok(f, "worker@example.com", "password-123", &worker);
    assert_false(boss.email_verified);
    assert_false(kp_accounts_is_admin(&f->cfg, &boss)); /* listed, but nobody proved the address */
    /* the link makes it verified, and so admin (compared normalised) */
    assert_int_equal(kp_verify_issue(f->s, boss.id, 3600, token, &err), KP_OK);
    assert_int_equal(kp_verify_consume(f->s, token, (int64_t)time(NULL), &outcome, &boss, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_DONE);
    assert_true(boss.email_verified);
    assert_true(kp_accounts_is_admin(&f->cfg, &boss));
    assert_false(kp_accounts_is_admin(&f->cfg, &worker));
    /* the flag also makes an admin; no list at all is fine */
    kp_config none;
    memset(&none, 0, sizeof none);
    assert_false(kp_accounts_is_admin(&none, &boss));
    worker.is_admin = 1;
    assert_true(kp_accounts_is_admin(&none, &worker));
    /* an identity provider's address counts when the provider verified it
     * (auth passes an email only with email_verified) */
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-ops", "OPS@example.com", &ext, &err), KP_OK);
    assert_true(ext.email_verified);
    assert_true(kp_accounts_is_admin(&f->cfg, &ext));
    assert_int_equal(kp_accounts_external_user(f->s, ISSUER, "sub-anon", NULL, &unverified_ext, &err), KP_OK);
    assert_false(unverified_ext.email_verified);
    assert_false(kp_accounts_is_admin(&f->cfg, &unverified_ext));
}

/* Verification tokens: single use, expiring, only the latest works, only a
 * hash is stored; with SMTP on, the day's bonus waits for the address. */
static void test_verification_tokens(void **state)
{
    fixture *f = *state;
    kp_user u, got;
    kp_err err = {0};
    kp_verify_outcome outcome;
    kp_balance bal;
    char first[KP_VERIFY_TOKEN_MAX], second[KP_VERIFY_TOKEN_MAX], sql[256];
    int64_t now = (int64_t)time(NULL);
    f->cfg.smtp_url = "smtp://127.0.0.1:1";
    signup_ok(f, "new@example.com", "password-123", &u);
    f->cfg.smtp_url = NULL;
    assert_true(u.verification_required);
    assert_int_equal(kp_credits_balance(f->s, u.id, &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 0); /* the bonus waits */
    size_t granted = 99;
    char today[11];
    kp_date_utc_today(today);
    assert_int_equal(kp_credits_daily_bonus(f->s, today, 100, &granted, &err), KP_OK);
    assert_int_equal(granted, 0); /* the daily run skips unverified accounts that need it */

    assert_int_equal(kp_verify_issue(f->s, u.id, 3600, first, &err), KP_OK);
    assert_int_equal(strlen(first), 43);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM email_verifications WHERE token_hash = '%s'", first);
    assert_int_equal(kp_test_sql_int(f->db, sql), 0); /* the token itself is never stored */
    assert_int_equal(kp_verify_issue(f->s, u.id, 3600, second, &err), KP_OK);
    assert_int_equal(kp_verify_consume(f->s, first, now, &outcome, &got, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_UNKNOWN); /* replaced by the newer mail */
    assert_int_equal(kp_verify_consume(f->s, "not-a-token", now, &outcome, &got, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_UNKNOWN);
    assert_int_equal(kp_verify_consume(f->s, second, now + 3600 + 60, &outcome, &got, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_EXPIRED);
    assert_int_equal(kp_verify_consume(f->s, second, now, &outcome, &got, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_DONE);
    assert_true(got.email_verified);
    assert_int_equal(kp_verify_consume(f->s, second, now, &outcome, &got, &err), KP_OK);
    assert_int_equal(outcome, KP_VERIFY_USED); /* single use */
    assert_int_equal(kp_credits_balance(f->s, u.id, &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 5); /* the day's bonus, once */
    assert_int_equal(kp_credits_daily_bonus(f->s, today, 100, &granted, &err), KP_OK);
    assert_int_equal(kp_credits_balance(f->s, u.id, &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 5);
    /* without SMTP, sign-up works as before: the bonus at once, the address unverified */
    signup_ok(f, "plain@example.com", "password-123", &u);
    assert_false(u.verification_required);
    assert_false(u.email_verified);
    assert_int_equal(kp_credits_balance(f->s, u.id, &bal, &err), KP_OK);
    assert_int_equal(bal.daily, 5);
}

static void test_set_admin_by_email(void **state)
{
    fixture *f = *state;
    kp_user u, out, got;
    kp_err err = {0};
    signup_ok(f, "promote@example.com", "password-123", &u);
    assert_int_equal(kp_accounts_set_admin(f->s, " Promote@Example.com", 1, &out, &err), KP_OK);
    assert_int_equal(out.is_admin, 1);
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_int_equal(got.is_admin, 1);
    assert_true(kp_accounts_is_admin(&f->cfg, &got));
    assert_int_equal(kp_accounts_set_admin(f->s, "promote@example.com", 0, &out, &err), KP_OK);
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_int_equal(got.is_admin, 0);
    assert_int_equal(kp_accounts_set_admin(f->s, "ghost@example.com", 1, &out, &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "ghost@example.com"));
    assert_int_equal(kp_accounts_set_admin(f->s, "bad", 1, &out, &err), KP_EINVAL);
}

/* PUT /v1/admin/users/{id}/admin: by id, never the actor's own right away,
 * never a listed (verified) address's flag away. */
static void test_set_admin_by_id(void **state)
{
    fixture *f = *state;
    kp_user actor, u, boss, out, got;
    kp_err err = {0};
    kp_verify_outcome outcome;
    char token[KP_VERIFY_TOKEN_MAX];
    signup_ok(f, "actor@example.com", "password-123", &actor);
    signup_ok(f, "member@example.com", "password-123", &u);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, u.id, 1, &out, &err), KP_OK);
    assert_int_equal(out.is_admin, 1);
    assert_string_equal(out.email, "member@example.com");
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_int_equal(got.is_admin, 1);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, u.id, 0, &out, &err), KP_OK);
    assert_int_equal(out.is_admin, 0);
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_int_equal(got.is_admin, 0);
    /* nobody locks themselves out; granting oneself again is harmless */
    assert_int_equal(kp_accounts_set_admin(f->s, "actor@example.com", 1, &out, &err), KP_OK);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, actor.id, 0, &out, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "your own admin right"));
    assert_int_equal(f->s->ops->user_get(f->s, actor.id, &got, &err), KP_OK);
    assert_int_equal(got.is_admin, 1);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, actor.id, 1, &out, &err), KP_OK);
    /* a verified listed address is an admin whatever the flag: removing it would change nothing */
    signup_ok(f, "boss@example.com", "password-123", &boss);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, boss.id, 0, &out, &err), KP_OK);
    assert_int_equal(kp_verify_issue(f->s, boss.id, 3600, token, &err), KP_OK);
    assert_int_equal(kp_verify_consume(f->s, token, (int64_t)time(NULL), &outcome, &boss, &err), KP_OK);
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, boss.id, 0, &out, &err), KP_ECONFLICT);
    assert_non_null(strstr(err.msg, "KOUMPA_ADMIN_EMAILS"));
    assert_int_equal(kp_accounts_set_admin_by_id(f->s, &f->cfg, actor.id, "usr_nobody", 1, &out, &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "usr_nobody"));
}

static void test_set_plan(void **state)
{
    fixture *f = *state;
    kp_user u, got;
    kp_err err = {0};
    signup_ok(f, "plan@example.com", "password-123", &u);
    assert_int_equal(kp_accounts_set_plan(f->s, u.id, "pro", &err), KP_OK);
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_string_equal(got.plan_id, "pro");
    assert_int_equal(kp_accounts_set_plan(f->s, u.id, "platinum", &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "plan"));
    assert_int_equal(kp_accounts_set_plan(f->s, "usr_nobody", "pro", &err), KP_ENOTFOUND);
    assert_non_null(strstr(err.msg, "user"));
    assert_int_equal(f->s->ops->user_get(f->s, u.id, &got, &err), KP_OK);
    assert_string_equal(got.plan_id, "pro");
}

/* Sign-up is one transaction: when granting the bonus fails (a store failure
 * injected with a trigger), no account is left behind without it. */
static void test_signup_is_all_or_nothing(void **state)
{
    fixture *f = *state;
    kp_err err = {0};
    kp_user u, got;
    kp_balance b;
    kp_test_sql_exec(f->db, "CREATE TRIGGER fail_ledger BEFORE INSERT ON ledger "
                            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");
    assert_int_not_equal(kp_accounts_signup(f->s, &f->cfg, "half@example.com", "long enough password", &u, &err),
                         KP_OK);
    assert_int_equal(f->s->ops->user_get_by_email(f->s, "half@example.com", &got, &err), KP_ENOTFOUND);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM users"), 0);
    assert_int_equal(kp_test_sql_int(f->db, "SELECT COUNT(*) FROM balances"), 0);

    /* once the store works again, the same address signs up, with its bonus */
    kp_test_sql_exec(f->db, "DROP TRIGGER fail_ledger;");
    signup_ok(f, "half@example.com", "long enough password", &u);
    assert_int_equal(f->s->ops->balance_get(f->s, u.id, &b, &err), KP_OK);
    assert_int_equal(b.daily, 5);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    kp_log_set_level(KP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_normalised),
        cmocka_unit_test(test_email_invalid),
        cmocka_unit_test(test_email_length),
        T(test_signup_creates_user_with_welcome_credits),
        T(test_signup_is_all_or_nothing),
        T(test_signup_password_bounds),
        T(test_signup_invalid_email),
        T(test_signup_duplicate_email_any_case),
        T(test_login_success_any_case),
        T(test_login_failures_look_the_same),
        T(test_local_user),
        T(test_external_user_created_once),
        T(test_external_user_email_edge_cases),
        T(test_external_user_bad_subject),
        T(test_admin_from_config_list),
        T(test_verification_tokens),
        T(test_set_admin_by_email),
        T(test_set_admin_by_id),
        T(test_set_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
