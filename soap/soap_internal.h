/* soap/soap_internal.h - helpers shared by the soap/ sources only. */
#ifndef SOAP_SOAP_INTERNAL_H
#define SOAP_SOAP_INTERNAL_H

#include <stdarg.h>
#include <stdio.h>

#include "soap/soap.h"

/* Fills err (when not NULL) with code and a formatted message. */
void soap_set_err(soap_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* SOAP_SOAP_INTERNAL_H */
