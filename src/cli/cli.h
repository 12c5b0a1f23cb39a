/*
 * cli.h - the koumpa command's subcommands. main.c picks one by name; each
 * returns the process exit status: 0 success, 1 failure, 2 wrong usage (with a
 * one-line reason on stderr).
 */
#ifndef KP_CLI_H
#define KP_CLI_H

#include "core/config.h"
#include "store/store.h"

#define KP_VERSION "0.1.0"
#define KP_EXIT_USAGE 2

int kp_cli_serve(int argc, char **argv);
int kp_cli_migrate(int argc, char **argv);
int kp_cli_daily_bonus(int argc, char **argv);
int kp_cli_admin(int argc, char **argv);
int kp_cli_user(int argc, char **argv);

/* Prints "koumpa: <msg>" and returns KP_EXIT_USAGE. */
int kp_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True when argv holds -h or --help. */
int kp_cli_wants_help(int argc, char **argv);
/* Loads the configuration from the environment and argv; on error prints it. 0 or an exit status. */
int kp_cli_load_config(kp_config *cfg, int argc, char **argv);
/* {data_dir}/koumpa.db into out. */
void kp_cli_db_path(const kp_config *cfg, char *out, size_t n);
/* KOUMPA_DB=dynamodb while that backend is incomplete: KP_EUNAVAILABLE naming the missing operation (backend.c). */
kp_status kp_cli_check_backend(const kp_config *cfg, kp_err *err);
/* Opens the store KOUMPA_DB names: SQLite at db_path (migrated already), or the DynamoDB table
 * {KOUMPA_DYNAMODB_TABLE_PREFIX}koumpa (made by `koumpa migrate`). The caller closes *out (backend.c). */
kp_status kp_cli_open_store(const kp_config *cfg, const char *db_path, kp_store **out, kp_err *err);

#endif
