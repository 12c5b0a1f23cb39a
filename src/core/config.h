/*
 * config.h - Koumpa's configuration: environment (KOUMPA_* for our own
 * settings, the ecosystem's standard names for third parties), overridden by
 * command-line flags (--addr, --data-dir, ...).
 *
 * kp_config_load validates everything up front: an invalid value stops start-up
 * with a message naming the variable. Secret values are never logged; use
 * kp_config_describe() for a loggable summary.
 *
 * Ownership: the kp_config owns all its strings; release with kp_config_free().
 */
#ifndef KP_CONFIG_H
#define KP_CONFIG_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"

typedef struct kp_config {
    /* HTTP */
    char *addr;       /* KOUMPA_ADDR, host:port of the API (default 127.0.0.1:8080) */
    char *apps_addr;  /* KOUMPA_APPS_ADDR, the apps origin listener (default 127.0.0.1:8081) */
    char *apps_url;   /* KOUMPA_APPS_URL, public base URL of the apps origin */
    char *public_url; /* KOUMPA_PUBLIC_URL, public base URL of the API (default http://{addr}) */
    long threads;     /* KOUMPA_THREADS, HTTP worker threads (default: number of cores) */

    /* storage */
    char *data_dir; /* KOUMPA_DATA_DIR (default ./data) */

    /* auth */
    char *jwt_issuer;         /* KOUMPA_JWT_ISSUER: accept RS256 tokens from this issuer (optional) */
    char *jwt_audience;       /* KOUMPA_JWT_AUDIENCE: required aud/client_id of external tokens */
    char *jwks_url;           /* KOUMPA_JWKS_URL (default {issuer}/.well-known/jwks.json) */
    char **admin_emails;      /* KOUMPA_ADMIN_EMAILS, comma-separated, normalised; NULL-terminated */
    long token_ttl_s;         /* KOUMPA_TOKEN_TTL (seconds, default 86400) */
    long pwhash_opslimit;     /* KOUMPA_PWHASH_OPSLIMIT (Argon2id passes, default 2) */
    long pwhash_memlimit_kib; /* KOUMPA_PWHASH_MEMLIMIT_KIB (default 65536 = 64 MiB) */
    long login_rate_per_min;  /* KOUMPA_LOGIN_RATE (attempts per minute per IP and per email, default 10) */

    /* accounts and sign-up (issue 9: abuse limits) */
    long login_limit_keys; /* KOUMPA_LOGIN_LIMIT_KEYS: keys each login limiter tracks (addresses, e-mails; 10000) */
    long signup_per_hour;  /* KOUMPA_SIGNUP_PER_HOUR: sign-ups per client address per hour (default 20) */
    long pwhash_threads;   /* KOUMPA_PWHASH_THREADS: password-hashing threads (default 2) */
    long pwhash_queue;     /* KOUMPA_PWHASH_QUEUE: hashing jobs that may wait; beyond, 503 (default 16) */
    char *smtp_url;      /* KOUMPA_SMTP_URL: smtp(s)://[user:pass@]host:port; set: e-mail verification is on (secret) */
    char *smtp_from;     /* KOUMPA_SMTP_FROM: sender of the verification mail; required with KOUMPA_SMTP_URL */
    char *verify_url;    /* KOUMPA_VERIFY_URL: the link's base, ?token=... appended (default {public url}/verify) */
    long verify_ttl_s;   /* KOUMPA_VERIFY_TTL: how long a verification link works, seconds (default 86400) */
    long jwks_timeout_s; /* KOUMPA_JWKS_TIMEOUT: a JWKS fetch's whole transfer, seconds (default 10) */

    /* logging */
    char *log_level; /* KOUMPA_LOG_LEVEL: debug|info|warn|error (default info) */

    /* generation */
    char *llm_provider;       /* KOUMPA_LLM_PROVIDER: anthropic|openai (default: anthropic if ANTHROPIC_API_KEY set) */
    char *anthropic_base_url; /* ANTHROPIC_BASE_URL (default https://api.anthropic.com) */
    char *anthropic_version;  /* KOUMPA_ANTHROPIC_VERSION (default 2026-10-21) */
    char *openai_api_key;     /* OPENAI_API_KEY (secret) */
    char *openai_base_url;    /* OPENAI_BASE_URL */
    char *llm_http_version;   /* KOUMPA_LLM_HTTP_VERSION: auto (h2 by ALPN over TLS, else 1.1) | 1.1 | 2 (h2c) */
    char *model;              /* KOUMPA_MODEL */
    long max_tokens;          /* KOUMPA_MAX_TOKENS (default 16000) */
    long generation_cost;     /* KOUMPA_GENERATION_COST (default 1) */
    long context_window;      /* KOUMPA_CONTEXT_WINDOW tokens (default 200000) */

    /* credit policy for failed generations (domain/credits.h kp_refund_policy) */
    long rejected_refunds_per_day; /* KOUMPA_REJECTED_REFUNDS_PER_DAY (default 3) */
    long cancel_refund_chars;      /* KOUMPA_CANCEL_REFUND_CHARS (default 1000) */
    /* generation: storage pool and readers (gen/storage.h, gen/replay.h) */
    long storage_threads;            /* KOUMPA_STORAGE_THREADS: threads that publish and save versions (default 8) */
    long generation_nice;            /* KOUMPA_GENERATION_NICE: the generation loop thread's nice value (default 0) */
    long admission_threads;          /* KOUMPA_ADMISSION_THREADS: threads that admit generations (16; 0: HTTP's) */
    long admission_queue;            /* KOUMPA_ADMISSION_QUEUE: requests that may wait to be admitted (10000) */
    long max_readers_per_generation; /* KOUMPA_MAX_READERS_PER_GENERATION: live SSE readers per version (default 32) */
    /* generation leases (issue 11: gen/leases.c) */
    long generation_lease_s; /* KOUMPA_GENERATION_LEASE_S: a generating version's lease, seconds (default 30) */
    /* generation time limits (issue 12: gen/timeout.c) */
    long generation_timeout_s; /* KOUMPA_GENERATION_TIMEOUT_S: a generation's whole run, seconds (default 600) */
    long generation_settle_ms; /* KOUMPA_GENERATION_SETTLE_MS: kept before a Lambda deadline to settle (30000) */

    long daily_bonus_scheduler; /* KOUMPA_DAILY_BONUS_SCHEDULER=0 disables the in-server scheduler */

    /* connections and limits (host/evhttp) */
    long max_connections;  /* KOUMPA_MAX_CONNECTIONS, both ports together (0: RLIMIT_NOFILE minus a reserve) */
    long header_timeout_s; /* KOUMPA_HEADER_TIMEOUT_S, a whole request head (default 10) */
    long body_timeout_s;   /* KOUMPA_BODY_TIMEOUT_S, a whole request body (default 60) */

    /* secrets (issue 10: secrets/secrets.h) */
    long secrets_ttl_s; /* KOUMPA_SECRETS_TTL: seconds a secret is cached before it is read again (default 3600) */
    /* secrets: AWS Secrets Manager (issue 11: secrets/secrets_aws.h) */
    char *secrets_source;      /* KOUMPA_SECRETS: env|aws (default env) */
    char *secret_id_anthropic; /* KOUMPA_SECRET_ID_ANTHROPIC: the secret holding ANTHROPIC_API_KEY (aws) */
    char *secret_id_stripe;    /* KOUMPA_SECRET_ID_STRIPE: STRIPE_SECRET_KEY [+ STRIPE_WEBHOOK_SECRET] (aws) */
    char *secret_id_jwt;       /* KOUMPA_SECRET_ID_JWT: KOUMPA_JWT_SECRET (aws; unset: the env source's) */
    /* billing: Stripe webhooks (api/webhook_routes.c) */
    long stripe_tolerance_s; /* KOUMPA_STRIPE_TOLERANCE_S: a signature's timestamp this close to now (default 300) */

    /* billing: checkout and portal, calls to Stripe's API (stripe/stripe_api.h; the key is a secret, secrets/) */
    char *stripe_api_base;         /* STRIPE_API_BASE (default https://api.stripe.com) */
    char *stripe_api_version;      /* KOUMPA_STRIPE_API_VERSION: the Stripe-Version sent (default 2026-10-28.endive) */
    long stripe_timeout_s;         /* KOUMPA_STRIPE_TIMEOUT_S: one attempt's whole transfer (default 30) */
    long stripe_connect_timeout_s; /* KOUMPA_STRIPE_CONNECT_TIMEOUT_S: one attempt's connect (default 10) */
    long stripe_retries;           /* KOUMPA_STRIPE_RETRIES: retries after a timeout, 5xx or 429 (default 2) */
    long billing_threads;          /* KOUMPA_BILLING_THREADS: threads that call Stripe (default 2) */
    long billing_queue;            /* KOUMPA_BILLING_QUEUE: calls that may wait; beyond, 503 (default 32) */

    /* storage: S3 (issue 11: blob/s3/blob_s3.h, blob/blob_select.h) */
    char *storage;      /* KOUMPA_STORAGE: fs|s3, where the apps' files live (default fs) */
    char *s3_bucket;    /* KOUMPA_S3_BUCKET: the bucket with KOUMPA_STORAGE=s3 (required then) */
    long s3_path_style; /* KOUMPA_S3_PATH_STYLE=1: {endpoint}/{bucket}/{key} URLs, for local S3 servers */
    /* database: DynamoDB (issue 11: store/dynamodb/) */
    char *db;                    /* KOUMPA_DB: sqlite|dynamodb (default sqlite) */
    char *dynamodb_table_prefix; /* KOUMPA_DYNAMODB_TABLE_PREFIX: the table is {prefix}koumpa (default "") */

    /* TLS for every outgoing call (issue 12: core/curl_defaults.h) */
    char *ca_bundle; /* KOUMPA_CA_BUNDLE: CA certificates file for libcurl (unset: libcurl's built-in default) */

    /* the web dashboard (issue 13: api/dashboard.h): sign-in through an OAuth provider's hosted UI, dev files */
    char *oauth_authorize_url; /* KOUMPA_OAUTH_AUTHORIZE_URL: the provider's authorization endpoint (code + PKCE) */
    char *oauth_token_url;     /* KOUMPA_OAUTH_TOKEN_URL: its token endpoint, called by the dashboard */
    char *oauth_client_id;     /* KOUMPA_OAUTH_CLIENT_ID: the dashboard's public client id */
    char *oauth_scopes;        /* KOUMPA_OAUTH_SCOPES (default "openid email") */
    char *oauth_logout_url;    /* KOUMPA_OAUTH_LOGOUT_URL: the provider's sign-out page (optional) */
    char *web_dir;             /* KOUMPA_WEB_DIR: serve the dashboard from this directory (development) */
} kp_config;

/*
 * Fills cfg from the environment, then from argv flags (argv[0] is the first
 * flag, i.e. pass what follows the subcommand). Unknown flags are errors.
 * Does not touch the disk (see kp_config_ensure_secret). On failure err names
 * the variable or flag; cfg is left freed.
 */
kp_status kp_config_load(kp_config *cfg, int argc, char **argv, kp_err *err);

/* Creates the data dir and, if neither KOUMPA_JWT_SECRET nor
 * KOUMPA_JWT_SECRET_FILE is set, checks or creates {data_dir}/jwt_secret
 * (mode 0600, 64 hex characters): the secrets service's fallback for
 * KOUMPA_JWT_SECRET (secrets/secrets_env.h). The secrets themselves
 * (KOUMPA_JWT_SECRET, ANTHROPIC_API_KEY, ...) are not in kp_config: they are
 * read through the secrets service, which re-reads them after
 * KOUMPA_SECRETS_TTL. */
kp_status kp_config_ensure_secret(kp_config *cfg, kp_err *err);

/* The path of the generated JWT secret file, {data_dir}/jwt_secret: a new
 * string the caller frees, NULL when out of memory. */
char *kp_config_jwt_secret_file(const kp_config *cfg);

/* True when email (already normalised) is listed in KOUMPA_ADMIN_EMAILS. */
int kp_config_is_admin_email(const kp_config *cfg, const char *email);

/* A loggable JSON summary with secrets redacted; caller decrefs. */
json_t *kp_config_describe(const kp_config *cfg);

/* The help text for the flags kp_config_load accepts. */
const char *kp_config_flags_help(void);

void kp_config_free(kp_config *cfg);

#endif
