/* cors.c — the cors_origins list (see cors.h). */
#include "cors.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* scheme://host[:port]: a URL scheme, a host name, IPv4 or [IPv6] literal, and an optional
 * decimal port; nothing after it (an origin has no path, not even "/"). */
static int origin_valid(const char *s, size_t n) {
    size_t i = 0;
    if (i >= n || !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) return 0;
    while (i < n && (strchr("+-.", s[i]) || (s[i] >= 'a' && s[i] <= 'z') ||
                     (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
        i++;
    if (n - i < 4 || strncmp(s + i, "://", 3)) return 0;
    i += 3;
    size_t host = i;
    if (s[i] == '[') {
        while (i < n && s[i] != ']') {
            if (!strchr("0123456789abcdefABCDEF:.[", s[i])) return 0;
            i++;
        }
        if (i == n) return 0;
        i++;
    } else {
        while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                         (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            i++;
    }
    if (i == host) return 0;
    if (i < n && s[i] == ':') {
        size_t p = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == p || i - p > 5) return 0;
    }
    return i == n;
}

int cors_parse(struct cors *c, const char *list, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t') p++;
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n == 1 && *p == '*') {
            c->any = 1;
        } else if (n == 0) {
            snprintf(err, errlen, "cors_origins: an empty entry in '%s'", list);
            return -1;
        } else if (n >= CORS_ORIGIN_MAX || !origin_valid(p, n)) {
            snprintf(err, errlen, "cors_origins: '%.*s' is not an origin (scheme://host[:port], "
                     "no path or trailing slash) nor *", (int)(n > 80 ? 80 : n), p);
            return -1;
        } else if (c->n == CORS_MAX_ORIGINS) {
            snprintf(err, errlen, "cors_origins: more than %d origins", CORS_MAX_ORIGINS);
            return -1;
        } else {
            memcpy(c->origin[c->n], p, n);
            c->origin[c->n++][n] = 0;
        }
        if (!e) break;
        p = e + 1;
        if (!*p) {
            snprintf(err, errlen, "cors_origins: an empty entry at the end of '%s'", list);
            return -1;
        }
    }
    return 0;
}

int cors_allowed(const struct cors *c, const char *origin) {
    if (!origin || !*origin) return 0;
    if (c->any) return origin_valid(origin, strlen(origin));
    for (int i = 0; i < c->n; i++)
        if (!strcasecmp(c->origin[i], origin)) return 1;
    return 0;
}
