/* soap/sign.c - W3C timestamps and the HMAC-SHA1 request signature.
 *
 * Marketo signs requestTimestamp + mktowsUserId with the account's
 * encryption key; the timestamp string is sent verbatim, so formatting and
 * signing must agree byte for byte.
 */
#include "soap/soap.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Largest UTC offset we accept, exclusive (RFC 3339 allows up to 23:59). */
#define MAX_OFFSET_S (24L * 3600L)

int soap_timestamp_format(time_t t, long utc_offset_s, char out[SOAP_TIMESTAMP_LEN])
{
    if (out == NULL)
        return SOAP_ERR_INVALID;
    out[0] = '\0';
    if (utc_offset_s <= -MAX_OFFSET_S || utc_offset_s >= MAX_OFFSET_S || utc_offset_s % 60 != 0)
        return SOAP_ERR_INVALID;

    time_t local;
    if (__builtin_add_overflow(t, (time_t)utc_offset_s, &local))
        return SOAP_ERR_INVALID;
    struct tm tm;
    if (gmtime_r(&local, &tm) == NULL)
        return SOAP_ERR_INVALID;
    /* Four-digit years only: W3C date-times have no room for more. */
    if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return SOAP_ERR_INVALID;

    long abs_off = utc_offset_s < 0 ? -utc_offset_s : utc_offset_s;
    int n = snprintf(out, SOAP_TIMESTAMP_LEN, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, utc_offset_s < 0 ? '-' : '+', abs_off / 3600,
                     (abs_off % 3600) / 60);
    if (n < 0 || n >= SOAP_TIMESTAMP_LEN) {
        out[0] = '\0';
        return SOAP_ERR_INVALID;
    }
    return SOAP_OK;
}

int soap_timestamp_now(char out[SOAP_TIMESTAMP_LEN])
{
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm) == NULL)
        return SOAP_ERR_INVALID;
    /* Zones with second-level offsets (historic LMT) round to the minute. */
    long off = tm.tm_gmtoff - tm.tm_gmtoff % 60;
    return soap_timestamp_format(now, off, out);
}

/* Reads exactly n ASCII digits at *p into *v and advances *p; false if any
 * of them is not a digit. */
static bool read_digits(const char **p, int n, int *v)
{
    int acc = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        acc = acc * 10 + (c - '0');
    }
    *p += n;
    *v = acc;
    return true;
}

/* Days in month mon (1..12) of year y (proleptic Gregorian). */
static int days_in_month(int y, int mon)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[mon - 1];
}

int soap_timestamp_parse(const char *s, time_t *out)
{
    if (s == NULL || out == NULL)
        return SOAP_ERR_INVALID;
    const char *p = s;
    int y, mon, d, h, mi, sec;
    if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mon) || *p++ != '-' ||
        !read_digits(&p, 2, &d))
        return SOAP_ERR_INVALID;
    if (*p != 'T' && *p != 't')
        return SOAP_ERR_INVALID;
    p++;
    if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
        !read_digits(&p, 2, &sec))
        return SOAP_ERR_INVALID;
    if (*p == '.') {
        /* Fractional seconds: at least one digit, dropped (Marketo is
         * second-granular). */
        p++;
        if (*p < '0' || *p > '9')
            return SOAP_ERR_INVALID;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (!read_digits(&p, 2, &oh) || *p++ != ':' || !read_digits(&p, 2, &om))
            return SOAP_ERR_INVALID;
        if (oh > 23 || om > 59)
            return SOAP_ERR_INVALID;
        off = sign * (oh * 3600L + om * 60L);
    } else {
        return SOAP_ERR_INVALID;
    }
    if (*p != '\0')
        return SOAP_ERR_INVALID;
    /* Seconds may be 60 (a leap second, RFC 3339 5.6); timegm folds it. */
    if (mon < 1 || mon > 12 || d < 1 || d > days_in_month(y, mon) || h > 23 || mi > 59 ||
        sec > 60)
        return SOAP_ERR_INVALID;

    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && !(y == 1969 && mon == 12 && d == 31 && h == 23 && mi == 59 && sec == 59))
        return SOAP_ERR_INVALID;
    *out = t - off;
    return SOAP_OK;
}

int soap_sign(const char *encryption_key, const char *timestamp, const char *user_id,
              char out[SOAP_SIGNATURE_LEN])
{
    if (out != NULL)
        out[0] = '\0';
    if (encryption_key == NULL || timestamp == NULL || user_id == NULL || out == NULL)
        return SOAP_ERR_INVALID;

    size_t tlen = strlen(timestamp), ulen = strlen(user_id);
    if (tlen > SIZE_MAX / 2 || ulen > SIZE_MAX / 2)
        return SOAP_ERR_INVALID;
    /* The message is short in practice: a stack buffer avoids malloc on
     * the hot path, a heap one covers the rest. */
    char stackbuf[256];
    char *msg = stackbuf;
    if (tlen + ulen > sizeof(stackbuf)) {
        msg = malloc(tlen + ulen);
        if (msg == NULL)
            return SOAP_ERR_OOM;
    }
    memcpy(msg, timestamp, tlen);
    memcpy(msg + tlen, user_id, ulen);

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t klen = strlen(encryption_key);
    int rc = SOAP_OK;
    if (klen > INT_MAX ||
        HMAC(EVP_sha1(), encryption_key, (int)klen, (const unsigned char *)msg, tlen + ulen, md,
             &mdlen) == NULL ||
        mdlen != 20) {
        rc = SOAP_ERR_INVALID;
        goto out;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }
    out[2 * mdlen] = '\0';
out:
    if (msg != stackbuf)
        free(msg);
    return rc;
}
