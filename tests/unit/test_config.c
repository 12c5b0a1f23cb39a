/*
 * test_config.c - configuration loading (core/config.c): defaults, the
 * environment, flags overriding it in both `--flag=value` and `--flag value`
 * forms, validation messages that name the variable, the admin email list,
 * the generated JWT secret file, and a loggable summary that never holds a
 * secret.
 *
 * Every test starts from an environment with none of the variables Koumpa
 * reads, so the machine's own settings cannot leak in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/config.h"
#include "testutil.h"

static const char *all_vars[] = {
    "KOUMPA_ADDR",
    "KOUMPA_APPS_ADDR",
    "KOUMPA_APPS_URL",
    "KOUMPA_PUBLIC_URL",
    "KOUMPA_THREADS",
    "KOUMPA_DATA_DIR",
    "KOUMPA_JWT_SECRET",
    "KOUMPA_JWT_SECRET_FILE",
    "KOUMPA_JWT_ISSUER",
    "KOUMPA_JWT_AUDIENCE",
    "KOUMPA_JWKS_URL",
    "KOUMPA_TOKEN_TTL",
    "KOUMPA_PWHASH_OPSLIMIT",
    "KOUMPA_PWHASH_MEMLIMIT_KIB",
    "KOUMPA_LOGIN_RATE",
    "KOUMPA_LOG_LEVEL",
    "KOUMPA_LLM_PROVIDER",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "KOUMPA_ANTHROPIC_VERSION",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "KOUMPA_LLM_HTTP_VERSION",
    "KOUMPA_MODEL",
    "KOUMPA_MAX_TOKENS",
    "KOUMPA_GENERATION_COST",
    "KOUMPA_CONTEXT_WINDOW",
    "KOUMPA_REJECTED_REFUNDS_PER_DAY",
    "KOUMPA_CANCEL_REFUND_CHARS",
    "KOUMPA_DAILY_BONUS_SCHEDULER",
    "KOUMPA_ADMIN_EMAILS",
    "KOUMPA_SECRETS_TTL",
    "KOUMPA_STRIPE_TOLERANCE_S",
    "KOUMPA_CA_BUNDLE",
    "KOUMPA_OAUTH_AUTHORIZE_URL",
    "KOUMPA_OAUTH_TOKEN_URL",
    "KOUMPA_OAUTH_CLIENT_ID",
    "KOUMPA_OAUTH_SCOPES",
    "KOUMPA_OAUTH_LOGOUT_URL",
    "KOUMPA_WEB_DIR",
    "KOUMPA_VERIFY_URL",
    NULL,
};

static int clear_env(void **state)
{
    (void)state;
    for (const char **v = all_vars; *v; v++)
        unsetenv(*v);
    return 0;
}

/* Loads with argv (NULL-terminated list); asserts success. */
static void load_ok(kp_config *cfg, char **argv)
{
    kp_err err = {0};
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    kp_status rc = kp_config_load(cfg, argc, argv, &err);
    if (rc != KP_OK)
        fail_msg("kp_config_load: %s", err.msg);
}

/* Loads and expects KP_EINVAL with a message containing want; cfg must come back freed. */
static void load_fails(char **argv, const char *want)
{
    kp_config cfg;
    kp_err err = {0};
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    kp_status rc = kp_config_load(&cfg, argc, argv, &err);
    if (rc == KP_OK) {
        kp_config_free(&cfg);
        fail_msg("kp_config_load succeeded; expected an error containing \"%s\"", want);
    }
    assert_int_equal(rc, KP_EINVAL);
    assert_int_equal(err.status, KP_EINVAL);
    if (!strstr(err.msg, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err.msg, want);
    /* left freed: nothing to release, nothing dangling */
    assert_null(cfg.addr);
    assert_null(cfg.data_dir);
    assert_null(cfg.log_level);
    assert_null(cfg.admin_emails);
}

static size_t count_emails(const kp_config *cfg)
{
    size_t n = 0;
    while (cfg->admin_emails && cfg->admin_emails[n])
        n++;
    return n;
}

/* ---- defaults and environment ---- */

static void test_defaults(void **state)
{
    (void)state;
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.addr, "127.0.0.1:8080");
    assert_string_equal(cfg.apps_addr, "127.0.0.1:8081");
    assert_string_equal(cfg.public_url, "http://127.0.0.1:8080");
    assert_string_equal(cfg.apps_url, "http://127.0.0.1:8081");
    assert_string_equal(cfg.verify_url, "http://127.0.0.1:8080/#/verify"); /* the dashboard's screen */
    assert_string_equal(cfg.data_dir, "./data");
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.anthropic_base_url, "https://api.anthropic.com");
    assert_string_equal(cfg.llm_http_version, "auto");
    assert_string_equal(cfg.anthropic_version, "2026-10-21");
    assert_null(cfg.jwt_issuer);
    assert_null(cfg.jwt_audience);
    assert_null(cfg.jwks_url);
    assert_null(cfg.openai_api_key);
    assert_null(cfg.llm_provider);
    assert_null(cfg.model);
    assert_true(cfg.threads >= 1 && cfg.threads <= 64); /* 0 means one per core */
    assert_int_equal(cfg.token_ttl_s, 86400);
    assert_int_equal(cfg.pwhash_opslimit, 2);
    assert_int_equal(cfg.pwhash_memlimit_kib, 65536);
    assert_int_equal(cfg.login_rate_per_min, 10);
    assert_int_equal(cfg.max_tokens, 16000);
    assert_int_equal(cfg.generation_cost, 1);
    assert_int_equal(cfg.context_window, 200000);
    assert_int_equal(cfg.rejected_refunds_per_day, 3);
    assert_int_equal(cfg.cancel_refund_chars, 1000);
    assert_int_equal(cfg.daily_bonus_scheduler, 1);
    assert_int_equal(count_emails(&cfg), 0);
    assert_false(kp_config_is_admin_email(&cfg, "admin@example.com"));
    kp_config_free(&cfg);
    /* freeing twice is safe: free leaves the struct empty */
    kp_config_free(&cfg);
    assert_null(cfg.addr);
}

static void test_environment_is_read(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_ADDR", "0.0.0.0:9000", 1);
    setenv("KOUMPA_APPS_ADDR", "0.0.0.0:9001", 1);
    setenv("KOUMPA_THREADS", "4", 1);
    setenv("KOUMPA_DATA_DIR", "/var/lib/koumpa", 1);
    setenv("KOUMPA_TOKEN_TTL", "3600", 1);
    setenv("KOUMPA_LOG_LEVEL", "debug", 1);
    setenv("KOUMPA_PWHASH_OPSLIMIT", "1", 1);
    setenv("KOUMPA_PWHASH_MEMLIMIT_KIB", "8192", 1);
    setenv("KOUMPA_DAILY_BONUS_SCHEDULER", "false", 1);
    setenv("KOUMPA_LLM_PROVIDER", "openai", 1);
    setenv("OPENAI_BASE_URL", "http://localhost:11434/v1", 1);
    setenv("KOUMPA_MODEL", "llama3", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.addr, "0.0.0.0:9000");
    assert_string_equal(cfg.public_url, "http://0.0.0.0:9000"); /* derived from the address */
    assert_string_equal(cfg.apps_url, "http://0.0.0.0:9001");
    assert_int_equal(cfg.threads, 4);
    assert_string_equal(cfg.data_dir, "/var/lib/koumpa");
    assert_int_equal(cfg.token_ttl_s, 3600);
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.pwhash_opslimit, 1);
    assert_int_equal(cfg.pwhash_memlimit_kib, 8192);
    assert_int_equal(cfg.daily_bonus_scheduler, 0);
    assert_string_equal(cfg.llm_provider, "openai");
    assert_string_equal(cfg.openai_base_url, "http://localhost:11434/v1");
    assert_string_equal(cfg.model, "llama3");
    kp_config_free(&cfg);
}

static void test_explicit_urls_are_kept(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_PUBLIC_URL", "https://api.koumpa.example", 1);
    setenv("KOUMPA_APPS_URL", "https://apps.koumpa.example", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.public_url, "https://api.koumpa.example");
    assert_string_equal(cfg.apps_url, "https://apps.koumpa.example");
    assert_string_equal(cfg.verify_url, "https://api.koumpa.example/#/verify");
    kp_config_free(&cfg);
    setenv("KOUMPA_PUBLIC_URL", "https://app.koumpa.example/", 1); /* a trailing slash is not doubled */
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.verify_url, "https://app.koumpa.example/#/verify");
    kp_config_free(&cfg);
    setenv("KOUMPA_VERIFY_URL", "https://www.koumpa.example/confirm?lang=en", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.verify_url, "https://www.koumpa.example/confirm?lang=en");
    kp_config_free(&cfg);
}

static void test_empty_variable_means_default(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_ADDR", "", 1);
    setenv("KOUMPA_THREADS", "", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.addr, "127.0.0.1:8080");
    assert_true(cfg.threads >= 1);
    kp_config_free(&cfg);
}

static void test_booleans(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long want;
    } cases[] = {{"0", 0}, {"1", 1}, {"true", 1}, {"yes", 1}, {"no", 0}, {"false", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kp_config cfg;
        setenv("KOUMPA_DAILY_BONUS_SCHEDULER", cases[i].text, 1);
        load_ok(&cfg, NULL);
        assert_int_equal(cfg.daily_bonus_scheduler, cases[i].want);
        kp_config_free(&cfg);
    }
    setenv("KOUMPA_DAILY_BONUS_SCHEDULER", "maybe", 1);
    load_fails(NULL, "KOUMPA_DAILY_BONUS_SCHEDULER");
    setenv("KOUMPA_DAILY_BONUS_SCHEDULER", "2", 1);
    load_fails(NULL, "KOUMPA_DAILY_BONUS_SCHEDULER");
}

static void test_jwt_issuer_derives_jwks_url(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_JWT_ISSUER", "https://cognito-idp.eu-west-1.amazonaws.com/pool/", 1);
    setenv("KOUMPA_JWT_AUDIENCE", "client123", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.jwt_audience, "client123");
    assert_string_equal(cfg.jwks_url, "https://cognito-idp.eu-west-1.amazonaws.com/pool/.well-known/jwks.json");
    kp_config_free(&cfg);

    setenv("KOUMPA_JWKS_URL", "file:///etc/koumpa/jwks.json", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.jwks_url, "file:///etc/koumpa/jwks.json");
    kp_config_free(&cfg);
}

/* ---- flags ---- */

static void test_flags_override_environment(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_ADDR", "0.0.0.0:9000", 1);
    setenv("KOUMPA_DATA_DIR", "/from/env", 1);
    setenv("KOUMPA_LOG_LEVEL", "error", 1);
    setenv("KOUMPA_THREADS", "2", 1);
    char *argv[] = {"--addr=127.0.0.1:7000", "--data-dir", "/from/flag", "--log-level=warn", "--threads", "8", NULL};
    load_ok(&cfg, argv);
    assert_string_equal(cfg.addr, "127.0.0.1:7000");
    assert_string_equal(cfg.public_url, "http://127.0.0.1:7000"); /* derived after the flags */
    assert_string_equal(cfg.data_dir, "/from/flag");
    assert_string_equal(cfg.log_level, "warn");
    assert_int_equal(cfg.threads, 8);
    kp_config_free(&cfg);
}

static void test_flag_value_may_contain_equals(void **state)
{
    (void)state;
    kp_config cfg;
    char *argv[] = {"--model=claude=x", "--apps-url", "https://apps.example/?a=b", NULL};
    load_ok(&cfg, argv);
    assert_string_equal(cfg.model, "claude=x");
    assert_string_equal(cfg.apps_url, "https://apps.example/?a=b");
    kp_config_free(&cfg);
}

static void test_unknown_flag(void **state)
{
    (void)state;
    char *a1[] = {"--bogus", NULL};
    load_fails(a1, "--bogus");
    /* a known flag's prefix with extra characters is not that flag */
    char *a2[] = {"--addrx=1.2.3.4:5", NULL};
    load_fails(a2, "--addrx");
    /* environment-only settings have no flag */
    char *a3[] = {"--jwt-secret=0123456789abcdef0123456789abcdef", NULL};
    load_fails(a3, "--jwt-secret");
    /* positional arguments are not accepted either */
    char *a4[] = {"serve", NULL};
    load_fails(a4, "serve");
}

static void test_flag_without_value(void **state)
{
    (void)state;
    char *argv[] = {"--data-dir", NULL};
    load_fails(argv, "--data-dir");
}

/* ---- validation ---- */

static void test_invalid_log_level(void **state)
{
    (void)state;
    setenv("KOUMPA_LOG_LEVEL", "loud", 1);
    load_fails(NULL, "KOUMPA_LOG_LEVEL=loud");
    unsetenv("KOUMPA_LOG_LEVEL");
    char *argv[] = {"--log-level", "verbose", NULL};
    load_fails(argv, "verbose");
}

static void test_invalid_addresses(void **state)
{
    (void)state;
    setenv("KOUMPA_ADDR", "localhost", 1);
    load_fails(NULL, "KOUMPA_ADDR=localhost");
    setenv("KOUMPA_ADDR", "localhost:", 1);
    load_fails(NULL, "KOUMPA_ADDR");
    setenv("KOUMPA_ADDR", ":8080", 1);
    load_fails(NULL, "KOUMPA_ADDR");
    setenv("KOUMPA_ADDR", "localhost:70000", 1);
    load_fails(NULL, "KOUMPA_ADDR");
    setenv("KOUMPA_ADDR", "localhost:80a", 1);
    load_fails(NULL, "KOUMPA_ADDR");
    unsetenv("KOUMPA_ADDR");
    setenv("KOUMPA_APPS_ADDR", "nowhere", 1);
    load_fails(NULL, "KOUMPA_APPS_ADDR");
    unsetenv("KOUMPA_APPS_ADDR");
    /* port 0 (any free port) is allowed */
    kp_config cfg;
    setenv("KOUMPA_ADDR", "127.0.0.1:0", 1);
    load_ok(&cfg, NULL);
    kp_config_free(&cfg);
}

static void test_invalid_numbers(void **state)
{
    (void)state;
    setenv("KOUMPA_THREADS", "abc", 1);
    load_fails(NULL, "KOUMPA_THREADS=abc");
    setenv("KOUMPA_THREADS", "4x", 1);
    load_fails(NULL, "KOUMPA_THREADS");
    setenv("KOUMPA_THREADS", "-1", 1);
    load_fails(NULL, "KOUMPA_THREADS");
    setenv("KOUMPA_THREADS", "257", 1);
    load_fails(NULL, "KOUMPA_THREADS");
    setenv("KOUMPA_THREADS", "99999999999999999999999", 1);
    load_fails(NULL, "KOUMPA_THREADS");
    unsetenv("KOUMPA_THREADS");
    setenv("KOUMPA_TOKEN_TTL", "59", 1);
    load_fails(NULL, "KOUMPA_TOKEN_TTL");
    unsetenv("KOUMPA_TOKEN_TTL");
    setenv("KOUMPA_PWHASH_OPSLIMIT", "0", 1);
    load_fails(NULL, "KOUMPA_PWHASH_OPSLIMIT");
    unsetenv("KOUMPA_PWHASH_OPSLIMIT");
    /* through a flag, the message names the flag */
    char *argv[] = {"--threads=lots", NULL};
    load_fails(argv, "--threads");
}

/* secrets (issue 10): the cache TTL, 3600 s by default, at least 1 s */
static void test_secrets_ttl(void **state)
{
    (void)state;
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.secrets_ttl_s, 3600);
    kp_config_free(&cfg);
    setenv("KOUMPA_SECRETS_TTL", "1", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.secrets_ttl_s, 1);
    kp_config_free(&cfg);
    setenv("KOUMPA_SECRETS_TTL", "0", 1);
    load_fails(NULL, "KOUMPA_SECRETS_TTL");
}

/* generation leases (issue 11): 30 s by default, 1 to 3600 s */
static void test_generation_lease(void **state)
{
    (void)state;
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.generation_lease_s, 30);
    kp_config_free(&cfg);
    setenv("KOUMPA_GENERATION_LEASE_S", "2", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.generation_lease_s, 2);
    kp_config_free(&cfg);
    setenv("KOUMPA_GENERATION_LEASE_S", "0", 1);
    load_fails(NULL, "KOUMPA_GENERATION_LEASE_S");
    setenv("KOUMPA_GENERATION_LEASE_S", "3601", 1);
    load_fails(NULL, "KOUMPA_GENERATION_LEASE_S");
    unsetenv("KOUMPA_GENERATION_LEASE_S");
}

static void test_issuer_needs_audience_and_url(void **state)
{
    (void)state;
    setenv("KOUMPA_JWT_ISSUER", "https://idp.example", 1);
    load_fails(NULL, "KOUMPA_JWT_AUDIENCE");
    setenv("KOUMPA_JWT_AUDIENCE", "koumpa-client", 1);
    setenv("KOUMPA_JWT_ISSUER", "idp.example", 1);
    load_fails(NULL, "KOUMPA_JWT_ISSUER");
}

static void test_invalid_provider_and_empty_data_dir(void **state)
{
    (void)state;
    setenv("KOUMPA_LLM_PROVIDER", "gemini", 1);
    load_fails(NULL, "KOUMPA_LLM_PROVIDER=gemini");
    unsetenv("KOUMPA_LLM_PROVIDER");
    char *argv[] = {"--data-dir=", NULL};
    load_fails(argv, "KOUMPA_DATA_DIR");
}

/* ---- admin emails ---- */

static void test_admin_emails_normalised(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_ADMIN_EMAILS", " Alice@Example.COM ,, bob@x.org ,\t,", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(count_emails(&cfg), 2);
    assert_string_equal(cfg.admin_emails[0], "alice@example.com");
    assert_string_equal(cfg.admin_emails[1], "bob@x.org");
    assert_true(kp_config_is_admin_email(&cfg, "alice@example.com"));
    assert_true(kp_config_is_admin_email(&cfg, "bob@x.org"));
    assert_false(kp_config_is_admin_email(&cfg, "carol@x.org"));
    assert_false(kp_config_is_admin_email(&cfg, ""));
    assert_false(kp_config_is_admin_email(&cfg, NULL));
    /* the caller passes a normalised email; a prefix is not a match */
    assert_false(kp_config_is_admin_email(&cfg, "alice@example.co"));
    kp_config_free(&cfg);
    assert_null(cfg.admin_emails);
}

static void test_admin_emails_flag_replaces_environment(void **state)
{
    (void)state;
    kp_config cfg;
    setenv("KOUMPA_ADMIN_EMAILS", "env@example.com", 1);
    char *argv[] = {"--admin-emails", "Flag@Example.com", NULL};
    load_ok(&cfg, argv);
    assert_int_equal(count_emails(&cfg), 1);
    assert_string_equal(cfg.admin_emails[0], "flag@example.com");
    assert_false(kp_config_is_admin_email(&cfg, "env@example.com"));
    kp_config_free(&cfg);
}

/* ---- the JWT secret file ---- */

/* The whole (short) file into out. */
static void read_secret(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t got = fread(out, 1, n - 1, f);
    fclose(f);
    out[got] = '\0';
}

static void test_ensure_secret_creates_then_reuses(void **state)
{
    (void)state;
    char dir[256], data[512], file[600];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(data, sizeof data, "%s/data", dir); /* does not exist yet */
    snprintf(file, sizeof file, "%s/jwt_secret", data);
    setenv("KOUMPA_DATA_DIR", data, 1);

    kp_config cfg;
    kp_err err = {0};
    load_ok(&cfg, NULL);
    char *path = kp_config_jwt_secret_file(&cfg);
    assert_string_equal(path, file);
    free(path);
    struct stat st;
    assert_int_not_equal(stat(data, &st), 0); /* kp_config_load does not touch the disk */
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    assert_int_equal(stat(data, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    /* 64 hex characters and a newline */
    char first[256];
    read_secret(file, first, sizeof first);
    assert_int_equal(strlen(first), 65);
    assert_int_equal(strspn(first, "0123456789abcdef"), 64);
    /* calling again, or on a second start, keeps the secret */
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    kp_config_free(&cfg);
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    kp_config_free(&cfg);
    char again[256];
    read_secret(file, again, sizeof again);
    assert_string_equal(again, first);
    kp_test_rmrf(dir);
}

static void test_ensure_secret_prefers_environment(void **state)
{
    (void)state;
    char dir[256], file[600];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/jwt_secret", dir);
    setenv("KOUMPA_DATA_DIR", dir, 1);
    setenv("KOUMPA_JWT_SECRET", "env-secret-env-secret-env-secret-1", 1);
    kp_config cfg;
    kp_err err = {0};
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    assert_int_not_equal(access(file, F_OK), 0); /* no file written */
    kp_config_free(&cfg);
    /* nor with the secret in a file of the operator's (read by the secrets service) */
    unsetenv("KOUMPA_JWT_SECRET");
    setenv("KOUMPA_JWT_SECRET_FILE", "/run/secrets/jwt", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    assert_int_not_equal(access(file, F_OK), 0);
    kp_config_free(&cfg);
    kp_test_rmrf(dir);
}

static void test_ensure_secret_refuses_short_file(void **state)
{
    (void)state;
    char dir[256], file[600];
    kp_test_tmpdir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/jwt_secret", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("short\n", f);
    fclose(f);
    setenv("KOUMPA_DATA_DIR", dir, 1);
    kp_config cfg;
    kp_err err = {0};
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_EINVAL);
    assert_non_null(strstr(err.msg, "jwt_secret"));
    assert_null(strstr(err.msg, "short\n"));
    kp_config_free(&cfg);
    kp_test_rmrf(dir);
}

static void test_ensure_secret_unwritable_dir(void **state)
{
    (void)state;
    char dir[256], data[600];
    kp_test_tmpdir(dir, sizeof dir);
    /* a data dir whose parent is a regular file cannot be created */
    snprintf(data, sizeof data, "%s/file", dir);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(data, sizeof data, "%s/file/data", dir);
    setenv("KOUMPA_DATA_DIR", data, 1);
    kp_config cfg;
    kp_err err = {0};
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_EIO);
    assert_non_null(strstr(err.msg, "KOUMPA_DATA_DIR"));
    kp_config_free(&cfg);
    kp_test_rmrf(dir);
}

/* ---- describe / help ---- */

static void test_describe_redacts_secrets(void **state)
{
    (void)state;
    const char *anthropic = "sk-ant-api03-SECRETSECRETSECRET"; /* secrets service: not in kp_config at all */
    const char *openai = "sk-openai-SECRETSECRETSECRET";
    const char *jwt = "jwt-secret-value-that-is-long-enough-xyz";
    setenv("ANTHROPIC_API_KEY", anthropic, 1);
    setenv("OPENAI_API_KEY", openai, 1);
    setenv("KOUMPA_JWT_SECRET", jwt, 1);
    setenv("KOUMPA_ADDR", "127.0.0.1:9999", 1);
    kp_config cfg;
    load_ok(&cfg, NULL);
    json_t *d = kp_config_describe(&cfg);
    assert_non_null(d);
    char *text = json_dumps(d, JSON_COMPACT);
    assert_non_null(text);
    assert_null(strstr(text, anthropic));
    assert_null(strstr(text, openai));
    assert_null(strstr(text, jwt));
    /* not even a recognisable part of them */
    assert_null(strstr(text, "SECRETSECRET"));
    assert_null(strstr(text, "long-enough"));
    /* ... while saying that they are set, and showing ordinary settings */
    assert_string_equal(json_string_value(json_object_get(d, "OPENAI_API_KEY")), "(set)");
    assert_string_equal(json_string_value(json_object_get(d, "KOUMPA_ADDR")), "127.0.0.1:9999");
    assert_string_equal(json_string_value(json_object_get(d, "KOUMPA_LOG_LEVEL")), "info");
    assert_true(json_is_integer(json_object_get(d, "KOUMPA_THREADS")));
    free(text);
    json_decref(d);
    kp_config_free(&cfg);
}

static void test_describe_generated_secret_is_redacted(void **state)
{
    (void)state;
    char dir[256];
    kp_test_tmpdir(dir, sizeof dir);
    setenv("KOUMPA_DATA_DIR", dir, 1);
    kp_config cfg;
    kp_err err = {0};
    load_ok(&cfg, NULL);
    assert_int_equal(kp_config_ensure_secret(&cfg, &err), KP_OK);
    char file[600], secret[256];
    snprintf(file, sizeof file, "%s/jwt_secret", dir);
    read_secret(file, secret, sizeof secret);
    secret[64] = '\0';
    json_t *d = kp_config_describe(&cfg);
    char *text = json_dumps(d, JSON_COMPACT);
    assert_null(strstr(text, secret));
    free(text);
    json_decref(d);
    kp_config_free(&cfg);
    kp_test_rmrf(dir);
}

static void test_flags_help_lists_flags_and_variables(void **state)
{
    (void)state;
    const char *help = kp_config_flags_help();
    assert_non_null(strstr(help, "--addr"));
    assert_non_null(strstr(help, "KOUMPA_ADDR"));
    assert_non_null(strstr(help, "--data-dir"));
    assert_non_null(strstr(help, "--admin-emails"));
    /* secrets have no flag (they would show in `ps`) */
    assert_null(strstr(help, "--jwt-secret"));
    assert_null(strstr(help, "KOUMPA_JWT_SECRET"));
    assert_ptr_equal(kp_config_flags_help(), help);
}

/* Stripe webhooks: the signature's tolerance, 300 s unless set, at least 1 s. */
static void test_stripe_tolerance(void **state)
{
    (void)state;
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.stripe_tolerance_s, 300);
    kp_config_free(&cfg);
    setenv("KOUMPA_STRIPE_TOLERANCE_S", "60", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.stripe_tolerance_s, 60);
    kp_config_free(&cfg);
    setenv("KOUMPA_STRIPE_TOLERANCE_S", "0", 1);
    load_fails(NULL, "KOUMPA_STRIPE_TOLERANCE_S");
    unsetenv("KOUMPA_STRIPE_TOLERANCE_S");
}

/* secrets: AWS Secrets Manager (issue 11) */
static void test_secrets_source(void **state)
{
    (void)state;
    const char *ids[] = {"KOUMPA_SECRET_ID_ANTHROPIC", "KOUMPA_SECRET_ID_STRIPE", "KOUMPA_SECRET_ID_JWT"};
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.secrets_source, "env");
    assert_null(cfg.secret_id_stripe);
    kp_config_free(&cfg);
    setenv("KOUMPA_SECRETS", "vault", 1);
    load_fails(NULL, "invalid KOUMPA_SECRETS=vault: expected env or aws");
    unsetenv("KOUMPA_SECRETS");
    for (size_t i = 0; i < 3; i++) {
        setenv(ids[i], "koumpa/x", 1);
        load_fails(NULL, ids[i]); /* ignored with env: refused rather */
        unsetenv(ids[i]);
    }
    setenv("KOUMPA_SECRETS", "aws", 1);
    setenv("KOUMPA_SECRET_ID_STRIPE", "arn:aws:secretsmanager:eu-west-3:1:secret:koumpa/stripe-AbCdEf", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.secrets_source, "aws");
    assert_string_equal(cfg.secret_id_stripe, "arn:aws:secretsmanager:eu-west-3:1:secret:koumpa/stripe-AbCdEf");
    assert_null(cfg.secret_id_anthropic);
    kp_config_free(&cfg);
    unsetenv("KOUMPA_SECRETS");
    unsetenv("KOUMPA_SECRET_ID_STRIPE");
}

/* the web dashboard (issue 13): the OAuth sign-in is all of authorize, token and client id, or none */
static void test_dashboard_oauth(void **state)
{
    (void)state;
    kp_config cfg;
    load_ok(&cfg, NULL);
    assert_null(cfg.oauth_authorize_url);
    assert_string_equal(cfg.oauth_scopes, "openid email");
    assert_null(cfg.web_dir);
    kp_config_free(&cfg);
    setenv("KOUMPA_OAUTH_AUTHORIZE_URL", "https://auth.example.com/oauth2/authorize", 1);
    load_fails(NULL, "KOUMPA_OAUTH_TOKEN_URL must be set");
    setenv("KOUMPA_OAUTH_TOKEN_URL", "https://auth.example.com/oauth2/token", 1);
    load_fails(NULL, "KOUMPA_OAUTH_CLIENT_ID must be set");
    setenv("KOUMPA_OAUTH_CLIENT_ID", "abc123", 1);
    setenv("KOUMPA_OAUTH_LOGOUT_URL", "auth.example.com/logout", 1);
    load_fails(NULL, "invalid KOUMPA_OAUTH_LOGOUT_URL=auth.example.com/logout: expected an http(s) URL");
    setenv("KOUMPA_OAUTH_LOGOUT_URL", "https://auth.example.com/logout", 1);
    setenv("KOUMPA_OAUTH_SCOPES", "openid", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.oauth_client_id, "abc123");
    assert_string_equal(cfg.oauth_scopes, "openid");
    assert_string_equal(cfg.oauth_logout_url, "https://auth.example.com/logout");
    kp_config_free(&cfg);
    unsetenv("KOUMPA_OAUTH_AUTHORIZE_URL");
    unsetenv("KOUMPA_OAUTH_TOKEN_URL");
    unsetenv("KOUMPA_OAUTH_CLIENT_ID");
    load_fails(NULL, "KOUMPA_OAUTH_LOGOUT_URL is set without KOUMPA_OAUTH_AUTHORIZE_URL");
}

#define T(fn) cmocka_unit_test_setup(fn, clear_env)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_environment_is_read),
        T(test_explicit_urls_are_kept),
        T(test_empty_variable_means_default),
        T(test_booleans),
        T(test_jwt_issuer_derives_jwks_url),
        T(test_flags_override_environment),
        T(test_flag_value_may_contain_equals),
        T(test_unknown_flag),
        T(test_flag_without_value),
        T(test_invalid_log_level),
        T(test_invalid_addresses),
        T(test_invalid_numbers),
        T(test_generation_lease),
        T(test_secrets_ttl),
        T(test_issuer_needs_audience_and_url),
        T(test_invalid_provider_and_empty_data_dir),
        T(test_admin_emails_normalised),
        T(test_admin_emails_flag_replaces_environment),
        T(test_ensure_secret_creates_then_reuses),
        T(test_ensure_secret_prefers_environment),
        T(test_ensure_secret_refuses_short_file),
        T(test_ensure_secret_unwritable_dir),
        T(test_describe_redacts_secrets),
        T(test_describe_generated_secret_is_redacted),
        T(test_flags_help_lists_flags_and_variables),
        T(test_stripe_tolerance),
        T(test_secrets_source),
        T(test_dashboard_oauth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
