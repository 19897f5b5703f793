/* test_cors.c — the cors_origins list (server/cors.c): what parses, what is refused with a
 * message naming the entry, and which Origin header values match. */
#include "cors.h"
#include "tap.h"

static int parses(const char *list) {
    struct cors c;
    char err[256] = "";
    return cors_parse(&c, list, err, sizeof err) == 0;
}

int main(void) {
    struct cors c;
    char err[256] = "";
    ok(cors_parse(&c, "", err, sizeof err) == 0 && !cors_enabled(&c), "empty: no origin allowed");
    ok(!cors_allowed(&c, "http://localhost:3000"), "empty: an origin is not allowed");

    ok(cors_parse(&c, "https://app.example.com, http://localhost:3000 ,http://[::1]:8080", err,
                  sizeof err) == 0 && c.n == 3, "three origins, spaces around commas ignored");
    ok(cors_allowed(&c, "https://app.example.com"), "a listed origin matches");
    ok(cors_allowed(&c, "HTTPS://APP.example.com"), "matching is ASCII case-insensitive");
    ok(cors_allowed(&c, "http://[::1]:8080"), "an IPv6 literal origin matches");
    ok(!cors_allowed(&c, "https://app.example.com:443"), "a different port is another origin");
    ok(!cors_allowed(&c, "http://app.example.com"), "a different scheme is another origin");
    ok(!cors_allowed(&c, "https://evil.example.com"), "an unlisted origin does not match");
    ok(!cors_allowed(&c, NULL) && !cors_allowed(&c, ""), "no Origin header never matches");

    ok(cors_parse(&c, "*", err, sizeof err) == 0 && c.any, "* allows any origin");
    ok(cors_allowed(&c, "https://anything.example:8443"), "*: a well-formed origin matches");
    ok(!cors_allowed(&c, "null") && !cors_allowed(&c, "https://x/\r\nSet-Cookie: a"),
       "*: 'null' and malformed values do not (they would be echoed in a header)");

    ok(cors_parse(&c, "https://app.example.com/", err, sizeof err) == -1 &&
       strstr(err, "'https://app.example.com/'"), "a trailing slash is refused, naming the entry: %s", err);
    ok(!parses("app.example.com") && !parses("https://") && !parses("https://a:") &&
       !parses("https://a:123456") && !parses("https://a/b") && !parses("https://a?x") &&
       !parses("a,,b") && !parses("https://a,") && !parses("https://a b"),
       "no scheme, no host, an empty or long port, a path, a query, empty entries, spaces: refused");
    ok(parses("chrome-extension://abcdef") && parses("http://127.0.0.1:5173"),
       "other schemes and IPv4 with a port parse");
    char many[40 * 24] = "";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d", i ? "," : "", i);
    ok(cors_parse(&c, many, err, sizeof err) == -1 && strstr(err, "more than"),
       "more than %d origins is refused", CORS_MAX_ORIGINS);
    return done_testing();
}
