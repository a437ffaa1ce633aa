/* tests/fuzz/fuzz_soap_response.c - the four SOAP response parsers.
 *
 * Input: byte 0 picks the parser (getLead, getMultipleLeads, syncLead,
 * syncMultipleLeads; modulo 4), the rest is the HTTP body. Checks the
 * contract of soap/soap.h besides memory safety: on SOAP_OK every string the
 * result holds is readable and every attribute has a name; on
 * SOAP_ERR_FAULT the result is empty; any other status fills err. Parsed
 * leads are also turned into the gateway's JSON (gw_lead_to_json, the typed
 * attribute conversion) and serialised: never NULL.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "gateway/leads/leadjson.h"
#include "soap/soap.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every byte of an optional string so that ASan sees an unterminated
 * or freed one. Returns its length (0 for NULL). */
static size_t touch(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

/* Checks one parsed lead. */
static void check_lead(const mkto_lead *l, size_t i)
{
    touch(l->email);
    touch(l->foreign_sys_person_id);
    touch(l->foreign_sys_type);
    if (l->nattrs > 0 && l->attrs == NULL)
        fuzz_fail("lead %zu: nattrs %zu with attrs NULL", i, l->nattrs);
    for (size_t a = 0; a < l->nattrs; a++) {
        if (l->attrs[a].name == NULL)
            fuzz_fail("lead %zu attr %zu: name NULL on SOAP_OK", i, a);
        touch(l->attrs[a].name);
        touch(l->attrs[a].type);
        touch(l->attrs[a].value);
    }
    json_t *j = gw_lead_to_json(l);
    if (j == NULL)
        fuzz_fail("lead %zu: gw_lead_to_json returned NULL", i);
    char *text = json_dumps(j, JSON_COMPACT);
    if (text == NULL)
        fuzz_fail("lead %zu: its JSON does not serialise", i);
    free(text);
    json_decref(j);
}

/* Checks a leads result after rc; is_get_lead: getLead (no stream position). */
static void check_leads(int rc, const mkto_leads *r, const mkto_fault *f, bool is_get_lead)
{
    if (rc == SOAP_OK) {
        if (r->nleads > 0 && r->leads == NULL)
            fuzz_fail("nleads %zu with leads NULL", r->nleads);
        for (size_t i = 0; i < r->nleads; i++)
            check_lead(&r->leads[i], i);
        if (!is_get_lead && r->new_stream_position == NULL)
            fuzz_fail("getMultipleLeads OK with new_stream_position NULL");
        touch(r->new_stream_position);
    } else if (rc == SOAP_ERR_FAULT) {
        if (r->leads != NULL || r->nleads != 0 || r->new_stream_position != NULL)
            fuzz_fail("SOAP_ERR_FAULT with a non-empty leads result (%zu leads)", r->nleads);
        touch(f->faultcode);
        touch(f->faultstring);
        touch(f->message);
    }
}

/* Checks a sync result after rc. */
static void check_sync(int rc, const mkto_sync_result *r, const mkto_fault *f)
{
    if (rc == SOAP_OK) {
        if (r->nstatuses > 0 && r->statuses == NULL)
            fuzz_fail("nstatuses %zu with statuses NULL", r->nstatuses);
        for (size_t i = 0; i < r->nstatuses; i++) {
            mkto_sync_state s = r->statuses[i].state;
            if (s != MKTO_SYNC_CREATED && s != MKTO_SYNC_UPDATED && s != MKTO_SYNC_FAILED)
                fuzz_fail("status %zu: state %d out of range", i, (int)s);
            touch(r->statuses[i].error);
        }
    } else if (rc == SOAP_ERR_FAULT) {
        if (r->statuses != NULL || r->nstatuses != 0)
            fuzz_fail("SOAP_ERR_FAULT with a non-empty sync result (%zu statuses)",
                      r->nstatuses);
        touch(f->faultcode);
        touch(f->faultstring);
        touch(f->message);
    }
}

/* Checks the status code itself and, for plain errors, that err was filled. */
static void check_status(int rc, const soap_err *err)
{
    switch (rc) {
    case SOAP_OK:
    case SOAP_ERR_FAULT:
        return;
    case SOAP_ERR_INVALID:
    case SOAP_ERR_PARSE:
    case SOAP_ERR_TOO_LARGE:
    case SOAP_ERR_OOM:
        if (memchr(err->msg, '\0', sizeof err->msg) == NULL)
            fuzz_fail("err.msg not NUL-terminated");
        if (err->msg[0] == '\0')
            fuzz_fail("status %d with an empty err.msg", rc);
        if (err->code != rc)
            fuzz_fail("status %d but err.code %d", rc, err->code);
        return;
    default:
        fuzz_fail("status %d is not a soap_status", rc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        soap_init();
        inited = true;
    }
    if (size < 1)
        return 0;
    unsigned which = data[0] % 4u;
    /* The parsers get exactly the body's bytes, in a buffer of that size. */
    size_t len = size - 1;
    char *body = malloc(len > 0 ? len : 1);
    if (body == NULL)
        return 0;
    if (len > 0)
        memcpy(body, data + 1, len);

    mkto_fault fault;
    soap_err err;
    memset(&fault, 0, sizeof fault);
    memset(&err, 0, sizeof err);
    int rc;
    if (which <= 1) {
        mkto_leads r;
        memset(&r, 0, sizeof r);
        if (which == 0)
            rc = soap_parse_get_lead(body, len, 0, &r, &fault, &err);
        else
            rc = soap_parse_get_multiple_leads(body, len, 0, &r, &fault, &err);
        check_status(rc, &err);
        check_leads(rc, &r, &fault, which == 0);
        mkto_leads_clear(&r);
    } else {
        mkto_sync_result r;
        memset(&r, 0, sizeof r);
        if (which == 2)
            rc = soap_parse_sync_lead(body, len, 0, &r, &fault, &err);
        else
            rc = soap_parse_sync_multiple_leads(body, len, 0, &r, &fault, &err);
        check_status(rc, &err);
        check_sync(rc, &r, &fault);
        mkto_sync_result_clear(&r);
    }
    mkto_fault_clear(&fault);
    free(body);
    return 0;
}
