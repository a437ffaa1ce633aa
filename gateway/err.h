/* gateway/err.h - the gateway's one error idiom: a gw_err, filled by the
 * function that finds the error, read by whoever turns it into an answer
 * (a route: gw_req_reply_err in gateway/http/server.h; main.c: a start-up
 * log line). Modelled on soap/'s soap_err.
 *
 * Which idiom is for what:
 *   gw_err: something failed; status says what it becomes for a client.
 *   gw_outcome (upstream/upstream.h): how an upstream job ended, a result.
 *   the cache's hit/miss/error returns (store/cache.h): results, not errors.
 */
#ifndef GW_ERR_H
#define GW_ERR_H

/* Where an error was found and why. */
typedef struct gw_err {
    int status;     /* HTTP status it becomes for a client (400, 413, 422, 500, 503...);
                       0: a start-up or internal error that never reaches one */
    char msg[200];  /* human text naming a setting or parameter; never a secret
                       or a key value */
} gw_err;

/* Sets e's status and its message (printf format, cut to fit). e may be
 * NULL: then nothing is done. */
__attribute__((format(printf, 3, 4)))
void gw_err_set(gw_err *e, int status, const char *fmt, ...);

/* gw_err_set, then the value -1: `return GW_ERR_FAIL(err, 400, "...");`. */
#define GW_ERR_FAIL(e, status, ...) (gw_err_set((e), (status), __VA_ARGS__), -1)

#endif /* GW_ERR_H */
