/* soap/xmlsafe.c - libxml2 for hostile input: the process-wide set-up
 * (soap_init) and the one parse entry (soap_xml_read), read together.
 *
 * A body from the network is treated as hostile, and every guard against it
 * is here:
 *   - its size is capped before libxml2 sees it;
 *   - it is parsed without network access, entity substitution, DTD loading
 *     or attribute defaults from a DTD (PARSE_OPTIONS);
 *   - the parse stops at the first DOCTYPE, before any declaration of the
 *     internal subset is read: no DTD, hence no entity can be declared and
 *     any reference is a well-formedness error (a tree that still has a
 *     subset is refused too);
 *   - the parse stops at the first element nested deeper than
 *     SOAP_XML_MAX_DEPTH;
 *   - soap_init() installs, process-wide, an external entity loader that
 *     refuses every URL, so no parse anywhere in the process can read a file
 *     or open a connection whatever options its caller passes (XXE);
 *   - libxml2 prints nothing: its error handlers are silenced for the
 *     process and for each thread that parses.
 */
#include "soap/xmlsafe.h"

#include <limits.h>
#include <stdbool.h>

#include <libxml/SAX2.h>
#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>

#include "soap/soap_internal.h"

/* Parser options: no network, no entity substitution, no DTD loading, no
 * attribute defaults from a DTD, no size override; CDATA becomes text. */
#define PARSE_OPTIONS \
    (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA | \
     XML_PARSE_COMPACT)

/* ---- process-wide: the entity loader and quiet errors ----------------------- */

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

/* Silences libxml2's error output for the calling thread (handlers are
 * thread-local in libxml2; soap_init() also sets the default for threads
 * started after it). */
static void quiet_thread(void)
{
    xmlSetGenericErrorFunc(NULL, quiet_generic);
    xmlSetStructuredErrorFunc(NULL, quiet_structured);
}

void soap_init(void)
{
    xmlInitParser();
    xmlSetExternalEntityLoader(refuse_entity_loader);
    xmlThrDefSetGenericErrorFunc(NULL, quiet_generic);
    xmlThrDefSetStructuredErrorFunc(NULL, quiet_structured);
    quiet_thread();
}

void soap_cleanup(void)
{
    xmlCleanupParser();
}

/* ---- one parse ---------------------------------------------------------------- */

/* SAX hook for <!DOCTYPE ...>: stops the parse before any declaration of the
 * internal subset is read. */
static void stop_on_doctype(void *ctx, const xmlChar *name, const xmlChar *ext_id,
                            const xmlChar *sys_id)
{
    (void)name;
    (void)ext_id;
    (void)sys_id;
    xmlParserCtxtPtr ctxt = ctx;
    ctxt->wellFormed = 0; /* xmlStopParser alone would keep the partial tree */
    xmlStopParser(ctxt);
}

/* SAX hook around the default element start: stops the parse when the new
 * element would be nested deeper than SOAP_XML_MAX_DEPTH. */
static void start_element_limited(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                                  const xmlChar *uri, int nb_namespaces,
                                  const xmlChar **namespaces, int nb_attributes,
                                  int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = ctx;
    if (ctxt->nameNr >= SOAP_XML_MAX_DEPTH) {
        ctxt->wellFormed = 0;
        xmlStopParser(ctxt);
        return;
    }
    xmlSAX2StartElementNs(ctx, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                          nb_defaulted, attributes);
}

int soap_xml_read(const char *body, size_t len, size_t max_len, xmlDocPtr *docp, soap_err *err)
{
    *docp = NULL;
    quiet_thread();
    if (max_len == 0)
        max_len = SOAP_DEFAULT_MAX_RESPONSE;
    if (len > max_len || len > INT_MAX) {
        soap_set_err(err, SOAP_ERR_TOO_LARGE, "response body of %zu bytes exceeds %zu", len,
                     max_len);
        return SOAP_ERR_TOO_LARGE;
    }
    if (body == NULL || len == 0) {
        soap_set_err(err, SOAP_ERR_PARSE, "empty response body");
        return SOAP_ERR_PARSE;
    }

    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        soap_set_err(err, SOAP_ERR_OOM, "out of memory creating the XML parser");
        return SOAP_ERR_OOM;
    }
    ctxt->sax->internalSubset = stop_on_doctype;
    ctxt->sax->externalSubset = NULL;
    ctxt->sax->startElementNs = start_element_limited;
    ctxt->sax->serror = quiet_structured;
    ctxt->sax->error = NULL;
    ctxt->sax->warning = NULL;
    ctxt->sax->fatalError = NULL;

    int rc = SOAP_OK;
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, body, (int)len, NULL, NULL, PARSE_OPTIONS);
    if (doc == NULL || !ctxt->wellFormed || ctxt->errNo == XML_ERR_USER_STOP) {
        bool oom = ctxt->errNo == XML_ERR_NO_MEMORY;
        rc = oom ? SOAP_ERR_OOM : SOAP_ERR_PARSE;
        soap_set_err(err, rc,
                     oom ? "out of memory parsing the response"
                         : "response is not well-formed XML, or has a DOCTYPE or deep nesting");
        goto out;
    }
    if (doc->intSubset != NULL || doc->extSubset != NULL) {
        rc = SOAP_ERR_PARSE;
        soap_set_err(err, rc, "response has a DOCTYPE");
        goto out;
    }
    *docp = doc;
    doc = NULL;
out:
    if (doc != NULL)
        xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return rc;
}
