/* tests/soap/support.c - file and XML helpers shared by the soap tests. */
#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "soap/soap.h"

char *ts_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

char *ts_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("SOAP_TEST_DATA");
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *s = ts_read_file(path, len);
    if (s == NULL)
        fail_msg("cannot read fixture %s", path);
    return s;
}

const char *ts_shared_dir(const char **why)
{
    const char *dir = getenv("MKTO_SHARED_DIR");
    if (dir == NULL || dir[0] == '\0') {
        *why = "MKTO_SHARED_DIR is not set";
        return NULL;
    }
    static const char *const needed[] = {
        "mktows.wsdl",           "docs/getlead.md",     "docs/getmultipleleads.md",
        "docs/synclead.md",      "docs/syncmultipleleads.md",
        "docs/authentication-signature.md",
    };
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, needed[i]);
        if (stat(path, &st) != 0) {
            *why = "the Marketo reference (WSDL, docs) is not in MKTO_SHARED_DIR";
            return NULL;
        }
    }
    *why = NULL;
    return dir;
}

bool ts_skip_without_shared(void)
{
    const char *why = NULL;
    if (ts_shared_dir(&why) != NULL)
        return false;
    printf("1..0 # SKIP %s\n", why);
    return true;
}

char *ts_doc_xml(const char *doc, int n, size_t *len)
{
    const char *why = NULL;
    const char *dir = ts_shared_dir(&why);
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof(path), "%s/docs/%s", dir, doc);
    char *md = ts_read_file(path, NULL);
    if (md == NULL)
        fail_msg("cannot read %s", path);
    const char *p = md;
    char *out = NULL;
    for (int i = 0;; i++) {
        const char *start = strstr(p, "```xml\n");
        if (start == NULL)
            break;
        start += strlen("```xml\n");
        const char *end = strstr(start, "\n```");
        if (end == NULL)
            break;
        if (i == n) {
            size_t l = (size_t)(end - start) + 1; /* keep the final newline */
            out = malloc(l + 1);
            assert_non_null(out);
            memcpy(out, start, l);
            out[l] = '\0';
            if (len != NULL)
                *len = l;
            break;
        }
        p = end + 4;
    }
    free(md);
    if (out == NULL)
        fail_msg("%s has no xml block #%d", doc, n);
    return out;
}

xmlNode *ts_child(const xmlNode *node, const char *ns, const char *local)
{
    if (node == NULL)
        return NULL;
    for (xmlNode *c = node->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, local) != 0)
            continue;
        if (ns == NULL || (c->ns != NULL && strcmp((const char *)c->ns->href, ns) == 0))
            return c;
    }
    return NULL;
}

xmlNode *ts_body_child(xmlDocPtr doc)
{
    xmlNode *body = ts_child(xmlDocGetRootElement(doc), SOAP_ENV_NS, "Body");
    if (body == NULL)
        return NULL;
    for (xmlNode *c = body->children; c != NULL; c = c->next) {
        if (c->type == XML_ELEMENT_NODE)
            return c;
    }
    return NULL;
}

/* Next element sibling starting at n (inclusive). */
static const xmlNode *next_elem(const xmlNode *n)
{
    while (n != NULL && n->type != XML_ELEMENT_NODE)
        n = n->next;
    return n;
}

/* xsi:type of n resolved to "{uri}local" into buf ("" when absent). */
static void resolved_type(const xmlNode *n, char *buf, size_t len)
{
    buf[0] = '\0';
    xmlChar *v = xmlGetNsProp(n, BAD_CAST "type", BAD_CAST SOAP_XSI_NS);
    if (v == NULL)
        return;
    const char *colon = strchr((const char *)v, ':');
    xmlChar *prefix = colon ? xmlStrndup(v, (int)(colon - (const char *)v)) : NULL;
    xmlNs *ns = xmlSearchNs(n->doc, (xmlNode *)n, prefix);
    snprintf(buf, len, "{%s}%s", ns ? (const char *)ns->href : "",
             colon ? colon + 1 : (const char *)v);
    xmlFree(prefix);
    xmlFree(v);
}

bool ts_same_structure(const xmlNode *a, const xmlNode *b, const char *skip_text, char *why,
                       size_t whylen)
{
    const char *ans = a->ns ? (const char *)a->ns->href : "";
    const char *bns = b->ns ? (const char *)b->ns->href : "";
    if (strcmp((const char *)a->name, (const char *)b->name) != 0 || strcmp(ans, bns) != 0) {
        snprintf(why, whylen, "{%s}%s vs {%s}%s", ans, a->name, bns, b->name);
        return false;
    }
    char ta[256], tb[256];
    resolved_type(a, ta, sizeof(ta));
    resolved_type(b, tb, sizeof(tb));
    if (strcmp(ta, tb) != 0) {
        snprintf(why, whylen, "%s: xsi:type %s vs %s", a->name, ta, tb);
        return false;
    }
    const xmlNode *ca = next_elem(a->children), *cb = next_elem(b->children);
    if (ca == NULL && cb == NULL) {
        if (skip_text != NULL && strcmp((const char *)a->name, skip_text) == 0)
            return true;
        xmlChar *xa = xmlNodeGetContent(a), *xb = xmlNodeGetContent(b);
        bool same = xmlStrEqual(xa, xb);
        if (!same)
            snprintf(why, whylen, "%s: text '%s' vs '%s'", a->name, xa, xb);
        xmlFree(xa);
        xmlFree(xb);
        return same;
    }
    while (ca != NULL && cb != NULL) {
        if (!ts_same_structure(ca, cb, skip_text, why, whylen))
            return false;
        ca = next_elem(ca->next);
        cb = next_elem(cb->next);
    }
    if (ca != NULL || cb != NULL) {
        snprintf(why, whylen, "%s: extra child %s", a->name,
                 ca ? (const char *)ca->name : (const char *)cb->name);
        return false;
    }
    return true;
}

xmlChar *ts_text_of(const xmlNode *node, const char *local)
{
    for (const xmlNode *c = node->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (strcmp((const char *)c->name, local) == 0)
            return xmlNodeGetContent(c);
        xmlChar *t = ts_text_of(c, local);
        if (t != NULL)
            return t;
    }
    return NULL;
}
