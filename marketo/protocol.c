/* marketo/protocol.c - the request struct every protocol fills (see protocol.h). */
#include "marketo/protocol.h"

#include <stdlib.h>
#include <string.h>

void mkto_request_clear(mkto_request *req)
{
    if (!req)
        return;
    free(req->url);
    for (size_t i = 0; i < req->nheaders; i++)
        free(req->headers[i]);
    free(req->body);
    memset(req, 0, sizeof *req);
}

int mkto_request_add_header(mkto_request *req, const char *line)
{
    if (!req || !line || req->nheaders >= MKTO_REQUEST_MAX_HEADERS)
        return -1;
    char *copy = strdup(line);
    if (!copy)
        return -1;
    req->headers[req->nheaders++] = copy;
    return 0;
}
