/* gateway/upstream/protocols.h - the protocol factory: which Marketo API the
 * engine speaks, from the settings.
 *
 * The one place that knows every protocol library (soap/, and the REST one
 * beside it): the engine only sees marketo/protocol.h.
 */
#ifndef GW_UPSTREAM_PROTOCOLS_H
#define GW_UPSTREAM_PROTOCOLS_H

#include <stddef.h>

#include "config/config.h"
#include "gateway/err.h"
#include "marketo/protocol.h"

/* Builds the protocol the settings ask for (today: SOAP at
 * marketo.soap_endpoint with marketo.user_id / encryption_key, answers
 * capped at marketo.max_response_bytes). Returns NULL with err filled (it
 * names the setting, never a secret). Free with mkto_protocol_free(). */
mkto_protocol *gw_protocol_new(const gw_config *cfg, gw_err *err);

#endif /* GW_UPSTREAM_PROTOCOLS_H */
