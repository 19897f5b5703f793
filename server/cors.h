/* cors.h — Cross-Origin Resource Sharing: which browser origins may call the API (the
 * cors_origins option) and the header values that tell the browser so.
 *
 * A browser page on another origin may read an answer only when it carries
 * Access-Control-Allow-Origin with the page's origin; before a call with a JSON body or
 * an Authorization header it sends a preflight OPTIONS request, answered from the route
 * table (http.c).  Nothing here changes what the daemon does with a request: an origin not
 * in the list still gets its answer, only without the headers, so the browser hides it.
 * (Origin checks are a browser's protection of its user, not access control: that is the
 * bearer token's job.)
 *
 * Depends on nothing else (unit-tested alone, tests/test_cors.c; the config file's fuzz
 * harness reaches it through config_check). */
#ifndef SD_SERVER_CORS_H
#define SD_SERVER_CORS_H

#include <stddef.h>

#define CORS_MAX_ORIGINS 32
#define CORS_ORIGIN_MAX 256

/* What a preflight answer allows besides the route's methods, and how long a browser may
 * cache it; what a page may read of an answer beyond the CORS-safelisted headers. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Accept, Last-Event-ID"
#define CORS_MAX_AGE_S "600"
#define CORS_EXPOSE_HEADERS "X-Seed, X-Job-Id, X-Prompt-Truncated, Retry-After, Location"

struct cors {
    int any;                   /* "*": every origin */
    int n;
    char origin[CORS_MAX_ORIGINS][CORS_ORIGIN_MAX];
};

/* Parse the cors_origins option: comma-separated origins (scheme://host[:port], no path;
 * spaces around commas are ignored), "*" for any, "" for none.  0, or -1 with err naming
 * the entry at fault. */
int cors_parse(struct cors *c, const char *list, char *err, size_t errlen);
/* Is the request's Origin header value one of them?  (ASCII case-insensitive, as origins
 * are serialised lowercase by browsers but may be written otherwise in the config.)
 * NULL or "" is never allowed. */
int cors_allowed(const struct cors *c, const char *origin);
/* Does the list allow anything (so answers vary by Origin)? */
static inline int cors_enabled(const struct cors *c) { return c->any || c->n > 0; }

#endif
