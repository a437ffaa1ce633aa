/* sim/admin.h - marketo-sim's JSON admin endpoints under /_sim/ (no auth,
 * no limits): GET /_sim/stats, POST /_sim/reset, POST /_sim/faults,
 * GET|POST /_sim/limits. */
#ifndef SIM_ADMIN_H
#define SIM_ADMIN_H

#include <stddef.h>

#include "sim/store.h"

/* Sets the store that reset and stats work on. */
void sim_admin_init(sim_store *store);

/* Handles one admin request: *status gets the HTTP status and *out a
 * malloc'd JSON body (caller frees; NULL only on OOM). */
void sim_admin_handle(const char *method, const char *url, const char *body, size_t len,
                      int *status, char **out);

#endif /* SIM_ADMIN_H */
