/* marketo/model.c - releasing the model's structs (see model.h). */
#include "marketo/model.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void mkto_lead_clear(mkto_lead *l)
{
    if (l == NULL)
        return;
    free(l->email);
    free(l->foreign_sys_person_id);
    free(l->foreign_sys_type);
    for (size_t i = 0; l->attrs != NULL && i < l->nattrs; i++) {
        free(l->attrs[i].name);
        free(l->attrs[i].type);
        free(l->attrs[i].value);
    }
    free(l->attrs);
    memset(l, 0, sizeof(*l));
}

void mkto_fault_clear(mkto_fault *f)
{
    if (f == NULL)
        return;
    free(f->faultcode);
    free(f->faultstring);
    free(f->message);
    memset(f, 0, sizeof(*f));
}

void mkto_leads_clear(mkto_leads *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->leads != NULL && i < r->nleads; i++)
        mkto_lead_clear(&r->leads[i]);
    free(r->leads);
    free(r->new_stream_position);
    memset(r, 0, sizeof(*r));
}

void mkto_sync_result_clear(mkto_sync_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->statuses != NULL && i < r->nstatuses; i++)
        free(r->statuses[i].error);
    free(r->statuses);
    memset(r, 0, sizeof(*r));
}


/* *dst = copy of src (NULL stays NULL). Returns false out of memory. */
static bool dup_str(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

int mkto_lead_copy(mkto_lead *dst, const mkto_lead *src)
{
    memset(dst, 0, sizeof *dst);
    dst->has_id = src->has_id;
    dst->id = src->id;
    if (!dup_str(&dst->email, src->email) ||
        !dup_str(&dst->foreign_sys_person_id, src->foreign_sys_person_id) ||
        !dup_str(&dst->foreign_sys_type, src->foreign_sys_type))
        goto fail;
    if (src->nattrs > 0) {
        dst->attrs = calloc(src->nattrs, sizeof *dst->attrs);
        if (!dst->attrs)
            goto fail;
        for (size_t i = 0; i < src->nattrs; i++) {
            dst->nattrs = i + 1;
            if (!dup_str(&dst->attrs[i].name, src->attrs[i].name) ||
                !dup_str(&dst->attrs[i].type, src->attrs[i].type) ||
                !dup_str(&dst->attrs[i].value, src->attrs[i].value))
                goto fail;
        }
    }
    return 0;
fail:
    mkto_lead_clear(dst);
    return -1;
}

int mkto_fault_copy(mkto_fault *dst, const mkto_fault *src)
{
    memset(dst, 0, sizeof *dst);
    dst->code = src->code;
    dst->retryable = src->retryable;
    if (dup_str(&dst->faultcode, src->faultcode) && dup_str(&dst->faultstring, src->faultstring) &&
        dup_str(&dst->message, src->message))
        return 0;
    mkto_fault_clear(dst);
    dst->code = src->code;
    dst->retryable = src->retryable;
    return -1;
}
