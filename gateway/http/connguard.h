/* gateway/http/connguard.h - deadlines for slow clients, and room for new connections.
 *
 * libmicrohttpd's own timeout (gateway.idle_timeout_s) starts again at every
 * byte: a client sending one header byte every 10 s held its connection for
 * as long as it liked, and 1,100 such clients filled gateway.connection_limit
 * so that /healthz timed out (and the kubelet would restart the pod). The
 * guard adds what libmicrohttpd lacks:
 *
 *   - a header deadline: a request's header block must be complete within
 *     gateway.header_timeout_ms, counted from the connection's opening for
 *     its first request, from the first byte of each later one on a
 *     kept-alive connection (an idle kept-alive connection is left to the
 *     idle timeout);
 *   - a body deadline: its body must be complete within
 *     gateway.body_timeout_ms of the end of its headers;
 *   - room at the limit: once all but the last sixteenth (at most 64, at
 *     least 1) of gateway.connection_limit are open, each new connection
 *     closes the oldest one that is idle between requests or still sending
 *     its headers (when there is none, the oldest one still sending its
 *     body). A request being handled, suspended or answered is never
 *     touched. So a probe always finds a slot and is answered at once.
 *
 * A connection closed for a deadline gets "408 Request Timeout", one
 * evicted at the limit "503 Service Unavailable" with Retry-After, both
 * problem+json with Connection: close, when it has sent something of a
 * request; otherwise it is closed without a word. The guard's own thread
 * writes that reply (libmicrohttpd is only reading from the socket in
 * those states) and shuts the socket down; libmicrohttpd then sees the end
 * of the stream and closes the connection its usual way.
 *
 * Each connection's state and deadline share one atomic word, moved by
 * compare-and-swap both by the connection's libmicrohttpd thread (the
 * request's progress) and by the guard's thread (deadlines, eviction): the
 * request path takes no lock. The list of open connections is under a
 * mutex, taken when one opens or closes and by the guard's scans.
 */
#ifndef GW_CONNGUARD_H
#define GW_CONNGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_guard gw_guard;
typedef struct gw_guard_conn gw_guard_conn;

/* What the guard enforces. */
typedef struct gw_guard_opts {
    int64_t header_timeout_ms;    /* gateway.header_timeout_ms */
    int64_t body_timeout_ms;      /* gateway.body_timeout_ms */
    size_t connection_limit;      /* libmicrohttpd's MHD_OPTION_CONNECTION_LIMIT */
} gw_guard_opts;

/* Starts the guard and its thread. NULL when memory or a thread is lacking. */
gw_guard *gw_guard_start(const gw_guard_opts *o);

/* Stops the thread and frees the guard. Call once every connection is
 * closed (after MHD_stop_daemon). NULL is fine. */
void gw_guard_stop(gw_guard *g);

/* A connection was accepted (libmicrohttpd's MHD_CONNECTION_NOTIFY_STARTED):
 * its header deadline starts; near the limit, the oldest slow connection is
 * closed to make room. fd stays libmicrohttpd's. Returns the connection's
 * state for the calls below (owned by the guard until gw_guard_close), or
 * NULL when out of memory: the connection then goes unguarded. */
gw_guard_conn *gw_guard_open(gw_guard *g, int fd);

/* The connection is closing (MHD_CONNECTION_NOTIFY_CLOSED, which comes
 * before libmicrohttpd closes the socket): c is forgotten and freed. */
void gw_guard_close(gw_guard *g, gw_guard_conn *c);

/* The request's headers are in. body: its body is read next (the body
 * deadline starts); false: the request is the handler's (no deadline of the
 * guard's). request_id (copied) goes into a 408. Returns false when the
 * guard has closed the connection already: the caller drops it (MHD_NO).
 * These three accept c == NULL (an unguarded connection). */
bool gw_guard_headers_done(gw_guard_conn *c, bool body, const char *request_id);

/* The request's body is in. Returns false when the guard has closed the
 * connection already. */
bool gw_guard_body_done(gw_guard_conn *c);

/* The request completed on a connection that stays open: it is idle until
 * the next request's first byte. Call on the connection's thread. */
void gw_guard_request_done(gw_guard_conn *c);

/* 408 or 503 when the guard closed c (for the access log), else 0. */
unsigned gw_guard_closed_status(const gw_guard_conn *c);

#endif /* GW_CONNGUARD_H */
