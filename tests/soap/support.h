/* tests/soap/support.h - file and XML helpers shared by the soap tests. */
#ifndef TESTS_SOAP_SUPPORT_H
#define TESTS_SOAP_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

#include <libxml/tree.h>

/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL if it
 * cannot be read. *len (optional) gets the byte count. */
char *ts_read_file(const char *path, size_t *len);

/* Reads a fixture from tests/soap/data (env SOAP_TEST_DATA); fails the
 * test if absent. */
char *ts_fixture(const char *name, size_t *len);

/* The reference directory (env MKTO_SHARED_DIR) when it holds the WSDL and
 * the docs, else NULL with *why set to the reason. */
const char *ts_shared_dir(const char **why);

/* For programs that need the reference: when it is absent prints a TAP
 * "1..0 # SKIP reason" plan and returns true (main then returns 0).
 * cmocka 1.1's own skip() prints "not ok # SKIP", which meson counts as a
 * failure, hence the whole-program skip. */
bool ts_skip_without_shared(void);

/* The n-th (0-based) ```xml block of $MKTO_SHARED_DIR/docs/<doc>, malloc'd;
 * fails the test if the file or the block is missing. */
char *ts_doc_xml(const char *doc, int n, size_t *len);

/* First element child of node named local in namespace ns (NULL: any). */
xmlNode *ts_child(const xmlNode *node, const char *ns, const char *local);

/* The Body's first element child of a parsed SOAP envelope, or NULL. */
xmlNode *ts_body_child(xmlDocPtr doc);

/* Compares the element structure of a and b: same namespace URI and local
 * name at each position, same element children in order, same xsi:type
 * (resolved), and same text of leaf elements unless the element's local
 * name is skip_text. Writes the first difference into why. */
bool ts_same_structure(const xmlNode *a, const xmlNode *b, const char *skip_text, char *why,
                       size_t whylen);

/* Text of the first descendant element (document order) named local, as a
 * malloc'd string (caller frees with xmlFree), or NULL. */
xmlChar *ts_text_of(const xmlNode *node, const char *local);

#endif
