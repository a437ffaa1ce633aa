/* config/cli.c - marketo-gateway's command line: options, then the settings.
 *
 * Exit codes: 0 after --help, --version or a good --check-config; 1 for a
 * settings error (one line on stderr naming the key); 2 for a usage error.
 */
#include "config/cli.h"

#include <string.h>

#ifndef GW_VERSION
#define GW_VERSION "unknown"
#endif

#define PROG "marketo-gateway"

static void usage(FILE *out)
{
    fputs("Usage: " PROG " [--config FILE] [--check-config] [--help] [--version]\n"
          "\n"
          "A REST/JSON gateway in front of Marketo's SOAP API.\n"
          "\n"
          "Options:\n"
          "  --config FILE    read settings from the INI file FILE\n"
          "  --check-config   load and validate the settings, print them (secrets masked), exit\n"
          "  --help           show this help and exit\n"
          "  --version        show the version and exit\n"
          "\n"
          "Settings: built-in defaults < the INI file < environment variables SECTION_KEY\n"
          "(e.g. [marketo] soap_endpoint -> MARKETO_SOAP_ENDPOINT). Every key, its default\n"
          "and range are listed in config/gateway.example.ini.\n",
          out);
}

/* Prints one usage error line and sets exit code 2. Returns 0 (exit now). */
static int usage_error(FILE *err, int *exit_code, const char *what, const char *arg)
{
    fprintf(err, PROG ": %s '%s' (see " PROG " --help)\n", what, arg);
    *exit_code = 2;
    return 0;
}

int gw_cli_run(int argc, char **argv, gw_config *cfg, int *exit_code, FILE *out, FILE *err)
{
    const char *path = NULL;
    bool check = false, help = false, version = false;
    char msg[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            if (i + 1 >= argc)
                return usage_error(err, exit_code, "option needs a file name:", a);
            path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
            if (*path == '\0')
                return usage_error(err, exit_code, "option needs a file name:", a);
        } else if (strcmp(a, "--check-config") == 0) {
            check = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = true;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            version = true;
        } else if (a[0] == '-') {
            return usage_error(err, exit_code, "unknown option", a);
        } else {
            return usage_error(err, exit_code, "unexpected argument", a);
        }
    }

    if (help) {
        usage(out);
        *exit_code = 0;
        return 0;
    }
    if (version) {
        fputs(PROG " " GW_VERSION "\n", out);
        *exit_code = 0;
        return 0;
    }

    msg[0] = '\0';
    if (gw_config_load(cfg, path, msg, sizeof msg) < 0 ||
        gw_config_validate(cfg, msg, sizeof msg) < 0) {
        fprintf(err, PROG ": %s\n", msg);
        gw_config_free(cfg);
        *exit_code = 1;
        return 0;
    }
    if (check) {
        gw_config_print(cfg, out);
        fflush(out);
        gw_config_free(cfg);
        *exit_code = 0;
        return 0;
    }
    *exit_code = 0;
    return 1;
}

int gw_cli_load(int argc, char **argv, gw_config *cfg, int *exit_code)
{
    return gw_cli_run(argc, argv, cfg, exit_code, stdout, stderr);
}
