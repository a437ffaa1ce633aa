/* config/cli.h - the command line shared by marketo-gateway's main().
 *
 *   marketo-gateway [--config FILE] [--check-config] [--help] [--version]
 *
 * --check-config loads and validates the settings, prints the effective
 * values with secrets masked, and exits 0 (or 1 with the error).
 */
#ifndef GW_CLI_H
#define GW_CLI_H

#include "config/config.h"

/* Parses argv and loads cfg (defaults < file < environment), validating it.
 * Returns 1 when the caller should go on and serve with cfg; 0 when the
 * program should exit now with *exit_code (help, version, check-config, or
 * an error already printed to stderr naming the key). */
int gw_cli_load(int argc, char **argv, gw_config *cfg, int *exit_code);

/* gw_cli_load() writing to out (help, version, --check-config) and err
 * (errors) instead of stdout and stderr; for tests. */
int gw_cli_run(int argc, char **argv, gw_config *cfg, int *exit_code, FILE *out, FILE *err);

#endif /* GW_CLI_H */
