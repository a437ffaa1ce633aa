/* tests/config/test_config.c - settings table, INI + environment loading,
 * cross-key validation, --check-config printing, the example file and the CLI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ini.h>

#include "config/cli.h"
#include "config/config.h"

/* ---- helpers ------------------------------------------------------------ */

/* Unsets every SECTION_KEY variable of the table so the host environment
 * cannot leak into a test. */
static void clear_env(void)
{
    char name[128];
    for (size_t i = 0; i < gw_config_key_count(); i++) {
        snprintf(name, sizeof name, "%s_%s", gw_config_key_section(i), gw_config_key_name(i));
        for (char *p = name; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Writes text to a new temporary file; path receives its name. */
static void write_tmp(const char *text, char *path, size_t pathlen)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, pathlen, "%s/gwcfgXXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* Loads text as an INI file. Returns gw_config_load's result; err gets the message. */
static int load_text(gw_config *cfg, const char *text, char *err, size_t errlen)
{
    char path[256];
    write_tmp(text, path, sizeof path);
    err[0] = '\0';
    int rc = gw_config_load(cfg, path, err, errlen);
    unlink(path);
    return rc;
}

/* Loads text and expects failure with a message holding every given
 * substring (NULL-terminated list). */
static void expect_fail(const char *text, ...)
{
    gw_config cfg = {0};
    char err[512];
    assert_int_equal(load_text(&cfg, text, err, sizeof err), -1);
    va_list ap;
    va_start(ap, text);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
        if (!strstr(err, s))
            fail_msg("message '%s' lacks '%s'", err, s);
    }
    va_end(ap);
    gw_config_free(&cfg);
}

static char *print_to_string(const gw_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    gw_config_print(cfg, f);
    fclose(f);
    return buf;
}

/* ---- defaults, INI, environment ---------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[256] = "";
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_string_equal(cfg.soap_endpoint, "");
    assert_string_equal(cfg.user_id, "");
    assert_string_equal(cfg.encryption_key, "");
    assert_int_equal(cfg.timeout_ms, 30000);
    assert_int_equal(cfg.max_response_bytes, 64 * 1024 * 1024);
    assert_int_equal(cfg.retry_max_attempts, 3);
    assert_true(cfg.tls_verify);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.metrics_listen, "");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg.threads, ncpu < 1 ? 1 : ncpu);
    assert_int_equal(cfg.max_body_bytes, 8 * 1024 * 1024);
    assert_int_equal(cfg.max_body_total_bytes, 32 * 1024 * 1024);
    assert_int_equal(cfg.max_keys, 1000);
    assert_int_equal(cfg.max_page_size, 1000);
    assert_int_equal(cfg.default_page_size, 100);
    assert_int_equal(cfg.sync_batch_size, 300);
    assert_int_equal(cfg.max_sync_leads, 10000);
    assert_int_equal(cfg.connection_limit, 1024);
    assert_int_equal(cfg.idle_timeout_s, 30);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.body_timeout_ms, 60000);
    assert_int_equal(cfg.max_connections_per_client, 0);
    assert_int_equal(cfg.drain_timeout_ms, 20000);
    assert_int_equal(cfg.request_timeout_ms, 60000);
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.api_keys, "");
    assert_false(cfg.auth_disabled);
    assert_string_equal(cfg.cursor_secret, "");
    assert_int_equal(cfg.cursor_ttl_seconds, 3600);
    assert_string_equal(cfg.redis_url, "");
    assert_string_equal(cfg.redis_password, "");
    assert_string_equal(cfg.redis_key_prefix, "mktgw:");
    assert_int_equal(cfg.redis_connect_timeout_ms, 500);
    assert_int_equal(cfg.redis_command_timeout_ms, 500);
    assert_int_equal(cfg.redis_invalidation_wait_ms, 5000);
    assert_int_equal(cfg.cache_ttl_seconds, 300);
    assert_int_equal(cfg.cache_negative_ttl_seconds, 30);
    assert_int_equal(cfg.cache_max_entries, 100000);
    assert_int_equal(cfg.rl_calls_per_window, 100);
    assert_int_equal(cfg.rl_window_seconds, 20);
    assert_int_equal(cfg.rl_max_concurrent, 10);
    assert_int_equal(cfg.rl_daily_quota, 10000);
    assert_int_equal(cfg.rl_queue_timeout_ms, 10000);
    assert_float_equal(cfg.rl_fallback_share, 1.0 / 3.0, 1e-12);
    assert_string_equal(cfg.cors_allowed_origins, "");
    gw_config_free(&cfg);
    /* free leaves the struct zeroed, and a second free is harmless */
    assert_null(cfg.listen);
    gw_config_free(&cfg);
}

static void test_ini_overrides(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[256];
    int rc = load_text(&cfg,
                       "; comment\n"
                       "# another\n"
                       "[marketo]\n"
                       "soap_endpoint = https://123-ABC-456.mktoapi.com/soap/mktows/2_3\n"
                       "user_id = bigcorp1_461839624B16E06BA2D663\n"
                       "timeout_ms = 1500\n"
                       "tls_verify = off\n"
                       "[gateway]\n"
                       "listen = 0.0.0.0:0\n"
                       "threads = 4\n"
                       "log_level = debug\n"
                       "[ratelimit]\n"
                       "calls_per_window = 50\n"
                       "fallback_share = 0.5\n"
                       "[cors]\n"
                       "allowed_origins = https://app.example.com, http://localhost:3000\n",
                       err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.soap_endpoint, "https://123-ABC-456.mktoapi.com/soap/mktows/2_3");
    assert_string_equal(cfg.user_id, "bigcorp1_461839624B16E06BA2D663");
    assert_int_equal(cfg.timeout_ms, 1500);
    assert_false(cfg.tls_verify);
    assert_string_equal(cfg.listen, "0.0.0.0:0");
    assert_int_equal(cfg.threads, 4);
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.rl_calls_per_window, 50);
    assert_float_equal(cfg.rl_fallback_share, 0.5, 1e-12);
    assert_string_equal(cfg.cors_allowed_origins, "https://app.example.com, http://localhost:3000");
    /* untouched keys keep their defaults */
    assert_int_equal(cfg.rl_window_seconds, 20);
    assert_int_equal(cfg.cache_ttl_seconds, 300);
    gw_config_free(&cfg);
}

static void test_long_line(void **state)
{
    (void)state;
    /* a line far longer than inih's default 200 bytes must not be cut */
    char keys[3000], text[3200];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(keys + o, sizeof keys - o, "%skey-%02d-abcdefghijklmnop",
                              i ? "," : "", i);
    snprintf(text, sizeof text, "[auth]\napi_keys = %s\n", keys);
    gw_config cfg = {0};
    char err[256];
    assert_int_equal(load_text(&cfg, text, err, sizeof err), 0);
    assert_string_equal(cfg.api_keys, keys);
    gw_config_free(&cfg);
}

static void test_env_overrides_ini(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[256];
    setenv("RATELIMIT_CALLS_PER_WINDOW", "7", 1);
    setenv("MARKETO_SOAP_ENDPOINT", "http://127.0.0.1:9/soap/mktows/2_3", 1);
    setenv("AUTH_DISABLED", "YES", 1);
    setenv("REDIS_PASSWORD", "pw-from-env", 1);
    setenv("CACHE_NEGATIVE_TTL_SECONDS", "5", 1);
    int rc = load_text(&cfg,
                       "[ratelimit]\ncalls_per_window = 50\nwindow_seconds = 30\n"
                       "[marketo]\nsoap_endpoint = https://file.example.com/soap\n",
                       err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.rl_calls_per_window, 7);
    assert_int_equal(cfg.rl_window_seconds, 30); /* file value, no env */
    assert_string_equal(cfg.soap_endpoint, "http://127.0.0.1:9/soap/mktows/2_3");
    assert_true(cfg.auth_disabled);
    assert_string_equal(cfg.redis_password, "pw-from-env");
    assert_int_equal(cfg.cache_negative_ttl_seconds, 5);
    gw_config_free(&cfg);

    /* environment without any file */
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.rl_calls_per_window, 7);
    gw_config_free(&cfg);
}

static void test_env_bad_value_names_variable(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[512] = "";
    setenv("RATELIMIT_CALLS_PER_WINDOW", "abc", 1);
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "RATELIMIT_CALLS_PER_WINDOW"));
    assert_non_null(strstr(err, "[ratelimit] calls_per_window"));
    assert_non_null(strstr(err, "'abc' is not an integer"));
    /* the failed load leaves the struct freed and zeroed */
    assert_null(cfg.listen);
    gw_config_free(&cfg);

    setenv("RATELIMIT_CALLS_PER_WINDOW", "", 1);
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "is not an integer"));
    unsetenv("RATELIMIT_CALLS_PER_WINDOW");

    setenv("GATEWAY_LISTEN", "localhost", 1);
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "GATEWAY_LISTEN"));
    assert_non_null(strstr(err, "host:port"));
    gw_config_free(&cfg);
}

/* ---- bad values --------------------------------------------------------- */

static void test_unknown_key(void **state)
{
    (void)state;
    expect_fail("[gateway]\nlisten = 127.0.0.1:1\n\nbogus = 1\n", ":4: unknown key [gateway] bogus",
                "config ", NULL);
    expect_fail("[nosuch]\nlisten = 1\n", ":2: unknown key [nosuch] listen", NULL);
    expect_fail("listen = 127.0.0.1:1\n", "unknown key [] listen", NULL);
    /* the first of several errors is reported */
    expect_fail("[gateway]\nthreads = x\nbogus = 1\n", ":2:", "[gateway] threads", NULL);
}

static void test_syntax_error(void **state)
{
    (void)state;
    expect_fail("[gateway]\nthreads = 2\nthis line has no equals sign\n", ":3:", "syntax error",
                NULL);
    expect_fail("[gateway\n", ":1:", NULL);
}

static void test_missing_file(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[512];
    assert_int_equal(gw_config_load(&cfg, "/nonexistent/dir/gw.ini", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/dir/gw.ini"));
    assert_non_null(strstr(err, "cannot open"));
}

static void test_bad_number(void **state)
{
    (void)state;
    expect_fail("[ratelimit]\ncalls_per_window = abc\n",
                "[ratelimit] calls_per_window: 'abc' is not an integer", NULL);
    expect_fail("[ratelimit]\ncalls_per_window = 12abc\n", "'12abc' is not an integer", NULL);
    expect_fail("[ratelimit]\ncalls_per_window = 1.5\n", "is not an integer", NULL);
    expect_fail("[ratelimit]\ncalls_per_window = 0x10\n", "is not an integer", NULL);
    expect_fail("[ratelimit]\ncalls_per_window =\n", "[ratelimit] calls_per_window", NULL);
    expect_fail("[ratelimit]\nfallback_share = half\n", "[ratelimit] fallback_share",
                "is not a number", NULL);
    expect_fail("[ratelimit]\nfallback_share = nan\n", "is not a number", NULL);
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_fail("[ratelimit]\ncalls_per_window = 0\n", "[ratelimit] calls_per_window",
                "must be between 1 and 100000", NULL);
    expect_fail("[ratelimit]\ncalls_per_window = 100001\n", "must be between 1 and 100000", NULL);
    expect_fail("[ratelimit]\ncalls_per_window = 99999999999999999999999\n",
                "must be between 1 and 100000", NULL);
    expect_fail("[gateway]\nsync_batch_size = 301\n", "[gateway] sync_batch_size",
                "must be between 1 and 300", NULL);
    expect_fail("[gateway]\nthreads = -1\n", "[gateway] threads", "between 0 and 256", NULL);
    expect_fail("[gateway]\nmax_keys = 100001\n", "[gateway] max_keys", NULL);
    expect_fail("[ratelimit]\nfallback_share = 0\n", "[ratelimit] fallback_share",
                "greater than 0", NULL);
    expect_fail("[ratelimit]\nfallback_share = 1.01\n", "at most 1", NULL);

    gw_config cfg = {0};
    char err[256];
    assert_int_equal(load_text(&cfg, "[ratelimit]\nfallback_share = 1\ncalls_per_window = 100000\n"
                                     "[gateway]\nsync_batch_size = 1\n",
                               err, sizeof err),
                     0);
    assert_float_equal(cfg.rl_fallback_share, 1.0, 0);
    assert_int_equal(cfg.rl_calls_per_window, 100000);
    gw_config_free(&cfg);
}

static void test_bad_bool(void **state)
{
    (void)state;
    expect_fail("[auth]\ndisabled = maybe\n", "[auth] disabled", "'maybe' is not a boolean", NULL);
    expect_fail("[marketo]\ntls_verify = 2\n", "[marketo] tls_verify", "is not a boolean", NULL);
    const char *good[] = {"true", "FALSE", "1", "0", "yes", "No", "on", "off"};
    const bool want[] = {true, false, true, false, true, false, true, false};
    for (size_t i = 0; i < 8; i++) {
        char text[64], err[256];
        gw_config cfg = {0};
        snprintf(text, sizeof text, "[marketo]\ntls_verify = %s\n", good[i]);
        assert_int_equal(load_text(&cfg, text, err, sizeof err), 0);
        assert_int_equal(cfg.tls_verify, want[i]);
        gw_config_free(&cfg);
    }
}

static void test_listen(void **state)
{
    (void)state;
    expect_fail("[gateway]\nlisten = localhost\n", "[gateway] listen", "'localhost'", "host:port",
                NULL);
    expect_fail("[gateway]\nlisten = 127.0.0.1:65536\n", "[gateway] listen", NULL);
    expect_fail("[gateway]\nlisten = :8080\n", "[gateway] listen", NULL);
    expect_fail("[gateway]\nlisten = 127.0.0.1:\n", "[gateway] listen", NULL);
    expect_fail("[gateway]\nlisten = 127.0.0.1:80x\n", "[gateway] listen", NULL);
    expect_fail("[gateway]\nlisten = bad host:80\n", "[gateway] listen", NULL);
    expect_fail("[gateway]\nmetrics_listen = 9090\n", "[gateway] metrics_listen", "'9090'", NULL);

    char host[64];
    uint16_t port = 1;
    assert_int_equal(gw_config_split_listen("127.0.0.1:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 0);
    assert_int_equal(gw_config_split_listen("[::1]:65535", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    assert_int_equal(gw_config_split_listen("gw.internal:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "gw.internal");
    assert_int_equal(port, 8080);
    assert_int_equal(gw_config_split_listen("gw.internal:8080", host, 4, &port), -1);
    assert_int_equal(gw_config_split_listen("[::1]8080", host, sizeof host, &port), -1);
}

static void test_bad_urls(void **state)
{
    (void)state;
    expect_fail("[marketo]\nsoap_endpoint = ftp://x.example.com/soap\n", "[marketo] soap_endpoint",
                "http:// or https://", NULL);
    expect_fail("[marketo]\nsoap_endpoint = https://\n", "[marketo] soap_endpoint", NULL);
    expect_fail("[marketo]\nsoap_endpoint = mktoapi.com/soap\n", "[marketo] soap_endpoint", NULL);

    /* a malformed Redis URL is reported without echoing it (it may hold a password) */
    const char *bad_redis[] = {
        "http://localhost:6379", "redis://", "redis://:s3cr3t-pw@host:notaport",
        "redis://host:6379/x", "redis://s3cr3t-pw@host:6379", "redis://host:0",
    };
    for (size_t i = 0; i < sizeof bad_redis / sizeof bad_redis[0]; i++) {
        gw_config cfg = {0};
        char text[256], err[512];
        snprintf(text, sizeof text, "[redis]\nurl = %s\n", bad_redis[i]);
        assert_int_equal(load_text(&cfg, text, err, sizeof err), -1);
        assert_non_null(strstr(err, "[redis] url"));
        assert_non_null(strstr(err, "redis://[:password@]host[:port][/db]"));
        assert_null(strstr(err, "s3cr3t-pw"));
        char quoted[128];
        snprintf(quoted, sizeof quoted, "'%s", bad_redis[i]);
        assert_null(strstr(err, quoted));
    }
    expect_fail("[cors]\nallowed_origins = app.example.com\n", "[cors] allowed_origins", NULL);
    expect_fail("[cors]\nallowed_origins = https://a.example.com/path\n", "[cors] allowed_origins",
                NULL);
    expect_fail("[gateway]\nlog_level = verbose\n", "[gateway] log_level",
                "debug, info, warn, error", NULL);
    expect_fail("[redis]\nkey_prefix = has space\n", "[redis] key_prefix", NULL);

    gw_config cfg = {0};
    char err[256];
    assert_int_equal(load_text(&cfg, "[cors]\nallowed_origins = *\n", err, sizeof err), 0);
    gw_config_free(&cfg);
}

static void test_redis_addr(void **state)
{
    (void)state;
    gw_config cfg = {0};
    gw_redis_addr a;
    char err[256];
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(gw_config_redis_addr(&cfg, &a), 1); /* none configured */
    gw_config_free(&cfg);

    assert_int_equal(load_text(&cfg, "[redis]\nurl = redis://:pa@ss@redis.svc:6380/2\n", err,
                               sizeof err),
                     0);
    assert_int_equal(gw_config_redis_addr(&cfg, &a), 0);
    assert_string_equal(a.host, "redis.svc");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_string_equal(a.password, "pa@ss");
    assert_string_equal(a.username, "");
    gw_config_free(&cfg);

    setenv("REDIS_PASSWORD", "envpw", 1);
    assert_int_equal(load_text(&cfg, "[redis]\nurl = redis://127.0.0.1\n", err, sizeof err), 0);
    assert_int_equal(gw_config_redis_addr(&cfg, &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.password, "envpw");
    gw_config_free(&cfg);

    assert_int_equal(load_text(&cfg, "[redis]\nurl = redis://app:pw@[::1]:7000/\n", err, sizeof err),
                     0);
    assert_int_equal(gw_config_redis_addr(&cfg, &a), 0);
    assert_string_equal(a.host, "::1");
    assert_string_equal(a.username, "app");
    assert_int_equal(a.port, 7000);
    /* password in the URL and in redis.password: validate refuses */
    cfg.auth_disabled = true;
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "not both"));
    assert_null(strstr(err, "envpw"));
    gw_config_free(&cfg);
}

static void test_secret_errors_hide_value(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[512];
    setenv("MARKETO_ENCRYPTION_KEY", "topsecret\x01value", 1);
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "[marketo] encryption_key: invalid"));
    assert_non_null(strstr(err, "MARKETO_ENCRYPTION_KEY"));
    assert_null(strstr(err, "topsecret"));
    unsetenv("MARKETO_ENCRYPTION_KEY");

    setenv("AUTH_API_KEYS", "key-one\nkey-two", 1);
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "[auth] api_keys: invalid"));
    assert_null(strstr(err, "key-one"));
    gw_config_free(&cfg);
}

/* ---- cross-key validation ----------------------------------------------- */

static void test_auth_rules(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[512];

    /* defaults: auth on, no keys */
    assert_int_equal(gw_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "auth.api_keys is empty"));
    assert_non_null(strstr(err, "auth.disabled = true"));
    gw_config_free(&cfg);

    /* only separators and blanks: still no key */
    assert_int_equal(load_text(&cfg, "[auth]\napi_keys = , ,\n", err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "auth.api_keys is empty"));
    gw_config_free(&cfg);

    /* disabled with keys */
    assert_int_equal(load_text(&cfg, "[auth]\napi_keys = k-1234\ndisabled = true\n", err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "auth.disabled = true needs auth.api_keys empty"));
    assert_null(strstr(err, "k-1234"));
    gw_config_free(&cfg);

    /* disabled without keys: fine */
    assert_int_equal(load_text(&cfg, "[auth]\ndisabled = true\n", err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), 0);
    gw_config_free(&cfg);

    /* keys: fine */
    assert_int_equal(load_text(&cfg, "[auth]\napi_keys = k1, k2\n", err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), 0);
    gw_config_free(&cfg);
}

static void test_other_rules(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[512];
    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[gateway]\nmax_page_size = 50\n"
                               "default_page_size = 100\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "default_page_size"));
    assert_non_null(strstr(err, "max_page_size"));
    gw_config_free(&cfg);

    /* the body budget must hold at least one body of the largest size */
    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[gateway]\nmax_body_bytes = 2048\n"
                               "max_body_total_bytes = 2047\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "gateway.max_body_total_bytes"));
    assert_non_null(strstr(err, "gateway.max_body_bytes"));
    gw_config_free(&cfg);
    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[gateway]\nmax_body_bytes = 2048\n"
                               "max_body_total_bytes = 2048\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), 0);
    gw_config_free(&cfg);

    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[marketo]\n"
                               "soap_endpoint = http://127.0.0.1:1/soap/mktows/2_3\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "marketo.encryption_key"));
    gw_config_free(&cfg);

    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[marketo]\n"
                               "soap_endpoint = http://127.0.0.1:1/soap/mktows/2_3\n"
                               "user_id = u\nencryption_key = e\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), 0);
    gw_config_free(&cfg);

    /* /metrics on a port of its own: not the API's (port 0 twice is two ports) */
    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[gateway]\nlisten = 0.0.0.0:8080\n"
                               "metrics_listen = 0.0.0.0:8080\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "gateway.metrics_listen"));
    gw_config_free(&cfg);
    assert_int_equal(load_text(&cfg,
                               "[auth]\napi_keys = k\n[gateway]\nlisten = 127.0.0.1:0\n"
                               "metrics_listen = 127.0.0.1:0\n",
                               err, sizeof err),
                     0);
    assert_int_equal(gw_config_validate(&cfg, err, sizeof err), 0);
    gw_config_free(&cfg);
}

/* ---- printing ----------------------------------------------------------- */

static void test_print_masks_secrets(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char err[256];
    setenv("REDIS_PASSWORD", "Secret-Redis-Pw", 1);
    int rc = load_text(&cfg,
                       "[marketo]\nencryption_key = Secret-Enc-Key\nuser_id = visible_user\n"
                       "[auth]\napi_keys = Secret-Api-1,Secret-Api-2\n"
                       "[cursor]\nsecret = Secret-Cursor\n",
                       err, sizeof err);
    assert_int_equal(rc, 0);
    char *out = print_to_string(&cfg);
    assert_null(strstr(out, "Secret-"));
    assert_non_null(strstr(out, "encryption_key = ****\n"));
    assert_non_null(strstr(out, "api_keys = ****\n"));
    assert_non_null(strstr(out, "\n[cursor]\nsecret = ****\n"));
    assert_non_null(strstr(out, "password = ****\n"));
    assert_non_null(strstr(out, "user_id = visible_user\n"));
    assert_non_null(strstr(out, "listen = 127.0.0.1:8080\n"));
    assert_non_null(strstr(out, "fallback_share = 0.333333333333333\n"));
    assert_non_null(strstr(out, "tls_verify = true\n"));
    free(out);
    gw_config_free(&cfg);
    unsetenv("REDIS_PASSWORD");

    /* empty secrets print as empty; a password inside redis.url is masked */
    rc = load_text(&cfg, "[redis]\nurl = redis://:Secret-In-Url@cache:6379/1\n", err, sizeof err);
    assert_int_equal(rc, 0);
    out = print_to_string(&cfg);
    assert_null(strstr(out, "Secret-"));
    assert_non_null(strstr(out, "url = redis://:****@cache:6379/1\n"));
    assert_non_null(strstr(out, "encryption_key = \n"));
    assert_non_null(strstr(out, "api_keys = \n"));
    free(out);
    gw_config_free(&cfg);
}

static void test_print_round_trip(void **state)
{
    (void)state;
    /* without secrets, the printed settings load back to the same settings */
    gw_config a = {0}, b = {0};
    char err[256], path[256];
    assert_int_equal(load_text(&a,
                               "[gateway]\nlisten = [::1]:9000\nthreads = 3\n"
                               "[ratelimit]\nfallback_share = 0.25\n[cors]\nallowed_origins = *\n",
                               err, sizeof err),
                     0);
    char *first = print_to_string(&a);
    write_tmp(first, path, sizeof path);
    assert_int_equal(gw_config_load(&b, path, err, sizeof err), 0);
    unlink(path);
    char *second = print_to_string(&b);
    assert_string_equal(first, second);
    free(first);
    free(second);
    gw_config_free(&a);
    gw_config_free(&b);
}

/* ---- the example file --------------------------------------------------- */

/* What the example file's keys look like, collected by an inih handler. */
typedef struct seen_keys {
    char names[128][64];          /* "section.key" */
    size_t n;                     /* how many */
} seen_keys;

static int collect(void *user, const char *section, const char *name, const char *value)
{
    (void)value;
    seen_keys *s = user;
    if (s->n < 128)
        snprintf(s->names[s->n++], sizeof s->names[0], "%s.%s", section, name);
    return 1;
}

static void test_example_lists_every_key(void **state)
{
    (void)state;
    const char *path = getenv("GW_EXAMPLE_INI");
    if (!path)
        skip();
    seen_keys seen = {0};
    assert_int_equal(ini_parse(path, collect, &seen), 0);
    /* exactly the table's keys, each once, in table order */
    assert_int_equal(seen.n, gw_config_key_count());
    for (size_t i = 0; i < gw_config_key_count(); i++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s", gw_config_key_section(i), gw_config_key_name(i));
        assert_string_equal(seen.names[i], want);
    }
    assert_null(gw_config_key_name(gw_config_key_count()));

    /* it loads; it validates once keys are set; its values are the defaults */
    gw_config ex = {0}, def = {0};
    char err[512];
    assert_int_equal(gw_config_load(&ex, path, err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&ex, err, sizeof err), -1);
    gw_config_free(&ex);
    setenv("AUTH_API_KEYS", "example-key", 1);
    assert_int_equal(gw_config_load(&ex, path, err, sizeof err), 0);
    assert_int_equal(gw_config_validate(&ex, err, sizeof err), 0);
    assert_int_equal(gw_config_load(&def, NULL, err, sizeof err), 0);
    char *a = print_to_string(&ex), *b = print_to_string(&def);
    assert_string_equal(a, b);
    free(a);
    free(b);
    gw_config_free(&ex);
    gw_config_free(&def);
}

static void test_key_table(void **state)
{
    (void)state;
    /* DESIGN.md's fixed names are all in the table */
    static const char *const required[] = {
        "marketo.soap_endpoint", "marketo.user_id", "marketo.encryption_key",
        "marketo.timeout_ms", "gateway.listen", "gateway.threads", "auth.api_keys",
        "auth.disabled", "cursor.secret", "redis.url", "cache.ttl_seconds",
        "cache.negative_ttl_seconds", "ratelimit.calls_per_window", "ratelimit.window_seconds",
        "ratelimit.max_concurrent", "ratelimit.daily_quota", "ratelimit.queue_timeout_ms",
        "cors.allowed_origins",
    };
    for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
        bool found = false;
        for (size_t i = 0; i < gw_config_key_count(); i++) {
            char name[64];
            snprintf(name, sizeof name, "%s.%s", gw_config_key_section(i), gw_config_key_name(i));
            found = found || strcmp(name, required[r]) == 0;
        }
        if (!found)
            fail_msg("%s missing from the table", required[r]);
    }
    assert_int_equal(gw_config_key_count(), 47);
}

/* ---- command line ------------------------------------------------------- */

/* Result of one gw_cli_run call with captured streams. */
typedef struct cli_result {
    int rc;                       /* gw_cli_run's return */
    int exit_code;                /* *exit_code */
    char *out;                    /* captured stdout (malloc'd) */
    char *err;                    /* captured stderr (malloc'd) */
} cli_result;

static cli_result run_cli(gw_config *cfg, int argc, char **argv)
{
    cli_result r = {0};
    size_t olen = 0, elen = 0;
    FILE *out = open_memstream(&r.out, &olen), *err = open_memstream(&r.err, &elen);
    assert_non_null(out);
    assert_non_null(err);
    r.exit_code = -99;
    r.rc = gw_cli_run(argc, argv, cfg, &r.exit_code, out, err);
    fclose(out);
    fclose(err);
    return r;
}

static void free_result(cli_result *r)
{
    free(r->out);
    free(r->err);
}

static void test_cli_version_help(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char *v[] = {"marketo-gateway", "--version", NULL};
    cli_result r = run_cli(&cfg, 2, v);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(r.out, "marketo-gateway " GW_VERSION "\n");
    free_result(&r);

    char *h[] = {"marketo-gateway", "--help", NULL};
    r = run_cli(&cfg, 2, h);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.out, "--config FILE"));
    assert_non_null(strstr(r.out, "--check-config"));
    assert_non_null(strstr(r.out, "--version"));
    assert_non_null(strstr(r.out, "config/gateway.example.ini"));
    assert_string_equal(r.err, "");
    free_result(&r);
}

static void test_cli_usage_errors(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char *a[] = {"marketo-gateway", "--frobnicate", NULL};
    cli_result r = run_cli(&cfg, 2, a);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 2);
    assert_non_null(strstr(r.err, "marketo-gateway: unknown option '--frobnicate'"));
    assert_int_equal(strchr(r.err, '\n') - r.err, (ptrdiff_t)strlen(r.err) - 1);
    free_result(&r);

    char *b[] = {"marketo-gateway", "--config", NULL};
    r = run_cli(&cfg, 2, b);
    assert_int_equal(r.exit_code, 2);
    free_result(&r);

    char *c[] = {"marketo-gateway", "stray", NULL};
    r = run_cli(&cfg, 2, c);
    assert_int_equal(r.exit_code, 2);
    free_result(&r);
}

static void test_cli_check_config(void **state)
{
    (void)state;
    gw_config cfg = {0};
    char path[256], arg[300];
    write_tmp("[auth]\napi_keys = Secret-Cli-Key\n[gateway]\nlisten = 127.0.0.1:0\n", path,
              sizeof path);

    char *a[] = {"marketo-gateway", "--config", path, "--check-config", NULL};
    cli_result r = run_cli(&cfg, 4, a);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.out, "[marketo]\n"));
    assert_non_null(strstr(r.out, "listen = 127.0.0.1:0\n"));
    assert_non_null(strstr(r.out, "api_keys = ****\n"));
    assert_null(strstr(r.out, "Secret-Cli-Key"));
    free_result(&r);

    /* --config=FILE, no --check-config: go on and serve with cfg */
    snprintf(arg, sizeof arg, "--config=%s", path);
    char *b[] = {"marketo-gateway", arg, NULL};
    r = run_cli(&cfg, 2, b);
    assert_int_equal(r.rc, 1);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(cfg.listen, "127.0.0.1:0");
    assert_string_equal(cfg.api_keys, "Secret-Cli-Key");
    gw_config_free(&cfg);
    free_result(&r);
    unlink(path);

    /* a bad file: exit 1, one line naming the key */
    write_tmp("[auth]\napi_keys = k\n[ratelimit]\ncalls_per_window = lots\n", path, sizeof path);
    char *c[] = {"marketo-gateway", "--check-config", "--config", path, NULL};
    r = run_cli(&cfg, 4, c);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 1);
    assert_string_equal(r.out, "");
    assert_true(strncmp(r.err, "marketo-gateway: config ", 24) == 0);
    assert_non_null(strstr(r.err, "[ratelimit] calls_per_window"));
    assert_int_equal(strchr(r.err, '\n') - r.err, (ptrdiff_t)strlen(r.err) - 1);
    free_result(&r);
    unlink(path);

    /* validation errors too: no keys */
    char *d[] = {"marketo-gateway", "--check-config", NULL};
    r = run_cli(&cfg, 2, d);
    assert_int_equal(r.exit_code, 1);
    assert_non_null(strstr(r.err, "marketo-gateway: config: auth.api_keys is empty"));
    free_result(&r);

    /* missing file */
    char *e[] = {"marketo-gateway", "--config", "/nonexistent/gw.ini", NULL};
    r = run_cli(&cfg, 3, e);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.exit_code, 1);
    assert_non_null(strstr(r.err, "cannot open"));
    free_result(&r);
}

/* Comma lists (auth.api_keys, gateway.cors_allowed_origins): trimmed, empty
 * items dropped, order kept. */
static void test_split_list(void **state)
{
    (void)state;
    char **v = NULL;
    size_t n = 99;
    assert_int_equal(gw_config_split_list(NULL, &v, &n), 0);
    assert_null(v);
    assert_int_equal(n, 0);
    assert_int_equal(gw_config_split_list(" , ,\t", &v, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(gw_config_split_list(" key-a ,,\tkey b\t, https://x.io ", &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0], "key-a");
    assert_string_equal(v[1], "key b");
    assert_string_equal(v[2], "https://x.io");
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides_ini, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_bad_value_names_variable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_number, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_addr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_errors_hide_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_masks_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_lists_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_version_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_usage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_check_config, setup, teardown),
        cmocka_unit_test(test_split_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
