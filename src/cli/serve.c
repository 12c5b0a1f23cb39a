/*
 * serve.c - `koumpa serve`: wires the process together and runs until
 * SIGINT/SIGTERM. Order: configuration, data dir + secret, migrations, the
 * shared app (token verifier, rate limiters, password-hashing pool, metrics), the generation service
 * (its event loop, the LLM provider if one is configured, the blob store,
 * and the repair of versions a crash left unsettled), the HTTP host (a
 * thread per core, each with its own database handle), the apps origin's
 * host, the daily bonus scheduler. Shutdown reverses it, generations first:
 * those still running are failed ("interrupted") and refunded.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/apps_origin.h"
#include "api/dashboard.h"
#include "api/offload.h"
#include "api/router.h"
#include "auth/auth.h"
#include "blob/blob_select.h"
#include "cli/cli.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/ratelimit.h"
#include "domain/bonus_scheduler.h"
#include "gen/generator.h"
#include "host/evhttp_host.h"
#include "llm/llm.h"
#include "mail/mailer.h"
#include "secrets/secrets_config.h"
#include "store/sqlite/sqlite_store.h"
#include "stripe/stripe_api.h"

#define VERIFY_MAILS_PER_HOUR 3 /* POST /v1/auth/verify/resend, per user */
#define MAIL_QUEUE 64           /* verification mails that may wait for the SMTP server */
#define LOG_FLUSH_MS 100        /* the longest a request log line waits in its thread's buffer */

typedef struct serve_state {
    kp_config cfg;
    char db_path[4096];
    kp_app app;
    kp_host *host;
    kp_host *apps_host;
    kp_bonus_scheduler *scheduler;
    kp_loop *loop;
    kp_llm *llm;
    char llm_missing[256];
    kp_blob *blob;
    kp_gen *gen;
} serve_state;

static kp_status open_store(void *ud, kp_store **out, kp_err *err)
{
    serve_state *st = ud;
    return kp_cli_open_store(&st->cfg, st->db_path, out, err);
}

/* The secrets service KOUMPA_SECRETS asks for (secrets/secrets_config.h):
 * the environment and *_FILE files, or Secrets Manager then those. */
static kp_status open_secrets(serve_state *st, kp_err *err)
{
    return kp_secrets_config_open(&st->cfg, &st->app.secrets, err);
}

static kp_status build_app(serve_state *st, kp_err *err)
{
    kp_config *cfg = &st->cfg;
    kp_status rc = open_secrets(st, err);
    if (rc != KP_OK)
        return rc;
    kp_auth_options ao = {
        .secrets = st->app.secrets,
        .local_issuer = "koumpa",
        .issuer = cfg->jwt_issuer,
        .audience = cfg->jwt_audience,
        .jwks_url = cfg->jwks_url,
        .ttl_seconds = cfg->token_ttl_s,
        .jwks_prefetch = 1,
        .jwks_timeout_s = cfg->jwks_timeout_s,
    };
    st->app.cfg = cfg;
    rc = kp_auth_new(&ao, &st->app.auth, err);
    if (rc != KP_OK)
        return rc;
    st->app.login_ip_limit = kp_ratelimit_new(cfg->login_rate_per_min, 60, (size_t)cfg->login_limit_keys);
    st->app.login_email_limit = kp_ratelimit_new(cfg->login_rate_per_min, 60, (size_t)cfg->login_limit_keys);
    st->app.signup_limit = kp_ratelimit_new(cfg->signup_per_hour, 3600, (size_t)cfg->login_limit_keys);
    st->app.resend_limit = kp_ratelimit_new(VERIFY_MAILS_PER_HOUR, 3600, (size_t)cfg->login_limit_keys);
    st->app.metrics = kp_metrics_new();
    if (!st->app.login_ip_limit || !st->app.login_email_limit || !st->app.signup_limit || !st->app.resend_limit ||
        !st->app.metrics)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    if (cfg->smtp_url) {
        kp_mailer_options mo = {.url = cfg->smtp_url, .from = cfg->smtp_from, .queue = MAIL_QUEUE};
        rc = kp_mailer_new(&mo, &st->app.mailer, err);
        if (rc != KP_OK)
            return rc;
    }
    rc = kp_dashboard_new(cfg, kp_web_files, &st->app.dashboard, err); /* the embedded src/web/ */
    if (rc != KP_OK)
        return rc;
    return kp_offload_new("pwhash", (int)cfg->pwhash_threads, (int)cfg->pwhash_queue, open_store, st, &st->app.pwhash,
                          err);
}

/* Checkout and portal: the Stripe client and the pool that runs its calls.
 * Both exist without STRIPE_SECRET_KEY (the routes then answer 503), so a
 * key that appears later (a secret file written after start) is used. */
static kp_status start_billing(serve_state *st, kp_err *err)
{
    const kp_config *cfg = &st->cfg;
    kp_stripe_options so = {
        .api_base = cfg->stripe_api_base,
        .api_version = cfg->stripe_api_version,
        .secrets = st->app.secrets,
        .connect_timeout_s = cfg->stripe_connect_timeout_s,
        .timeout_s = cfg->stripe_timeout_s,
        .max_retries = (int)cfg->stripe_retries,
    };
    kp_status rc = kp_stripe_new(&so, &st->app.stripe, err);
    if (rc == KP_OK)
        rc = kp_offload_new("billing", (int)cfg->billing_threads, (int)cfg->billing_queue, open_store, st,
                            &st->app.billing, err);
    if (rc == KP_OK)
        kp_offload_set_busy_what(st->app.billing, "calls to Stripe");
    if (rc == KP_OK && !kp_stripe_configured(st->app.stripe))
        kp_log_json(KP_LOG_WARN, "billing is off",
                    json_pack("{s:s}", "reason", "set STRIPE_SECRET_KEY (checkout and portal answer 503)"));
    return rc;
}

/* The LLM provider, or none (generation answers 503 llm_not_configured). */
static kp_status open_llm(serve_state *st, kp_err *err)
{
    kp_err why = {0};
    kp_status rc = kp_llm_from_config(&st->cfg, st->app.secrets, st->loop, &st->llm, &why);
    if (rc == KP_EUNAVAILABLE) {
        st->llm = NULL;
        snprintf(st->llm_missing, sizeof st->llm_missing, "%s", why.msg);
        kp_log_json(KP_LOG_WARN, "app generation is off", json_pack("{s:s}", "reason", why.msg));
        return KP_OK;
    }
    if (rc != KP_OK)
        *err = why;
    return rc;
}

static kp_status recover_versions(serve_state *st, kp_err *err)
{
    kp_store *store = NULL;
    kp_status rc = kp_cli_open_store(&st->cfg, st->db_path, &store, err);
    if (rc == KP_OK)
        rc = kp_gen_recover(store, st->blob, NULL, err);
    if (store)
        store->ops->close(store);
    return rc;
}

/* On the generation loop's thread: lowers its priority (KOUMPA_GENERATION_NICE). Thousands of streams
 * can keep it busy; when the cores are short, the API's threads then go first. */
static void lower_loop_priority(void *arg)
{
    long nice_value = *(const long *)arg;
    if (nice_value > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), (int)nice_value) != 0)
        kp_log(KP_LOG_WARN, "cannot lower the generation loop's priority: %s", strerror(errno));
}

static kp_status start_generation(serve_state *st, kp_err *err)
{
    kp_status rc = kp_loop_start(&st->loop, err);
    if (rc == KP_OK && st->cfg.generation_nice > 0 &&
        kp_loop_post(st->loop, lower_loop_priority, &st->cfg.generation_nice) != 0)
        rc = kp_err_set(err, KP_EINTERNAL, "cannot reach the generation loop");
    if (rc == KP_OK)
        rc = open_llm(st, err);
    if (rc != KP_OK)
        return rc;
    rc = kp_blob_open_configured(&st->cfg, &st->blob, err);
    if (rc == KP_OK)
        rc = recover_versions(st, err);
    if (rc != KP_OK)
        return rc;
    kp_gen_options go = {
        .cfg = &st->cfg,
        .loop = st->loop,
        .llm = st->llm,
        .llm_missing = st->llm_missing,
        .blob = st->blob,
        .metrics = st->app.metrics,
        .open_store = open_store,
        .open_store_ud = st,
    };
    rc = kp_gen_new(&go, &st->gen, err);
    st->app.gen = st->gen;
    if (rc != KP_OK || st->cfg.admission_threads == 0)
        return rc;
    /* an admission waits for the disk (its write is synced): a burst of them batches on this pool
     * while the HTTP threads go on answering */
    rc = kp_offload_new("admit", (int)st->cfg.admission_threads, (int)st->cfg.admission_queue, open_store, st,
                        &st->app.admissions, err);
    if (rc == KP_OK)
        kp_offload_set_busy_what(st->app.admissions, "generation requests");
    return rc;
}

static kp_status start_apps_host(serve_state *st, kp_err *err)
{
    kp_host_options ho = {
        .addr = st->cfg.apps_addr,
        .threads = st->cfg.threads > 1 ? (int)(st->cfg.threads + 1) / 2 : 1,
        .app = &st->app,
        .open_store = open_store,
        .open_store_ud = st,
        .dispatch = kp_apps_dispatch,
        .default_headers = kp_apps_headers_for(&st->cfg),
        .max_connections = st->cfg.max_connections,
        .header_timeout_s = (int)st->cfg.header_timeout_s,
        .body_timeout_s = (int)st->cfg.body_timeout_s,
        .error_page = kp_apps_error_page,
    };
    return kp_host_start(&ho, &st->apps_host, err);
}

static kp_status start_scheduler(serve_state *st, kp_err *err)
{
    kp_store *store = NULL;
    if (!st->cfg.daily_bonus_scheduler)
        return KP_OK;
    kp_status rc = kp_cli_open_store(&st->cfg, st->db_path, &store, err);
    if (rc == KP_OK)
        rc = kp_bonus_scheduler_start(store, &st->scheduler, err);
    if (rc != KP_OK && store)
        store->ops->close(store);
    return rc;
}

static kp_status start(serve_state *st, kp_err *err)
{
    kp_status rc = kp_config_ensure_secret(&st->cfg, err);
    if (rc == KP_OK)
        rc = kp_cli_check_backend(&st->cfg, err);
    if (rc != KP_OK)
        return rc;
    kp_cli_db_path(&st->cfg, st->db_path, sizeof st->db_path);
    if (strcmp(st->cfg.db, "dynamodb") != 0) /* DynamoDB: `koumpa migrate` made the table */
        rc = kp_sqlite_migrate(st->db_path, NULL, err);
    if (rc == KP_OK)
        rc = build_app(st, err);
    if (rc == KP_OK)
        rc = start_billing(st, err);
    if (rc == KP_OK)
        rc = start_generation(st, err);
    if (rc != KP_OK)
        return rc;
    kp_host_options ho = {
        .addr = st->cfg.addr,
        .threads = (int)st->cfg.threads,
        .app = &st->app,
        .open_store = open_store,
        .open_store_ud = st,
        .dispatch = kp_router_dispatch,
        .default_headers = kp_api_default_headers,
        .max_connections = st->cfg.max_connections,
        .header_timeout_s = (int)st->cfg.header_timeout_s,
        .body_timeout_s = (int)st->cfg.body_timeout_s,
    };
    /* the apps origin first: once the API answers (/healthz), both ports do */
    rc = start_apps_host(st, err);
    if (rc == KP_OK)
        rc = kp_host_start(&ho, &st->host, err);
    if (rc == KP_OK)
        rc = start_scheduler(st, err);
    return rc;
}

static void stop(serve_state *st)
{
    kp_gen_shutdown(st->gen);
    kp_bonus_scheduler_stop(st->scheduler);
    kp_stripe_stop(st->app.stripe); /* calls to Stripe end now: the hosts wait for their replies */
    if (st->host)
        kp_host_stop(st->host);
    if (st->apps_host)
        kp_host_stop(st->apps_host);
    kp_offload_free(st->app.pwhash); /* after the hosts: they may wait for its replies */
    kp_mailer_free(st->app.mailer);  /* after the hashing pool: sign-ups queue mail */
    kp_offload_free(st->app.billing);
    kp_offload_free(st->app.admissions); /* after the hosts, before the generation service it submits to */
    kp_stripe_free(st->app.stripe);
    if (st->llm)
        st->llm->ops->free(st->llm);
    kp_loop_stop(st->loop); /* runs what the hosts' streams posted on release */
    kp_gen_free(st->gen);
    if (st->blob)
        st->blob->ops->close(st->blob);
    kp_metrics_free(st->app.metrics);
    kp_dashboard_free(st->app.dashboard);
    kp_ratelimit_free(st->app.login_ip_limit);
    kp_ratelimit_free(st->app.login_email_limit);
    kp_ratelimit_free(st->app.signup_limit);
    kp_ratelimit_free(st->app.resend_limit);
    kp_auth_free(st->app.auth);
    kp_secrets_free(st->app.secrets);
    kp_config_free(&st->cfg);
}

/* Each in-flight generation holds two sockets (its SSE reader, its provider
 * transfer): raise the soft descriptor limit to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Blocks until SIGINT or SIGTERM (blocked in every thread, taken here). */
static int wait_for_signal(const sigset_t *set)
{
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

int kp_cli_serve(int argc, char **argv)
{
    serve_state st;
    kp_err err = {0};
    sigset_t set;
    if (kp_cli_wants_help(argc, argv)) {
        printf("usage: koumpa serve [options]\nRuns the API server until SIGINT or SIGTERM.\n\n%s",
               kp_config_flags_help());
        return 0;
    }
    memset(&st, 0, sizeof st);
    int rc = kp_cli_load_config(&st.cfg, argc, argv);
    if (rc)
        return rc;
    /* block the stop signals before any thread starts, so they all inherit it */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    /* the request log: each thread's lines written 64 KiB at a time, or after LOG_FLUSH_MS (core/log.h) */
    kp_log_buffering_start(LOG_FLUSH_MS);
    if (start(&st, &err) != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err.msg));
        stop(&st);
        kp_log_buffering_stop();
        return 1;
    }
    json_t *summary = kp_config_describe(&st.cfg);
    kp_secrets_describe(st.app.secrets, summary);
    kp_log_json(KP_LOG_INFO, "koumpa serving",
                json_pack("{s:s,s:i,s:s,s:i,s:b,s:s,s:o}", "addr", st.cfg.addr, "port", kp_host_port(st.host),
                          "apps_addr", st.cfg.apps_addr, "apps_port", kp_host_port(st.apps_host), "generation",
                          st.llm != NULL, "version", KP_VERSION, "config", summary));
    kp_log_flush(); /* the start-up summary at once */
    int sig = wait_for_signal(&set);
    kp_log_json(KP_LOG_INFO, "stopping", json_pack("{s:i}", "signal", sig));
    stop(&st);
    kp_log_buffering_stop();
    return 0;
}
