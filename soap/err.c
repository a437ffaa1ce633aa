/* soap/err.c - errors: which Marketo fault codes are worth retrying, and the
 * soap_err filler every soap/ source shares.
 */
#include "soap/soap.h"

#include <stdarg.h>
#include <stdio.h>

#include "soap/soap_internal.h"

bool soap_fault_code_retryable(int code)
{
    switch (code) {
    case 10001: /* internal error */
    case 20011: /* API service failure */
    case 20016: /* request expired: re-sign and retry */
    case 20023: /* rate limit */
    case 20024: /* concurrency limit */
        return true;
    default:
        return false;
    }
}

void soap_set_err(soap_err *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}
