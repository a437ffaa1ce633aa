/* gateway/err.c - the gw_err filler every gateway source shares. */
#include "gateway/err.h"

#include <stdarg.h>
#include <stdio.h>

void gw_err_set(gw_err *e, int status, const char *fmt, ...)
{
    if (e == NULL)
        return;
    e->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}
