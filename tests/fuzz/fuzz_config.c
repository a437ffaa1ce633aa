/* tests/fuzz/fuzz_config.c - the settings loader on hostile INI files.
 *
 * Input: the INI file's bytes, written to one memfd per process and loaded
 * through its /proc/self/fd/N path with gw_config_load(). When the load
 * succeeds, the cross-key checks, the printer (to /dev/null) and the listen
 * and Redis URL splitters run too. The environment is not touched (run the
 * fuzzer without MARKETO_*, GATEWAY_*, ... variables set).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    static FILE *devnull;
    if (fd < 0) {
        fd = memfd_create("fuzz_config.ini", MFD_CLOEXEC);
        if (fd < 0)
            fuzz_fail("memfd_create failed");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        devnull = fopen("/dev/null", "w");
        if (devnull == NULL)
            fuzz_fail("cannot open /dev/null");
    }
    if (ftruncate(fd, 0) != 0)
        fuzz_fail("ftruncate failed");
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
        if (w <= 0)
            fuzz_fail("pwrite failed");
        off += (size_t)w;
    }

    gw_config cfg;
    char err[512];
    memset(&cfg, 0, sizeof cfg);
    err[0] = '\0';
    if (gw_config_load(&cfg, path, err, sizeof err) == 0) {
        err[0] = '\0';
        (void)gw_config_validate(&cfg, err, sizeof err);
        gw_config_print(&cfg, devnull);
        char host[256];
        uint16_t port = 0;
        if (cfg.listen != NULL)
            (void)gw_config_split_listen(cfg.listen, host, sizeof host, &port);
        gw_redis_addr ra;
        memset(&ra, 0, sizeof ra);
        (void)gw_config_redis_addr(&cfg, &ra);
        if (memchr(ra.host, '\0', sizeof ra.host) == NULL ||
            memchr(ra.password, '\0', sizeof ra.password) == NULL ||
            memchr(ra.username, '\0', sizeof ra.username) == NULL)
            fuzz_fail("gw_redis_addr string not NUL-terminated");
    } else if (err[0] == '\0' || memchr(err, '\0', sizeof err) == NULL) {
        fuzz_fail("failed load without a message");
    }
    gw_config_free(&cfg);
    return 0;
}
