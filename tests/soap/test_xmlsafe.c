/* tests/soap/test_xmlsafe.c - soap_xml_read, the one parse entry, and the
 * process-wide entity loader soap_init() installs: responses with an
 * external entity or DTD are refused and no file is opened (an inotify
 * watch on the file they name sees nothing), whatever parse options a
 * caller passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "soap/soap.h"
#include "soap/xmlsafe.h"

/* What the watched file holds: must never show up in a parsed tree. */
#define SECRET "xxe-secret-7d1f3a"

/* A file in a temp dir, watched for opens and reads. */
typedef struct watched {
    char dir[64];   /* temp dir */
    char path[96];  /* the file */
    char url[128];  /* file:// URL of it */
    int fd;         /* inotify descriptor (non-blocking) */
} watched;

static void watch_start(watched *w)
{
    snprintf(w->dir, sizeof w->dir, "/tmp/soap-xxe-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    snprintf(w->path, sizeof w->path, "%s/secret.txt", w->dir);
    snprintf(w->url, sizeof w->url, "file://%s", w->path);
    FILE *f = fopen(w->path, "w");
    assert_non_null(f);
    fputs(SECRET, f);
    assert_int_equal(fclose(f), 0);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    assert_true(w->fd >= 0);
    assert_true(inotify_add_watch(w->fd, w->path, IN_OPEN | IN_ACCESS) >= 0);
}

/* Opens and reads of the file since the last call. */
static size_t watch_events(watched *w)
{
    size_t n = 0;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t got = read(w->fd, buf, sizeof buf);
        if (got <= 0) {
            assert_true(got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            return n;
        }
        for (ssize_t off = 0; off < got;) {
            const struct inotify_event *e = (const struct inotify_event *)(buf + off);
            if (e->mask & (IN_OPEN | IN_ACCESS))
                n++;
            off += (ssize_t)(sizeof *e + e->len);
        }
    }
}

static void watch_stop(watched *w)
{
    close(w->fd);
    unlink(w->path);
    rmdir(w->dir);
}

/* The three ways a response can name a file: a general entity used in a
 * value, an external DTD, a parameter entity; the file's URL goes between
 * before and after. */
static const struct {
    const char *before, *after;
} hostile[] = {
    {"<!DOCTYPE e:Envelope [<!ENTITY xxe SYSTEM \"", "\">]>"},
    {"<!DOCTYPE e:Envelope SYSTEM \"", "\">"},
    {"<!DOCTYPE e:Envelope [<!ENTITY % p SYSTEM \"", "\"> %p;]>"},
};

/* A getMultipleLeads response with the DOCTYPE hostile[i] naming url; the
 * lead's Email is &xxe; where the DOCTYPE declares it. */
static int hostile_body(size_t i, const char *url, char *out, size_t outlen)
{
    int n = snprintf(out, outlen,
                     "<?xml version=\"1.0\"?>\n%s%s%s\n"
                     "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\"><e:Body>"
                     "<m:successGetMultipleLeads><result><returnCount>1</returnCount>"
                     "<remainingCount>0</remainingCount><newStreamPosition/><leadRecordList>"
                     "<leadRecord><Id>1</Id><Email>%s</Email></leadRecord></leadRecordList>"
                     "</result></m:successGetMultipleLeads></e:Body></e:Envelope>",
                     hostile[i].before, url, hostile[i].after, i == 0 ? "&xxe;" : "a@example.com");
    assert_true(n > 0 && (size_t)n < outlen);
    return n;
}

/* Whether doc, serialised, contains the secret. */
static bool doc_has_secret(xmlDocPtr doc)
{
    xmlChar *text = NULL;
    int len = 0;
    xmlDocDumpMemory(doc, &text, &len);
    bool found = text != NULL && strstr((const char *)text, SECRET) != NULL;
    xmlFree(text);
    return found;
}

static void test_hostile_refused_no_file_read(void **state)
{
    (void)state;
    watched w;
    watch_start(&w);
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        char body[2048];
        int n = hostile_body(i, w.url, body, sizeof body);
        mkto_leads r;
        soap_err err = {0};
        assert_int_equal(soap_parse_get_multiple_leads(body, (size_t)n, 0, &r, NULL, &err),
                         SOAP_ERR_PARSE);
        assert_int_equal(r.nleads, 0);
        xmlDocPtr doc = (xmlDocPtr)&doc;
        assert_int_equal(soap_xml_read(body, (size_t)n, 0, &doc, &err), SOAP_ERR_PARSE);
        assert_null(doc);
        assert_non_null(strstr(err.msg, "DOCTYPE"));
        if (watch_events(&w) != 0)
            fail_msg("hostile[%zu]: the parse opened %s", i, w.path);
    }
    watch_stop(&w);
}

static void test_loader_refuses_whatever_the_options(void **state)
{
    (void)state;
    /* A caller that asks libxml2 for entities and DTDs still gets no file. */
    const int unsafe = XML_PARSE_NOENT | XML_PARSE_DTDLOAD | XML_PARSE_DTDATTR |
                       XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
    watched w;
    watch_start(&w);
    char body[2048];
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        int n = hostile_body(i, w.url, body, sizeof body);
        xmlDocPtr doc = xmlReadMemory(body, n, NULL, NULL, unsafe);
        if (doc != NULL) {
            assert_false(doc_has_secret(doc));
            xmlFreeDoc(doc);
        }
        if (watch_events(&w) != 0)
            fail_msg("hostile[%zu]: the parse opened %s", i, w.path);
    }

    /* Control: with libxml2's own file loader the same parse reads the file,
     * so the watch and the document above do test the guard. */
    xmlExternalEntityLoader guard = xmlGetExternalEntityLoader();
    xmlSetExternalEntityLoader(xmlNoNetExternalEntityLoader);
    int n = hostile_body(0, w.url, body, sizeof body);
    xmlDocPtr doc = xmlReadMemory(body, n, NULL, NULL, unsafe);
    xmlSetExternalEntityLoader(guard);
    assert_non_null(doc);
    assert_true(doc_has_secret(doc));
    xmlFreeDoc(doc);
    assert_true(watch_events(&w) > 0);
    watch_stop(&w);
}

/* n nested <a> elements. */
static char *nested(int n, size_t *len)
{
    char *s = malloc((size_t)n * 7 + 1);
    assert_non_null(s);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(s + k, "<a>");
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(s + k, "</a>");
    *len = k;
    return s;
}

static void test_entry_limits(void **state)
{
    (void)state;
    xmlDocPtr doc = NULL;
    size_t len;
    char *s = nested(SOAP_XML_MAX_DEPTH, &len);
    assert_int_equal(soap_xml_read(s, len, 0, &doc, NULL), SOAP_OK);
    assert_non_null(doc);
    xmlFreeDoc(doc);
    free(s);
    s = nested(SOAP_XML_MAX_DEPTH + 1, &len);
    assert_int_equal(soap_xml_read(s, len, 0, &doc, NULL), SOAP_ERR_PARSE);
    assert_null(doc);
    free(s);

    /* The size cap is checked before libxml2 sees a byte; err may be NULL. */
    assert_int_equal(soap_xml_read("<a/>", 4, 3, &doc, NULL), SOAP_ERR_TOO_LARGE);
    assert_null(doc);
    soap_err err = {0};
    assert_int_equal(soap_xml_read("<a/>", 4, 4, &doc, &err), SOAP_OK);
    xmlFreeDoc(doc);
    assert_int_equal(soap_xml_read(NULL, 0, 0, &doc, &err), SOAP_ERR_PARSE);
    assert_int_equal(err.code, SOAP_ERR_PARSE);
    /* Any DOCTYPE, even one that declares nothing. */
    assert_int_equal(soap_xml_read("<!DOCTYPE a><a/>", 16, 0, &doc, &err), SOAP_ERR_PARSE);
    assert_null(doc);
}

int main(void)
{
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_refused_no_file_read),
        cmocka_unit_test(test_loader_refuses_whatever_the_options),
        cmocka_unit_test(test_entry_limits),
    };
    int rc = cmocka_run_group_tests_name("soap_xmlsafe", tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
