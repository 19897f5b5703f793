/* test_edge_head.c — the strict request-head checks (server/edge_head.c) on byte
 * strings: every rule of edge_head.h, the findings of the hardening issue (duplicate and
 * conflicting Content-Length, Content-Length with Transfer-Encoding, unknown codings,
 * NUL in the request line and in header values, HTTP/1.1 without Host), and the scanner
 * fed one byte at a time as a slow client sends it. */
#include "edge_head.h"
#include "tap.h"

/* Scan and check a head given as (pointer, length): the status edge.c would answer. */
static unsigned verdict(const char *s, size_t n, struct edge_verdict *v) {
    size_t pos = 0, hlen = 0;
    memset(v, 0, sizeof *v);
    enum edge_scan sc = edge_head_scan(s, n, &pos, &hlen, v);
    if (sc == EDGE_SCAN_BAD) return v->status;
    if (sc == EDGE_SCAN_MORE) return 1;   /* incomplete */
    edge_head_check(s, hlen, v);
    return v->status;
}

#define V(lit, v) verdict(lit, sizeof(lit) - 1, v)

static void test_valid(void) {
    struct edge_verdict v;
    ok(V("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 0, "minimal HTTP/1.1 request");
    ok(V("GET /healthz HTTP/1.0\r\n\r\n", &v) == 0, "HTTP/1.0 without Host");
    ok(V("POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\n{}", &v) == 0,
       "lower-case names; bytes after the head are not looked at");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", &v) == 0,
       "Transfer-Encoding: chunked (any case)");
    ok(V("GET /a?b=c%20d HTTP/1.1\r\nHost: x\r\nX:\r\nY: \t a b \t\r\nZ: caf\xc3\xa9\r\n\r\n", &v) == 0,
       "empty value, tabs and spaces, obs-text (UTF-8) in values");
    ok(V("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 0, "asterisk-form target");
}

static void test_framing(void) {
    struct edge_verdict v;
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &v) == 400 &&
       strstr(v.message, "duplicate"), "duplicate Content-Length: 400 (%s)", v.message);
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &v) == 400 &&
       strstr(v.message, "conflicting"), "conflicting Content-Length: 400 (%s)", v.message);
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", &v) == 400, "Content-Length list: 400");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", &v) == 400, "negative Content-Length: 400");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1234567890123456789\r\n\r\n", &v) == 400,
       "a 19-digit Content-Length: 400");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", &v) == 400,
       "Content-Length with Transfer-Encoding: 400");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &v) == 501 &&
       !strcmp(v.code, "not_implemented") && strstr(v.message, "gzip"), "TE gzip: 501 naming it");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n", &v) == 400,
       "TE gzip with Content-Length: 400 (framing first)");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", &v)
       == 400, "chunked twice (two headers): 400");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", &v) == 501,
       "a coding after chunked: 501 (unknown coding)");
    ok(V("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n", &v) == 400,
       "an empty coding list: 400");
    ok(V("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &v) == 400, "TE in HTTP/1.0: 400");
    ok(V("GET / HTTP/1.1\r\n\r\n", &v) == 400 && strstr(v.message, "Host"), "HTTP/1.1 without Host: 400");
    ok(V("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &v) == 400, "two Host headers: 400");
}

static void test_bytes(void) {
    struct edge_verdict v;
    ok(V("GET /healthz\0abc HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 && strstr(v.message, "NUL"),
       "NUL in the request target: 400 (%s)", v.message);
    ok(V("GET / HTTP/1.1\0\r\nHost: x\r\n\r\n", &v) == 400, "NUL after the version: 400");
    ok(V("GET\0/ HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "NUL in the method: 400");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\0junk\r\n\r\n", &v) == 400 &&
       strstr(v.message, "Authorization"), "NUL in a header value: 400 naming it (%s)", v.message);
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nX: a\x1b[31m\r\n\r\n", &v) == 400, "ESC in a value: 400");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n", &v) == 400, "DEL in a value: 400");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nX\0Y: a\r\n\r\n", &v) == 400, "NUL in a name: 400");
    ok(V("GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "non-ASCII in the target: 400");
    ok(V("GET /healthz%00zz HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 && strstr(v.message, "NUL") &&
       strstr(v.message, "%00"), "an encoded NUL in the path: 400 (%s)", v.message);
    ok(V("GET /healthz%0a HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 &&
       V("GET /healthz%0D HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 &&
       V("GET /healthz%1F HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 &&
       V("GET /healthz%7f HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "encoded LF, CR, 0x1f, DEL in the path: 400");
    ok(V("GET /v1/jobs?status=queued%00x HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400,
       "an encoded NUL in the query: 400");
    ok(V("GET /v1/train/x/samples/%30 HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 && strstr(v.message, "'0'"),
       "an encoded unreserved character in the path: 400 (%s)", v.message);
    ok(V("GET /%7e HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 && V("GET /%2D HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400 &&
       V("GET /%61 HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "... '~', '-', 'a' too");
    ok(V("GET /a%20b%2F%25%2B?q=%2541%30%7e%0 HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 0 &&
       V("GET /a%0 HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 0 && V("GET /a% HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 0,
       "other escapes (space, slash, %%25 then 41, plus), any printable one in the query, cut-off ones: pass");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", &v) == 400, "bare CR in a value: 400");
    ok(V("GET / HTTP/1.1\nHost: x\n\n", &v) == 400, "bare LF line ends: 400");
}

static void test_syntax(void) {
    struct edge_verdict v;
    ok(V("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "empty line before the request line: 400");
    ok(V("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "two spaces after the method: 400");
    ok(V("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", &v) == 400, "trailing space after the version: 400");
    ok(V("GET / HTTP/1.2\r\nHost: x\r\n\r\n", &v) == 505, "HTTP/1.2: 505");
    ok(V("GET / HTTP/2.0\r\nHost: x\r\n\r\n", &v) == 505 && !strcmp(v.code, "http_version_not_supported"),
       "HTTP/2.0: 505");
    ok(V("GET / HTTP/1.10\r\nHost: x\r\n\r\n", &v) == 400, "HTTP/1.10: 400");
    ok(V("GET / http/1.1\r\nHost: x\r\n\r\n", &v) == 400, "lower-case http: 400");
    ok(V("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", &v) == 400, "a method with a non-token byte: 400");
    ok(V("GET / HTTP/1.1\r\nHost : x\r\n\r\n", &v) == 400 && strstr(v.message, "whitespace"),
       "space before the colon: 400");
    {   /* found by tests/fuzz (edge_head): the message copied the name with %.40s from a
         * buffer with no NUL, reading past its end; the head here ends exactly at the buffer */
        static const char h[] = "GET / HTTP/1.1\r\nHost: x\r\nAb :\r\n\r\n";
        char *exact = malloc(sizeof h - 1);
        memcpy(exact, h, sizeof h - 1);
        ok(verdict(exact, sizeof h - 1, &v) == 400 && strstr(v.message, "'Ab'"),
           "a short name before whitespace is quoted without reading past the head (%s)", v.message);
        free(exact);
    }
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n", &v) == 400 && strstr(v.message, "folding"),
       "obs-fold: 400");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", &v) == 400, "a line without a colon: 400");
    ok(V("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", &v) == 400, "an empty name: 400");
    char big[8192];
    size_t n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < EDGE_MAX_HEADERS; i++) n += (size_t)snprintf(big + n, sizeof big - n, "X-%d: v\r\n", i);
    n += (size_t)snprintf(big + n, sizeof big - n, "\r\n");
    ok(verdict(big, n, &v) == 431, "more than %d header lines: 431", EDGE_MAX_HEADERS);
}

/* A slow client: the scanner is fed the head one byte at a time and must find the end
 * exactly once, at the last byte, whatever the split (a CR at the end of a chunk). */
static void test_scan_bytewise(void) {
    static const char head[] = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    size_t end = sizeof head - 1 - 2, pos = 0, hlen = 0;
    struct edge_verdict v;
    int done_at = -1, bad = 0;
    for (size_t n = 1; n <= sizeof head - 1; n++) {
        enum edge_scan sc = edge_head_scan(head, n, &pos, &hlen, &v);
        if (sc == EDGE_SCAN_BAD) bad = 1;
        if (sc == EDGE_SCAN_DONE) { done_at = (int)n; break; }
    }
    ok(!bad && done_at == (int)end && hlen == end, "byte by byte: the end is found at byte %zu (got %d)",
       end, done_at);
    pos = 0;
    ok(edge_head_scan("GET / HTTP/1.1\r", 15, &pos, &hlen, &v) == EDGE_SCAN_MORE && pos == 14,
       "a CR at the end of the bytes waits for its LF");
}

int main(void) {
    test_valid();
    test_framing();
    test_bytes();
    test_syntax();
    test_scan_bytewise();
    return done_testing();
}
