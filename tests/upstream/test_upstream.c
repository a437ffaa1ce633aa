/* tests/upstream/test_upstream.c - the upstream engine against a fake Marketo.
 *
 * The fake is a libmicrohttpd server on 127.0.0.1 (port 0) that answers from a
 * per-test script of canned responses (status, body file, delay, dropped
 * connection, Retry-After) and records every request body, the number of
 * requests in flight at once and the number of TCP connections. Rate limits
 * come from a fake gw_limiter in this file, so the real limiter is not needed.
 * Bodies live in tests/upstream/data (UPSTREAM_DATA_DIR).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/metrics.h"
#include "gateway/upstream/upstream.h"
#include "soap/soap.h"

#define USER_ID "bigcorp1_461839624B16E06BA2D663"
#define ENC_KEY "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66"
#define MAX_SCRIPT 64
#define MAX_REQS 128

/* ---- fixtures ---------------------------------------------------------------- */

/* A body file read into memory. */
typedef struct blob {
    char *data;  /* contents (owned) */
    size_t len;  /* bytes */
} blob;

static blob b_get_ok, b_sync_ok, b_f20016, b_f20023, b_f20014, b_f20015, b_html503, b_huge;
/* Marker body: answer a getMultipleLeads with one lead per requested key
 * (key "kN@example.com" or "N": Id N, Email kN@example.com). */
static blob b_echo;

static blob load(const char *name)
{
    blob b = {0};
    const char *dir = getenv("UPSTREAM_DATA_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "data", name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "# cannot open %s\n", path);
        return b;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = malloc((size_t)n + 1);
    b.len = fread(b.data, 1, (size_t)n, f);
    b.data[b.len] = '\0';
    fclose(f);
    return b;
}

/* ---- fake Marketo ----------------------------------------------------------- */

/* One canned answer. */
typedef struct canned {
    int status;        /* HTTP status; 0 drops the connection without an answer */
    const blob *body;  /* body to send (borrowed) */
    int delay_ms;      /* wait before answering */
    int retry_after;   /* > 0: Retry-After header in seconds */
} canned;

typedef struct fake {
    struct MHD_Daemon *d;       /* the daemon */
    uint16_t port;              /* its port */
    pthread_mutex_t mu;         /* guards everything below */
    canned script[MAX_SCRIPT];  /* answers in order */
    size_t nscript;             /* entries in script */
    size_t next;                /* next script entry */
    canned dflt;                /* answer once the script is used up */
    char *bodies[MAX_REQS];     /* request bodies received */
    char *soapaction[MAX_REQS]; /* their SOAPAction headers */
    char *ctype[MAX_REQS];      /* their Content-Type headers */
    int nreqs;                  /* requests received (complete bodies) */
    int64_t arrived_ms[MAX_REQS]; /* monotonic ms at which each body was complete */
    int inflight;               /* requests being handled now */
    int max_inflight;           /* most at once */
    int connections;            /* TCP connections accepted */
    atomic_bool stop;           /* ends delays early at teardown */
} fake;

/* Per-request upload buffer. */
typedef struct req_state {
    char *buf;    /* body so far */
    size_t len;   /* bytes */
} req_state;

static void fake_sleep(fake *f, int ms)
{
    while (ms > 0 && !atomic_load(&f->stop)) {
        int step = ms < 10 ? ms : 10;
        usleep((useconds_t)step * 1000);
        ms -= step;
    }
}

static char *dup_header(struct MHD_Connection *conn, const char *name)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    return v ? strdup(v) : NULL;
}

/* Builds the echo answer for a request body: one leadRecord per
 * <stringItem> key. Returns a malloc'd body and its length in *len. */
static char *echo_body(const char *req, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *out = malloc(cap);
    int nk = 0;
    const char *p = req ? req : "";
    const char *kv = strstr(p, "<keyValues>");
    const char *kv_end = kv ? strstr(kv, "</keyValues>") : NULL;
    char recs[64 * 1024];
    size_t rl = 0;
    recs[0] = '\0';
    p = kv ? kv : "";
    while ((p = strstr(p, "<stringItem>")) && p < kv_end) {
        p += strlen("<stringItem>");
        const char *e = strstr(p, "</stringItem>");
        if (!e)
            break;
        char key[128];
        size_t kl = (size_t)(e - p) < sizeof key - 1 ? (size_t)(e - p) : sizeof key - 1;
        memcpy(key, p, kl);
        key[kl] = '\0';
        const char *d = key;
        while (*d && (*d < '0' || *d > '9'))
            d++;
        long id = strtol(d, NULL, 10);
        int w = snprintf(recs + rl, sizeof recs - rl,
                         "<leadRecord><Id>%ld</Id><Email>k%ld@example.com</Email>"
                         "<leadAttributeList><attribute><attrName>FirstName</attrName>"
                         "<attrType>string</attrType><attrValue>N%ld</attrValue></attribute>"
                         "</leadAttributeList></leadRecord>",
                         id, id, id);
        if (w < 0 || (size_t)w >= sizeof recs - rl)
            break;
        rl += (size_t)w;
        nk++;
        p = e;
    }
    cap = rl + 1024;
    out = realloc(out, cap);
    n = (size_t)snprintf(out, cap,
                         "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                         "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
                         "xmlns:ns1=\"http://www.marketo.com/mktows/\"><SOAP-ENV:Body>"
                         "<ns1:successGetMultipleLeads><result><returnCount>%d</returnCount>"
                         "<remainingCount>0</remainingCount><newStreamPosition/>"
                         "<leadRecordList>%s</leadRecordList></result>"
                         "</ns1:successGetMultipleLeads></SOAP-ENV:Body></SOAP-ENV:Envelope>",
                         nk, recs);
    *len = n;
    return out;
}

static enum MHD_Result fake_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    fake *f = cls;
    req_state *rs = *con_cls;
    if (!rs) {
        rs = calloc(1, sizeof *rs);
        *con_cls = rs;
        pthread_mutex_lock(&f->mu);
        f->inflight++;
        if (f->inflight > f->max_inflight)
            f->max_inflight = f->inflight;
        pthread_mutex_unlock(&f->mu);
        return MHD_YES;
    }
    if (*upload_data_size) {
        char *nb = realloc(rs->buf, rs->len + *upload_data_size + 1);
        if (!nb)
            return MHD_NO;
        rs->buf = nb;
        memcpy(rs->buf + rs->len, upload_data, *upload_data_size);
        rs->len += *upload_data_size;
        rs->buf[rs->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&f->mu);
    canned a = f->next < f->nscript ? f->script[f->next++] : f->dflt;
    if (f->nreqs < MAX_REQS) {
        f->bodies[f->nreqs] = rs->buf ? strdup(rs->buf) : strdup("");
        f->soapaction[f->nreqs] = dup_header(conn, "SOAPAction");
        f->ctype[f->nreqs] = dup_header(conn, "Content-Type");
        f->arrived_ms[f->nreqs] = gw_now_ms();
        f->nreqs++;
    }
    pthread_mutex_unlock(&f->mu);

    fake_sleep(f, a.delay_ms);
    pthread_mutex_lock(&f->mu);
    f->inflight--;
    pthread_mutex_unlock(&f->mu);
    if (a.status == 0)
        return MHD_NO; /* drop the connection */
    const blob *b = a.body;
    struct MHD_Response *resp;
    if (b == &b_echo) {
        size_t elen = 0;
        char *eb = echo_body(rs->buf, &elen);
        resp = MHD_create_response_from_buffer(elen, eb, MHD_RESPMEM_MUST_FREE);
    } else {
        resp = MHD_create_response_from_buffer(b ? b->len : 0, b ? b->data : (void *)"",
                                               MHD_RESPMEM_MUST_COPY);
    }
    MHD_add_response_header(resp, "Content-Type",
                            b == &b_html503 ? "text/html" : "text/xml;charset=UTF-8");
    if (a.retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", a.retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)a.status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void fake_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    req_state *rs = *con_cls;
    if (rs) {
        free(rs->buf);
        free(rs);
        *con_cls = NULL;
    }
}

static void fake_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    fake *f = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        pthread_mutex_lock(&f->mu);
        f->connections++;
        pthread_mutex_unlock(&f->mu);
    }
}

static fake *fake_start(canned dflt)
{
    fake *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    atomic_init(&f->stop, false);
    f->dflt = dflt;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, fake_handler, f, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, fake_completed, f,
                            MHD_OPTION_NOTIFY_CONNECTION, fake_notify, f,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    assert_non_null(f->d);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(di);
    f->port = di->port;
    assert_true(f->port > 0);
    return f;
}

static void fake_script(fake *f, const canned *s, size_t n)
{
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n && f->nscript < MAX_SCRIPT; i++)
        f->script[f->nscript++] = s[i];
    pthread_mutex_unlock(&f->mu);
}

static int fake_nreqs(fake *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->nreqs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static int fake_inflight(fake *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->inflight;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void fake_stop(fake *f)
{
    atomic_store(&f->stop, true);
    MHD_stop_daemon(f->d);
    for (int i = 0; i < f->nreqs; i++) {
        free(f->bodies[i]);
        free(f->soapaction[i]);
        free(f->ctype[i]);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* ---- fake limiter -------------------------------------------------------------- */

enum { LIM_OK = 0, LIM_WAIT_FOREVER, LIM_QUOTA };

typedef struct fake_lim {
    gw_limiter base;     /* must be first */
    pthread_mutex_t mu;  /* guards the counters */
    int mode;            /* LIM_* */
    int max_conc;        /* > 0: concurrency cap */
    int64_t hint_ms;     /* retry hint returned with WAIT / QUOTA */
    int burst;           /* > 0: grant this many slots, then WAIT for pause_ms */
    int64_t pause_ms;    /* length of that pause */
    int64_t pause_end;   /* monotonic ms: end of the pause (0: not started) */
    int held;            /* slots held now */
    int acquired;        /* slots granted in total */
    int released;        /* slots given back in total */
    int tries;           /* try_acquire calls */
} fake_lim;

static gw_limit_result fl_try(gw_limiter *l, int64_t now_ms, gw_slot *slot, int64_t *retry_in_ms)
{
    fake_lim *fl = (fake_lim *)l;
    gw_limit_result r = GW_LIMIT_OK;
    pthread_mutex_lock(&fl->mu);
    fl->tries++;
    if (fl->mode == LIM_WAIT_FOREVER) {
        *retry_in_ms = fl->hint_ms;
        r = GW_LIMIT_WAIT;
    } else if (fl->mode == LIM_QUOTA) {
        *retry_in_ms = fl->hint_ms;
        r = GW_LIMIT_QUOTA;
    } else if (fl->burst > 0 && fl->acquired >= fl->burst &&
               (fl->pause_end == 0 || gw_now_ms() < fl->pause_end)) {
        if (fl->pause_end == 0)
            fl->pause_end = gw_now_ms() + fl->pause_ms;
        *retry_in_ms = fl->pause_end - gw_now_ms();
        if (*retry_in_ms < 1)
            *retry_in_ms = 1;
        r = GW_LIMIT_WAIT;
    } else if (fl->max_conc > 0 && fl->held >= fl->max_conc) {
        *retry_in_ms = 50;
        r = GW_LIMIT_WAIT;
    } else {
        fl->held++;
        fl->acquired++;
        slot->id = (uint64_t)fl->acquired;
        slot->owner = fl;
    }
    pthread_mutex_unlock(&fl->mu);
    return r;
}

static void fl_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    fake_lim *fl = (fake_lim *)l;
    pthread_mutex_lock(&fl->mu);
    fl->held--;
    fl->released++;
    pthread_mutex_unlock(&fl->mu);
}

static void fl_destroy(gw_limiter *l)
{
    (void)l;
}

static const gw_limiter_ops fl_ops = {"fake", fl_try, fl_release, fl_destroy};

/* ---- jobs ------------------------------------------------------------------------ */

/* A job and what its callback saw. */
typedef struct tjob {
    gw_job job;        /* the job (first member) */
    int done_count;    /* done calls (must end at 1) */
    int64_t done_at;   /* monotonic ms of the (first) done call */
} tjob;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

static void on_done(gw_job *j, void *arg)
{
    tjob *t = (tjob *)j;
    pthread_mutex_lock(&g_mu);
    if (t->done_count++ == 0)
        t->done_at = gw_now_ms();
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* Waits until every job of the array has ended (or timeout). Returns true when all did. */
static bool wait_all(tjob *t, size_t n, int64_t timeout_ms)
{
    int64_t end = gw_now_ms() + timeout_ms;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        size_t ok = 0;
        for (size_t i = 0; i < n; i++)
            ok += t[i].done_count > 0;
        if (ok == n || gw_now_ms() >= end)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    size_t ok = 0;
    for (size_t i = 0; i < n; i++)
        ok += t[i].done_count > 0;
    pthread_mutex_unlock(&g_mu);
    return ok == n;
}

static int done_count(tjob *t)
{
    pthread_mutex_lock(&g_mu);
    int n = t->done_count;
    pthread_mutex_unlock(&g_mu);
    return n;
}

static const char *const g_keys[] = {"ada@example.com", "grace@example.com"};
static mkto_lead g_leads[2];

static void make_get(tjob *t, int64_t queue_ms, int64_t deadline_ms)
{
    memset(t, 0, sizeof *t);
    int64_t now = gw_now_ms();
    t->job.kind = GW_CALL_GET_MULTIPLE;
    t->job.get.kind = MKTO_SEL_KEYS;
    t->job.get.key_type = MKTO_KEY_EMAIL;
    t->job.get.keys = g_keys;
    t->job.get.nkeys = 2;
    t->job.queue_deadline_ms = now + queue_ms;
    t->job.deadline_ms = now + deadline_ms;
    t->job.done = on_done;
    t->job.done_arg = NULL;
    t->job.epoch = 1; /* one cache epoch for all: no invalidation in between */
}

static void make_sync(tjob *t, bool dedup, int64_t deadline_ms)
{
    memset(t, 0, sizeof *t);
    int64_t now = gw_now_ms();
    g_leads[0].email = (char *)"new@example.com";
    g_leads[1].has_id = true;
    g_leads[1].id = 1001;
    t->job.kind = GW_CALL_SYNC_MULTIPLE;
    t->job.sync_leads = g_leads;
    t->job.nsync = 2;
    t->job.dedup = dedup;
    t->job.queue_deadline_ms = now + 2000;
    t->job.deadline_ms = now + deadline_ms;
    t->job.done = on_done;
}

/* ---- engine fixture ------------------------------------------------------------- */

typedef struct env {
    fake *f;           /* fake Marketo */
    fake_lim lim;      /* fake limiter */
    gw_config cfg;     /* settings */
    gw_upstream *u;    /* engine under test */
    char url[128];     /* endpoint */
} env;

static void env_init(env *e, canned dflt)
{
    memset(e, 0, sizeof *e);
    e->f = fake_start(dflt);
    pthread_mutex_init(&e->lim.mu, NULL);
    e->lim.base.ops = &fl_ops;
    e->lim.hint_ms = 1500;
    snprintf(e->url, sizeof e->url, "http://127.0.0.1:%u/soap/mktows/2_3", e->f->port);
    e->cfg.soap_endpoint = e->url;
    e->cfg.user_id = (char *)USER_ID;
    e->cfg.encryption_key = (char *)ENC_KEY;
    e->cfg.timeout_ms = 5000;
    e->cfg.max_response_bytes = 1024 * 1024;
    e->cfg.retry_max_attempts = 3;
    e->cfg.tls_verify = true;
    e->cfg.rl_window_seconds = 20;
    e->cfg.rl_max_concurrent = 10;
}

static void env_start(env *e)
{
    gw_err err = {0};
    e->u = gw_upstream_new(&e->cfg, &e->lim.base, &err);
    assert_non_null(e->u);
    assert_int_equal(gw_upstream_start(e->u), 0);
}

static void env_done(env *e)
{
    gw_upstream_free(e->u);
    e->u = NULL;
    /* every slot taken was given back */
    assert_int_equal(e->lim.acquired, e->lim.released);
    assert_int_equal(e->lim.held, 0);
    fake_stop(e->f);
    pthread_mutex_destroy(&e->lim.mu);
}

/* Copies the text of <tag>...</tag> from xml into out. Returns true when found. */
static bool xml_text(const char *xml, const char *tag, char *out, size_t outlen)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = strstr(xml, open);
    if (!a)
        return false;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b || (size_t)(b - a) >= outlen)
        return false;
    memcpy(out, a, (size_t)(b - a));
    out[b - a] = '\0';
    return true;
}

/* Asserts that a received envelope carries a valid signature for its own
 * timestamp and user id; returns the timestamp in ts. */
static void assert_signed(const char *body, char ts[SOAP_TIMESTAMP_LEN])
{
    char user[128], sig[64], want[SOAP_SIGNATURE_LEN];
    assert_true(xml_text(body, "mktowsUserId", user, sizeof user));
    assert_true(xml_text(body, "requestSignature", sig, sizeof sig));
    assert_true(xml_text(body, "requestTimestamp", ts, SOAP_TIMESTAMP_LEN));
    assert_string_equal(user, USER_ID);
    assert_int_equal(soap_sign(ENC_KEY, ts, user, want), SOAP_OK);
    assert_string_equal(sig, want);
    assert_null(strstr(body, ENC_KEY)); /* the key never goes on the wire */
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_success_get(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.attempts, 1);
    assert_int_equal(t.job.leads.nleads, 2);
    assert_int_equal(t.job.leads.leads[0].id, 1001);
    assert_string_equal(t.job.leads.leads[1].email, "grace@example.com");
    assert_int_equal(fake_nreqs(e.f), 1);
    char ts[SOAP_TIMESTAMP_LEN];
    assert_signed(e.f->bodies[0], ts);
    assert_non_null(strstr(e.f->bodies[0], "paramsGetMultipleLeads"));
    assert_non_null(strstr(e.f->bodies[0], "ada@example.com"));
    assert_non_null(e.f->soapaction[0]);
    assert_string_equal(e.f->soapaction[0], "\"\"");
    assert_non_null(e.f->ctype[0]);
    assert_string_equal(e.f->ctype[0], "text/xml; charset=UTF-8");
    assert_int_equal(gw_upstream_queued(e.u), 0);
    assert_int_equal(gw_upstream_in_flight(e.u), 0);
    gw_job_clear_results(&t.job);
    env_done(&e);
    assert_int_equal(t.done_count, 1);
}

static void test_success_sync(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_sync_ok, 0, 0});
    env_start(&e);
    tjob t;
    make_sync(&t, true, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.sync.nstatuses, 2);
    assert_int_equal(t.job.sync.statuses[0].state, MKTO_SYNC_CREATED);
    assert_int_equal(t.job.sync.statuses[1].lead_id, 1001);
    assert_false(t.job.maybe_applied);
    char ts[SOAP_TIMESTAMP_LEN];
    assert_signed(e.f->bodies[0], ts);
    assert_non_null(strstr(e.f->bodies[0], "paramsSyncMultipleLeads"));
    gw_job_clear_results(&t.job);
    env_done(&e);
    assert_int_equal(t.done_count, 1);
}

static void test_fault_20016_resigned(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    canned s[] = {{500, &b_f20016, 0, 0}};
    fake_script(e.f, s, 1);
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.attempts, 2);
    assert_true(t.done_at - t0 < 900); /* retried at once, no backoff */
    assert_int_equal(fake_nreqs(e.f), 2);
    /* both envelopes were signed, each for its own timestamp: a re-sign per
     * attempt (the timestamps may fall in the same second) */
    char ts1[SOAP_TIMESTAMP_LEN], ts2[SOAP_TIMESTAMP_LEN];
    assert_signed(e.f->bodies[0], ts1);
    assert_signed(e.f->bodies[1], ts2);
    time_t a, b;
    assert_int_equal(soap_timestamp_parse(ts1, &a), SOAP_OK);
    assert_int_equal(soap_timestamp_parse(ts2, &b), SOAP_OK);
    assert_true(b >= a);
    assert_int_equal(e.lim.acquired, 2); /* each attempt took its own slot */
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_fault_20023_backoff(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    canned s[] = {{500, &b_f20023, 0, 0}};
    fake_script(e.f, s, 1);
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 8000);
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 8000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.attempts, 2);
    assert_true(t.done_at - t0 >= 950); /* waited at least ~1 s before retrying */
    assert_int_equal(fake_nreqs(e.f), 2);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_fault_20023_out_of_time(void **state)
{
    env e;
    env_init(&e, (canned){500, &b_f20023, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 500, 700); /* the backoff (>= 1 s) cannot fit */
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 3000));
    assert_int_equal(t.job.outcome, GW_OUT_FAULT);
    assert_int_equal(t.job.fault.code, 20023);
    assert_int_equal(t.job.attempts, 1);
    assert_true(t.job.retry_after_s >= 1);
    assert_true(t.done_at - t0 < 500); /* gave up at once instead of sleeping */
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_fault_20014_not_retried(void **state)
{
    env e;
    env_init(&e, (canned){500, &b_f20014, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_FAULT);
    assert_int_equal(t.job.attempts, 1);
    assert_int_equal(t.job.fault.code, 20014);
    assert_false(t.job.fault.retryable);
    assert_int_equal(fake_nreqs(e.f), 1);
    assert_int_equal(t.job.leads.nleads, 0);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_html_503_exhausted(void **state)
{
    env e;
    env_init(&e, (canned){503, &b_html503, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 8000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 8000));
    assert_int_equal(t.job.outcome, GW_OUT_BAD_RESPONSE);
    assert_int_equal(t.job.attempts, 3); /* retry_max_attempts */
    assert_int_equal(fake_nreqs(e.f), 3);
    assert_string_equal(t.job.detail, "HTTP 503");
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_503_retry_after_honoured(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    canned s[] = {{503, &b_html503, 0, 1}};
    fake_script(e.f, s, 1);
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 8000);
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 8000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.attempts, 2);
    assert_true(t.done_at - t0 >= 950);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_bad_response_2xx_not_retried(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_html503, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_BAD_RESPONSE);
    assert_int_equal(t.job.attempts, 1);
    assert_non_null(strstr(t.job.detail, "parse"));
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_slow_server_timeout(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 3000, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 500, 600);
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 3000));
    assert_int_equal(t.job.outcome, GW_OUT_TIMEOUT);
    assert_int_equal(t.job.attempts, 1);
    assert_true(t.done_at <= t.job.deadline_ms + 300); /* no hang past the deadline */
    assert_true(t.done_at - t0 >= 400);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_connection_refused(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    /* a bound socket that does not listen: connects are refused */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    snprintf(e.url, sizeof e.url, "http://127.0.0.1:%u/soap/mktows/2_3", ntohs(sa.sin_port));
    e.cfg.retry_max_attempts = 2;
    env_start(&e);
    tjob t[2];
    make_get(&t[0], 2000, 5000);
    make_sync(&t[1], false, 5000);
    gw_upstream_submit(e.u, &t[0].job);
    gw_upstream_submit(e.u, &t[1].job);
    assert_true(wait_all(t, 2, 5000));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_UNREACHABLE);
        assert_int_equal(t[i].job.attempts, 2); /* connect failures are retried, sync too */
        assert_false(t[i].job.maybe_applied);
        assert_non_null(strstr(t[i].job.detail, "connect"));
        gw_job_clear_results(&t[i].job);
    }
    close(s);
    assert_int_equal(fake_nreqs(e.f), 0);
    env_done(&e);
}

static void test_sync_dropped_not_retried(void **state)
{
    env e;
    env_init(&e, (canned){0, NULL, 0, 0}); /* drop every connection */
    env_start(&e);
    tjob t;
    make_sync(&t, false, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_UNREACHABLE);
    assert_int_equal(t.job.attempts, 1);
    assert_true(t.job.maybe_applied);
    assert_int_equal(fake_nreqs(e.f), 1);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_sync_dropped_on_warm_connection_sent_once(void **state)
{
    /* A lookup leaves a keep-alive connection behind. A sync (dedup on)
     * must not go out on it: libcurl would re-send the sync by itself when
     * that connection dies without an answer, after Marketo applied it. */
    env e;
    env_init(&e, (canned){200, &b_sync_ok, 0, 0});
    canned s[] = {{200, &b_get_ok, 0, 0}, {0, NULL, 0, 0}};
    fake_script(e.f, s, 2);
    env_start(&e);
    tjob g;
    make_get(&g, 2000, 5000);
    gw_upstream_submit(e.u, &g.job);
    assert_true(wait_all(&g, 1, 5000));
    assert_int_equal(g.job.outcome, GW_OUT_OK);
    gw_job_clear_results(&g.job);
    tjob t;
    make_sync(&t, true, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_UNREACHABLE);
    assert_int_equal(t.job.attempts, 1);
    assert_true(t.job.maybe_applied);
    assert_int_equal(fake_nreqs(e.f), 2); /* the lookup and the sync, once */
    pthread_mutex_lock(&e.f->mu);
    int conns = e.f->connections;
    pthread_mutex_unlock(&e.f->mu);
    assert_int_equal(conns, 2); /* the sync took a connection of its own */
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_get_dropped_retried(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    canned s[] = {{0, NULL, 0, 0}};
    fake_script(e.f, s, 1);
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(t.job.attempts, 2);
    assert_int_equal(fake_nreqs(e.f), 2);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_response_too_large(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_huge, 0, 0});
    e.cfg.max_response_bytes = 4096;
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_BAD_RESPONSE);
    assert_int_equal(t.job.attempts, 1);
    assert_non_null(strstr(t.job.detail, "too large"));
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_limiter_wait_rate_limited(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    e.lim.mode = LIM_WAIT_FOREVER;
    e.lim.hint_ms = 1500;
    env_start(&e);
    tjob t[3];
    for (int i = 0; i < 3; i++)
        make_get(&t[i], 400, 5000);
    for (int i = 0; i < 3; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 3, 3000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_RATE_LIMITED);
        assert_int_equal(t[i].job.retry_after_s, 2); /* 1500 ms rounded up */
        assert_int_equal(t[i].job.attempts, 0);
        assert_true(t[i].done_at <= t[i].job.queue_deadline_ms + 300);
        assert_true(t[i].done_at >= t[i].job.queue_deadline_ms);
    }
    assert_int_equal(fake_nreqs(e.f), 0); /* nothing reached the server */
    /* FIFO: jobs behind a WAIT do not ask; nobody asks again before the hint */
    assert_int_equal(e.lim.tries, 1);
    env_done(&e);
}

static void test_limiter_quota(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    e.lim.mode = LIM_QUOTA;
    e.lim.hint_ms = 3600 * 1000 - 1;
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 2000));
    assert_int_equal(t.job.outcome, GW_OUT_QUOTA);
    assert_int_equal(t.job.retry_after_s, 3600);
    assert_int_equal(fake_nreqs(e.f), 0);
    env_done(&e);
}

static void test_concurrency_cap(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 200, 0});
    e.lim.max_conc = 2;
    env_start(&e);
    tjob t[10];
    for (int i = 0; i < 10; i++) {
        make_get(&t[i], 5000, 8000);
        t[i].job.get.batch_size = i + 1; /* distinct shapes: no coalescing */
    }
    int64_t t0 = gw_now_ms();
    for (int i = 0; i < 10; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 10, 8000));
    for (int i = 0; i < 10; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].done_count, 1);
        gw_job_clear_results(&t[i].job);
    }
    assert_int_equal(fake_nreqs(e.f), 10);
    assert_int_equal(e.f->max_inflight, 2); /* never more than the limiter allows */
    assert_true(gw_now_ms() - t0 >= 5 * 200 - 50);
    env_done(&e);
}

static void test_shutdown_ends_everything(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 5000, 0});
    e.lim.max_conc = 2;
    env_start(&e);
    enum { N = 22 };
    tjob *t = calloc(N, sizeof *t);
    for (int i = 0; i < N; i++) {
        if (i == 1)
            make_sync(&t[i], false, 20000);
        else
            make_get(&t[i], 20000, 20000);
        t[i].job.get.batch_size = i + 1; /* distinct shapes: no coalescing */
    }
    for (int i = 0; i < N; i++)
        gw_upstream_submit(e.u, &t[i].job);
    int64_t until = gw_now_ms() + 3000;
    while (fake_inflight(e.f) < 2 && gw_now_ms() < until)
        usleep(5000);
    assert_int_equal(fake_inflight(e.f), 2);
    assert_int_equal(gw_upstream_in_flight(e.u), 2);
    assert_int_equal(gw_upstream_queued(e.u), 20);
    int64_t t0 = gw_now_ms();
    gw_upstream_shutdown(e.u, t0 + 300);
    int64_t took = gw_now_ms() - t0;
    assert_true(took >= 250 && took < 1500); /* drained until the deadline, then joined */
    int shutdowns = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].done_count, 1);
        if (t[i].job.outcome == GW_OUT_SHUTDOWN)
            shutdowns++;
    }
    /* the two calls in flight were cut by the drain deadline: SHUTDOWN
     * (503), not TIMEOUT (504), like the 20 jobs still waiting */
    assert_int_equal(shutdowns, 22);
    assert_true(t[1].job.maybe_applied); /* the sync call was in flight */
    assert_false(t[0].job.maybe_applied);
    assert_false(t[2].job.maybe_applied); /* waiting, never sent */
    assert_int_equal(gw_upstream_queued(e.u), 0);
    assert_int_equal(gw_upstream_in_flight(e.u), 0);

    /* a job submitted after the engine stopped ends at once, exactly once */
    tjob late;
    make_get(&late, 1000, 1000);
    gw_upstream_submit(e.u, &late.job);
    assert_int_equal(done_count(&late), 1);
    assert_int_equal(late.job.outcome, GW_OUT_SHUTDOWN);
    gw_upstream_shutdown(e.u, gw_now_ms()); /* idempotent */
    env_done(&e);
    for (int i = 0; i < N; i++)
        assert_int_equal(t[i].done_count, 1);
    free(t);
}

static void test_shutdown_drains_in_flight(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 300, 0});
    env_start(&e);
    tjob t[2];
    make_get(&t[0], 5000, 5000);
    make_get(&t[1], 5000, 5000);
    gw_upstream_submit(e.u, &t[0].job);
    gw_upstream_submit(e.u, &t[1].job);
    int64_t t0 = gw_now_ms();
    gw_upstream_shutdown(e.u, t0 + 4000);
    int64_t took = gw_now_ms() - t0;
    assert_true(took < 2000); /* returned once the work was done, not at the deadline */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t[i].done_count, 1);
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_shutdown_never_started(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    gw_err err = {0};
    e.u = gw_upstream_new(&e.cfg, &e.lim.base, &err);
    assert_non_null(e.u);
    tjob t;
    make_get(&t, 1000, 1000);
    gw_upstream_submit(e.u, &t.job);
    assert_int_equal(done_count(&t), 0);
    env_done(&e); /* free shuts down: the queued job ends SHUTDOWN */
    assert_int_equal(t.done_count, 1);
    assert_int_equal(t.job.outcome, GW_OUT_SHUTDOWN);
}

static void test_keepalive_reuse(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 0, 0});
    env_start(&e);
    for (int i = 0; i < 5; i++) {
        tjob t;
        make_get(&t, 2000, 5000);
        gw_upstream_submit(e.u, &t.job);
        assert_true(wait_all(&t, 1, 5000));
        assert_int_equal(t.job.outcome, GW_OUT_OK);
        gw_job_clear_results(&t.job);
    }
    assert_int_equal(fake_nreqs(e.f), 5);
    pthread_mutex_lock(&e.f->mu);
    int conns = e.f->connections;
    pthread_mutex_unlock(&e.f->mu);
    assert_true(conns >= 1);
    assert_true(conns < 5);
    env_done(&e);
}

static void test_bad_config(void **state)
{
    gw_config cfg = {0};
    fake_lim lim = {.base.ops = &fl_ops};
    gw_err err = {0};
    assert_null(gw_upstream_new(&cfg, &lim.base, &err));
    assert_non_null(strstr(err.msg, "soap_endpoint"));
    assert_int_equal(err.status, 0); /* a start-up error: never a client's */
    assert_string_equal(gw_outcome_name(GW_OUT_RATE_LIMITED), "rate_limited");
    assert_string_equal(gw_outcome_name((gw_outcome)99), "unknown");
}

static void test_fault_20015_quota(void **state)
{
    env e;
    env_init(&e, (canned){500, &b_f20015, 0, 0});
    env_start(&e);
    tjob t;
    make_get(&t, 2000, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_FAULT); /* not retried; marketo_code kept */
    assert_int_equal(t.job.attempts, 1);
    assert_int_equal(t.job.fault.code, 20015);
    assert_true(t.job.retry_after_s >= 1 && t.job.retry_after_s <= 25 * 3600);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_sync_fault_retried(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_sync_ok, 0, 0});
    canned s[] = {{500, &b_f20016, 0, 0}};
    fake_script(e.f, s, 1);
    env_start(&e);
    tjob t;
    make_sync(&t, false, 5000);
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 5000));
    assert_int_equal(t.job.outcome, GW_OUT_OK); /* a fault is a safe retry for a sync */
    assert_int_equal(t.job.attempts, 2);
    assert_false(t.job.maybe_applied);
    assert_int_equal(t.job.sync.nstatuses, 2);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

static void test_metrics_exported(void **state)
{
    size_t len = 0;
    char *txt = gw_metrics_render(&len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "upstream_calls_total{operation=\"getMultipleLeads\",outcome=\"ok\"}"));
    assert_non_null(strstr(txt, "upstream_jobs_total{operation=\"syncMultipleLeads\",outcome=\"shutdown\"}"));
    assert_non_null(strstr(txt, "upstream_retries_total"));
    assert_non_null(strstr(txt, "upstream_call_duration_seconds_bucket"));
    assert_non_null(strstr(txt, "upstream_queue_wait_seconds_count"));
    free(txt);
}

/* ---- coalescing ------------------------------------------------------------------ */

/* Key strings for coalescing tests: kN@example.com and N. */
static char g_ckeys[200][32];
static const char *g_ckeyp[200];
static char g_cids[200][16];
static const char *g_cidp[200];
static const char *const g_fn_attrs[] = {"FirstName"};

static void ckeys_init(void)
{
    for (int i = 0; i < 200; i++) {
        snprintf(g_ckeys[i], sizeof g_ckeys[i], "k%d@example.com", i);
        g_ckeyp[i] = g_ckeys[i];
        snprintf(g_cids[i], sizeof g_cids[i], "%d", i);
        g_cidp[i] = g_cids[i];
    }
}

/* A key job for email key i (one key). */
static void make_email(tjob *t, int i, int64_t queue_ms)
{
    make_get(t, queue_ms, 10000);
    t->job.get.keys = &g_ckeyp[i];
    t->job.get.nkeys = 1;
    t->job.get.batch_size = 1000;
}

/* Starts an engine whose limiter grants one slot, then WAITs pause_ms. */
static void env_burst(env *e, canned dflt, int64_t pause_ms)
{
    env_init(e, dflt);
    e->lim.burst = 1;
    e->lim.pause_ms = pause_ms;
    env_start(e);
}

/* Submits a lone job that takes the limiter's one slot, and waits for it. */
static void take_first_slot(env *e)
{
    tjob first;
    make_email(&first, 199, 2000);
    gw_upstream_submit(e->u, &first.job);
    assert_true(wait_all(&first, 1, 3000));
    assert_int_equal(first.job.outcome, GW_OUT_OK);
    gw_job_clear_results(&first.job);
}

static void test_coalesce_batch(void **state)
{
    env e;
    env_burst(&e, (canned){200, &b_echo, 20, 0}, 300);
    take_first_slot(&e);
    tjob t[10];
    for (int i = 0; i < 10; i++)
        make_email(&t[i], i, 5000);
    for (int i = 0; i < 10; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 10, 5000));
    assert_int_equal(fake_nreqs(e.f), 2); /* the lone first call, then ONE for the ten */
    for (int i = 0; i < 10; i++) {
        assert_non_null(strstr(e.f->bodies[1], g_ckeys[i]));
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].done_count, 1);
        assert_int_equal(t[i].job.attempts, 1);
        assert_int_equal(t[i].job.leads.nleads, 1); /* exactly its own lead */
        assert_int_equal(t[i].job.leads.leads[0].id, i);
        assert_string_equal(t[i].job.leads.leads[0].email, g_ckeys[i]);
        assert_int_equal(t[i].job.leads.remaining_count, 0);
        gw_job_clear_results(&t[i].job);
    }
    size_t len = 0;
    char *txt = gw_metrics_render(&len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "upstream_keys_per_call_bucket{le=\"10\"}"));
    const char *cj = strstr(txt, "\nupstream_coalesced_jobs_total ");
    assert_non_null(cj);
    assert_true(strtol(cj + strlen("\nupstream_coalesced_jobs_total "), NULL, 10) >= 9);
    free(txt);
    env_done(&e);
}

static void test_coalesce_single_flight(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_get_ok, 300, 0});
    env_start(&e);
    tjob t[6];
    for (int i = 0; i < 6; i++)
        make_get(&t[i], 5000, 5000);
    gw_upstream_submit(e.u, &t[0].job);
    int64_t until = gw_now_ms() + 2000;
    while (fake_inflight(e.f) < 1 && gw_now_ms() < until)
        usleep(2000);
    for (int i = 1; i < 6; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 6, 5000));
    assert_int_equal(fake_nreqs(e.f), 1); /* identical lookups share the call in flight */
    assert_int_equal(e.lim.acquired, 1);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].done_count, 1);
        assert_int_equal(t[i].job.attempts, 1);
        assert_int_equal(t[i].job.leads.nleads, 2);
        assert_int_equal(t[i].job.leads.leads[0].id, 1001);
        assert_string_equal(t[i].job.leads.leads[1].email, "grace@example.com");
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

/* Waits until the fake has n requests in flight (at most 3 s). */
static void wait_fake_inflight(env *e, int n)
{
    int64_t until = gw_now_ms() + 3000;
    while (fake_inflight(e->f) < n && gw_now_ms() < until)
        usleep(2000);
    assert_int_equal(fake_inflight(e->f), n);
}

static void test_coalesce_single_flight_fresh(void **state)
{
    /* A lookup that read a newer cache epoch (a sync invalidated since the
     * call in flight was sent) or none at all (cache bypassed) must not
     * ride on that call: its answer may predate the sync. One that read
     * the call's own epoch still does. */
    env e;
    env_init(&e, (canned){200, &b_get_ok, 1000, 0});
    env_start(&e);
    tjob t[4];
    for (int i = 0; i < 4; i++)
        make_get(&t[i], 5000, 5000);
    t[1].job.epoch = 2;
    t[2].job.epoch = 0;
    gw_upstream_submit(e.u, &t[0].job);
    wait_fake_inflight(&e, 1);
    gw_upstream_submit(e.u, &t[1].job); /* newer epoch: a call of its own */
    wait_fake_inflight(&e, 2);
    gw_upstream_submit(e.u, &t[2].job); /* no epoch: a call of its own */
    wait_fake_inflight(&e, 3);
    gw_upstream_submit(e.u, &t[3].job); /* t[0]'s epoch: rides on its call */
    assert_true(wait_all(t, 4, 5000));
    assert_int_equal(fake_nreqs(e.f), 3);
    assert_int_equal(e.lim.acquired, 3);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].done_count, 1);
        assert_int_equal(t[i].job.attempts, 1);
        assert_int_equal(t[i].job.leads.nleads, 2);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_coalesce_fault_each_member(void **state)
{
    env e;
    env_init(&e, (canned){500, &b_f20014, 0, 0});
    canned s[] = {{200, &b_echo, 0, 0}};
    fake_script(e.f, s, 1);
    e.lim.burst = 1;
    e.lim.pause_ms = 300;
    env_start(&e);
    take_first_slot(&e);
    tjob t[5];
    for (int i = 0; i < 5; i++)
        make_email(&t[i], i, 5000);
    for (int i = 0; i < 5; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 5, 5000));
    assert_int_equal(fake_nreqs(e.f), 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t[i].done_count, 1);
        assert_int_equal(t[i].job.outcome, GW_OUT_FAULT);
        assert_int_equal(t[i].job.fault.code, 20014);
        assert_non_null(t[i].job.fault.faultstring);
        assert_int_equal(t[i].job.attempts, 1);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_coalesce_retry_as_one(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_echo, 0, 0});
    canned s[] = {{200, &b_echo, 0, 0}, {500, &b_f20016, 0, 0}};
    fake_script(e.f, s, 2);
    e.lim.burst = 1;
    e.lim.pause_ms = 300;
    env_start(&e);
    take_first_slot(&e);
    tjob t[4];
    for (int i = 0; i < 4; i++)
        make_email(&t[i], i, 5000);
    for (int i = 0; i < 4; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 4, 5000));
    assert_int_equal(fake_nreqs(e.f), 3); /* first, the faulted merged call, its retry */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.attempts, 2);
        assert_int_equal(t[i].job.leads.nleads, 1);
        assert_int_equal(t[i].job.leads.leads[0].id, i);
        assert_int_equal(t[i].job.fault.code, 0);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_coalesce_queue_deadline(void **state)
{
    env e;
    env_burst(&e, (canned){200, &b_echo, 0, 0}, 400);
    take_first_slot(&e);
    tjob t[3];
    make_email(&t[0], 0, 5000);
    make_email(&t[1], 1, 100); /* gives up before the pause ends */
    make_email(&t[2], 2, 5000);
    for (int i = 0; i < 3; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 3, 5000));
    assert_int_equal(t[1].job.outcome, GW_OUT_RATE_LIMITED);
    assert_int_equal(t[1].job.attempts, 0);
    assert_true(t[1].job.retry_after_s >= 1);
    assert_true(t[1].done_at < t[0].done_at);
    assert_int_equal(fake_nreqs(e.f), 2);
    assert_null(strstr(e.f->bodies[1], g_ckeys[1]));
    for (int i = 0; i < 3; i += 2) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.leads.nleads, 1);
        assert_int_equal(t[i].job.leads.leads[0].id, i);
        assert_non_null(strstr(e.f->bodies[1], g_ckeys[i]));
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_coalesce_shapes_apart(void **state)
{
    env e;
    env_burst(&e, (canned){200, &b_echo, 0, 0}, 300);
    take_first_slot(&e);
    tjob t[5];
    make_email(&t[0], 1, 5000);                 /* email, all fields */
    make_email(&t[1], 2, 5000);                 /* email, FirstName only */
    t[1].job.get.attrs = g_fn_attrs;
    t[1].job.get.nattrs = 1;
    make_email(&t[2], 3, 5000);                 /* IDNUM */
    t[2].job.get.key_type = MKTO_KEY_IDNUM;
    t[2].job.get.keys = &g_cidp[3];
    make_email(&t[3], 4, 5000);                 /* email, all fields: joins t[0] */
    make_email(&t[4], 5, 5000);                 /* IDNUM: joins t[2] */
    t[4].job.get.key_type = MKTO_KEY_IDNUM;
    t[4].job.get.keys = &g_cidp[5];
    for (int i = 0; i < 5; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, 5, 5000));
    assert_int_equal(fake_nreqs(e.f), 4); /* first + (0,3) + (1) + (2,4) */
    int ids[5] = {1, 2, 3, 4, 5};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.leads.nleads, 1);
        assert_int_equal(t[i].job.leads.leads[0].id, ids[i]);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

static void test_coalesce_split_100(void **state)
{
    env e;
    env_burst(&e, (canned){200, &b_echo, 0, 0}, 300);
    take_first_slot(&e);
    enum { N = 150 };
    tjob *t = calloc(N, sizeof *t);
    for (int i = 0; i < N; i++)
        make_email(&t[i], i, 5000);
    for (int i = 0; i < N; i++)
        gw_upstream_submit(e.u, &t[i].job);
    assert_true(wait_all(t, N, 5000));
    assert_int_equal(fake_nreqs(e.f), 3); /* first, then 100 + 50 */
    int items1 = 0, items2 = 0;
    for (const char *p = e.f->bodies[1]; (p = strstr(p, "<stringItem>")); p++)
        items1++;
    for (const char *p = e.f->bodies[2]; (p = strstr(p, "<stringItem>")); p++)
        items2++;
    assert_int_equal(items1 + items2, N);
    assert_true(items1 == 100 || items2 == 100);
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.leads.nleads, 1);
        assert_int_equal(t[i].job.leads.leads[0].id, i);
        gw_job_clear_results(&t[i].job);
    }
    free(t);
    env_done(&e);
}

static void test_coalesce_gather_window(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_echo, 0, 0});
    e.cfg.coalesce_window_ms = 150;
    env_start(&e);
    tjob t[3];
    for (int i = 0; i < 3; i++)
        make_email(&t[i], i, 5000);
    int64_t t0 = gw_now_ms();
    gw_upstream_submit(e.u, &t[0].job);
    usleep(30 * 1000);
    gw_upstream_submit(e.u, &t[1].job);
    gw_upstream_submit(e.u, &t[2].job);
    assert_true(wait_all(t, 3, 5000));
    assert_true(t[0].done_at - t0 >= 140); /* waited for company */
    assert_int_equal(fake_nreqs(e.f), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.leads.nleads, 1);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

/* ---- pacing ---------------------------------------------------------------------- */

/* Reads a counter without labels from /metrics (-1 when absent). */
static long metric_value(const char *name)
{
    size_t len = 0;
    char *txt = gw_metrics_render(&len);
    assert_non_null(txt);
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(txt, pat);
    long v = p ? strtol(p + strlen(pat), NULL, 10) : -1;
    free(txt);
    return v;
}

/* 10 calls per 2 s (5/s) with 4 in flight: burst min(10, 4) = 4. Ten sync
 * jobs at once (they never merge): four go at once, the next six one per
 * token, ~200 ms apart. Then, after a pause, an idle job goes at once. */
static void test_pacing_spacing(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_echo, 0, 0});
    e.cfg.rl_calls_per_window = 10;
    e.cfg.rl_window_seconds = 2;
    e.cfg.rl_max_concurrent = 4;
    env_start(&e);
    long waits0 = metric_value("upstream_pacing_waits_total");
    assert_true(waits0 >= 0);
    enum { N = 10 };
    tjob t[N];
    int64_t t0 = gw_now_ms();
    for (int i = 0; i < N; i++) {
        make_email(&t[i], i, 5000);
        t[i].job.get.batch_size = 100 + i; /* distinct: no merging, one call each */
        gw_upstream_submit(e.u, &t[i].job);
    }
    assert_true(wait_all(t, N, 5000));
    assert_int_equal(fake_nreqs(e.f), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        gw_job_clear_results(&t[i].job);
    }
    int64_t *at = e.f->arrived_ms;
    fprintf(stderr, "# burst of 4 within %" PRId64 " ms\n", at[3] - t0);
    for (int i = 4; i < N; i++) {
        int64_t gap = at[i] - at[i - 1];
        fprintf(stderr, "# call %d: +%" PRId64 " ms after the previous\n", i, gap);
        assert_true(gap >= 150);  /* one token per 200 ms: never sooner */
        assert_true(gap <= 1500); /* nor far slower (loose: a loaded machine) */
    }
    /* the burst of 4 took no pacing wait (a slow machine may refill a
     * token between later ones, so fewer than 6 waits is fine) */
    long waited = metric_value("upstream_pacing_waits_total") - waits0;
    assert_true(waited >= 1 && waited <= N - 4);

    /* idle again (1 s refills 5 tokens): a new job goes at once */
    usleep(1000 * 1000);
    tjob idle;
    make_email(&idle, 20, 5000);
    long before_idle = metric_value("upstream_pacing_waits_total");
    int64_t s0 = gw_now_ms();
    gw_upstream_submit(e.u, &idle.job);
    assert_true(wait_all(&idle, 1, 3000));
    assert_int_equal(idle.job.outcome, GW_OUT_OK);
    assert_int_equal(fake_nreqs(e.f), N + 1);
    fprintf(stderr, "# idle job reached the server after %" PRId64 " ms\n", at[N] - s0);
    /* no pacing wait: the property; the time only as a loose sanity bound */
    assert_int_equal(metric_value("upstream_pacing_waits_total"), before_idle);
    assert_true(at[N] - s0 < 1000);
    gw_job_clear_results(&idle.job);
    env_done(&e);
}

/* Syncs are not paced (they cannot merge): twelve at once, with a burst of
 * 4 and 5 tokens a second, all reach the server well before pacing would
 * have let them (8 more tokens = 1.6 s). The limiter still counts them. */
static void test_pacing_spares_syncs(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_sync_ok, 0, 0});
    e.cfg.rl_calls_per_window = 100;
    e.cfg.rl_window_seconds = 20;
    e.cfg.rl_max_concurrent = 4;
    env_start(&e);
    enum { N = 12 };
    tjob t[N];
    long waits0 = metric_value("upstream_pacing_waits_total");
    int64_t t0 = gw_now_ms();
    for (int i = 0; i < N; i++) {
        make_sync(&t[i], false, 5000);
        gw_upstream_submit(e.u, &t[i].job);
    }
    assert_true(wait_all(t, N, 5000));
    assert_int_equal(fake_nreqs(e.f), N);
    int64_t last = e.f->arrived_ms[N - 1] - t0;
    fprintf(stderr, "# 12 syncs reached the server within %" PRId64 " ms\n", last);
    /* not one pacing wait (the property); pacing would have taken 1.6 s */
    assert_int_equal(metric_value("upstream_pacing_waits_total"), waits0);
    assert_true(last < 1500);
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        gw_job_clear_results(&t[i].job);
    }
    env_done(&e);
}

/* A fresh engine with pacing on: the very first job is not delayed. */
static void test_pacing_idle_no_delay(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_echo, 0, 0});
    e.cfg.rl_calls_per_window = 10;
    e.cfg.rl_window_seconds = 2;
    env_start(&e);
    tjob t;
    make_email(&t, 7, 2000);
    long waits0 = metric_value("upstream_pacing_waits_total");
    int64_t s0 = gw_now_ms();
    gw_upstream_submit(e.u, &t.job);
    assert_true(wait_all(&t, 1, 3000));
    assert_int_equal(t.job.outcome, GW_OUT_OK);
    assert_int_equal(fake_nreqs(e.f), 1);
    fprintf(stderr, "# first job reached the server after %" PRId64 " ms\n",
            e.f->arrived_ms[0] - s0);
    /* no pacing wait: the property; the time only as a loose sanity bound */
    assert_int_equal(metric_value("upstream_pacing_waits_total"), waits0);
    assert_true(t.done_at - s0 < 1000);
    gw_job_clear_results(&t.job);
    env_done(&e);
}

/* Merging under pacing: 200 distinct key jobs arrive over 1 s (5 every
 * 25 ms) at 5 calls/s with a burst of 10: once the burst is spent, waiting
 * jobs pile up and each token's call carries many keys. */
static void test_pacing_merges(void **state)
{
    env e;
    env_init(&e, (canned){200, &b_echo, 0, 0});
    e.cfg.rl_calls_per_window = 10;
    e.cfg.rl_window_seconds = 2;
    e.cfg.rl_max_concurrent = 10;
    env_start(&e);
    enum { N = 200 };
    tjob *t = calloc(N, sizeof *t);
    assert_non_null(t);
    for (int i = 0; i < N; i++) {
        make_email(&t[i], i, 8000);
        gw_upstream_submit(e.u, &t[i].job);
        if (i % 5 == 4)
            usleep(25 * 1000);
    }
    assert_true(wait_all(t, N, 8000));
    int n = fake_nreqs(e.f);
    int total = 0, most = 0;
    for (int r = 0; r < n; r++) {
        int items = 0;
        for (const char *p = e.f->bodies[r]; (p = strstr(p, "<stringItem>")); p++)
            items++;
        total += items;
        most = items > most ? items : most;
    }
    fprintf(stderr, "# %d calls for %d keys, at most %d in one\n", n, total, most);
    assert_int_equal(total, N);
    assert_true(n <= 20); /* ~10 burst + ~5 paced + the tail; unpaced it would be ~40 */
    assert_true(most >= 20);
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].job.outcome, GW_OUT_OK);
        assert_int_equal(t[i].job.leads.nleads, 1);
        assert_int_equal(t[i].job.leads.leads[0].id, i);
        gw_job_clear_results(&t[i].job);
    }
    free(t);
    env_done(&e);
}

static int group_setup(void **state)
{
    b_get_ok = load("successGetMultipleLeads.xml");
    b_sync_ok = load("successSyncMultipleLeads.xml");
    b_f20016 = load("fault20016.xml");
    b_f20023 = load("fault20023.xml");
    b_f20014 = load("fault20014.xml");
    b_f20015 = load("fault20015.xml");
    b_html503 = load("html503.html");
    if (!b_get_ok.data || !b_sync_ok.data || !b_f20016.data || !b_f20023.data ||
        !b_f20014.data || !b_f20015.data || !b_html503.data)
        return -1;
    /* a well-formed but oversized answer: 10 KiB of padding in a comment */
    b_huge.len = 10 * 1024 + b_get_ok.len;
    b_huge.data = malloc(b_huge.len + 1);
    memcpy(b_huge.data, b_get_ok.data, b_get_ok.len);
    memset(b_huge.data + b_get_ok.len, ' ', b_huge.len - b_get_ok.len);
    b_huge.data[b_huge.len] = '\0';
    soap_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ckeys_init();
    return 0;
}

static int group_teardown(void **state)
{
    blob *all[] = {&b_get_ok, &b_sync_ok, &b_f20016, &b_f20023, &b_f20014, &b_f20015, &b_html503,
                   &b_huge};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]->data);
    curl_global_cleanup();
    soap_cleanup();
    gw_metrics_reset();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_success_get),
        cmocka_unit_test(test_success_sync),
        cmocka_unit_test(test_fault_20016_resigned),
        cmocka_unit_test(test_fault_20023_backoff),
        cmocka_unit_test(test_fault_20023_out_of_time),
        cmocka_unit_test(test_fault_20014_not_retried),
        cmocka_unit_test(test_html_503_exhausted),
        cmocka_unit_test(test_503_retry_after_honoured),
        cmocka_unit_test(test_bad_response_2xx_not_retried),
        cmocka_unit_test(test_slow_server_timeout),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_sync_dropped_not_retried),
        cmocka_unit_test(test_sync_dropped_on_warm_connection_sent_once),
        cmocka_unit_test(test_get_dropped_retried),
        cmocka_unit_test(test_response_too_large),
        cmocka_unit_test(test_limiter_wait_rate_limited),
        cmocka_unit_test(test_limiter_quota),
        cmocka_unit_test(test_concurrency_cap),
        cmocka_unit_test(test_shutdown_ends_everything),
        cmocka_unit_test(test_shutdown_drains_in_flight),
        cmocka_unit_test(test_shutdown_never_started),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_fault_20015_quota),
        cmocka_unit_test(test_sync_fault_retried),
        cmocka_unit_test(test_metrics_exported),
        cmocka_unit_test(test_coalesce_batch),
        cmocka_unit_test(test_coalesce_single_flight),
        cmocka_unit_test(test_coalesce_single_flight_fresh),
        cmocka_unit_test(test_coalesce_fault_each_member),
        cmocka_unit_test(test_coalesce_retry_as_one),
        cmocka_unit_test(test_coalesce_queue_deadline),
        cmocka_unit_test(test_coalesce_shapes_apart),
        cmocka_unit_test(test_coalesce_split_100),
        cmocka_unit_test(test_coalesce_gather_window),
        cmocka_unit_test(test_pacing_spacing),
        cmocka_unit_test(test_pacing_idle_no_delay),
        cmocka_unit_test(test_pacing_spares_syncs),
        cmocka_unit_test(test_pacing_merges),
    };
    return cmocka_run_group_tests_name("upstream", tests, group_setup, group_teardown);
}
