/*
 * commands.c - the one-shot subcommands: migrate, daily-bonus (with the
 * recovery of generations whose lease ran out), admin, user.
 * Each opens the database, does one thing through the domain layer (the same
 * code the API uses), prints the outcome and exits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob/blob_select.h"
#include "cli/cli.h"
#include "core/id.h"
#include "domain/accounts.h"
#include "domain/credits.h"
#include "gen/generator.h"
#include "store/dynamodb/ddb_store.h"
#include "store/sqlite/sqlite_store.h"

/* Positional arguments come before options: returns how many there are. */
static int count_positionals(int argc, char **argv)
{
    int n = 0;
    while (n < argc && argv[n][0] != '-')
        n++;
    return n;
}

/* Loads config (from argv[first..]) and opens the migrated database. */
static int open_db(int argc, char **argv, kp_config *cfg, kp_store **store)
{
    char path[4096];
    kp_err err = {0};
    int rc = kp_cli_load_config(cfg, argc, argv);
    if (rc)
        return rc;
    kp_cli_db_path(cfg, path, sizeof path);
    if (kp_cli_check_backend(cfg, &err) != KP_OK || kp_cli_open_store(cfg, path, store, &err) != KP_OK) {
        fprintf(stderr, "koumpa: %s\n", err.msg);
        kp_config_free(cfg);
        return 1;
    }
    return 0;
}

static int fail(kp_config *cfg, kp_store *store, const kp_err *err)
{
    fprintf(stderr, "koumpa: %s\n", err->msg);
    if (store)
        store->ops->close(store);
    kp_config_free(cfg);
    return 1;
}

static int done(kp_config *cfg, kp_store *store)
{
    if (store)
        store->ops->close(store);
    kp_config_free(cfg);
    return 0;
}

int kp_cli_migrate(int argc, char **argv)
{
    kp_config cfg;
    kp_err err = {0};
    char path[4096];
    int applied = 0;
    if (kp_cli_wants_help(argc, argv)) {
        printf("usage: koumpa migrate [options]\nCreates or upgrades the database in the data directory\n"
               "(KOUMPA_DB=dynamodb: creates the DynamoDB table if missing and seeds the plans).\n\n%s",
               kp_config_flags_help());
        return 0;
    }
    int rc = kp_cli_load_config(&cfg, argc, argv);
    if (rc)
        return rc;
    if (kp_config_ensure_secret(&cfg, &err) != KP_OK)
        return fail(&cfg, NULL, &err);
    if (strcmp(cfg.db, "dynamodb") == 0) {
        int created = 0;
        if (kp_ddb_store_migrate(cfg.dynamodb_table_prefix, &created, &err) != KP_OK)
            return fail(&cfg, NULL, &err);
        printf("migrated DynamoDB table %skoumpa: %s, plans seeded\n", cfg.dynamodb_table_prefix,
               created ? "created" : "present");
        return done(&cfg, NULL);
    }
    kp_cli_db_path(&cfg, path, sizeof path);
    if (kp_sqlite_migrate(path, &applied, &err) != KP_OK)
        return fail(&cfg, NULL, &err);
    printf("migrated %s: %d migration%s applied\n", path, applied, applied == 1 ? "" : "s");
    return done(&cfg, NULL);
}

/* The job's second duty: versions whose lease ran out (their instance
 * stopped) are failed and refunded, as every serve does periodically; safe
 * beside running servers (gen/generator.h kp_gen_recover). */
static kp_status recover_generations(const kp_config *cfg, kp_store *store, kp_err *err)
{
    kp_blob *blob = NULL;
    size_t repaired = 0;
    kp_status rc = kp_blob_open_configured(cfg, &blob, err); /* KOUMPA_STORAGE */
    if (rc == KP_OK)
        rc = kp_gen_recover(store, blob, &repaired, err);
    if (blob)
        blob->ops->close(blob);
    if (rc == KP_OK)
        printf("recovery: %zu version%s ended or settled\n", repaired, repaired == 1 ? "" : "s");
    return rc;
}

int kp_cli_daily_bonus(int argc, char **argv)
{
    kp_config cfg;
    kp_store *store = NULL;
    kp_err err = {0};
    char date[11];
    size_t granted = 0;
    if (kp_cli_wants_help(argc, argv)) {
        printf("usage: koumpa daily-bonus [--date YYYY-MM-DD] [options]\n"
               "Sets every user's daily credits to their plan's daily bonus, once per user and UTC date;\n"
               "then fails and refunds generations whose lease ran out (their server stopped).\n\n%s",
               kp_config_flags_help());
        return 0;
    }
    kp_date_utc_today(date);
    if (argc >= 1 && strncmp(argv[0], "--date", 6) == 0) {
        const char *v = argv[0][6] == '=' ? argv[0] + 7 : (argc >= 2 ? argv[1] : NULL);
        if (!v || !kp_credits_valid_date(v))
            return kp_cli_usage_error("--date needs a date as YYYY-MM-DD");
        snprintf(date, sizeof date, "%s", v);
        int used = argv[0][6] == '=' ? 1 : 2;
        argc -= used;
        argv += used;
    }
    int rc = open_db(argc, argv, &cfg, &store);
    if (rc)
        return rc;
    if (kp_credits_daily_bonus(store, date, 1000, &granted, &err) != KP_OK)
        return fail(&cfg, store, &err);
    printf("daily bonus for %s: %zu user%s granted\n", date, granted, granted == 1 ? "" : "s");
    if (recover_generations(&cfg, store, &err) != KP_OK)
        return fail(&cfg, store, &err);
    return done(&cfg, store);
}

static const char admin_usage[] = "usage: koumpa admin grant EMAIL | revoke EMAIL | set-plan EMAIL PLAN_ID [options]\n";

int kp_cli_admin(int argc, char **argv)
{
    kp_config cfg;
    kp_store *store = NULL;
    kp_err err = {0};
    kp_user u;
    if (kp_cli_wants_help(argc, argv)) {
        printf("%sGrants or revokes admin rights, or moves a user to a plan.\n\n%s", admin_usage,
               kp_config_flags_help());
        return 0;
    }
    int npos = count_positionals(argc, argv);
    if (npos < 1)
        return kp_cli_usage_error("admin needs an action: grant, revoke or set-plan");
    const char *action = argv[0];
    int want = strcmp(action, "set-plan") == 0 ? 3 : 2;
    if (strcmp(action, "grant") != 0 && strcmp(action, "revoke") != 0 && want != 3)
        return kp_cli_usage_error("unknown admin action '%s'", action);
    if (npos != want)
        return kp_cli_usage_error("admin %s needs %s", action, want == 3 ? "EMAIL PLAN_ID" : "EMAIL");
    int rc = open_db(argc - npos, argv + npos, &cfg, &store);
    if (rc)
        return rc;
    if (want == 3) {
        char norm[KP_EMAIL_MAX];
        if (kp_accounts_normalise_email(argv[1], norm, &err) != KP_OK ||
            store->ops->user_get_by_email(store, norm, &u, &err) != KP_OK ||
            kp_accounts_set_plan(store, u.id, argv[2], &err) != KP_OK)
            return fail(&cfg, store, &err);
        printf("%s is now on plan %s\n", norm, argv[2]);
    } else {
        int grant = strcmp(action, "grant") == 0;
        if (kp_accounts_set_admin(store, argv[1], grant, &u, &err) != KP_OK)
            return fail(&cfg, store, &err);
        printf("%s is %s an admin\n", u.email, grant ? "now" : "no longer");
    }
    return done(&cfg, store);
}

/* Reads one line (the password) from stdin into out; returns 0 or -1. */
static int read_password(char *out, size_t n)
{
    if (!fgets(out, (int)n, stdin))
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static void print_user(kp_store *store, const kp_config *cfg, const kp_user *u)
{
    kp_balance bal = {0};
    kp_err err = {0};
    store->ops->balance_get(store, u->id, &bal, &err);
    printf("id:       %s\nemail:    %s\nadmin:    %s\nplan:     %s\ncredits:  %lld daily + %lld monthly\n", u->id,
           u->email, kp_accounts_is_admin(cfg, u) ? "yes" : "no", u->plan_id, (long long)bal.daily,
           (long long)bal.monthly);
}

static const char user_usage[] = "usage: koumpa user create EMAIL (password on stdin) | show EMAIL [options]\n";

int kp_cli_user(int argc, char **argv)
{
    kp_config cfg;
    kp_store *store = NULL;
    kp_err err = {0};
    kp_user u;
    char password[KP_PASSWORD_MAX + 2];
    if (kp_cli_wants_help(argc, argv)) {
        printf("%sCreates a local account (reading its password from the first line of standard input), or shows "
               "one.\n\n%s",
               user_usage, kp_config_flags_help());
        return 0;
    }
    int npos = count_positionals(argc, argv);
    if (npos < 1)
        return kp_cli_usage_error("user needs an action: create or show");
    const char *action = argv[0];
    if (strcmp(action, "create") != 0 && strcmp(action, "show") != 0)
        return kp_cli_usage_error("unknown user action '%s'", action);
    if (npos != 2)
        return kp_cli_usage_error("user %s needs EMAIL", action);
    int rc = open_db(argc - npos, argv + npos, &cfg, &store);
    if (rc)
        return rc;
    if (strcmp(action, "create") == 0) {
        if (read_password(password, sizeof password) != 0) {
            kp_err_set(&err, KP_EINVAL, "expected the password on standard input");
            return fail(&cfg, store, &err);
        }
        rc = kp_accounts_signup(store, &cfg, argv[1], password, &u, &err);
        memset(password, 0, sizeof password);
        if (rc != KP_OK)
            return fail(&cfg, store, &err);
    } else {
        char norm[KP_EMAIL_MAX];
        if (kp_accounts_normalise_email(argv[1], norm, &err) != KP_OK ||
            store->ops->user_get_by_email(store, norm, &u, &err) != KP_OK) {
            if (err.status == KP_ENOTFOUND)
                kp_err_set(&err, KP_ENOTFOUND, "no user with email %s", argv[1]);
            return fail(&cfg, store, &err);
        }
    }
    print_user(store, &cfg, &u);
    return done(&cfg, store);
}
