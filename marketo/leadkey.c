/* marketo/leadkey.c - lead-key identity (see leadkey.h). */
#include "marketo/leadkey.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "marketo/model.h"

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

/* Whether key type t is an e-mail, matched case-insensitively by Marketo. */
static bool is_email_type(mkto_key_type t)
{
    return t == MKTO_KEY_EMAIL || t == MKTO_KEY_LEADOWNEREMAIL;
}

int mkto_key_normalize(mkto_key_type t, const char *value, char *out, size_t outlen)
{
    if (value == NULL || out == NULL)
        return -1;
    size_t len = strlen(value);
    if (len >= outlen)
        return -1;
    bool lower = is_email_type(t);
    for (size_t i = 0; i < len; i++) {
        char ch = value[i];
        if (lower && ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        out[i] = ch;
    }
    out[len] = '\0';
    return 0;
}

bool mkto_key_eq(mkto_key_type t, const char *a, const char *b)
{
    if (is_email_type(t))
        return strcasecmp(a, b) == 0;
    return strcmp(a, b) == 0;
}

bool mkto_lead_matches_key(const mkto_lead *l, mkto_key_type t, const char *key)
{
    if (!l || !key)
        return false;
    if (t == MKTO_KEY_IDNUM) {
        if (!l->has_id)
            return false;
        errno = 0;
        char *end = NULL;
        long long v = strtoll(key, &end, 10);
        if (errno != 0 || end == key || *end != '\0')
            return false;
        return (int64_t)v == l->id;
    }
    if (t == MKTO_KEY_EMAIL)
        return l->email && strcasecmp(l->email, key) == 0;
    const char *an = mkto_key_type_attr(t);
    if (!an)
        return false;
    for (size_t i = 0; i < l->nattrs; i++) {
        if (strcmp(l->attrs[i].name, an) != 0 || !l->attrs[i].value)
            continue;
        if (t == MKTO_KEY_LEADOWNEREMAIL)
            return strcasecmp(l->attrs[i].value, key) == 0;
        return strcmp(l->attrs[i].value, key) == 0;
    }
    return false;
}

size_t mkto_keys_per_call(mkto_api api)
{
    switch (api) {
    case MKTO_API_SOAP:
        return MKTO_SOAP_KEYS_PER_CALL;
    case MKTO_API_REST:
        return MKTO_REST_KEYS_PER_CALL;
    }
    return 0;
}
