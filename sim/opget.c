/* sim/opget.c - getLead and getMultipleLeads, with stream positions.
 *
 * A stream position is "<kind>.<latest>.<updatedAt>.<id>.<mac>": where the
 * previous page ended in the selector's stable order (lead id for keys and
 * lists; (updatedAt, id) for LastUpdateAtSelector), the effective
 * latestUpdatedAt of an open-ended LastUpdateAtSelector (fixed by the first
 * page), and 24 hex digits of an HMAC-SHA256, under a per-process random
 * secret, over those fields and a fingerprint of the selector. Garbage, a
 * token of another selector, or a token of another sim process gives 20122.
 */
#include "sim/ops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "soap/soap.h"

/* Secret of the stream-position MACs, random per process. */
static unsigned char stream_secret[32];

int sim_stream_init(void)
{
    return RAND_bytes(stream_secret, sizeof(stream_secret)) == 1 ? 0 : -1;
}

/* ---- getLead ---------------------------------------------------------------- */

int sim_op_get_lead(xmlNodePtr params, char **body, size_t *len)
{
    static const char *const top[] = {"leadKey"};
    static const char *const keyseq[] = {"keyType", "keyValue"};
    xmlNodePtr p[1], k[2];
    char *type = NULL, *value = NULL;
    const sim_lead **leads = NULL;
    sim_store *st = sim_soap_config()->store;
    bool locked = false;
    int fault = sx_seq(params, top, 1, p);
    if (fault != 0)
        goto out;
    if (p[0] == NULL || sx_is_nil(p[0])) {
        fault = 20101;
        goto out;
    }
    if ((fault = sx_seq(p[0], keyseq, 2, k)) != 0)
        goto out;
    if (k[0] == NULL || k[1] == NULL) {
        fault = 20101;
        goto out;
    }
    type = sx_text(k[0]);
    value = sx_text(k[1]);
    mkto_key_type kt;
    if (type == NULL || value == NULL) {
        fault = 10001;
        goto out;
    }
    if (mkto_key_type_parse(type, &kt) != 0) {
        fault = 20102;
        goto out;
    }
    sim_store_rdlock(st);
    locked = true;
    const char *keys[1] = {value};
    long n = sim_store_match_keys(st, kt, keys, 1, &leads);
    if (n < 0) {
        fault = 10001;
        goto out;
    }
    if (n == 0) {
        fault = 20103;
        goto out;
    }
    xout x;
    if (xout_begin(&x, "successGetLead") != 0) {
        fault = 10001;
        goto out;
    }
    xout_start(&x, "result");
    xout_int(&x, "count", n);
    xout_start(&x, "leadRecordList");
    for (long i = 0; i < n; i++)
        xout_lead(&x, leads[i], NULL);
    if (xout_finish(&x, body, len) != 0)
        fault = 10001;
out:
    if (locked)
        sim_store_unlock(st);
    free(leads);
    free(type);
    free(value);
    return fault;
}

/* ---- getMultipleLeads ------------------------------------------------------- */

/* Most keyValues honoured; the rest are ignored, as Marketo does. */
#define MAX_KEYS SOAP_MAX_KEYS_PER_CALL

/* A parsed getMultipleLeads request. */
typedef struct gm_req {
    char kind;                 /* 'K' keys, 'L' static list, 'U' updated-at */
    mkto_key_type key_type;    /* K: keyType */
    char *keys[MAX_KEYS];      /* K: first keyValues (malloc'd) */
    size_t nkeys;              /* K: entries in keys */
    char *list_name;           /* L: staticListName or NULL */
    int64_t list_id;           /* L: staticListId, 0 when absent */
    time_t oldest;             /* U: oldestUpdatedAt */
    time_t latest;             /* U: latestUpdatedAt (effective) */
    bool has_latest;           /* U: latestUpdatedAt given */
    char *stream;              /* streamPosition, NULL when absent/empty */
    int batch;                 /* batchSize, capped */
    bool filter;               /* includeAttributes given */
    bool include[SIM_NFIELDS]; /* includeAttributes as catalogue flags */
} gm_req;

/* Frees the strings of r. */
static void gm_free(gm_req *r)
{
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->list_name);
    free(r->stream);
}

/* Resolves xsi:type of the leadSelector element to 'K', 'L', 'U' or 0. */
static char selector_kind(xmlNodePtr sel)
{
    xmlChar *t = xmlGetNsProp(sel, BAD_CAST "type", BAD_CAST SOAP_XSI_NS);
    char kind = 0;
    if (t == NULL)
        return 0;
    const char *local = strchr((const char *)t, ':');
    xmlNsPtr ns = NULL;
    if (local != NULL) {
        char prefix[64];
        size_t plen = (size_t)(local - (const char *)t);
        if (plen < sizeof(prefix)) {
            memcpy(prefix, t, plen);
            prefix[plen] = '\0';
            ns = xmlSearchNs(sel->doc, sel, BAD_CAST prefix);
        }
        local++;
    } else {
        local = (const char *)t;
        ns = xmlSearchNs(sel->doc, sel, NULL);
    }
    if (ns != NULL && ns->href != NULL && strcmp((const char *)ns->href, SOAP_NS) == 0) {
        if (strcmp(local, "LeadKeySelector") == 0)
            kind = 'K';
        else if (strcmp(local, "StaticListSelector") == 0)
            kind = 'L';
        else if (strcmp(local, "LastUpdateAtSelector") == 0)
            kind = 'U';
    }
    xmlFree(t);
    return kind;
}

/* Parses a LeadKeySelector's children into r. Returns 0 or a fault code. */
static int parse_keys(xmlNodePtr sel, gm_req *r)
{
    static const char *const seq[] = {"keyType", "keyValues"};
    xmlNodePtr c[2];
    int fault = sx_seq(sel, seq, 2, c);
    if (fault != 0)
        return fault;
    if (c[0] == NULL || c[1] == NULL || sx_is_nil(c[0]))
        return 20109;
    char *type = sx_text(c[0]);
    if (type == NULL)
        return 10001;
    fault = mkto_key_type_parse(type, &r->key_type) == 0 ? 0 : 20102;
    free(type);
    if (fault != 0)
        return fault;
    size_t total = 0;
    for (xmlNodePtr it = c[1]->children; it != NULL; it = it->next) {
        if (it->type == XML_TEXT_NODE || it->type == XML_COMMENT_NODE)
            continue;
        if (it->type != XML_ELEMENT_NODE || !sx_is(it, "stringItem"))
            return 20012;
        total++;
        if (r->nkeys < MAX_KEYS) {
            r->keys[r->nkeys] = sx_text(it);
            if (r->keys[r->nkeys] == NULL)
                return 10001;
            r->nkeys++;
        }
    }
    return total == 0 ? 20109 : 0;
}

/* Parses a StaticListSelector's children into r. Returns 0 or a fault code. */
static int parse_list(xmlNodePtr sel, gm_req *r)
{
    static const char *const seq[] = {"staticListName", "staticListId"};
    xmlNodePtr c[2];
    int fault = sx_seq(sel, seq, 2, c);
    if (fault != 0)
        return fault;
    if (c[1] != NULL && !sx_is_nil(c[1])) {
        if ((fault = sx_int(c[1], &r->list_id)) != 0)
            return fault;
        if (r->list_id <= 0)
            return 20111;
    }
    if (c[0] != NULL && !sx_is_nil(c[0])) {
        r->list_name = sx_text(c[0]);
        if (r->list_name == NULL)
            return 10001;
    }
    if (r->list_id == 0 && (r->list_name == NULL || r->list_name[0] == '\0'))
        return 20109;
    return 0;
}

/* Parses a LastUpdateAtSelector's children into r. Returns 0 or a fault. */
static int parse_updated(xmlNodePtr sel, gm_req *r)
{
    static const char *const seq[] = {"latestUpdatedAt", "oldestUpdatedAt"};
    xmlNodePtr c[2];
    int fault = sx_seq(sel, seq, 2, c);
    if (fault != 0)
        return fault;
    if (c[1] == NULL || sx_is_nil(c[1]))
        return 20109;
    if ((fault = sx_time(c[1], &r->oldest)) != 0)
        return fault;
    if (c[0] != NULL && !sx_is_nil(c[0])) {
        if ((fault = sx_time(c[0], &r->latest)) != 0)
            return fault;
        r->has_latest = true;
    }
    return 0;
}

/* Parses the whole paramsGetMultipleLeads element. Returns 0 or a fault. */
static int gm_parse(xmlNodePtr params, gm_req *r)
{
    static const char *const seq[] = {"leadSelector", "lastUpdatedAt", "streamPosition",
                                      "batchSize", "includeAttributes"};
    xmlNodePtr c[5];
    int fault = sx_seq(params, seq, 5, c);
    if (fault != 0)
        return fault;
    if (c[0] != NULL) {
        r->kind = selector_kind(c[0]);
        if (r->kind == 0)
            return 20017;
        fault = r->kind == 'K' ? parse_keys(c[0], r)
              : r->kind == 'L' ? parse_list(c[0], r) : parse_updated(c[0], r);
        if (fault != 0)
            return fault;
    } else if (c[1] != NULL && !sx_is_nil(c[1])) {
        /* deprecated lastUpdatedAt: an open-ended LastUpdateAtSelector */
        r->kind = 'U';
        if ((fault = sx_time(c[1], &r->oldest)) != 0)
            return fault;
    } else {
        return 20109;
    }
    if (c[2] != NULL && !sx_is_nil(c[2])) {
        r->stream = sx_text(c[2]);
        if (r->stream == NULL)
            return 10001;
        if (r->stream[0] == '\0') {
            free(r->stream);
            r->stream = NULL;
        }
    }
    r->batch = 100;
    if (c[3] != NULL && !sx_is_nil(c[3])) {
        int64_t b;
        if ((fault = sx_int(c[3], &b)) != 0)
            return fault;
        if (b < 1)
            return 20110;
        r->batch = b > SOAP_MAX_BATCH_SIZE ? SOAP_MAX_BATCH_SIZE : (int)b;
    }
    if (c[4] != NULL) {
        for (xmlNodePtr it = c[4]->children; it != NULL; it = it->next) {
            if (it->type == XML_TEXT_NODE || it->type == XML_COMMENT_NODE)
                continue;
            if (it->type != XML_ELEMENT_NODE || !sx_is(it, "stringItem"))
                return 20012;
            char *name = sx_text(it);
            if (name == NULL)
                return 10001;
            int f = sim_field_index(name);
            free(name);
            r->filter = true;
            if (f >= 0)
                r->include[f] = true;
        }
    }
    return 0;
}

/* Fingerprint of the selector (SHA-256 of its canonical form) into fp. */
static int fingerprint(const gm_req *r, unsigned char fp[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char head[96];
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    if (r->kind == 'K') {
        snprintf(head, sizeof(head), "K|%d|", (int)r->key_type);
        ok = ok && EVP_DigestUpdate(ctx, head, strlen(head)) == 1;
        for (size_t i = 0; ok && i < r->nkeys; i++)
            ok = EVP_DigestUpdate(ctx, r->keys[i], strlen(r->keys[i]) + 1) == 1;
    } else if (r->kind == 'L') {
        snprintf(head, sizeof(head), "L|%" PRId64 "|", r->list_id);
        ok = ok && EVP_DigestUpdate(ctx, head, strlen(head)) == 1;
        if (r->list_id == 0 && r->list_name != NULL)
            ok = ok && EVP_DigestUpdate(ctx, r->list_name, strlen(r->list_name)) == 1;
    } else {
        snprintf(head, sizeof(head), "U|%lld|%lld", (long long)r->oldest,
                 r->has_latest ? (long long)r->latest : -1LL);
        ok = ok && EVP_DigestUpdate(ctx, head, strlen(head)) == 1;
    }
    unsigned int n = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, fp, &n) == 1 && n == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* Size of a stream position token. */
#define TOKEN_MAX 128
/* Hex digits of MAC in a token. */
#define MAC_HEX 24

/* MAC (MAC_HEX hex digits) of payload and fp into hex. Returns 0 or -1. */
static int token_mac(const char *payload, const unsigned char fp[32], char hex[MAC_HEX + 1])
{
    unsigned char msg[TOKEN_MAX + 33];
    size_t pl = strlen(payload);
    if (pl >= TOKEN_MAX)
        return -1;
    memcpy(msg, payload, pl);
    msg[pl] = '|';
    memcpy(msg + pl + 1, fp, 32);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), stream_secret, sizeof(stream_secret), msg, pl + 33, mac, &maclen) ==
        NULL)
        return -1;
    for (int i = 0; i < MAC_HEX / 2; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

/* A decoded stream position. */
typedef struct pos {
    long long latest;  /* effective latestUpdatedAt (U without latest) */
    long long upd;     /* updatedAt of the last lead sent */
    long long id;      /* id of the last lead sent */
} pos;

/* Writes the token for position p into out. Returns 0 or -1. */
static int token_make(const gm_req *r, const unsigned char fp[32], const pos *p,
                      char out[TOKEN_MAX])
{
    char payload[TOKEN_MAX - MAC_HEX - 1], mac[MAC_HEX + 1];
    snprintf(payload, sizeof(payload), "%c.%lld.%lld.%lld", r->kind, p->latest, p->upd, p->id);
    if (token_mac(payload, fp, mac) != 0)
        return -1;
    snprintf(out, TOKEN_MAX, "%s.%s", payload, mac);
    return 0;
}

/* Reads one "<int>." field at *s; advances *s. Returns 0 or -1. */
static int token_field(const char **s, long long *out)
{
    errno = 0;
    char *end = NULL;
    long long v = strtoll(*s, &end, 10);
    if (errno != 0 || end == *s || *end != '.')
        return -1;
    *out = v;
    *s = end + 1;
    return 0;
}

/* Checks and decodes token t for selector r. Returns 0 or 20122. */
static int token_read(const gm_req *r, const unsigned char fp[32], const char *t, pos *p)
{
    size_t len = strlen(t);
    if (len >= TOKEN_MAX || len < MAC_HEX + 8 || t[0] != r->kind || t[1] != '.')
        return 20122;
    const char *s = t + 2;
    if (token_field(&s, &p->latest) != 0 || token_field(&s, &p->upd) != 0 ||
        token_field(&s, &p->id) != 0 || strlen(s) != MAC_HEX)
        return 20122;
    char payload[TOKEN_MAX], mac[MAC_HEX + 1];
    size_t pl = (size_t)(s - 1 - t);
    memcpy(payload, t, pl);
    payload[pl] = '\0';
    if (token_mac(payload, fp, mac) != 0 || CRYPTO_memcmp(mac, s, MAC_HEX) != 0)
        return 20122;
    return 0;
}

/* Whether lead l comes after position p in the selector's order. */
static bool after(char kind, const sim_lead *l, const pos *p)
{
    if (kind == 'U' && (long long)l->updated_at != p->upd)
        return (long long)l->updated_at > p->upd;
    return l->id > p->id;
}

int sim_op_get_multiple(xmlNodePtr params, char **body, size_t *len)
{
    gm_req r;
    memset(&r, 0, sizeof(r));
    const sim_lead **leads = NULL;
    sim_store *st = sim_soap_config()->store;
    bool locked = false, have_pos = false;
    unsigned char fp[32];
    pos p = {0};
    int fault = gm_parse(params, &r);
    if (fault != 0)
        goto out;
    if (fingerprint(&r, fp) != 0) {
        fault = 10001;
        goto out;
    }
    if (r.stream != NULL) {
        if ((fault = token_read(&r, fp, r.stream, &p)) != 0)
            goto out;
        have_pos = true;
    }
    if (r.kind == 'U' && !r.has_latest)
        r.latest = have_pos ? (time_t)p.latest : time(NULL);
    if (r.kind == 'U' && r.latest - r.oldest > (time_t)SOAP_MAX_WINDOW_DAYS * 86400) {
        fault = 20022;
        goto out;
    }
    sim_store_rdlock(st);
    locked = true;
    long n;
    if (r.kind == 'K') {
        n = sim_store_match_keys(st, r.key_type, (const char *const *)r.keys, r.nkeys, &leads);
    } else if (r.kind == 'L') {
        const sim_list *list = sim_store_find_list(st, r.list_name, r.list_id);
        if (list == NULL) {
            fault = 20111;
            goto out;
        }
        n = sim_store_list_leads(st, list, &leads);
    } else {
        n = r.oldest > r.latest ? 0 : sim_store_updated_between(st, r.oldest, r.latest, &leads);
    }
    if (n < 0) {
        fault = 10001;
        goto out;
    }
    long start = 0;
    if (have_pos) {
        long lo = 0, hi = n;  /* first lead after p: the order is sorted */
        while (lo < hi) {
            long mid = lo + (hi - lo) / 2;
            if (after(r.kind, leads[mid], &p))
                hi = mid;
            else
                lo = mid + 1;
        }
        start = lo;
    }
    long count = n - start < r.batch ? n - start : r.batch;
    long remaining = n - start - count;
    char token[TOKEN_MAX] = "";
    if (remaining > 0) {
        const sim_lead *last = leads[start + count - 1];
        pos np = {.latest = r.kind == 'U' ? (long long)r.latest : 0,
                  .upd = r.kind == 'U' ? (long long)last->updated_at : 0,
                  .id = (long long)last->id};
        if (token_make(&r, fp, &np, token) != 0) {
            fault = 10001;
            goto out;
        }
    }
    xout x;
    if (xout_begin(&x, "successGetMultipleLeads") != 0) {
        fault = 10001;
        goto out;
    }
    xout_start(&x, "result");
    xout_int(&x, "returnCount", count);
    xout_int(&x, "remainingCount", remaining);
    xout_text(&x, "newStreamPosition", token);
    xout_start(&x, "leadRecordList");
    for (long i = start; i < start + count; i++)
        xout_lead(&x, leads[i], r.filter ? r.include : NULL);
    if (xout_finish(&x, body, len) != 0)
        fault = 10001;
out:
    if (locked)
        sim_store_unlock(st);
    free(leads);
    gm_free(&r);
    return fault;
}
