/* soap/err.c - the soap_err filler every soap/ source shares. (Which fault
 * codes are worth retrying is marketo/codes.h's.)
 */
#include "soap/soap.h"

#include <stdarg.h>
#include <stdio.h>

#include "soap/soap_internal.h"

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
