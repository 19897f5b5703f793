/* api_body.c — a JSON route's request body as the handlers get it (api.h, api_parse_body):
 * one JSON object, duplicate keys refused, and a number too big for jansson reported as
 * the field that holds it rather than as malformed JSON.  http.c calls it once the body has
 * arrived; tests/fuzz/fuzz_api_body.c calls it on any bytes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api.h"

/* A body that failed to parse only because a number is too big for jansson (an integer
 * past 2^63 - 1): the name of the member that holds it, so the 400 names the field. */
static int json_number_field(const char *body, size_t len, const json_error_t *e, char *field,
                             size_t n) {
    if (strncmp(e->text, "too big integer", 15) || e->position <= 0 || (size_t)e->position > len)
        return 0;
    /* back from the number over "key" : to the member's name */
    long p = e->position - 1;
    while (p >= 0 && ((body[p] >= '0' && body[p] <= '9') || body[p] == '-')) p--;
    while (p >= 0 && (body[p] == ' ' || body[p] == '\t' || body[p] == '\n' || body[p] == '\r')) p--;
    if (p < 0 || body[p] != ':') return 0;
    for (p--; p >= 0 && (body[p] == ' ' || body[p] == '\t' || body[p] == '\n' || body[p] == '\r'); p--) {}
    if (p < 1 || body[p] != '"') return 0;
    long end = p--;
    while (p >= 0 && body[p] != '"') p--;
    if (p < 0 || end - p - 1 <= 0 || (size_t)(end - p - 1) >= n) return 0;
    memcpy(field, body + p + 1, (size_t)(end - p - 1));
    field[end - p - 1] = 0;
    for (const char *c = field; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return 0;
    return 1;
}

/* 400 invalid_json with the message. */
static int invalid_json(struct api_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int invalid_json(struct api_error *e, const char *fmt, ...) {
    e->http = 400;
    e->code = "invalid_json";
    e->field[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int api_parse_body(const char *body, size_t len, json_t **out, struct api_error *e) {
    *out = NULL;
    if (!len) return invalid_json(e, "the request needs a JSON object body");
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    char field[64];
    if (!j && json_number_field(body, len, &jerr, field, sizeof field))
        return api_fail(e, field, "%s: the number is out of range (integers fit in 64 bits: at "
                        "most 9223372036854775807)", field);
    if (!j)
        return invalid_json(e, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                            jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return invalid_json(e, "the body must be a JSON object");
    }
    *out = j;
    return 0;
}
