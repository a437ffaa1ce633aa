/* tests/sim/harness.c - see harness.h. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

int simh_start(simh *s, const char *const *extra)
{
    static const char prefix[] = "marketo-sim listening on 127.0.0.1:";
    static const spawn_opts piped = {.out = SPAWN_PIPE};
    const char *bin = getenv("SIM_BIN");
    const char *argv[64];
    char line[256];
    int n = 0;
    memset(s, 0, sizeof(*s));
    if (bin == NULL)
        return -1;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--user-id";
    argv[n++] = SIMH_USER;
    argv[n++] = "--encryption-key";
    argv[n++] = SIMH_KEY;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    if (spawn_start(&s->proc, argv, &piped) != 0)
        return -1;
    if (spawn_read_line(&s->proc, line, sizeof(line), 10000) < 0 ||
        strncmp(line, prefix, strlen(prefix)) != 0) {
        simh_stop(s);
        return -1;
    }
    s->port = (int)strtol(line + strlen(prefix), NULL, 10);
    snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%d", s->port);
    snprintf(s->soap_url, sizeof(s->soap_url), "%s/soap/mktows/2_3", s->base);
    return s->port > 0 ? 0 : -1;
}

int simh_stop(simh *s)
{
    return spawn_stop(&s->proc, 10000);
}

/* curl write callback into a simh_resp. */
static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    simh_resp *r = ud;
    size_t n = size * nmemb;
    char *nb = realloc(r->body, r->len + n + 1);
    if (nb == NULL)
        return 0;
    memcpy(nb + r->len, p, n);
    r->body = nb;
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* One request: body NULL = GET. */
static int request(const simh *s, const char *path, const char *body, size_t len,
                   const char *ctype, simh_resp *r)
{
    char url[256];
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "%s%s", s->base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char hdr[160];
    if (c == NULL)
        return -1;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    if (body != NULL) {
        snprintf(hdr, sizeof(hdr), "Content-Type: %s", ctype);
        h = curl_slist_append(h, hdr);
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    r->curl_rc = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (ct != NULL)
        snprintf(r->ctype, sizeof(r->ctype), "%s", ct);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (r->body == NULL)
        r->body = calloc(1, 1);
    return r->curl_rc == 0 ? 0 : -1;
}

int simh_post(const simh *s, const char *path, const char *body, size_t len, simh_resp *r)
{
    return request(s, path, body, len, "text/xml; charset=UTF-8", r);
}

int simh_get(const simh *s, const char *path, simh_resp *r)
{
    return request(s, path, NULL, 0, NULL, r);
}

void simh_resp_free(simh_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

soap_auth simh_auth(void)
{
    return (soap_auth){.user_id = SIMH_USER, .encryption_key = SIMH_KEY, .timestamp = NULL};
}

char *simh_envelope(const char *inner, const char *user, const char *key, const char *ts)
{
    char now[SOAP_TIMESTAMP_LEN], sig[SOAP_SIGNATURE_LEN];
    if (ts == NULL) {
        soap_timestamp_now(now);
        ts = now;
    }
    if (user == NULL)
        user = SIMH_USER;
    soap_sign(key != NULL ? key : SIMH_KEY, ts, user, sig);
#define ENVELOPE_FMT                                                                    \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                                        \
    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "       \
    "xmlns:ns1=\"http://www.marketo.com/mktows/\" "                                          \
    "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"                               \
    "<SOAP-ENV:Header><ns1:AuthenticationHeader><mktowsUserId>%s</mktowsUserId>"            \
    "<requestSignature>%s</requestSignature><requestTimestamp>%s</requestTimestamp>"        \
    "</ns1:AuthenticationHeader></SOAP-ENV:Header><SOAP-ENV:Body>%s</SOAP-ENV:Body>"        \
    "</SOAP-ENV:Envelope>"
    size_t n = sizeof(ENVELOPE_FMT) + strlen(user) + strlen(ts) + strlen(inner) + 64;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, ENVELOPE_FMT, user, sig, ts, inner);
    return out;
}

int simh_soap(const simh *s, char *env, simh_resp *r)
{
    int rc = env != NULL ? simh_post(s, "/soap/mktows/2_3", env, strlen(env), r) : -1;
    free(env);
    return rc;
}

int simh_fault_code(const simh_resp *r)
{
    mkto_leads res = {0};
    mkto_fault f = {0};
    int code = -1;
    if (r->body != NULL && soap_parse_get_lead(r->body, r->len, 0, &res, &f, NULL) == SOAP_ERR_FAULT)
        code = f.code;
    mkto_leads_clear(&res);
    mkto_fault_clear(&f);
    return code;
}

json_t *simh_stats(const simh *s)
{
    simh_resp r;
    json_t *j = NULL;
    if (simh_get(s, "/_sim/stats", &r) == 0 && r.status == 200)
        j = json_loadb(r.body, r.len, 0, NULL);
    simh_resp_free(&r);
    return j;
}

long simh_stat(json_t *stats, const char *op, const char *field)
{
    json_t *v = json_object_get(json_object_get(json_object_get(stats, "operations"), op), field);
    return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

long simh_admin(const simh *s, const char *path, const char *json)
{
    simh_resp r;
    long st = -1;
    if (request(s, path, json, strlen(json), "application/json", &r) == 0)
        st = r.status;
    simh_resp_free(&r);
    return st;
}

int simh_get_multiple(const simh *s, const mkto_query *p, mkto_leads *out,
                      mkto_fault *fault)
{
    soap_auth a = simh_auth();
    char *env = NULL;
    size_t len = 0;
    simh_resp r;
    memset(out, 0, sizeof(*out));
    if (soap_build_get_multiple_leads(&a, p, &env, &len, NULL) != SOAP_OK)
        return SOAP_ERR_INVALID;
    if (simh_soap(s, env, &r) != 0) {
        simh_resp_free(&r);
        return SOAP_ERR_PARSE;
    }
    int rc = soap_parse_get_multiple_leads(r.body, r.len, 0, out, fault, NULL);
    simh_resp_free(&r);
    return rc;
}

int simh_get_lead(const simh *s, mkto_key_type t, const char *value, mkto_leads *out,
                  mkto_fault *fault)
{
    soap_auth a = simh_auth();
    char *env = NULL;
    size_t len = 0;
    simh_resp r;
    memset(out, 0, sizeof(*out));
    if (soap_build_get_lead(&a, t, value, &env, &len, NULL) != SOAP_OK)
        return SOAP_ERR_INVALID;
    if (simh_soap(s, env, &r) != 0) {
        simh_resp_free(&r);
        return SOAP_ERR_PARSE;
    }
    int rc = soap_parse_get_lead(r.body, r.len, 0, out, fault, NULL);
    simh_resp_free(&r);
    return rc;
}

int simh_sync(const simh *s, const mkto_lead *leads, size_t n, bool dedup,
              mkto_sync_result *out, mkto_fault *fault)
{
    soap_auth a = simh_auth();
    char *env = NULL;
    size_t len = 0;
    simh_resp r;
    memset(out, 0, sizeof(*out));
    if (soap_build_sync_multiple_leads(&a, leads, n, dedup, &env, &len, NULL) != SOAP_OK)
        return SOAP_ERR_INVALID;
    if (simh_soap(s, env, &r) != 0) {
        simh_resp_free(&r);
        return SOAP_ERR_PARSE;
    }
    int rc = soap_parse_sync_multiple_leads(r.body, r.len, 0, out, fault, NULL);
    simh_resp_free(&r);
    return rc;
}

const char *simh_attr(const mkto_lead *l, const char *name)
{
    for (size_t i = 0; i < l->nattrs; i++)
        if (strcmp(l->attrs[i].name, name) == 0)
            return l->attrs[i].value;
    return NULL;
}
