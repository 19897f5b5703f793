/* edge_head.h — strict validation of a raw HTTP/1.x request head (RFC 9112), done on
 * the bytes as they arrived, before libmicrohttpd parses them.
 *
 * Why on raw bytes: libmicrohttpd 0.9.75 keeps headers as C strings, so a NUL inside a
 * header value or the request line silently truncates it ("Bearer <token>\0junk"
 * authenticates, "GET /healthz\0abc" is served as /healthz), and it is lenient about
 * framing (two Content-Length headers, no Host, unknown transfer codings).  server/edge.c
 * peeks at each connection's head and asks this file whether to pass it on.
 *
 * Rules (each failure names what is wrong):
 *   - lines end in CRLF; a bare CR or LF, or an empty line before the request line, is 400;
 *   - request line: token SP target SP HTTP/d.d, the target in VCHAR (0x21-0x7e) with no
 *     percent-escape of a control byte (%00-%1F, %7F: decoded, a NUL would truncate the
 *     path), nor in the path of an unreserved character (%30 for "0": one spelling per
 *     path); HTTP/1.0 and HTTP/1.1 only (another version is 505);
 *   - header line: token ":" value, no space before the colon, no line folding; the value
 *     is HTAB, SP, VCHAR and obs-text only (no NUL, no other control byte);
 *   - Content-Length: digits, at most one header (a duplicate, even equal, is 400);
 *   - Transfer-Encoding: "chunked" is the only coding (another is 501, RFC 9112 §6.1),
 *     it comes once and last; with Content-Length, or in HTTP/1.0, it is 400;
 *   - HTTP/1.1 needs exactly one Host header (HTTP/1.0 may omit it);
 *   - at most EDGE_MAX_HEADERS header lines (431).
 *
 * Pure functions, no allocation: tests/test_edge_head.c drives them with byte strings. */
#ifndef SD_SERVER_EDGE_HEAD_H
#define SD_SERVER_EDGE_HEAD_H

#include <stddef.h>

#define EDGE_MAX_HEADERS 100

struct edge_verdict {
    unsigned status;           /* 0: valid; else the HTTP status to answer (400, 431, 501, 505) */
    const char *code;          /* the JSON error code ("bad_request", ...) */
    char message[192];
};

enum edge_scan { EDGE_SCAN_MORE, EDGE_SCAN_DONE, EDGE_SCAN_BAD };

/* Look for the end of the head in buf[0, len).  *pos is where the previous call on the
 * same (growing) buffer stopped; start with 0.  DONE: *head_len is the head's length,
 * its final empty line included.  BAD: a bare CR or LF, or an empty first line; *v says
 * why.  MORE: call again once more bytes have arrived. */
enum edge_scan edge_head_scan(const char *buf, size_t len, size_t *pos, size_t *head_len,
                              struct edge_verdict *v);

/* Validate a complete head (buf[0, len) ends with CRLF CRLF, as edge_head_scan found
 * it).  v->status is 0 when it may go on to libmicrohttpd. */
void edge_head_check(const char *buf, size_t len, struct edge_verdict *v);

#endif
