/* marketo/model.c - releasing the model's structs (see model.h). */
#include "marketo/model.h"

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

