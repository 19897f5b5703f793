/* api_openai.c — POST /v1/images/generations: the OpenAI Images API as its clients use it
 * (the official `openai` libraries and the front ends that speak it), mapped onto the same
 * generation job as POST /v1/generate.
 *
 * Request: prompt, n, size ("WxH" or "auto" = the model's native size), response_format
 * ("b64_json", the default, or "url"), output_format (png | jpeg | webp) with
 * output_compression (0..100, the JPEG/WebP encoder quality, default 100), quality and
 * style (checked against OpenAI's values, recorded in the job, never used: the generator
 * has one quality and no styles), model and user (accepted and ignored).  Unknown fields
 * are a 400, as everywhere in the API.
 *
 * Answer: {"created", "data": [{"b64_json" | "url", "seed"}], "output_format", "size",
 * "usage"}.  A "url" is absolute: GET /v1/jobs/{id}/images/{i} under the daemon's base URL
 * (base_url below), and the images stay for result_ttl_s instead of being released once
 * the answer is sent.  Errors on this route are in OpenAI's shape (api_openai_error,
 * named in the route table), so the clients raise their usual exceptions with our message.
 * docs/daemon.md has the contract. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "form.h"

enum openai_answer { OPENAI_B64, OPENAI_URL };   /* r->handler_data */

json_t *api_openai_error(unsigned status, const char *code, const char *field, const char *msg) {
    const char *type = status == 401 ? "authentication_error"
                     : status == 403 ? "permission_error"
                     : status == 429 ? "rate_limit_error"
                     : status >= 500 ? "server_error" : "invalid_request_error";
    return json_pack("{s:{s:s, s:s, s:s?, s:s}}", "error", "message", msg, "type", type,
                     "param", field, "code", code);
}

/* v must be a string equal to one of the NULL-terminated choices; *out (may be NULL) gets it. */
static int get_choice(json_t *v, const char *field, const char *const *choices, const char **out,
                      struct api_error *e) {
    char list[128] = "";
    for (const char *const *c = choices; *c; c++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", c == choices ? "" : ", ", *c);
    const char *s = json_string_value(v);
    if (!s) return api_fail(e, field, "%s: expected one of %s, got %s", field, list, sd_json_kind(v));
    for (const char *const *c = choices; *c; c++)
        if (!strcmp(s, *c)) {
            if (out) *out = *c;
            return 0;
        }
    return api_fail(e, field, "%s: '%.100s' is not one of %s", field, s, list);
}

/* size: "WIDTHxHEIGHT" (digits only) or "auto" (the model's native size). */
static int parse_size(struct sdxld *d, json_t *v, struct gen_request *g, struct api_error *e) {
    const char *s = json_string_value(v);
    if (!s) return api_fail(e, "size", "size: expected a string \"WIDTHxHEIGHT\" or \"auto\", got %s",
                            sd_json_kind(v));
    int w, h, used = 0;
    if (!strcmp(s, "auto")) {
        w = d->native_width;
        h = d->native_height;
    } else {
        size_t a = strspn(s, "0123456789");
        if (a == 0 || s[a] != 'x' || strspn(s + a + 1, "0123456789") == 0 ||
            sscanf(s, "%5dx%5d%n", &w, &h, &used) != 2 || s[used])
            return api_fail(e, "size", "size: '%.60s' is not \"WIDTHxHEIGHT\" or \"auto\"", s);
    }
    if (api_check_size(d, "size", w, d->cfg.max_width, e) ||
        api_check_size(d, "size", h, d->cfg.max_height, e))
        return -1;
    g->params.width = w;
    g->params.height = h;
    return 0;
}

/* output_format and output_compression (the encoder quality; only for jpeg and webp). */
static int parse_output(json_t *body, struct gen_request *g, struct api_error *e) {
    static const char *const formats[] = { "png", "jpeg", "webp", NULL };
    const char *f = "png";
    json_t *v;
    if ((v = json_object_get(body, "output_format")) && get_choice(v, "output_format", formats, &f, e))
        return -1;
    g->format = (enum gen_format)gen_format_parse(f);
    g->quality = 100;
    if ((v = json_object_get(body, "output_compression"))) {
        long long x;
        if (api_get_int(v, "output_compression", 0, 100, &x, e)) return -1;
        if (g->format == GEN_FORMAT_PNG)
            return api_fail(e, "output_compression", "output_compression: only applies to "
                            "output_format \"jpeg\" or \"webp\" (PNG is lossless)");
        g->quality = (int)x;
    }
    return 0;
}

/* quality and style: OpenAI's values, recorded in the job, not used; model, user: ignored. */
static int parse_hints(json_t *body, struct gen_request *g, struct api_error *e) {
    static const char *const qualities[] = { "auto", "standard", "hd", "low", "medium", "high", NULL };
    static const char *const styles[] = { "vivid", "natural", NULL };
    const char *q = NULL, *st = NULL;
    json_t *v;
    if ((v = json_object_get(body, "quality")) && get_choice(v, "quality", qualities, &q, e)) return -1;
    if ((v = json_object_get(body, "style")) && get_choice(v, "style", styles, &st, e)) return -1;
    snprintf(g->quality_hint, sizeof g->quality_hint, "%s", q ? q : "");
    snprintf(g->style, sizeof g->style, "%s", st ? st : "");
    if ((v = json_object_get(body, "user")) && !json_is_string(v))
        return api_fail(e, "user", "user: expected a string, got %s", sd_json_kind(v));
    if ((v = json_object_get(body, "model")) && !json_is_string(v))
        return api_fail(e, "model", "model: expected a string, got %s", sd_json_kind(v));
    return 0;
}

/* The fields both routes take; known: the route's field names. */
static int parse_openai(struct sdxld *d, json_t *body, const char *const *known, struct gen_request *g,
                        enum openai_answer *answer, struct api_error *e) {
    static const char *const answers[] = { "b64_json", "url", NULL };
    if (api_parse_base(d, body, known, g, e)) return -1;
    json_t *v;
    if ((v = json_object_get(body, "size")) && parse_size(d, v, g, e)) return -1;
    const char *a = "b64_json";
    if ((v = json_object_get(body, "response_format")) && get_choice(v, "response_format", answers, &a, e))
        return -1;
    *answer = !strcmp(a, "url") ? OPENAI_URL : OPENAI_B64;
    if (parse_output(body, g, e) || parse_hints(body, g, e)) return -1;
    if ((v = json_object_get(body, "lora")) && api_parse_lora(d, v, &g->params, e)) return -1;
    api_parse_seed(NULL, g->n, 0, &g->seed, e);   /* random: cannot fail */
    g->params.nsteps = d->cfg.default_steps;
    engine_default_timesteps(g->params.nsteps, g->params.timesteps);
    return 0;
}

/* The fields of POST /v1/images/generations. */
static const char *const generations_known[] = { "prompt", "n", "size", "response_format", "output_format",
                                                 "output_compression", "quality", "style", "user", "model",
                                                 "lora", NULL };

int api_parse_openai_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e) {
    enum openai_answer answer;
    return parse_openai(d, body, generations_known, g, &answer, e);
}

/* ---- absolute URLs ---- */

/* A Host-style value (host name, IPv4, [IPv6], optional :port) fit to go into a URL. */
static int host_ok(const char *h, size_t n) {
    if (n == 0 || n > 255) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]", h[i]) || !h[i])
            return 0;
    return 1;
}

/* The first element of a comma-separated forwarded header, spaces trimmed: *n bytes at the
 * returned pointer, or NULL if the header is absent. */
static const char *first_value(const char *v, size_t *n) {
    if (!v) return NULL;
    while (*v == ' ' || *v == '\t') v++;
    size_t k = strcspn(v, ",");
    while (k && (v[k - 1] == ' ' || v[k - 1] == '\t')) k--;
    *n = k;
    return v;
}

/* The base that image URLs start with, no trailing slash: public_url when configured; else
 * scheme and host from X-Forwarded-Proto and X-Forwarded-Host when trust_proxy is on (each
 * only when present and well-formed); else http:// and the Host header; else the address
 * the daemon listens on. */
static void base_url(struct req *r, char *out, size_t n) {
    const struct sdxld_config *c = &r->d->cfg;
    if (c->public_url[0]) {
        size_t k = strlen(c->public_url);
        while (k && c->public_url[k - 1] == '/') k--;
        snprintf(out, n, "%.*s", (int)k, c->public_url);
        return;
    }
    const char *scheme = "http", *host = req_header(r, MHD_HTTP_HEADER_HOST);
    size_t hn = host ? strlen(host) : 0, pn = 0, fn = 0;
    if (c->trust_proxy) {
        const char *p = first_value(req_header(r, "X-Forwarded-Proto"), &pn);
        if (p && pn == 5 && !strncasecmp(p, "https", 5)) scheme = "https";
        const char *f = first_value(req_header(r, "X-Forwarded-Host"), &fn);
        if (f && host_ok(f, fn)) {
            host = f;
            hn = fn;
        }
    }
    if (!host || !host_ok(host, hn)) {
        host = http_address(r->d->http);
        hn = strlen(host);
    }
    snprintf(out, n, "%s://%.*s", scheme, (int)hn, host);
}

/* [{"url", "seed"}, ...]; NULL when out of memory. */
static json_t *images_url(struct req *r, const struct job_result *res) {
    char base[CFG_STR_MAX + 16], url[CFG_STR_MAX + 96];
    base_url(r, base, sizeof base);
    json_t *imgs = json_array();
    for (int i = 0; imgs && i < res->n; i++) {
        snprintf(url, sizeof url, "%s/v1/jobs/%s/images/%d", base, r->job->id, i);
        json_t *o = json_pack("{s:s, s:I}", "url", url, "seed", (json_int_t)res->img[i].seed);
        if (!o || json_array_append_new(imgs, o)) {
            json_decref(imgs);
            return NULL;
        }
    }
    return imgs;
}

/* ---- the answer ---- */

static enum MHD_Result on_openai_done(struct req *r) {
    int url = r->handler_data == OPENAI_URL;
    enum MHD_Result ret;
    struct job_result *res = api_take_result(r, url, &ret);
    if (!res) return ret;
    json_t *data = url ? images_url(r, res) : api_images_b64(res);
    job_result_unref(res);
    if (!data) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory encoding the response");
    const struct gen_request *g = &r->job->req;   /* immutable once submitted */
    char size[32];
    snprintf(size, sizeof size, "%dx%d", g->params.width, g->params.height);
    /* sdxld meters no tokens: usage is present (clients read it) and all zero */
    return reply_json(r, 200, json_pack("{s:I, s:o, s:s, s:s, s:{s:i, s:i, s:i, s:{s:i, s:i}}}",
        "created", (json_int_t)time(NULL), "data", data, "output_format", gen_format_name(g->format),
        "size", size, "usage", "total_tokens", 0, "input_tokens", 0, "output_tokens", 0,
        "input_tokens_details", "text_tokens", 0, "image_tokens", 0));
}

enum MHD_Result api_images_generations(struct req *r) {
    struct gen_request g = { 0 };
    struct api_error e = { 0 };
    enum openai_answer answer = OPENAI_B64;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    if (parse_openai(r->d, r->json, generations_known, &g, &answer, &e)) {
        api_request_free(&g);
        return reply_error(r, e.http, e.code, e.field[0] ? e.field : NULL, "%s", e.msg);
    }
    r->handler_data = answer;
    return api_submit(r, &g, 0, on_openai_done);
}

/* ---- POST /v1/images/edits ---- */

/* The form's text fields as the JSON body the generation route reads: n and
 * output_compression as integers, strength as a number, when they parse as such (else
 * the text, which the checks refuse naming the field).  The image files are skipped. */
static json_t *form_body(const struct form *fm, struct api_error *e) {
    json_t *o = json_object();
    for (int i = 0; o && i < fm->n; i++) {
        const struct form_field *f = &fm->f[i];
        const char *s = (const char *)f->data, *name = f->name;
        if (!strcmp(name, "image") || !strcmp(name, "image[]") || !strcmp(name, "mask")) continue;
        char *end;
        json_t *v = NULL;
        if (f->is_file) {
            api_fail(e, name, "%s: expected a text field, got a file", name);
        } else {
            if (!strcmp(name, "n") || !strcmp(name, "output_compression")) {
                errno = 0;
                long long x = strtoll(s, &end, 10);
                if (*s && !*end && !errno) v = json_integer(x);
            } else if (!strcmp(name, "strength")) {
                double x = strtod(s, &end);
                if (*s && !*end) v = json_real(x);   /* NULL for nan and inf */
            }
            if (!v && !(v = json_stringn(s, f->len))) api_fail(e, name, "%s: not UTF-8 text", name);
        }
        if (!v || json_object_set_new(o, name, v)) {
            if (!v && !e->msg[0]) api_fail(e, name, "%s: out of memory", name);
            json_decref(o);
            return NULL;
        }
    }
    if (!o) api_fail(e, NULL, "out of memory reading the form");
    return o;
}

static int has_transparent(const struct api_image *im) {
    for (size_t q = 0; q < (size_t)im->w * im->h; q++)
        if (im->rgba[q * 4 + 3] == 0) return 1;
    return 0;
}

/* The image and mask files: the size is the image's unless `size` names one; without a
 * mask file, an image with fully transparent pixels is its own mask (OpenAI's rule). */
static int parse_edit_images(struct sdxld *d, const struct form *fm, json_t *body, struct gen_request *g,
                             struct api_error *e) {
    const struct form_field *fi = form_get(fm, "image"), *fk = form_get(fm, "mask");
    if (!fi) fi = form_get(fm, "image[]");
    if (!fi) return api_fail(e, "image", "image: required (a PNG, JPEG or WebP file)");
    json_t *sz = json_object_get(body, "size");
    int sized = sz && !(json_is_string(sz) && !strcmp(json_string_value(sz), "auto"));
    size_t maxpix = (size_t)d->cfg.max_width * d->cfg.max_height;
    struct api_image img = { 0 }, mask = { 0 };
    int rc = api_image_decode("image", fi->data, fi->len, maxpix, &img, e) ||
             (fk && api_image_decode("mask", fk->data, fk->len, maxpix, &mask, e)) ||
             (!sized && api_size_from_image(d, "image", &img, g, e));
    const struct api_image *m = fk ? &mask : !rc && has_transparent(&img) ? &img : NULL;
    if (!rc) rc = api_set_init(g, &img, "image", m, fk ? "mask" : "image", API_MASK_ALPHA, e);
    if (!rc) rc = api_strength_or_default("strength", json_object_get(body, "strength"), g, e);
    api_image_free(&img);
    api_image_free(&mask);
    return rc ? -1 : 0;
}

enum MHD_Result api_images_edits(struct req *r) {
    static const char *const known[] = { "prompt", "n", "size", "response_format", "output_format",
                                         "output_compression", "quality", "style", "user", "model",
                                         "strength", NULL };
    struct gen_request g = { 0 };
    struct api_error e = { 0 };
    enum openai_answer answer = OPENAI_B64;
    struct form fm;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    if (form_read(r, &fm)) return reply_error(r, 400, "invalid_form", NULL, "%s", fm.error);
    json_t *body = form_body(&fm, &e);
    int rc = !body || parse_openai(r->d, body, known, &g, &answer, &e) ||
             parse_edit_images(r->d, &fm, body, &g, &e);
    json_decref(body);
    form_free(&fm);
    if (rc) {
        api_request_free(&g);
        return reply_error(r, e.http, e.code, e.field[0] ? e.field : NULL, "%s", e.msg);
    }
    r->handler_data = answer;
    return api_submit(r, &g, 0, on_openai_done);
}
