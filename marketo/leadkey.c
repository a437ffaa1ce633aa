/* marketo/leadkey.c - lead-key identity (see leadkey.h). */
#include "marketo/leadkey.h"

#include <stddef.h>
#include <string.h>

/* WSDL names of the key types, indexed by mkto_key_type. */
static const char *const key_names[MKTO_KEY__COUNT] = {
    "IDNUM",         "COOKIE",        "EMAIL",
    "LEADOWNEREMAIL", "SFDCACCOUNTID", "SFDCCONTACTID",
    "SFDCLEADID",    "SFDCLEADOWNERID", "SFDCOPPTYID",
};

/* Lead attribute carrying each key in a LeadRecord (NULL: a record element). */
static const char *const key_attrs[MKTO_KEY__COUNT] = {
    NULL,          "Cookies",       NULL,
    "LeadOwnerEmail", "SFDCAccountId", "SFDCContactId",
    "SFDCLeadId",  "SFDCLeadOwnerId", "SFDCOpptyId",
};

const char *mkto_key_type_name(mkto_key_type t)
{
    if ((int)t < 0 || t >= MKTO_KEY__COUNT)
        return NULL;
    return key_names[t];
}

int mkto_key_type_parse(const char *name, mkto_key_type *out)
{
    if (name == NULL || out == NULL)
        return -1;
    for (int i = 0; i < MKTO_KEY__COUNT; i++) {
        if (strcmp(name, key_names[i]) == 0) {
            *out = (mkto_key_type)i;
            return 0;
        }
    }
    return -1;
}

const char *mkto_key_type_attr(mkto_key_type t)
{
    if ((int)t < 0 || t >= MKTO_KEY__COUNT)
        return NULL;
    return key_attrs[t];
}

