/*
 * main.c - the koumpa binary: `koumpa <command> [options]`.
 * Commands are in serve.c (the server) and commands.c (everything else).
 * main() initialises libsodium once for all of them.
 */
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/curl_defaults.h"
#include "core/log.h"

static const char usage[] = "usage: koumpa <command> [options]\n"
                            "\n"
                            "commands:\n"
                            "  serve        run the API server (and the daily bonus scheduler)\n"
                            "  migrate      create or upgrade the database schema\n"
                            "  daily-bonus  grant today's (or --date's) daily bonus to every user\n"
                            "  admin        grant or revoke admin, set a user's plan\n"
                            "  user         create or show a user\n"
                            "  version      print the version\n"
                            "\n"
                            "Run `koumpa <command> --help` for a command's options.\n";

int kp_cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("koumpa: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see koumpa --help)\n", stderr);
    return KP_EXIT_USAGE;
}

int kp_cli_wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}

int kp_cli_load_config(kp_config *cfg, int argc, char **argv)
{
    kp_err err = {0};
    if (kp_config_load(cfg, argc, argv, &err) != KP_OK) {
        fprintf(stderr, "koumpa: %s\n", err.msg);
        return err.status == KP_EINVAL ? KP_EXIT_USAGE : 1;
    }
    if (kp_curl_defaults_set_ca_bundle(cfg->ca_bundle, &err) != KP_OK) {
        fprintf(stderr, "koumpa: %s\n", err.msg);
        kp_config_free(cfg);
        return KP_EXIT_USAGE;
    }
    kp_log_level level = KP_LOG_INFO;
    kp_log_parse_level(cfg->log_level, &level);
    kp_log_set_level(level);
    return 0;
}

void kp_cli_db_path(const kp_config *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s/koumpa.db", cfg->data_dir);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return kp_cli_usage_error("missing command");
    /* Once, before any command: every one may hash a password, make an id or
     * a secret (libsodium's random source and its fastest implementations). */
    if (sodium_init() < 0) {
        fputs("koumpa: libsodium failed to initialise\n", stderr);
        return 1;
    }
    const char *cmd = argv[1];
    int sub_argc = argc - 2;
    char **sub_argv = argv + 2;
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return kp_cli_serve(sub_argc, sub_argv);
    if (strcmp(cmd, "migrate") == 0)
        return kp_cli_migrate(sub_argc, sub_argv);
    if (strcmp(cmd, "daily-bonus") == 0)
        return kp_cli_daily_bonus(sub_argc, sub_argv);
    if (strcmp(cmd, "admin") == 0)
        return kp_cli_admin(sub_argc, sub_argv);
    if (strcmp(cmd, "user") == 0)
        return kp_cli_user(sub_argc, sub_argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (kp_cli_wants_help(sub_argc, sub_argv)) {
            puts("usage: koumpa version\nPrints the version.");
            return 0;
        }
        if (sub_argc > 0)
            return kp_cli_usage_error("version takes no arguments");
        printf("koumpa %s\n", KP_VERSION);
        return 0;
    }
    return kp_cli_usage_error("unknown command '%s'", cmd);
}
