/* tests/fuzz/fuzz_util.h - helpers shared by the libFuzzer targets.
 *
 * Header-only (static functions) so that each target stays one .c file.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reports a broken invariant on stderr and aborts, which libFuzzer records
 * as a crash (with the input saved as crash-<sha1>). */
__attribute__((format(printf, 1, 2), noreturn, unused))
static void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FUZZ INVARIANT BROKEN: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* A NUL-terminated malloc'd copy of data[0..size) (embedded NULs kept; the
 * string simply ends at the first one). Aborts on no memory. */
__attribute__((unused))
static char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        fuzz_fail("out of memory");
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Whether two optional strings are equal (both NULL counts as equal). */
__attribute__((unused))
static int fuzz_str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

#endif /* FUZZ_UTIL_H */
