/*
 * config.c - see config.h. Each setting is described once in a table (its
 * variable, its flag, its kind, its default), so environment parsing, flag
 * parsing, validation and --help all come from the same place.
 */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/apps_url.h"
#include "core/buf.h"
#include "core/log.h"

typedef enum { OPT_STR, OPT_LONG, OPT_BOOL } opt_kind; /* numbers and booleans are stored as long */

typedef struct opt_def {
    const char *env;
    const char *flag; /* NULL: environment only */
    opt_kind kind;
    size_t offset;
    const char *def; /* default as text; NULL: unset */
    long min, max;   /* numeric range */
    int secret;
    const char *help;
} opt_def;

#define OFF(f) offsetof(kp_config, f)

static const opt_def opts[] = {
    {"KOUMPA_ADDR", "--addr", OPT_STR, OFF(addr), "127.0.0.1:8080", 0, 0, 0, "API listen address host:port"},
    {"KOUMPA_APPS_ADDR", "--apps-addr", OPT_STR, OFF(apps_addr), "127.0.0.1:8081", 0, 0, 0,
     "apps origin listen address"},
    {"KOUMPA_APPS_URL", "--apps-url", OPT_STR, OFF(apps_url), NULL, 0, 0, 0,
     "public base URL of the apps origin; https://{project}.apps.example.com puts each app on its own origin"},
    {"KOUMPA_PUBLIC_URL", "--public-url", OPT_STR, OFF(public_url), NULL, 0, 0, 0,
     "public URL of the dashboard (on koumpa serve: this API's origin)"},
    {"KOUMPA_THREADS", "--threads", OPT_LONG, OFF(threads), "0", 0, 256, 0, "HTTP worker threads (0: one per core)"},
    {"KOUMPA_DATA_DIR", "--data-dir", OPT_STR, OFF(data_dir), "./data", 0, 0, 0,
     "data directory (database, secrets, blobs)"},
    {"KOUMPA_JWT_ISSUER", "--jwt-issuer", OPT_STR, OFF(jwt_issuer), NULL, 0, 0, 0,
     "accept RS256 tokens from this issuer"},
    {"KOUMPA_JWT_AUDIENCE", "--jwt-audience", OPT_STR, OFF(jwt_audience), NULL, 0, 0, 0,
     "required aud/client_id of external tokens"},
    {"KOUMPA_JWKS_URL", "--jwks-url", OPT_STR, OFF(jwks_url), NULL, 0, 0, 0,
     "JWKS URL (default {issuer}/.well-known/jwks.json)"},
    {"KOUMPA_TOKEN_TTL", NULL, OPT_LONG, OFF(token_ttl_s), "86400", 60, 31536000, 0,
     "lifetime of local tokens, seconds"},
    {"KOUMPA_PWHASH_OPSLIMIT", NULL, OPT_LONG, OFF(pwhash_opslimit), "2", 1, 100, 0, "Argon2id passes"},
    {"KOUMPA_PWHASH_MEMLIMIT_KIB", NULL, OPT_LONG, OFF(pwhash_memlimit_kib), "65536", 8, 4194304, 0,
     "Argon2id memory, KiB"},
    {"KOUMPA_LOGIN_RATE", NULL, OPT_LONG, OFF(login_rate_per_min), "10", 1, 100000, 0,
     "login attempts per minute per IP and per email"},
    /* accounts and sign-up (issue 9: abuse limits) */
    {"KOUMPA_LOGIN_LIMIT_KEYS", NULL, OPT_LONG, OFF(login_limit_keys), "10000", 16, 10000000, 0,
     "addresses (and, separately, e-mails) the login limiter tracks"},
    {"KOUMPA_SIGNUP_PER_HOUR", NULL, OPT_LONG, OFF(signup_per_hour), "20", 1, 1000000, 0,
     "sign-ups per client address per hour"},
    {"KOUMPA_PWHASH_THREADS", NULL, OPT_LONG, OFF(pwhash_threads), "2", 1, 64, 0, "password-hashing threads"},
    {"KOUMPA_PWHASH_QUEUE", NULL, OPT_LONG, OFF(pwhash_queue), "16", 0, 100000, 0,
     "password-hashing jobs that may wait (beyond: 503)"},
    {"KOUMPA_SMTP_URL", NULL, OPT_STR, OFF(smtp_url), NULL, 0, 0, 1,
     "SMTP server for verification mail: smtp://host:port (unset: no verification)"},
    {"KOUMPA_SMTP_FROM", NULL, OPT_STR, OFF(smtp_from), NULL, 0, 0, 0, "sender address of verification mail"},
    {"KOUMPA_VERIFY_URL", NULL, OPT_STR, OFF(verify_url), NULL, 0, 0, 0,
     "base of the verification link (default {public url}/#/verify, the dashboard's screen)"},
    {"KOUMPA_VERIFY_TTL", NULL, OPT_LONG, OFF(verify_ttl_s), "86400", 1, 31536000, 0,
     "how long a verification link works, seconds"},
    {"KOUMPA_JWKS_TIMEOUT", NULL, OPT_LONG, OFF(jwks_timeout_s), "10", 1, 3600, 0,
     "a JWKS fetch's whole transfer, seconds (on the refresher thread)"},
    {"KOUMPA_LOG_LEVEL", "--log-level", OPT_STR, OFF(log_level), "info", 0, 0, 0, "debug|info|warn|error"},
    {"KOUMPA_LLM_PROVIDER", NULL, OPT_STR, OFF(llm_provider), NULL, 0, 0, 0, "anthropic|openai"},
    {"ANTHROPIC_BASE_URL", NULL, OPT_STR, OFF(anthropic_base_url), "https://api.anthropic.com", 0, 0, 0,
     "Anthropic API base URL"},
    {"KOUMPA_ANTHROPIC_VERSION", NULL, OPT_STR, OFF(anthropic_version), "2026-10-21", 0, 0, 0,
     "anthropic-version header"},
    {"OPENAI_API_KEY", NULL, OPT_STR, OFF(openai_api_key), NULL, 0, 0, 1, "OpenAI-compatible API key"},
    {"OPENAI_BASE_URL", NULL, OPT_STR, OFF(openai_base_url), NULL, 0, 0, 0,
     "OpenAI-compatible base URL (e.g. http://localhost:11434/v1)"},
    {"KOUMPA_LLM_HTTP_VERSION", NULL, OPT_STR, OFF(llm_http_version), "auto", 0, 0, 0,
     "HTTP to the LLM provider: auto (HTTP/2 over TLS when offered, else 1.1), 1.1, or 2 (also h2c on http://)"},
    {"KOUMPA_MODEL", "--model", OPT_STR, OFF(model), NULL, 0, 0, 0, "model id (default per provider)"},
    {"KOUMPA_MAX_TOKENS", NULL, OPT_LONG, OFF(max_tokens), "16000", 256, 1000000, 0, "max output tokens per call"},
    {"KOUMPA_GENERATION_COST", NULL, OPT_LONG, OFF(generation_cost), "1", 0, 1000000, 0, "credits per generation"},
    {"KOUMPA_CONTEXT_WINDOW", NULL, OPT_LONG, OFF(context_window), "200000", 1000, 10000000, 0,
     "model context window, tokens"},
    /* credit policy for failed generations (money) */
    {"KOUMPA_REJECTED_REFUNDS_PER_DAY", NULL, OPT_LONG, OFF(rejected_refunds_per_day), "3", 0, 1000, 0,
     "refunds of rejected output (invalid_output, too_long) per user and UTC day"},
    {"KOUMPA_CANCEL_REFUND_CHARS", NULL, OPT_LONG, OFF(cancel_refund_chars), "1000", 0, 100000000, 0,
     "a cancel is refunded while the model wrote fewer characters than this"},
    /* generation: storage pool and readers */
    {"KOUMPA_STORAGE_THREADS", NULL, OPT_LONG, OFF(storage_threads), "8", 1, 64, 0,
     "threads that publish and save finished generations"},
    {"KOUMPA_GENERATION_NICE", NULL, OPT_LONG, OFF(generation_nice), "0", 0, 19, 0,
     "the generation loop thread's nice value (higher: the API's threads, and every other process, go first)"},
    {"KOUMPA_ADMISSION_THREADS", NULL, OPT_LONG, OFF(admission_threads), "16", 0, 256, 0,
     "threads that admit generations (0: the HTTP threads do)"},
    {"KOUMPA_ADMISSION_QUEUE", NULL, OPT_LONG, OFF(admission_queue), "10000", 0, 1000000, 0,
     "generation requests that may wait for admission (beyond: 503)"},
    {"KOUMPA_MAX_READERS_PER_GENERATION", NULL, OPT_LONG, OFF(max_readers_per_generation), "32", 1, 100000, 0,
     "live event-stream readers per generating version"},
    /* generation leases (issue 11: gen/leases.c) */
    {"KOUMPA_GENERATION_LEASE_S", NULL, OPT_LONG, OFF(generation_lease_s), "30", 1, 3600, 0,
     "seconds a generating version's lease lasts; renewed every third of it, recovered once it ran out"},
    /* generation time limits (issue 12: gen/timeout.c) */
    {"KOUMPA_GENERATION_TIMEOUT_S", NULL, OPT_LONG, OFF(generation_timeout_s), "600", 1, 86400, 0,
     "seconds a generation may run from its start to its end (then it fails timed_out, refunded)"},
    {"KOUMPA_GENERATION_SETTLE_MS", NULL, OPT_LONG, OFF(generation_settle_ms), "30000", 0, 600000, 0,
     "ms kept before an invocation's deadline (Lambda) to settle a generation: files, version, credits"},
    {"KOUMPA_DAILY_BONUS_SCHEDULER", NULL, OPT_BOOL, OFF(daily_bonus_scheduler), "1", 0, 1, 0,
     "run the daily bonus at 00:00 UTC in serve"},
    {"KOUMPA_ADMIN_EMAILS", "--admin-emails", OPT_STR, (size_t)-1, NULL, 0, 0, 0, "comma-separated admin emails"},
    /* connections and limits (host/evhttp) */
    {"KOUMPA_MAX_CONNECTIONS", NULL, OPT_LONG, OFF(max_connections), "0", 0, 10000000, 0,
     "open connections on both ports together (0: the descriptor limit minus a reserve)"},
    {"KOUMPA_HEADER_TIMEOUT_S", NULL, OPT_LONG, OFF(header_timeout_s), "10", 1, 3600, 0,
     "seconds a client has to send a whole request head"},
    {"KOUMPA_BODY_TIMEOUT_S", NULL, OPT_LONG, OFF(body_timeout_s), "60", 1, 3600, 0,
     "seconds a client has to send a request body"},
    /* secrets (issue 10: secrets/secrets.h) */
    {"KOUMPA_SECRETS_TTL", NULL, OPT_LONG, OFF(secrets_ttl_s), "3600", 1, 31536000, 0,
     "seconds a secret (API key, signing secret, *_FILE) is cached before it is read again"},
    /* secrets: AWS Secrets Manager (issue 11: secrets/secrets_aws.h) */
    {"KOUMPA_SECRETS", NULL, OPT_STR, OFF(secrets_source), "env", 0, 0, 0,
     "where secrets are read: env (environment, *_FILE) or aws (Secrets Manager, then env)"},
    {"KOUMPA_SECRET_ID_ANTHROPIC", NULL, OPT_STR, OFF(secret_id_anthropic), NULL, 0, 0, 0,
     "Secrets Manager secret (name or ARN) holding ANTHROPIC_API_KEY"},
    {"KOUMPA_SECRET_ID_STRIPE", NULL, OPT_STR, OFF(secret_id_stripe), NULL, 0, 0, 0,
     "Secrets Manager secret: STRIPE_SECRET_KEY, or a JSON object with it and STRIPE_WEBHOOK_SECRET"},
    {"KOUMPA_SECRET_ID_JWT", NULL, OPT_STR, OFF(secret_id_jwt), NULL, 0, 0, 0,
     "Secrets Manager secret holding KOUMPA_JWT_SECRET (unset: as with env)"},
    /* billing: Stripe webhooks */
    {"KOUMPA_STRIPE_TOLERANCE_S", NULL, OPT_LONG, OFF(stripe_tolerance_s), "300", 1, 86400, 0,
     "seconds a Stripe webhook signature's timestamp may be from now, either way"},
    /* billing: checkout and portal, calls to Stripe's API (STRIPE_SECRET_KEY: the secrets service) */
    {"STRIPE_API_BASE", NULL, OPT_STR, OFF(stripe_api_base), "https://api.stripe.com", 0, 0, 0, "Stripe API base URL"},
    {"KOUMPA_STRIPE_API_VERSION", NULL, OPT_STR, OFF(stripe_api_version), "2026-10-28.endive", 0, 0, 0,
     "Stripe-Version header"},
    {"KOUMPA_STRIPE_TIMEOUT_S", NULL, OPT_LONG, OFF(stripe_timeout_s), "30", 1, 600, 0,
     "seconds one call to Stripe may take (each attempt)"},
    {"KOUMPA_STRIPE_CONNECT_TIMEOUT_S", NULL, OPT_LONG, OFF(stripe_connect_timeout_s), "10", 1, 600, 0,
     "seconds to connect to Stripe (each attempt)"},
    {"KOUMPA_STRIPE_RETRIES", NULL, OPT_LONG, OFF(stripe_retries), "2", 0, 10, 0,
     "retries of a call to Stripe after a timeout, connection error, 5xx or 429"},
    {"KOUMPA_BILLING_THREADS", NULL, OPT_LONG, OFF(billing_threads), "2", 1, 64, 0, "threads that call Stripe"},
    {"KOUMPA_BILLING_QUEUE", NULL, OPT_LONG, OFF(billing_queue), "32", 0, 100000, 0,
     "calls to Stripe that may wait (beyond: 503)"},
    /* storage: S3 (issue 11: blob/s3/blob_s3.h; endpoint, region and credentials: aws/aws_credentials.h) */
    {"KOUMPA_STORAGE", NULL, OPT_STR, OFF(storage), "fs", 0, 0, 0,
     "where the apps' files live: fs ({data dir}/blobs) or s3 (KOUMPA_S3_BUCKET)"},
    {"KOUMPA_S3_BUCKET", NULL, OPT_STR, OFF(s3_bucket), NULL, 0, 0, 0, "S3 bucket of the apps' files"},
    {"KOUMPA_S3_PATH_STYLE", NULL, OPT_BOOL, OFF(s3_path_style), "0", 0, 1, 0,
     "1: path-style S3 URLs ({endpoint}/{bucket}/{key}), for local S3 servers"},
    /* database: DynamoDB (issue 11: store/dynamodb/) */
    {"KOUMPA_DB", "--db", OPT_STR, OFF(db), "sqlite", 0, 0, 0,
     "store backend: sqlite (in the data directory) or dynamodb (AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB, credentials)"},
    {"KOUMPA_DYNAMODB_TABLE_PREFIX", NULL, OPT_STR, OFF(dynamodb_table_prefix), "", 0, 0, 0,
     "DynamoDB: the table is named {prefix}koumpa"},
    /* TLS for every outgoing call (issue 12: core/curl_defaults.h, applied by cli/main.c and cli/lambda.c) */
    {"KOUMPA_CA_BUNDLE", NULL, OPT_STR, OFF(ca_bundle), NULL, 0, 0, 0,
     "CA certificates (PEM bundle) that outgoing TLS peers are verified against (unset: libcurl's default)"},
    /* the web dashboard (issue 13: api/dashboard.h; oauth is in /config.json only when the first three are set) */
    {"KOUMPA_OAUTH_AUTHORIZE_URL", NULL, OPT_STR, OFF(oauth_authorize_url), NULL, 0, 0, 0,
     "dashboard sign-in: the OAuth provider's authorization endpoint (authorization code + PKCE)"},
    {"KOUMPA_OAUTH_TOKEN_URL", NULL, OPT_STR, OFF(oauth_token_url), NULL, 0, 0, 0,
     "dashboard sign-in: the provider's token endpoint"},
    {"KOUMPA_OAUTH_CLIENT_ID", NULL, OPT_STR, OFF(oauth_client_id), NULL, 0, 0, 0,
     "dashboard sign-in: the dashboard's (public) client id"},
    {"KOUMPA_OAUTH_SCOPES", NULL, OPT_STR, OFF(oauth_scopes), "openid email", 0, 0, 0,
     "dashboard sign-in: the scopes asked for"},
    {"KOUMPA_OAUTH_LOGOUT_URL", NULL, OPT_STR, OFF(oauth_logout_url), NULL, 0, 0, 0,
     "dashboard sign-out: the provider's logout page (optional)"},
    {"KOUMPA_WEB_DIR", NULL, OPT_STR, OFF(web_dir), NULL, 0, 0, 0,
     "development: serve the dashboard from this directory (read per request) instead of the built-in copy"},
};

#define NOPTS (sizeof opts / sizeof opts[0])

static kp_status set_value(kp_config *cfg, const opt_def *o, const char *value, const char *source, kp_err *err)
{
    if (o->offset == (size_t)-1)
        return KP_OK; /* KOUMPA_ADMIN_EMAILS: parsed separately */
    char *base = (char *)cfg + o->offset;
    if (o->kind == OPT_STR) {
        char **slot = (char **)base;
        free(*slot);
        *slot = strdup(value);
        return *slot ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (o->kind == OPT_BOOL) {
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0)
            v = 1, end = (char *)value + strlen(value);
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0)
            v = 0, end = (char *)value + strlen(value);
    }
    if (errno || !end || *end || end == value || v < o->min || v > o->max)
        return kp_err_set(err, KP_EINVAL, "invalid %s=%s: expected a whole number from %ld to %ld", source,
                          o->secret ? "(redacted)" : value, o->min, o->max);
    *(long *)base = v;
    return KP_OK;
}

/* Lower-cases and trims an email in place. */
static void normalise_email(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t start = 0;
    while (s[start] && isspace((unsigned char)s[start]))
        start++;
    memmove(s, s + start, n - start + 1);
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
}

static kp_status parse_admin_emails(kp_config *cfg, const char *list, kp_err *err)
{
    size_t count = 1;
    for (const char *p = list; *p; p++)
        count += *p == ',';
    char **out = calloc(count + 1, sizeof *out);
    char *copy = strdup(list);
    if (!out || !copy) {
        free(out);
        free(copy);
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    }
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        normalise_email(tok);
        if (*tok)
            out[n++] = strdup(tok);
    }
    free(copy);
    if (cfg->admin_emails) {
        for (char **e = cfg->admin_emails; *e; e++)
            free(*e);
        free(cfg->admin_emails);
    }
    cfg->admin_emails = out;
    return KP_OK;
}

static kp_status validate_addr(const char *name, const char *addr, kp_err *err)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return kp_err_set(err, KP_EINVAL, "invalid %s=%s: expected host:port", name, addr);
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (!end || *end || end == colon + 1 || port < 0 || port > 65535)
        return kp_err_set(err, KP_EINVAL, "invalid %s=%s: port must be 0..65535", name, addr);
    return KP_OK;
}

/* secrets: AWS Secrets Manager - KOUMPA_SECRETS, and ids only with aws (set with env, they would be ignored). */
static kp_status validate_secrets_source(const kp_config *cfg, kp_err *err)
{
    const char *ids[] = {cfg->secret_id_anthropic, cfg->secret_id_stripe, cfg->secret_id_jwt};
    const char *vars[] = {"KOUMPA_SECRET_ID_ANTHROPIC", "KOUMPA_SECRET_ID_STRIPE", "KOUMPA_SECRET_ID_JWT"};
    if (strcmp(cfg->secrets_source, "env") != 0 && strcmp(cfg->secrets_source, "aws") != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_SECRETS=%s: expected env or aws", cfg->secrets_source);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] && strcmp(cfg->secrets_source, "aws") != 0)
            return kp_err_set(err, KP_EINVAL, "%s is set but KOUMPA_SECRETS is not aws: set KOUMPA_SECRETS=aws",
                              vars[i]);
    return KP_OK;
}

static int is_http_url(const char *s)
{
    return strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0;
}

/* the web dashboard: the OAuth sign-in is all three of authorize, token and client id, or none */
static kp_status validate_dashboard(const kp_config *cfg, kp_err *err)
{
    const char *vals[] = {cfg->oauth_authorize_url, cfg->oauth_token_url, cfg->oauth_client_id, cfg->oauth_logout_url};
    const char *vars[] = {"KOUMPA_OAUTH_AUTHORIZE_URL", "KOUMPA_OAUTH_TOKEN_URL", "KOUMPA_OAUTH_CLIENT_ID",
                          "KOUMPA_OAUTH_LOGOUT_URL"};
    int set = !!vals[0] + !!vals[1] + !!vals[2];
    for (size_t i = 0; i < 4; i++) {
        if (vals[i] && i != 2 && !is_http_url(vals[i]))
            return kp_err_set(err, KP_EINVAL, "invalid %s=%s: expected an http(s) URL", vars[i], vals[i]);
        if (i < 3 && set > 0 && set < 3 && !vals[i])
            return kp_err_set(err, KP_EINVAL, "%s must be set with the other KOUMPA_OAUTH_* settings", vars[i]);
    }
    if (cfg->oauth_logout_url && set == 0)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_OAUTH_LOGOUT_URL is set without KOUMPA_OAUTH_AUTHORIZE_URL");
    if (cfg->web_dir && !*cfg->web_dir)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_WEB_DIR: empty");
    return KP_OK;
}

static kp_status validate(kp_config *cfg, kp_err *err)
{
    kp_log_level lvl;
    if (kp_log_parse_level(cfg->log_level, &lvl) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_LOG_LEVEL=%s: expected debug, info, warn or error",
                          cfg->log_level);
    if (strcmp(cfg->db, "sqlite") != 0 && strcmp(cfg->db, "dynamodb") != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_DB=%s: sqlite or dynamodb", cfg->db);
    if (validate_addr("KOUMPA_ADDR", cfg->addr, err) || validate_addr("KOUMPA_APPS_ADDR", cfg->apps_addr, err))
        return err->status;
    if (!*cfg->data_dir)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_DATA_DIR: empty");
    if (cfg->jwt_issuer && !cfg->jwt_audience)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_JWT_AUDIENCE must be set when KOUMPA_JWT_ISSUER is set");
    if (cfg->jwt_issuer && strncmp(cfg->jwt_issuer, "https://", 8) != 0 && strncmp(cfg->jwt_issuer, "http://", 7) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_JWT_ISSUER=%s: expected an http(s) URL", cfg->jwt_issuer);
    if (cfg->llm_provider && strcmp(cfg->llm_provider, "anthropic") != 0 && strcmp(cfg->llm_provider, "openai") != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_LLM_PROVIDER=%s: expected anthropic or openai",
                          cfg->llm_provider);
    if (strcmp(cfg->llm_http_version, "auto") != 0 && strcmp(cfg->llm_http_version, "1.1") != 0 &&
        strcmp(cfg->llm_http_version, "2") != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_LLM_HTTP_VERSION=%s: expected auto, 1.1 or 2",
                          cfg->llm_http_version);
    if (cfg->smtp_url && !cfg->smtp_from)
        return kp_err_set(err, KP_EINVAL, "KOUMPA_SMTP_FROM must be set when KOUMPA_SMTP_URL is set");
    if (cfg->smtp_url && strncmp(cfg->smtp_url, "smtp://", 7) != 0 && strncmp(cfg->smtp_url, "smtps://", 8) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_SMTP_URL: expected smtp://host:port or smtps://host:port");
    if (validate_secrets_source(cfg, err) != KP_OK)
        return err->status;
    if (strncmp(cfg->stripe_api_base, "https://", 8) != 0 && strncmp(cfg->stripe_api_base, "http://", 7) != 0)
        return kp_err_set(err, KP_EINVAL, "invalid STRIPE_API_BASE=%s: expected an http(s) URL", cfg->stripe_api_base);
    if (strcmp(cfg->storage, "fs") != 0 && strcmp(cfg->storage, "s3") != 0)
        return kp_err_set(err, KP_EINVAL, "invalid KOUMPA_STORAGE=%s: expected fs or s3", cfg->storage);
    if (strcmp(cfg->storage, "s3") == 0 && (!cfg->s3_bucket || !*cfg->s3_bucket))
        return kp_err_set(err, KP_EINVAL, "KOUMPA_S3_BUCKET must be set when KOUMPA_STORAGE=s3");
    if (validate_dashboard(cfg, err) != KP_OK)
        return err->status;
    if (cfg->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n > 0 ? (n > 64 ? 64 : n) : 1;
    }
    return KP_OK;
}

static kp_status fill_derived(kp_config *cfg, kp_err *err)
{
    kp_buf b = KP_BUF_INIT;
    if (!cfg->public_url) {
        kp_buf_printf(&b, "http://%s", cfg->addr);
        cfg->public_url = kp_buf_steal(&b);
    }
    if (!cfg->apps_url) {
        kp_buf_printf(&b, "http://%s", cfg->apps_addr);
        cfg->apps_url = kp_buf_steal(&b);
    }
    if (!cfg->verify_url && cfg->public_url) {
        size_t n = strlen(cfg->public_url);
        while (n && cfg->public_url[n - 1] == '/')
            n--;
        /* the dashboard's #/verify screen: the token rides in the fragment, never sent to a server */
        kp_buf_printf(&b, "%.*s/#/verify", (int)n, cfg->public_url);
        cfg->verify_url = kp_buf_steal(&b);
    }
    if (cfg->jwt_issuer && !cfg->jwks_url) {
        size_t n = strlen(cfg->jwt_issuer);
        while (n && cfg->jwt_issuer[n - 1] == '/')
            n--;
        kp_buf_printf(&b, "%.*s/.well-known/jwks.json", (int)n, cfg->jwt_issuer);
        cfg->jwks_url = kp_buf_steal(&b);
    }
    if (!cfg->public_url || !cfg->apps_url || !cfg->verify_url || (cfg->jwt_issuer && !cfg->jwks_url))
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return kp_apps_url_check(cfg->apps_url, err); /* per-project origins: core/apps_url.h */
}

static const opt_def *find_flag(const char *arg, const char **value)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (!opts[i].flag)
            continue;
        size_t n = strlen(opts[i].flag);
        if (strncmp(arg, opts[i].flag, n) == 0 && (arg[n] == '=' || arg[n] == '\0')) {
            *value = arg[n] == '=' ? arg + n + 1 : NULL;
            return &opts[i];
        }
    }
    return NULL;
}

kp_status kp_config_load(kp_config *cfg, int argc, char **argv, kp_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    kp_status rc = KP_OK;
    for (size_t i = 0; i < NOPTS && rc == KP_OK; i++) {
        const char *env = getenv(opts[i].env);
        const char *value = env && *env ? env : opts[i].def;
        if (value)
            rc = set_value(cfg, &opts[i], value, opts[i].env, err);
        if (rc == KP_OK && opts[i].offset == (size_t)-1)
            rc = parse_admin_emails(cfg, value ? value : "", err);
    }
    for (int i = 0; i < argc && rc == KP_OK; i++) {
        const char *value = NULL;
        const opt_def *o = find_flag(argv[i], &value);
        if (!o) {
            rc = kp_err_set(err, KP_EINVAL, "unknown option %s", argv[i]);
            break;
        }
        if (!value) {
            if (i + 1 >= argc) {
                rc = kp_err_set(err, KP_EINVAL, "option %s needs a value", o->flag);
                break;
            }
            value = argv[++i];
        }
        rc = o->offset == (size_t)-1 ? parse_admin_emails(cfg, value, err) : set_value(cfg, o, value, o->flag, err);
    }
    if (rc == KP_OK)
        rc = validate(cfg, err);
    if (rc == KP_OK)
        rc = fill_derived(cfg, err);
    if (rc != KP_OK)
        kp_config_free(cfg);
    return rc;
}

/* The generated file is there and long enough (its content is read again,
 * through the secrets service, whenever it is used). */
static kp_status check_secret_file(const char *path, kp_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? KP_ENOTFOUND : kp_err_set(err, KP_EIO, "cannot read %s: %s", path, strerror(errno));
    char line[256] = {0};
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    size_t len = strcspn(line, "\r\n");
    sodium_memzero(line, sizeof line);
    if (!got || len < 32)
        return kp_err_set(err, KP_EINVAL, "%s is too short: delete it to generate a new one", path);
    return KP_OK;
}

static kp_status create_secret_file(const char *path, kp_err *err)
{
    unsigned char raw[32];
    char hex[65];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) /* another process won the race: use its secret */
            return check_secret_file(path, err);
        return kp_err_set(err, KP_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    ssize_t w = write(fd, hex, 64);
    ssize_t nl = write(fd, "\n", 1);
    int synced = fsync(fd);
    close(fd);
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(hex, sizeof hex);
    if (w != 64 || nl != 1 || synced != 0)
        return kp_err_set(err, KP_EIO, "cannot write %s", path);
    return KP_OK;
}

static int env_is_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

char *kp_config_jwt_secret_file(const kp_config *cfg)
{
    kp_buf path = KP_BUF_INIT;
    if (kp_buf_printf(&path, "%s/jwt_secret", cfg->data_dir) != 0)
        return NULL;
    return kp_buf_steal(&path);
}

kp_status kp_config_ensure_secret(kp_config *cfg, kp_err *err)
{
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST)
        return kp_err_set(err, KP_EIO, "cannot create KOUMPA_DATA_DIR=%s: %s", cfg->data_dir, strerror(errno));
    if (env_is_set("KOUMPA_JWT_SECRET") || env_is_set("KOUMPA_JWT_SECRET_FILE"))
        return KP_OK;
    char *path = kp_config_jwt_secret_file(cfg);
    if (!path)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    kp_status rc = check_secret_file(path, err);
    if (rc == KP_ENOTFOUND)
        rc = create_secret_file(path, err);
    free(path);
    return rc;
}

int kp_config_is_admin_email(const kp_config *cfg, const char *email)
{
    if (!cfg->admin_emails || !email || !*email)
        return 0;
    for (char **e = cfg->admin_emails; *e; e++)
        if (strcmp(*e, email) == 0)
            return 1;
    return 0;
}

json_t *kp_config_describe(const kp_config *cfg)
{
    json_t *o = json_object();
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *d = &opts[i];
        if (d->offset == (size_t)-1)
            continue;
        const char *base = (const char *)cfg + d->offset;
        if (d->kind == OPT_STR) {
            const char *v = *(char *const *)base;
            if (v)
                json_object_set_new(o, d->env, json_string(d->secret ? "(set)" : v));
        }
    }
    json_object_set_new(o, "KOUMPA_THREADS", json_integer(cfg->threads));
    return o;
}

const char *kp_config_flags_help(void)
{
    static char text[4096];
    if (text[0])
        return text;
    size_t used = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        if (!opts[i].flag)
            continue;
        int n = snprintf(text + used, sizeof text - used, "  %-16s %s (%s)\n", opts[i].flag, opts[i].help, opts[i].env);
        if (n < 0 || (size_t)n >= sizeof text - used)
            break;
        used += (size_t)n;
    }
    return text;
}

void kp_config_free(kp_config *cfg)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].kind == OPT_STR && opts[i].offset != (size_t)-1) {
            char **slot = (char **)((char *)cfg + opts[i].offset);
            free(*slot);
            *slot = NULL;
        }
    if (cfg->admin_emails) {
        for (char **e = cfg->admin_emails; *e; e++)
            free(*e);
        free(cfg->admin_emails);
        cfg->admin_emails = NULL;
    }
}
