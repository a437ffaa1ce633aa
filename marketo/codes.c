/* marketo/codes.c - the table of Marketo's error codes (see codes.h).
 *
 * Messages are the docs' text as a reader sees it: HTML tags and Markdown
 * code marks dropped, entities decoded (REST's &#8216; is a real U+2018),
 * runs of white space as one space; where a cell lists several messages
 * (REST 1029) they are joined with "; ". tests/marketo/test_codes.c reads
 * both pages with the same rules and compares every row.
 *
 * HTTP answers: the SOAP rows are what the gateway has always answered; the
 * REST rows follow the same lines with the statuses the OpenAPI document
 * already lists for the lead routes (400, 404, 429, 502, 504):
 * - the client's input was wrong: 400 invalid-request;
 * - the thing named does not exist: 404 not-found;
 * - rate, concurrency or daily limits: 429 (Retry-After from the retry class);
 * - Marketo refused what the gateway itself built or its credentials (a
 *   gateway or configuration fault the client cannot fix): 502
 *   upstream-rejected;
 * - Marketo failed: 502 upstream-error (504 upstream-timeout for its own
 *   time-out).
 *
 * Keep the rows sorted by code: mkto_code_find() searches by halves, and
 * the test checks the order.
 */
#include "marketo/codes.h"

#include <stdlib.h>

#define SOAP MKTO_API_SOAP
#define REST MKTO_API_REST

#define NONE MKTO_RETRY_NONE
#define REAUTH MKTO_RETRY_REAUTH
#define BACKOFF MKTO_RETRY_BACKOFF
#define LIMITED MKTO_RETRY_LIMITED
#define QUOTA MKTO_RETRY_QUOTA

/* HTTP answers several rows share. */
#define H_NOMAP {0, NULL, NULL}
#define H_INVALID {400, "invalid-request", "Upstream rejected the request as invalid"}
#define H_REJECTED {502, "upstream-rejected", "Upstream rejected the gateway's request"}
#define H_CREDENTIALS {502, "upstream-rejected", "Upstream rejected the gateway's credentials"}
#define H_INTERNAL {502, "upstream-error", "Upstream internal error"}
#define H_TRANSIENT {502, "upstream-error", "Upstream transient error"}
#define H_RATE {429, "rate-limited", "Upstream rate limit reached"}
#define H_CONCURRENCY {429, "rate-limited", "Upstream concurrency limit reached"}
#define H_QUOTA {429, "quota-exhausted", "Daily upstream quota exhausted"}

/* code, apis, documented message, retry class, lead not found, HTTP answer */
static const mkto_code_info codes[] = {
    /* ---- REST, response level (../shared/marketo/rest/error-codes.md,
     * "Response-Level Error Codes"). The whole call failed. */
    {500, REST, "Internal Server error", BACKOFF, false, H_INTERNAL},
    {502, REST, "Bad Gateway", BACKOFF, false, H_INTERNAL},
    {MKTO_CODE_REST_TOKEN_INVALID, REST, "Access token invalid", REAUTH, false, H_CREDENTIALS},
    {MKTO_CODE_REST_TOKEN_EXPIRED, REST, "Access token expired", REAUTH, false, H_CREDENTIALS},
    {603, REST, "Access denied", NONE, false, H_CREDENTIALS},
    {604, REST, "Request time-out", BACKOFF, false, {504, "upstream-timeout", "Upstream timeout"}},
    {605, REST, "HTTP Method not supported", NONE, false, H_REJECTED},
    {MKTO_CODE_REST_RATE_LIMIT, REST, "Max rate limit %s; exceeded with in %s secs", LIMITED, false,
     H_RATE},
    {MKTO_CODE_REST_DAILY_QUOTA, REST, "Daily quota reached", QUOTA, false, H_QUOTA},
    {608, REST, "API Temporarily Unavailable", BACKOFF, false,
     {502, "upstream-error", "Upstream temporarily unavailable"}},
    {609, REST, "Invalid JSON", NONE, false, H_REJECTED},
    {610, REST, "Requested resource not found", NONE, false, H_REJECTED},
    {611, REST, "System error", BACKOFF, false, H_INTERNAL},
    {612, REST, "Invalid Content Type", NONE, false, H_REJECTED},
    {613, REST, "Invalid Multipart Request", NONE, false, H_REJECTED},
    /* "usually indicates temporary inaccessibility" */
    {614, REST, "Invalid Subscription", BACKOFF, false,
     {502, "upstream-error", "Upstream subscription unreachable"}},
    {MKTO_CODE_REST_CONCURRENCY, REST, "Concurrent access limit reached", LIMITED, false,
     H_CONCURRENCY},
    {616, REST, "Invalid subscription type", NONE, false, H_REJECTED},
    {701, REST, "%s cannot be blank", NONE, false, H_INVALID},
    {702, REST, "No data found for a given search scenario", NONE, false,
     {404, "not-found", "No data found"}},
    {703, REST, "The feature is not enabled for the subscription", NONE, false, H_REJECTED},
    {704, REST, "Invalid date format", NONE, false, H_INVALID},
    {709, REST, "Business Rule Violation", NONE, false, H_INVALID},
    {710, REST, "Parent Folder Not Found", NONE, false,
     {404, "not-found", "Parent folder not found"}},
    {711, REST, "Incompatible Folder Type", NONE, false, H_INVALID},
    {712, REST, "Merge to person Account operation is invalid", NONE, false, H_INVALID},
    {713, REST, "Transient Error", BACKOFF, false, H_TRANSIENT},
    {714, REST, "Unable to find the default record type", NONE, false, H_REJECTED},
    {718, REST, "ExternalSalesPersonID not found", NONE, false,
     {404, "not-found", "Sales person not found"}},
    {719, REST, "Lock wait timeout exception", BACKOFF, false, H_TRANSIENT},

    /* ---- REST, record level (same page, "Record-Level Error Codes"): one
     * record of a call was skipped; some also come as response-level errors
     * (1013 from a get by id). */
    {1001, REST, "Invalid value ‘%s'. Required of type ‘%s'", NONE, false, H_INVALID},
    {1002, REST, "Missing value for the required parameter ‘%s'", NONE, false,
     {400, "invalid-request", "Parameter required"}},
    {1003, REST, "Invalid data", NONE, false, H_INVALID},
    {1004, REST, "Lead not found", NONE, true, {404, "not-found", "Lead not found"}},
    /* the gateway never asks for createOnly */
    {1005, REST, "Lead already exists", NONE, false, H_REJECTED},
    {1006, REST, "Field ‘%s' not found", NONE, false,
     {400, "invalid-request", "Unknown lead attribute"}},
    {1007, REST, "Multiple leads match the lookup criteria", NONE, false,
     {400, "invalid-request", "Multiple leads match the key"}},
    {1008, REST, "Access denied to partition ‘%s'", NONE, false, H_CREDENTIALS},
    {1009, REST, "Partition name must be specified", NONE, false, H_INVALID},
    {1010, REST, "Partition update not allowed", NONE, false, H_INVALID},
    {1011, REST, "Field ‘%s' not supported", NONE, false, H_INVALID},
    {1012, REST, "Invalid cookie value ‘%s'", NONE, false, H_INVALID},
    {1013, REST, "Object not found", NONE, false, {404, "not-found", "Object not found"}},
    {1014, REST, "Failed to create Object", NONE, false, H_REJECTED},
    {1015, REST, "Lead not in list", NONE, false, {404, "not-found", "Lead not in list"}},
    {1016, REST, "Too many imports", NONE, false, H_REJECTED},
    {1017, REST, "Object already exists", NONE, false, H_REJECTED},
    {1018, REST, "CRM Enabled", NONE, false, H_REJECTED},
    {1019, REST, "Import in progress", NONE, false, H_REJECTED},
    {1020, REST, "Too many clones to program", NONE, false, H_REJECTED},
    {1021, REST, "Company update not allowed", NONE, false, H_INVALID},
    {1022, REST, "Object in use", NONE, false, H_REJECTED},
    {1025, REST, "Program status not found", NONE, false, H_INVALID},
    {1026, REST, "Custom object not enabled", NONE, false, H_REJECTED},
    {1027, REST, "Max Activity Type Limit Reached", NONE, false, H_REJECTED},
    {1028, REST, "Max field limit reached", NONE, false, H_INVALID},
    {1029, REST, "Too many jobs in queue; Export daily quota exceeded; Job already queued", NONE,
     false, H_REJECTED},
    {1035, REST, "Unsupported filter type", NONE, false, H_REJECTED},
    {1036, REST, "Duplicate object found in input", NONE, false, H_INVALID},
    {1037, REST, "Lead was skipped", NONE, false, H_INVALID},
    {1042, REST, "Invalid runAt date", NONE, false, H_INVALID},
    {1048, REST, "Custom Object Discard Draft Failed", NONE, false, H_REJECTED},
    {1049, REST, "Failed to Create Activity", NONE, false, H_INVALID},
    {1076, REST, "Merge Leads call with mergeInCRM flag is 4.", NONE, false, H_REJECTED},
    {1077, REST, "Merge Leads call failed due to SFDC Field length", NONE, false, H_INVALID},
    {1078, REST,
     "Merge Leads call failed due to deleted entity, not a lead/contact, or field filter "
     "criteria does not match.",
     NONE, false, H_REJECTED},
    {1079, REST, "Merge Leads call failed due to Personalized URL conflict in duplicate records",
     NONE, false, H_INVALID},

    /* ---- SOAP faults (../shared/marketo/docs/error-codes.md) */
    {MKTO_CODE_INTERNAL_ERROR, SOAP, "Internal Error", BACKOFF, false, H_INTERNAL},
    {MKTO_CODE_SERVICE_FAILURE, SOAP, "Internal Error", BACKOFF, false, H_INTERNAL},
    {20012, SOAP, "Request Not Understood", NONE, false, H_REJECTED},
    {20013, SOAP, "Access Denied", NONE, false, H_CREDENTIALS},
    {20014, SOAP, "Authentication failed", NONE, false, H_CREDENTIALS},
    {MKTO_CODE_DAILY_QUOTA, SOAP, "Request Limit Exceeded", QUOTA, false, H_QUOTA},
    {MKTO_CODE_REQUEST_EXPIRED, SOAP, "Request Expired", REAUTH, false,
     {502, "upstream-clock-skew", "Upstream rejected the request signature as expired"}},
    {20017, SOAP, "Invalid Request", NONE, false, H_INVALID},
    {20019, SOAP, "Unsupported Operation", NONE, false, H_REJECTED},
    {20022, SOAP, "Time range specified in query filter exceeded limit", NONE, false,
     {400, "invalid-request", "Time range too long"}},
    {MKTO_CODE_RATE_LIMIT, SOAP, "Rate Limit Exceeded", LIMITED, false, H_RATE},
    {MKTO_CODE_CONCURRENCY, SOAP, "Concurrency Limit Exceeded", LIMITED, false, H_CONCURRENCY},
    {20101, SOAP, "Lead Key Required", NONE, false, {400, "invalid-request", "Lead key required"}},
    {20102, SOAP, "Lead Key Bad", NONE, false, {400, "invalid-request", "Invalid lead key type"}},
    {MKTO_CODE_LEAD_NOT_FOUND, SOAP, "Lead Not Found", NONE, true,
     {404, "not-found", "Lead not found"}},
    {20104, SOAP, "Lead Detail Required", NONE, false,
     {400, "invalid-request", "Lead record required"}},
    {20105, SOAP, "Lead Attribute Bad", NONE, false,
     {400, "invalid-request", "Unknown lead attribute"}},
    {20106, SOAP, "Lead Sync Failed", NONE, false,
     {502, "upstream-error", "Upstream could not sync the lead"}},
    /* The gateway sends no activity filter and no campaign: these two have
     * never had an answer of their own (an unexpected fault, 502). */
    {20107, SOAP, "Activity Key Bad", NONE, false, H_NOMAP},
    {20108, SOAP, "Lead Owner Not Found", NONE, false, {404, "not-found", "Lead owner not found"}},
    {20109, SOAP, "Parameter Required", NONE, false,
     {400, "invalid-request", "Parameter required"}},
    {20110, SOAP, "Bad Parameter", NONE, false, {400, "invalid-request", "Bad parameter"}},
    {20111, SOAP, "List Not Found", NONE, false, {404, "not-found", "Static list not found"}},
    {20113, SOAP, "Campaign Not Found", NONE, false, H_NOMAP},
    {20114, SOAP, "Bad Parameter", NONE, false, {400, "invalid-request", "Bad parameter"}},
    {20122, SOAP, "Bad Stream Position", NONE, false,
     {400, "invalid-cursor", "Bad stream position"}},
    {20123, SOAP, "Stream at End", NONE, false, {502, "upstream-error", "Upstream stream at end"}},
};

#define NCODES (sizeof codes / sizeof codes[0])

/* bsearch comparator: the int key against a row's code. */
static int cmp_code(const void *key, const void *row)
{
    int k = *(const int *)key;
    int c = ((const mkto_code_info *)row)->code;
    return (k > c) - (k < c);
}

const mkto_code_info *mkto_code_find(int code)
{
    return bsearch(&code, codes, NCODES, sizeof codes[0], cmp_code);
}

const mkto_code_info *mkto_code_table(size_t *n)
{
    if (n != NULL)
        *n = NCODES;
    return codes;
}

mkto_retry mkto_code_retry(int code)
{
    const mkto_code_info *c = mkto_code_find(code);
    return c != NULL ? c->retry : MKTO_RETRY_NONE;
}

bool mkto_code_retryable(int code)
{
    switch (mkto_code_retry(code)) {
    case MKTO_RETRY_REAUTH:
    case MKTO_RETRY_BACKOFF:
    case MKTO_RETRY_LIMITED:
        return true;
    case MKTO_RETRY_NONE:
    case MKTO_RETRY_QUOTA:
    default:
        return false;
    }
}

const char *mkto_code_message(int code)
{
    const mkto_code_info *c = mkto_code_find(code);
    return c != NULL ? c->message : NULL;
}

bool mkto_code_is_lead_not_found(int code)
{
    const mkto_code_info *c = mkto_code_find(code);
    return c != NULL && c->lead_not_found;
}
