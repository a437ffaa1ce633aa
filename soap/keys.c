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

/* WSDL names of the key types, indexed by soap_key_type. */
static const char *const key_names[SOAP_KEY__COUNT] = {
    "IDNUM",         "COOKIE",        "EMAIL",
    "LEADOWNEREMAIL", "SFDCACCOUNTID", "SFDCCONTACTID",
    "SFDCLEADID",    "SFDCLEADOWNERID", "SFDCOPPTYID",
};

/* Lead attribute carrying each key in a LeadRecord (NULL: a record element). */
static const char *const key_attrs[SOAP_KEY__COUNT] = {
    NULL,          "Cookies",       NULL,
    "LeadOwnerEmail", "SFDCAccountId", "SFDCContactId",
    "SFDCLeadId",  "SFDCLeadOwnerId", "SFDCOpptyId",
};

const char *soap_key_type_name(soap_key_type t)
{
    if ((int)t < 0 || t >= SOAP_KEY__COUNT)
        return NULL;
    return key_names[t];
}

int soap_key_type_parse(const char *name, soap_key_type *out)
{
    if (name == NULL || out == NULL)
        return SOAP_ERR_INVALID;
    for (int i = 0; i < SOAP_KEY__COUNT; i++) {
        if (strcmp(name, key_names[i]) == 0) {
            *out = (soap_key_type)i;
            return SOAP_OK;
        }
    }
    return SOAP_ERR_INVALID;
}

const char *soap_key_type_attr(soap_key_type t)
{
    if ((int)t < 0 || t >= SOAP_KEY__COUNT)
        return NULL;
    return key_attrs[t];
}

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

void soap_lead_clear(soap_lead *l)
{
    if (l == NULL)
        return;
    free(l->email);
    free(l->foreign_sys_person_id);
    free(l->foreign_sys_type);
    for (size_t i = 0; l->attrs != NULL && i < l->nattrs; i++) {
        free(l->attrs[i].name);
        free(l->attrs[i].type);
        free(l->attrs[i].value);
    }
    free(l->attrs);
    memset(l, 0, sizeof(*l));
}

void soap_fault_clear(soap_fault *f)
{
    if (f == NULL)
        return;
    free(f->faultcode);
    free(f->faultstring);
    free(f->message);
    memset(f, 0, sizeof(*f));
}

void soap_leads_result_clear(soap_leads_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->leads != NULL && i < r->nleads; i++)
        soap_lead_clear(&r->leads[i]);
    free(r->leads);
    free(r->new_stream_position);
    memset(r, 0, sizeof(*r));
}

void soap_sync_result_clear(soap_sync_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->statuses != NULL && i < r->nstatuses; i++)
        free(r->statuses[i].error);
    free(r->statuses);
    memset(r, 0, sizeof(*r));
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
