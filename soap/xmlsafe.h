/* soap/xmlsafe.h - untrusted bytes to an xmlDoc, the one way: soap/parse.c
 * reads Marketo's responses through it and marketo-sim (sim/soapsrv.c) the
 * requests it receives.
 *
 * The guards (size cap, no DTD, no entities, no network, depth 64, and the
 * process-wide entity loader soap_init() installs) are described at the top
 * of xmlsafe.c, beside the code that applies them.
 */
#ifndef SOAP_XMLSAFE_H
#define SOAP_XMLSAFE_H

#include <stddef.h>

#include <libxml/tree.h>

#include "soap/soap.h"

/* Deepest element nesting soap_xml_read accepts (the root is level 1). */
#define SOAP_XML_MAX_DEPTH 64

/* Parses body (len bytes) into a tree, refusing input over max_len (0:
 * SOAP_DEFAULT_MAX_RESPONSE), any DOCTYPE, entity references and nesting
 * deeper than SOAP_XML_MAX_DEPTH. Silences libxml2's error output on the
 * calling thread. Returns SOAP_OK with *docp (caller frees with xmlFreeDoc),
 * or SOAP_ERR_TOO_LARGE, SOAP_ERR_PARSE or SOAP_ERR_OOM with *docp NULL and
 * err (when not NULL) filled. Safe on any thread once soap_init() has run. */
int soap_xml_read(const char *body, size_t len, size_t max_len, xmlDocPtr *docp, soap_err *err);

#endif /* SOAP_XMLSAFE_H */
