/* edge_head.c — the strict request-head checks (rules in edge_head.h).
 *
 * The head is walked line by line once; header names are compared case-insensitively
 * and only the few that decide framing (Content-Length, Transfer-Encoding, Host) are
 * interpreted.  Everything else is checked for its bytes only: what a header means is
 * the business of the layers above. */
#include "edge_head.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct head_state {
    int minor;                 /* HTTP/1.minor */
    int nheaders, ncl, nhost;
    const char *cl;            /* the first Content-Length value */
    size_t cl_len;
    int te_seen, te_chunked, te_after_chunked;
    char te_unknown[40];       /* the first coding other than chunked */
};

static int fail(struct edge_verdict *v, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct edge_verdict *v, unsigned status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
    v->status = status;
    v->code = code;
    return -1;
}

static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 9112 field-value bytes: HTAB, SP, VCHAR, obs-text. */
static int is_field_byte(unsigned char c) {
    return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
}

static const char *byte_name(unsigned char c, char *buf, size_t n) {
    if (c == 0) return "a NUL byte";
    snprintf(buf, n, "control byte 0x%02x", c);
    return buf;
}

enum edge_scan edge_head_scan(const char *buf, size_t len, size_t *pos, size_t *head_len,
                              struct edge_verdict *v) {
    size_t i = *pos;
    for (; i < len; i++) {
        if (buf[i] == '\n') {
            fail(v, 400, "bad_request", "a line ends in a bare LF (HTTP lines end in CRLF)");
            return EDGE_SCAN_BAD;
        }
        if (buf[i] != '\r') continue;
        if (i + 1 >= len) break;                       /* wait for the LF */
        if (buf[i + 1] != '\n') {
            fail(v, 400, "bad_request", "a bare CR in the request head");
            return EDGE_SCAN_BAD;
        }
        if (i == 0) {
            fail(v, 400, "bad_request", "an empty line before the request line");
            return EDGE_SCAN_BAD;
        }
        if (i >= 2 && buf[i - 2] == '\r' && buf[i - 1] == '\n') {
            *head_len = i + 2;
            *pos = i;
            return EDGE_SCAN_DONE;
        }
        i++;                                           /* past the LF */
    }
    *pos = i;
    return EDGE_SCAN_MORE;
}

static int hex_value(unsigned char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* RFC 3986 unreserved characters: a percent-escape of one has a plain spelling. */
static int is_unreserved(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("-._~", c) != NULL);
}

/* The percent-escapes of the target.  None may decode to a control byte: libmicrohttpd
 * decodes the path and the query into C strings, so "%00" would cut them short
 * ("/healthz%00zz" served as /healthz), and no other control byte names anything this API
 * serves.  In the path none may stand for an unreserved character (RFC 3986 §2.3: such
 * a path has a plain spelling), so every id and index has exactly one spelling
 * (".../samples/%30" is not ".../samples/0"). */
static int check_target_escapes(const unsigned char *t, size_t n, struct edge_verdict *v) {
    char b[32];
    int in_path = 1;
    for (size_t k = 0; k < n; k++) {
        if (t[k] == '?') in_path = 0;
        int hi = t[k] == '%' && k + 2 < n ? hex_value(t[k + 1]) : -1;
        int lo = hi >= 0 ? hex_value(t[k + 2]) : -1;
        if (lo < 0) continue;
        unsigned char c = (unsigned char)(hi << 4 | lo);
        if (c < 0x20 || c == 0x7f)
            return fail(v, 400, "bad_request", "%s, percent-encoded (%%%c%c), in the request target",
                        byte_name(c, b, sizeof b), t[k + 1], t[k + 2]);
        if (in_path && is_unreserved(c))
            return fail(v, 400, "bad_request", "'%c' percent-encoded (%%%c%c) in the path: write it "
                        "as is", c, t[k + 1], t[k + 2]);
    }
    return 0;
}

static int check_request_line(const unsigned char *s, size_t n, struct head_state *st,
                              struct edge_verdict *v) {
    char b[32];
    size_t i = 0;
    while (i < n && is_tchar(s[i])) i++;
    if (i == 0 || i >= n || s[i] != ' ')
        return fail(v, 400, "bad_request", "malformed request line: expected METHOD SP TARGET "
                    "SP HTTP/1.x%s", i < n && s[i] < 0x20 ? " (it holds a control byte)" : "");
    size_t t0 = ++i;
    while (i < n && s[i] >= 0x21 && s[i] <= 0x7e) i++;
    if (i == t0) return fail(v, 400, "bad_request", "malformed request line: empty target");
    if (i >= n || s[i] != ' ') {
        if (i < n && (s[i] < 0x20 || s[i] == 0x7f))
            return fail(v, 400, "bad_request", "%s in the request target",
                        byte_name(s[i], b, sizeof b));
        if (i < n && s[i] >= 0x80)
            return fail(v, 400, "bad_request", "a non-ASCII byte in the request target "
                        "(percent-encode it)");
        return fail(v, 400, "bad_request", "malformed request line: expected one SP after the "
                    "target");
    }
    if (check_target_escapes(s + t0, i - t0, v)) return -1;
    const unsigned char *ver = s + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(ver, "HTTP/", 5) || ver[5] < '0' || ver[5] > '9' || ver[6] != '.' ||
        ver[7] < '0' || ver[7] > '9') {
        for (size_t k = 0; k < vn; k++)
            if (ver[k] < 0x20 || ver[k] == 0x7f)
                return fail(v, 400, "bad_request", "%s in the request line",
                            byte_name(ver[k], b, sizeof b));
        return fail(v, 400, "bad_request", "malformed HTTP version in the request line");
    }
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return fail(v, 505, "http_version_not_supported", "HTTP/%c.%c is not supported "
                    "(HTTP/1.0 and HTTP/1.1 are)", ver[5], ver[7]);
    st->minor = ver[7] - '0';
    return 0;
}

/* One Transfer-Encoding value: a comma-separated list of codings. */
static void note_codings(const unsigned char *s, size_t n, struct head_state *st) {
    st->te_seen = 1;
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ',')) i++;
        size_t a = i;
        while (i < n && s[i] != ',') i++;
        size_t b = i;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) b--;
        if (b == a) continue;
        if (st->te_chunked) st->te_after_chunked = 1;
        if (b - a == 7 && !strncasecmp((const char *)s + a, "chunked", 7)) st->te_chunked++;
        else if (!st->te_unknown[0])
            snprintf(st->te_unknown, sizeof st->te_unknown, "%.*s", (int)(b - a), s + a);
    }
}

static int check_header_line(const unsigned char *s, size_t n, struct head_state *st,
                             struct edge_verdict *v) {
    char b[32];
    if (++st->nheaders > EDGE_MAX_HEADERS)
        return fail(v, 431, "headers_too_large", "more than %d header lines", EDGE_MAX_HEADERS);
    if (s[0] == ' ' || s[0] == '\t')
        return fail(v, 400, "bad_request", "obsolete line folding (a header line starts with "
                    "whitespace)");
    size_t i = 0;
    while (i < n && is_tchar(s[i])) i++;
    if (i == 0 || i >= n || s[i] != ':') {
        if (i < n && (s[i] == ' ' || s[i] == '\t'))
            return fail(v, 400, "bad_request", "whitespace between the header name '%.*s' and "
                        "its colon", (int)(i < 40 ? i : 40), s);   /* s is not NUL-terminated */
        if (i < n && (s[i] < 0x20 || s[i] == 0x7f))
            return fail(v, 400, "bad_request", "%s in a header name", byte_name(s[i], b, sizeof b));
        return fail(v, 400, "bad_request", "malformed header line (expected NAME: VALUE)");
    }
    size_t name_len = i++;
    for (size_t k = i; k < n; k++)
        if (!is_field_byte(s[k]))
            return fail(v, 400, "bad_request", "%s in the value of header %.*s",
                        byte_name(s[k], b, sizeof b), (int)(name_len < 40 ? name_len : 40), s);
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    size_t e = n;
    while (e > i && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
    const char *name = (const char *)s;
    if (name_len == 14 && !strncasecmp(name, "Content-Length", 14)) {
        if (e == i || e - i > 18)
            return fail(v, 400, "bad_request", "Content-Length must be 1 to 18 digits");
        for (size_t k = i; k < e; k++)
            if (s[k] < '0' || s[k] > '9')
                return fail(v, 400, "bad_request", "Content-Length must be digits only");
        if (st->ncl++) {
            int same = st->cl_len == e - i && !memcmp(st->cl, s + i, e - i);
            return fail(v, 400, "bad_request", "%s Content-Length headers (send one)",
                        same ? "duplicate" : "conflicting");
        }
        st->cl = (const char *)s + i;
        st->cl_len = e - i;
    } else if (name_len == 17 && !strncasecmp(name, "Transfer-Encoding", 17)) {
        note_codings(s + i, e - i, st);
    } else if (name_len == 4 && !strncasecmp(name, "Host", 4)) {
        if (st->nhost++) return fail(v, 400, "bad_request", "more than one Host header");
    }
    return 0;
}

static int check_framing(const struct head_state *st, struct edge_verdict *v) {
    if (st->minor == 1 && st->nhost == 0)
        return fail(v, 400, "bad_request", "an HTTP/1.1 request needs a Host header");
    if (!st->te_seen) return 0;
    if (st->ncl)
        return fail(v, 400, "bad_request", "Transfer-Encoding and Content-Length together");
    if (st->minor == 0)
        return fail(v, 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
    if (st->te_unknown[0])
        return fail(v, 501, "not_implemented", "transfer coding '%s' is not supported (only "
                    "chunked is)", st->te_unknown);
    if (st->te_chunked != 1 || st->te_after_chunked)
        return fail(v, 400, "bad_request", "Transfer-Encoding: chunked must come once, last");
    return 0;
}

void edge_head_check(const char *buf, size_t len, struct edge_verdict *v) {
    struct head_state st;
    memset(&st, 0, sizeof st);
    memset(v, 0, sizeof *v);
    const unsigned char *s = (const unsigned char *)buf;
    size_t at = 0;
    for (int line = 0;; line++) {
        size_t e = at;
        while (e + 1 < len && !(s[e] == '\r' && s[e + 1] == '\n')) e++;
        if (e + 1 >= len) {
            fail(v, 400, "bad_request", "the request head does not end in an empty line");
            return;
        }
        if (e == at) {
            if (line == 0) fail(v, 400, "bad_request", "an empty line before the request line");
            else check_framing(&st, v);
            return;
        }
        int rc = line == 0 ? check_request_line(s + at, e - at, &st, v)
                           : check_header_line(s + at, e - at, &st, v);
        if (rc) return;
        at = e + 2;
    }
}
