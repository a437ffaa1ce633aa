/* soap/keys.c - key types, process-wide libxml2 set-up, result clean-up.
 *
 * The tables here mirror the WSDL's LeadKeyRef enumeration; everything else
 * is the small glue that the builders and parsers share.
 */
#include "soap/soap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/globals.h>
#include <libxml/xmlerror.h>

#include "soap/soap_internal.h"

/* libxml2 generic error sink: swallows the parser's stderr chatter. */
static void quiet_generic(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

/* libxml2 structured error sink: same, for the structured channel. */
static void quiet_structured(void *ctx, xmlErrorPtr e)
{
    (void)ctx;
    (void)e;
}

/* External entity loader that refuses every URL, so no parse can ever read
 * a file or open a connection whatever options a caller passes. */
static xmlParserInputPtr refuse_entity_loader(const char *url, const char *id,
                                              xmlParserCtxtPtr ctxt)
{
    (void)url;
    (void)id;
    (void)ctxt;
    return NULL;
}

void soap_init(void)
{
    xmlInitParser();
    xmlSetExternalEntityLoader(refuse_entity_loader);
    xmlThrDefSetGenericErrorFunc(NULL, quiet_generic);
    xmlThrDefSetStructuredErrorFunc(NULL, quiet_structured);
    soap_quiet_thread();
}

void soap_quiet_thread(void)
{
    /* libxml2 keeps the error handlers per thread: each worker thread that
     * parses should call this once (the parsers do it themselves). */
    xmlSetGenericErrorFunc(NULL, quiet_generic);
    xmlSetStructuredErrorFunc(NULL, quiet_structured);
}

void soap_cleanup(void)
{
    xmlCleanupParser();
}

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
