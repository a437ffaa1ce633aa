/* sim/ops.h - internal interface between marketo-sim's SOAP dispatcher
 * (soapsrv.c), its XML helpers (xmlio.c) and the operations (opget.c,
 * opsync.c). Not for use outside sim/.
 */
#ifndef SIM_OPS_H
#define SIM_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libxml/tree.h>
#include <libxml/xmlwriter.h>

#include "sim/soapsrv.h"
#include "sim/store.h"

/* ---- reading requests (xmlio.c) ------------------------------------------ */

/* First element child of parent, or NULL. */
xmlNodePtr sx_first_elem(xmlNodePtr parent);
/* Next element sibling of node, or NULL. */
xmlNodePtr sx_next_elem(xmlNodePtr node);
/* Whether node's local name is name. */
bool sx_is(xmlNodePtr node, const char *name);
/* Matches parent's element children against a WSDL sequence of names (each
 * at most once, in this order): out[i] gets the child called names[i] or
 * NULL. Returns 0, or 20012 for an unknown, repeated or misplaced child. */
int sx_seq(xmlNodePtr parent, const char *const *names, size_t n, xmlNodePtr *out);
/* Whether node carries xsi:nil="true" (or "1"). */
bool sx_is_nil(xmlNodePtr node);
/* Text content of node, malloc'd (free with free()); NULL on OOM. */
char *sx_text(xmlNodePtr node);
/* xs:int content of node into *out. Returns 0 or 20012. */
int sx_int(xmlNodePtr node, int64_t *out);
/* xs:boolean content of node into *out. Returns 0 or 20012. */
int sx_bool(xmlNodePtr node, bool *out);
/* xs:dateTime content of node into *out. Returns 0 or 20012. */
int sx_time(xmlNodePtr node, time_t *out);

/* ---- writing answers (xmlio.c) --------------------------------------------- */

/* A success envelope under construction. */
typedef struct xout {
    xmlBufferPtr buf;      /* the document */
    xmlTextWriterPtr w;    /* writer into buf */
    int bad;               /* set once any write failed */
} xout;

/* Starts a success answer: declaration, Envelope (SOAP-ENV, xsi and ns1
 * declarations), Body and ns1:<success_elem>. Returns 0 or -1. */
int xout_begin(xout *x, const char *success_elem);
void xout_start(xout *x, const char *name);
void xout_end(xout *x);
void xout_text(xout *x, const char *name, const char *text);
void xout_int(xout *x, const char *name, int64_t v);
/* <name xsi:nil="true"/> */
void xout_nil(xout *x, const char *name);
/* One <leadRecord>; include (SIM_NFIELDS flags) limits the attributes, or
 * NULL for all. Empty values are never written. */
void xout_lead(xout *x, const sim_lead *l, const bool *include);
/* Closes everything and hands the bytes over (*body malloc'd). Returns 0,
 * or -1 (nothing handed over, x freed) when any write failed. */
int xout_finish(xout *x, char **body, size_t *len);
/* Frees a half-written answer. */
void xout_abort(xout *x);

/* The documented fault envelope for code. Returns 0 or -1 (OOM). */
int sim_fault_body(int code, char **body, size_t *len);

/* ---- operations (opget.c, opsync.c) ------------------------------------------ */

/* The store and settings the operations work on. */
const sim_soap_cfg *sim_soap_config(void);
/* Sets up the stream-position secret. Returns 0 or -1. */
int sim_stream_init(void);

/* Each takes the params element and returns 0 with a success answer in
 * *body / *len (malloc'd), or a Marketo fault code. */
int sim_op_get_lead(xmlNodePtr params, char **body, size_t *len);
int sim_op_get_multiple(xmlNodePtr params, char **body, size_t *len);
int sim_op_sync_lead(xmlNodePtr params, char **body, size_t *len);
int sim_op_sync_multiple(xmlNodePtr params, char **body, size_t *len);

#endif /* SIM_OPS_H */
