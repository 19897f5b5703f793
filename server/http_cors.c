/* http_cors.c — the CORS headers on answers and the preflight answer (http.h; the origin
 * list and the header values are cors.h's). */
#include "cors.h"
#include "http.h"

void http_cors_headers(struct req *r, const struct cors *c, struct MHD_Response *resp) {
    if (!cors_enabled(c)) return;
    /* the answer depends on the Origin header: caches must key on it */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    const char *origin = req_header(r, "Origin");
    if (!cors_allowed(c, origin)) return;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
}

enum MHD_Result http_preflight(struct req *r, const struct cors *c, const char *allow) {
    const char *origin = req_header(r, "Origin");
    if (origin && cors_allowed(c, origin)) {
        req_add_header(r, "Access-Control-Allow-Methods", allow);
        req_add_header(r, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        req_add_header(r, "Access-Control-Max-Age", CORS_MAX_AGE_S);
    } else if (origin && req_header(r, "Access-Control-Request-Method")) {
        return reply_error(r, 403, "cors_forbidden", NULL, "origin '%.200s' may not call this "
                           "API from a browser (it is not in cors_origins)", origin);
    }
    return reply_buffer(r, 204, "text/plain", "", 0, NULL, NULL);
}
