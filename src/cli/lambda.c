/*
 * lambda.c - `bootstrap`, the executable of Koumpa's six Lambda functions
 * (a custom runtime on provided.al2023; docs/ARCHITECTURE.md, "Lambda
 * host"). _HANDLER names the function (host/lambda/functions.h).
 *
 *   bootstrap                 the runtime: initialise once, then serve invocations
 *   bootstrap routes [--json] the route -> function table (terraform's routes.tf is checked against it)
 *
 * Configured from the environment like `koumpa serve` (KOUMPA_DB,
 * KOUMPA_STORAGE, KOUMPA_SECRETS, ...: dynamodb / s3 / aws on AWS, SQLite
 * and files work too). Initialisation runs once per cold start: the
 * configuration, the secrets service, the store (SQLite: migrated), the
 * token verifier, and what the function needs (the generation service and
 * blob store for the project functions, the Stripe client for
 * stripe-webhook). Any failure there is reported to /runtime/init/error and
 * the process exits 1; Lambda then retries the cold start.
 *
 * Identity on AWS is Cognito's: API Gateway verifies the JWT and passes its
 * claims; generate-app's function URL has no authorizer, so that function
 * verifies the token itself (its JWKS fetched from init on). Local tokens
 * are never issued there, so the local HS256 key is a random one nobody
 * holds (a local token is always refused).
 *
 * Links no libevent HTTP code: the library's objects are taken as needed
 * (never host/evhttp*), and libevent_core only carries the generator's loop.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "api/offload.h"
#include "api/router.h"
#include "auth/auth.h"
#include "blob/blob_select.h"
#include "cli/cli.h"
#include "core/curl_defaults.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "gen/generator.h"
#include "host/lambda/functions.h"
#include "host/lambda/lambda_host.h"
#include "host/lambda/runtime.h"
#include "llm/llm.h"
#include "secrets/secrets_config.h"
#include "store/sqlite/sqlite_store.h"
#include "stripe/stripe_api.h"

typedef struct boot {
    kp_config cfg;
    char db_path[4096];
    kp_app app;
    kp_store *store;
    kp_loop *loop;
    kp_llm *llm;
    char llm_missing[256];
    kp_blob *blob;
    kp_lambda_host host;
    kp_lambda_runtime *rt;
} boot;

static kp_lambda_runtime *volatile running_rt;

static void on_term(int sig)
{
    (void)sig;
    kp_lambda_runtime_stop(running_rt);
}

static kp_status open_store(void *ud, kp_store **out, kp_err *err)
{
    boot *b = ud;
    return kp_cli_open_store(&b->cfg, b->db_path, out, err);
}

static int wants(const boot *b, const char *fn)
{
    return strcmp(b->host.function, fn) == 0;
}

/* A key for local tokens that nobody knows: no local token is accepted here. */
static kp_status open_auth(boot *b, kp_err *err)
{
    unsigned char key[KP_AUTH_MIN_SECRET];
    randombytes_buf(key, sizeof key);
    kp_auth_options ao = {
        .hs256_secret = (const char *)key,
        .hs256_secret_len = sizeof key,
        .local_issuer = "koumpa",
        .issuer = b->cfg.jwt_issuer,
        .audience = b->cfg.jwt_audience,
        .jwks_url = b->cfg.jwks_url,
        .jwks_timeout_s = b->cfg.jwks_timeout_s,
        /* generate-app's function URL has no authorizer: it verifies tokens itself */
        .jwks_prefetch = wants(b, "generate-app"),
    };
    kp_status rc = kp_auth_new(&ao, &b->app.auth, err);
    sodium_memzero(key, sizeof key);
    return rc;
}

/* The projects' functions: the generation service (its loop, the provider if
 * configured, the blob store); daily-bonus: the blob store alone. */
static kp_status open_generation(boot *b, kp_err *err)
{
    kp_status rc = kp_blob_open_configured(&b->cfg, &b->blob, err);
    if (rc != KP_OK || wants(b, "daily-bonus") || !(wants(b, "generate-app") || wants(b, "list-projects")))
        return rc;
    rc = kp_loop_start(&b->loop, err);
    if (rc != KP_OK)
        return rc;
    kp_err why = {0};
    rc = kp_llm_from_config(&b->cfg, b->app.secrets, b->loop, &b->llm, &why);
    if (rc == KP_EUNAVAILABLE) {
        b->llm = NULL;
        snprintf(b->llm_missing, sizeof b->llm_missing, "%s", why.msg);
        rc = KP_OK;
    } else if (rc != KP_OK) {
        *err = why;
        return rc;
    }
    kp_gen_options go = {
        .cfg = &b->cfg,
        .loop = b->loop,
        .llm = b->llm,
        .llm_missing = b->llm_missing,
        .blob = b->blob,
        .metrics = b->app.metrics,
        .open_store = open_store,
        .open_store_ud = b,
    };
    return kp_gen_new(&go, &b->app.gen, err);
}

/* stripe-webhook also serves checkout and the portal: the Stripe client and its pool. */
static kp_status open_billing(boot *b, kp_err *err)
{
    if (!wants(b, "stripe-webhook"))
        return KP_OK;
    kp_stripe_options so = {
        .api_base = b->cfg.stripe_api_base,
        .api_version = b->cfg.stripe_api_version,
        .secrets = b->app.secrets,
        .connect_timeout_s = b->cfg.stripe_connect_timeout_s,
        .timeout_s = b->cfg.stripe_timeout_s,
        .max_retries = (int)b->cfg.stripe_retries,
    };
    kp_status rc = kp_stripe_new(&so, &b->app.stripe, err);
    if (rc == KP_OK)
        rc = kp_offload_new("billing", 1, 4, open_store, b, &b->app.billing, err);
    if (rc == KP_OK)
        kp_offload_set_busy_what(b->app.billing, "calls to Stripe");
    return rc;
}

static kp_status init(boot *b, kp_err *err)
{
    char *no_args[] = {NULL};
    const char *fn = getenv("_HANDLER");
    if (!kp_lambda_function_known(fn))
        return kp_err_set(err, KP_EINVAL,
                          "_HANDLER is %s%s%s; expected one of get-user, list-projects, generate-app, "
                          "admin-update-plan, stripe-webhook, daily-bonus",
                          fn ? "\"" : "", fn ? fn : "not set", fn ? "\"" : "");
    b->host.function = fn;
    kp_status rc = kp_config_load(&b->cfg, 0, no_args, err);
    if (rc != KP_OK)
        return rc;
    kp_log_level level = KP_LOG_INFO;
    kp_log_parse_level(b->cfg.log_level, &level);
    kp_log_set_level(level);
    snprintf(b->db_path, sizeof b->db_path, "%s/koumpa.db", b->cfg.data_dir);
    rc = kp_cli_check_backend(&b->cfg, err);
    if (rc == KP_OK)
        rc = kp_curl_defaults_set_ca_bundle(b->cfg.ca_bundle, err); /* before any HTTPS handle */
    if (rc == KP_OK && strcmp(b->cfg.db, "dynamodb") != 0)
        rc = kp_sqlite_migrate(b->db_path, NULL, err);
    if (rc == KP_OK)
        rc = kp_cli_open_store(&b->cfg, b->db_path, &b->store, err);
    if (rc == KP_OK)
        rc = kp_secrets_config_open(&b->cfg, &b->app.secrets, err);
    if (rc != KP_OK)
        return rc;
    b->app.cfg = &b->cfg;
    b->app.metrics = kp_metrics_new();
    if (!b->app.metrics)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    rc = open_auth(b, err);
    if (rc == KP_OK)
        rc = open_generation(b, err);
    if (rc == KP_OK)
        rc = open_billing(b, err);
    b->host.ctx.app = &b->app;
    b->host.ctx.store = b->store;
    b->host.blob = b->blob;
    kp_exchange_ids_init(&b->host.ids);
    return rc;
}

static void cleanup(boot *b)
{
    kp_gen_shutdown(b->app.gen);
    kp_stripe_stop(b->app.stripe);
    kp_offload_free(b->app.billing);
    kp_stripe_free(b->app.stripe);
    if (b->llm)
        b->llm->ops->free(b->llm);
    kp_loop_stop(b->loop);
    kp_gen_free(b->app.gen);
    if (b->blob)
        b->blob->ops->close(b->blob);
    if (b->store)
        b->store->ops->close(b->store);
    kp_metrics_free(b->app.metrics);
    kp_auth_free(b->app.auth);
    kp_secrets_free(b->app.secrets);
    kp_config_free(&b->cfg);
    kp_lambda_runtime_free(b->rt);
}

static int print_routes(int json)
{
    json_t *routes = kp_lambda_routes_json();
    size_t i;
    json_t *r;
    if (!routes)
        return 1;
    if (json) {
        char *text = json_dumps(routes, JSON_INDENT(2));
        if (text)
            puts(text);
        free(text);
    } else {
        json_array_foreach(routes, i, r)
        {
            printf("%-18s %s\n", json_string_value(json_object_get(r, "function")),
                   json_string_value(json_object_get(r, "route_key")));
        }
    }
    json_decref(routes);
    return 0;
}

static int run(void)
{
    boot b;
    kp_err err = {0};
    memset(&b, 0, sizeof b);
    kp_log_set_output(STDOUT_FILENO); /* CloudWatch reads stdout */
    kp_status rc = kp_lambda_runtime_new(getenv("AWS_LAMBDA_RUNTIME_API"), &b.rt, &err);
    if (rc != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err.msg));
        return 1;
    }
    running_rt = b.rt;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = init(&b, &err);
    if (rc != KP_OK) {
        kp_err why = {0};
        kp_log_json(KP_LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err.msg));
        if (kp_lambda_fail(b.rt, NULL, "Runtime.InitError", err.msg, &why) != KP_OK)
            kp_log_json(KP_LOG_ERROR, "cannot report the init error", json_pack("{s:s}", "error", why.msg));
    } else {
        kp_log_json(KP_LOG_INFO, "koumpa lambda ready",
                    json_pack("{s:s,s:s,s:s}", "function", b.host.function, "db", b.cfg.db, "version", KP_VERSION));
        rc = kp_lambda_serve(&b.host, b.rt, &err);
        if (strcmp(err.msg, "stopping") != 0)
            kp_log_json(KP_LOG_ERROR, "the runtime loop ended", json_pack("{s:s}", "error", err.msg));
        else
            rc = KP_OK;
    }
    running_rt = NULL;
    cleanup(&b);
    return rc == KP_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("bootstrap: libsodium or libcurl failed to initialise\n", stderr);
        return 1;
    }
    int rc;
    if (argc >= 2 && strcmp(argv[1], "routes") == 0)
        rc = print_routes(argc >= 3 && strcmp(argv[2], "--json") == 0);
    else if (argc >= 2) {
        fprintf(stderr, "bootstrap: unknown command %s (usage: bootstrap [routes [--json]])\n", argv[1]);
        rc = KP_EXIT_USAGE;
    } else
        rc = run();
    curl_global_cleanup();
    return rc;
}
