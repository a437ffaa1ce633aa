/* tests/sim/test_sync.c - marketo-sim black box: syncLead and
 * syncMultipleLeads (create, update, key precedence, dedup, per-record
 * failures, limits of a call) and what lookups see afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"

static simh S;

static int setup(void **state)
{
    static const char *const extra[] = {"--leads", "100", "--calls-per-window", "0",
                                        "--daily-quota", "0", NULL};
    soap_init();
    return simh_start(&S, extra);
}

static int teardown(void **state)
{
    int rc = simh_stop(&S);
    soap_cleanup();
    return rc == 0 ? 0 : -1;
}

/* A lead to sync: id (0: none), email, fsp (NULL: none), one attribute. */
static mkto_lead mk(int64_t id, const char *email, const char *fsp, const char *an,
                    const char *av, mkto_attr *attr)
{
    mkto_lead l = {.has_id = id > 0, .id = id, .email = (char *)email,
                   .foreign_sys_person_id = (char *)fsp,
                   .foreign_sys_type = fsp != NULL ? (char *)"CUSTOM" : NULL};
    if (an != NULL) {
        attr->name = (char *)an;
        attr->type = NULL;
        attr->value = (char *)av;
        l.attrs = attr;
        l.nattrs = 1;
    }
    return l;
}

/* getLead by key; returns the number of leads (0 when not found) and the
 * first one's id and attribute an into *id / val (bounded). */
static size_t lookup(mkto_key_type t, const char *v, int64_t *id, const char *an, char *val,
                     size_t cap)
{
    mkto_leads r;
    mkto_fault f = {0};
    int rc = simh_get_lead(&S, t, v, &r, &f);
    size_t n = 0;
    if (rc == SOAP_ERR_FAULT) {
        assert_int_equal(f.code, 20103);
    } else {
        assert_int_equal(rc, SOAP_OK);
        n = r.nleads;
        if (id != NULL)
            *id = r.leads[0].id;
        if (an != NULL) {
            const char *a = simh_attr(&r.leads[0], an);
            snprintf(val, cap, "%s", a != NULL ? a : "(none)");
        }
    }
    mkto_fault_clear(&f);
    mkto_leads_clear(&r);
    return n;
}

static void test_create_then_update(void **state)
{
    mkto_attr a;
    mkto_lead l = mk(0, "New.Person@Example.org", NULL, "Company", "NewCo", &a);
    mkto_sync_result r;
    mkto_fault f = {0};
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.nstatuses, 1);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    int64_t id = r.statuses[0].lead_id;
    assert_true(id > 1000100);  /* above the highest existing id */
    assert_null(r.statuses[0].error);
    mkto_sync_result_clear(&r);
    /* same e-mail in another case: dedup updates it */
    l = mk(0, "new.person@example.org", NULL, "Company", "NewCo2", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_int_equal(r.statuses[0].lead_id, id);
    mkto_sync_result_clear(&r);
    int64_t got = 0;
    char val[64];
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "NEW.PERSON@example.org", &got, "Company", val,
                            sizeof(val)), 1);
    assert_int_equal(got, id);
    assert_string_equal(val, "NewCo2");
    /* an empty value clears the attribute */
    l = mk(id, NULL, NULL, "Company", "", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    mkto_sync_result_clear(&r);
    assert_int_equal(lookup(MKTO_KEY_IDNUM, "0", NULL, NULL, NULL, 0), 0);
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", (long long)id);
    assert_int_equal(lookup(MKTO_KEY_IDNUM, ids, NULL, "Company", val, sizeof(val)), 1);
    assert_string_equal(val, "(none)");
}

static void test_precedence(void **state)
{
    mkto_attr a;
    mkto_sync_result r;
    mkto_fault f = {0};
    /* Id wins: Email and ForeignSysPersonId of the record are written to it */
    mkto_lead l = mk(1000005, "changed5@example.com", "fsp-5", "LeadScore", "99", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_int_equal(r.statuses[0].lead_id, 1000005);
    mkto_sync_result_clear(&r);
    int64_t id = 0;
    char val[64];
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "lead5@example.com", NULL, NULL, NULL, 0), 0);
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "changed5@example.com", &id, "LeadScore", val,
                            sizeof(val)), 1);
    assert_int_equal(id, 1000005);
    assert_string_equal(val, "99");
    /* ForeignSysPersonId before Email: lead 1000005 gets joe's e-mail */
    l = mk(0, "joe@marketo.com", "fsp-5", "Title", "Boss", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_int_equal(r.statuses[0].lead_id, 1000005);
    mkto_sync_result_clear(&r);
    /* now two leads carry joe@: getLead returns both, dedup picks the lowest */
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "joe@marketo.com", &id, NULL, NULL, 0), 2);
    assert_int_equal(id, 67508);
    l = mk(0, "Joe@Marketo.com", NULL, "Title", "CEO", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_int_equal(r.statuses[0].lead_id, 67508);
    mkto_sync_result_clear(&r);
    assert_int_equal(lookup(MKTO_KEY_IDNUM, "67508", NULL, "Title", val, sizeof(val)), 1);
    assert_string_equal(val, "CEO");
    assert_int_equal(lookup(MKTO_KEY_IDNUM, "1000005", NULL, "Title", val, sizeof(val)), 1);
    assert_string_equal(val, "Boss");
    /* a new ForeignSysPersonId with dedup creates */
    l = mk(0, NULL, "fsp-new", NULL, NULL, &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    mkto_sync_result_clear(&r);
}

static void test_dedup_off(void **state)
{
    mkto_attr a;
    mkto_sync_result r;
    mkto_fault f = {0};
    mkto_lead l[2] = {mk(0, "lead7@example.com", NULL, "Company", "Dup", &a),
                      mk(0, "lead7@example.com", NULL, NULL, NULL, &a)};
    assert_int_equal(simh_sync(&S, l, 2, false, &r, &f), SOAP_OK);
    assert_int_equal(r.nstatuses, 2);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    assert_int_equal(r.statuses[1].state, MKTO_SYNC_CREATED);
    assert_true(r.statuses[1].lead_id > r.statuses[0].lead_id);
    mkto_sync_result_clear(&r);
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "lead7@example.com", NULL, NULL, NULL, 0), 3);
}

static void test_failed_records(void **state)
{
    mkto_attr a1, a2, a3;
    mkto_sync_result r;
    mkto_fault f = {0};
    mkto_lead l[3] = {mk(999, NULL, NULL, "Company", "X", &a1),
                      mk(1000008, NULL, NULL, "NotAField", "X", &a2),
                      mk(1000009, NULL, NULL, "City", "Paris", &a3)};
    assert_int_equal(simh_sync(&S, l, 3, true, &r, &f), SOAP_OK);
    assert_int_equal(r.nstatuses, 3);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_FAILED);
    assert_string_equal(r.statuses[0].error, "Lead not found");
    assert_int_equal(r.statuses[1].state, MKTO_SYNC_FAILED);
    assert_non_null(strstr(r.statuses[1].error, "20105"));
    assert_int_equal(r.statuses[2].state, MKTO_SYNC_UPDATED);
    mkto_sync_result_clear(&r);
    char val[64];
    assert_int_equal(lookup(MKTO_KEY_IDNUM, "1000009", NULL, "City", val, sizeof(val)), 1);
    assert_string_equal(val, "Paris");
    /* a record without any key (built by hand: the builder refuses it) */
    simh_resp resp;
    assert_int_equal(simh_soap(&S, simh_envelope("<ns1:paramsSyncMultipleLeads><leadRecordList>"
                     "<leadRecord><leadAttributeList><attribute><attrName>City</attrName>"
                     "<attrValue>Rome</attrValue></attribute></leadAttributeList></leadRecord>"
                     "<leadRecord><Email>keyless-ok@example.com</Email></leadRecord>"
                     "</leadRecordList></ns1:paramsSyncMultipleLeads>", NULL, NULL, NULL), &resp), 0);
    assert_int_equal(soap_parse_sync_multiple_leads(resp.body, resp.len, 0, &r, &f, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 2);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_FAILED);
    assert_string_equal(r.statuses[0].error, "Lead key required");
    assert_int_equal(r.statuses[1].state, MKTO_SYNC_CREATED);
    mkto_sync_result_clear(&r);
    simh_resp_free(&resp);
}

/* Posts n records (hand-built) and returns the fault code or 0. */
static int sync_n(int n)
{
    size_t cap = (size_t)n * 96 + 256;
    char *inner = malloc(cap);
    assert_non_null(inner);
    size_t off = (size_t)snprintf(inner, cap, "<ns1:paramsSyncMultipleLeads><leadRecordList>");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(inner + off, cap - off,
                                "<leadRecord><Email>bulk%d@example.net</Email></leadRecord>", i);
    snprintf(inner + off, cap - off, "</leadRecordList></ns1:paramsSyncMultipleLeads>");
    simh_resp resp;
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, NULL), &resp), 0);
    free(inner);
    int code = simh_fault_code(&resp);
    if (code < 0) {
        mkto_sync_result r;
        mkto_fault f = {0};
        assert_int_equal(soap_parse_sync_multiple_leads(resp.body, resp.len, 0, &r, &f, NULL),
                         SOAP_OK);
        assert_int_equal(r.nstatuses, (size_t)n);
        mkto_sync_result_clear(&r);
        code = 0;
    }
    simh_resp_free(&resp);
    return code;
}

static void test_batch_limits(void **state)
{
    assert_int_equal(sync_n(301), 20110);
    assert_int_equal(sync_n(300), 0);
    assert_int_equal(sync_n(0), 20104);
    simh_resp resp;
    assert_int_equal(simh_soap(&S, simh_envelope("<ns1:paramsSyncMultipleLeads/>", NULL, NULL,
                                                 NULL), &resp), 0);
    assert_int_equal(simh_fault_code(&resp), 20104);
    simh_resp_free(&resp);
    assert_int_equal(simh_soap(&S, simh_envelope("<ns1:paramsSyncMultipleLeads><leadRecordList>"
                     "<leadRecord><Id>abc</Id></leadRecord></leadRecordList>"
                     "</ns1:paramsSyncMultipleLeads>", NULL, NULL, NULL), &resp), 0);
    assert_int_equal(simh_fault_code(&resp), 20012);
    simh_resp_free(&resp);
}

static void test_updated_at_after_sync(void **state)
{
    mkto_attr a;
    mkto_sync_result r;
    mkto_fault f = {0};
    mkto_lead l = mk(1000042, NULL, NULL, "City", "Oslo", &a);
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    mkto_sync_result_clear(&r);
    char oldest[SOAP_TIMESTAMP_LEN];
    assert_int_equal(soap_timestamp_format(time(NULL) - 60, 0, oldest), SOAP_OK);
    mkto_query p = {.kind = MKTO_SEL_UPDATED_AT, .oldest_updated_at = oldest,
                           .batch_size = 1000};
    mkto_leads lr;
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_OK);
    bool found42 = false, found43 = false;
    for (size_t i = 0; i < lr.nleads; i++) {
        found42 |= lr.leads[i].id == 1000042;
        found43 |= lr.leads[i].id == 1000043;
    }
    assert_true(found42);
    assert_false(found43);
    mkto_leads_clear(&lr);
}

static void test_sync_lead(void **state)
{
    soap_auth auth = simh_auth();
    mkto_attr a;
    mkto_lead l = mk(0, "single@example.com", NULL, "FirstName", "Sam", &a);
    char *env = NULL;
    size_t len = 0;
    simh_resp resp;
    mkto_sync_result r;
    mkto_fault f = {0};
    assert_int_equal(soap_build_sync_lead(&auth, &l, true, NULL, &env, &len, NULL), SOAP_OK);
    assert_int_equal(simh_soap(&S, env, &resp), 0);
    assert_int_equal(soap_parse_sync_lead(resp.body, resp.len, 0, &r, &f, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 1);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    assert_non_null(strstr(resp.body, "<leadRecord><Id>"));
    assert_non_null(strstr(resp.body, "<attrValue>Sam</attrValue>"));
    mkto_sync_result_clear(&r);
    simh_resp_free(&resp);
    assert_int_equal(soap_build_sync_lead(&auth, &l, false, NULL, &env, &len, NULL), SOAP_OK);
    assert_int_equal(simh_soap(&S, env, &resp), 0);
    assert_int_equal(soap_parse_sync_lead(resp.body, resp.len, 0, &r, &f, NULL), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_non_null(strstr(resp.body, "<leadRecord xsi:nil=\"true\"/>"));
    mkto_sync_result_clear(&r);
    simh_resp_free(&resp);
    static const struct {
        const char *inner;  /* params */
        int code;           /* expected fault */
    } bad[] = {
        {"<ns1:paramsSyncLead><leadRecord><leadAttributeList><attribute><attrName>City</attrName>"
         "<attrValue>X</attrValue></attribute></leadAttributeList></leadRecord>"
         "<returnLead>false</returnLead></ns1:paramsSyncLead>", 20101},
        {"<ns1:paramsSyncLead><leadRecord><Email>single@example.com</Email><leadAttributeList>"
         "<attribute><attrName>Bogus</attrName><attrValue>X</attrValue></attribute>"
         "</leadAttributeList></leadRecord><returnLead>false</returnLead></ns1:paramsSyncLead>",
         20105},
        {"<ns1:paramsSyncLead><leadRecord><Email>single@example.com</Email></leadRecord>"
         "</ns1:paramsSyncLead>", 20109},
        {"<ns1:paramsSyncLead><returnLead>true</returnLead></ns1:paramsSyncLead>", 20104},
        {"<ns1:paramsSyncLead><leadRecord><Id>424242</Id></leadRecord>"
         "<returnLead>true</returnLead></ns1:paramsSyncLead>", 20103},
        {"<ns1:paramsSyncLead><leadRecord><Email>single@example.com</Email></leadRecord>"
         "<returnLead>maybe</returnLead></ns1:paramsSyncLead>", 20012},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(simh_soap(&S, simh_envelope(bad[i].inner, NULL, NULL, NULL), &resp), 0);
        assert_int_equal(simh_fault_code(&resp), bad[i].code);
        simh_resp_free(&resp);
    }
    /* the 20105 record changed nothing */
    char val[64];
    assert_int_equal(lookup(MKTO_KEY_EMAIL, "single@example.com", NULL, "FirstName", val,
                            sizeof(val)), 1);
    assert_string_equal(val, "Sam");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_then_update),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_dedup_off),
        cmocka_unit_test(test_failed_records),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_updated_at_after_sync),
        cmocka_unit_test(test_sync_lead),
    };
    return cmocka_run_group_tests_name("sim_sync", tests, setup, teardown);
}
