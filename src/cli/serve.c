/*
 * serve.c - `koumpa serve`: wires the process together and runs until
 * SIGINT/SIGTERM. Order: configuration, data dir + secret, migrations, the
 * shared app (token verifier, login limiter, metrics), the HTTP host (a
 * thread per core, each with its own database handle), the daily bonus
 * scheduler. Shutdown reverses it.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/router.h"
#include "auth/auth.h"
#include "cli/cli.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/ratelimit.h"
#include "domain/bonus_scheduler.h"
#include "host/evhttp_host.h"
#include "store/sqlite/sqlite_store.h"

#define LOGIN_LIMITER_KEYS 10000

typedef struct serve_state {
    kp_config cfg;
    char db_path[4096];
    kp_app app;
    kp_host *host;
    kp_bonus_scheduler *scheduler;
} serve_state;

static kp_status open_store(void *ud, kp_store **out, kp_err *err)
{
    serve_state *st = ud;
    return kp_sqlite_open(st->db_path, out, err);
}

static kp_status build_app(serve_state *st, kp_err *err)
{
    kp_config *cfg = &st->cfg;
    kp_auth_options ao = {
        .hs256_secret = cfg->jwt_secret,
        .hs256_secret_len = strlen(cfg->jwt_secret),
        .local_issuer = "koumpa",
        .issuer = cfg->jwt_issuer,
        .audience = cfg->jwt_audience,
        .jwks_url = cfg->jwks_url,
        .ttl_seconds = cfg->token_ttl_s,
    };
    st->app.cfg = cfg;
    kp_status rc = kp_auth_new(&ao, &st->app.auth, err);
    if (rc != KP_OK)
        return rc;
    st->app.login_limit = kp_ratelimit_new(cfg->login_rate_per_min, 60, LOGIN_LIMITER_KEYS);
    st->app.metrics = kp_metrics_new();
    if (!st->app.login_limit || !st->app.metrics)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    return KP_OK;
}

static kp_status start_scheduler(serve_state *st, kp_err *err)
{
    kp_store *store = NULL;
    if (!st->cfg.daily_bonus_scheduler)
        return KP_OK;
    kp_status rc = kp_sqlite_open(st->db_path, &store, err);
    if (rc == KP_OK)
        rc = kp_bonus_scheduler_start(store, &st->scheduler, err);
    if (rc != KP_OK && store)
        store->ops->close(store);
    return rc;
}

static kp_status start(serve_state *st, kp_err *err)
{
    kp_status rc = kp_config_ensure_secret(&st->cfg, err);
    if (rc != KP_OK)
        return rc;
    kp_cli_db_path(&st->cfg, st->db_path, sizeof st->db_path);
    rc = kp_sqlite_migrate(st->db_path, NULL, err);
    if (rc == KP_OK)
        rc = build_app(st, err);
    if (rc != KP_OK)
        return rc;
    kp_host_options ho = {
        .addr = st->cfg.addr,
        .threads = (int)st->cfg.threads,
        .app = &st->app,
        .open_store = open_store,
        .open_store_ud = st,
        .dispatch = kp_router_dispatch,
    };
    rc = kp_host_start(&ho, &st->host, err);
    if (rc == KP_OK)
        rc = start_scheduler(st, err);
    return rc;
}

static void stop(serve_state *st)
{
    kp_bonus_scheduler_stop(st->scheduler);
    if (st->host)
        kp_host_stop(st->host);
    kp_metrics_free(st->app.metrics);
    kp_ratelimit_free(st->app.login_limit);
    kp_auth_free(st->app.auth);
    kp_config_free(&st->cfg);
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
    if (start(&st, &err) != KP_OK) {
        kp_log_json(KP_LOG_ERROR, "cannot start", json_pack("{s:s}", "error", err.msg));
        stop(&st);
        return 1;
    }
    kp_log_json(KP_LOG_INFO, "koumpa serving",
                json_pack("{s:s,s:i,s:s,s:o}", "addr", st.cfg.addr, "port", kp_host_port(st.host), "version",
                          KP_VERSION, "config", kp_config_describe(&st.cfg)));
    int sig = wait_for_signal(&set);
    kp_log_json(KP_LOG_INFO, "stopping", json_pack("{s:i}", "signal", sig));
    stop(&st);
    return 0;
}
