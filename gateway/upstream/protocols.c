/* gateway/upstream/protocols.c - the protocol factory (see protocols.h). */
#include "gateway/upstream/protocols.h"

#include <stdio.h>

#include "soap/soap.h"

mkto_protocol *gw_protocol_new(const gw_config *cfg, gw_err *err)
{
    if (!cfg->soap_endpoint || !cfg->soap_endpoint[0]) {
        gw_err_set(err, 0, "upstream: marketo.soap_endpoint is not set");
        return NULL;
    }
    size_t max_response = cfg->max_response_bytes > 0 ? (size_t)cfg->max_response_bytes : 0;
    mkto_protocol *p = soap_protocol_new(cfg->soap_endpoint, cfg->user_id, cfg->encryption_key,
                                         max_response);
    if (!p)
        gw_err_set(err, 0, "upstream: out of memory");
    return p;
}
