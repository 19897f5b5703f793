/* api_image.c — the images an img2img request brings (POST /v1/generate's init_image and
 * mask, POST /sdapi/v1/img2img's init_images and mask, POST /v1/images/edits' image and
 * mask files): base64 text (or a data: URL) decoded, the image format found by its
 * signature (PNG, JPEG, WebP), the pixels decoded and checked against the request's size,
 * the mask reduced to the engine's form (one byte per pixel, >= 128 = repaint) from the
 * route's convention, and the strength checked against the timesteps.
 *
 * Every function takes plain values and fills a struct api_error naming the request's
 * field, so each check is one code path for every route (and for a fuzzer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

void api_image_free(struct api_image *im) {
    sd_free(im->rgba);
    im->rgba = NULL;
}

void api_request_free(struct gen_request *g) {
    free(g->prompt);
    free(g->ignored);
    free(g->init);
    free(g->mask);
    free(g->model);
    g->prompt = g->ignored = NULL;
    g->init = g->mask = NULL;
    g->model = NULL;
}

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

int api_b64_decode(const char *field, const char *s, size_t n, uint8_t **out, size_t *len, struct api_error *e) {
    *out = NULL;
    *len = 0;
    if (n > 5 && !strncmp(s, "data:", 5)) {   /* data:[<type>][;base64],<data> */
        const char *comma = memchr(s, ',', n);
        if (!comma || comma - s < 12 || strncmp(comma - 7, ";base64", 7))
            return api_fail(e, field, "%s: a data: URL must be base64 (data:image/png;base64,...)", field);
        n -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    uint8_t *o = malloc(n / 4 * 3 + 3);
    if (!o) return api_fail(e, field, "%s: out of memory", field);
    size_t k = 0, pad = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') { pad++; continue; }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(o);
            if (pad) return api_fail(e, field, "%s: not base64 (data after the '=' padding)", field);
            return api_fail(e, field, "%s: not base64 (character %zu is %s%c%s)", field, i, c >= 32 && c < 127 ? "'" : "byte ",
                            c >= 32 && c < 127 ? (char)c : '?', c >= 32 && c < 127 ? "'" : "");
        }
        acc = acc << 6 | (uint32_t)v;
        if ((bits += 6) >= 8) o[k++] = (uint8_t)(acc >> (bits -= 8));
    }
    if (k == 0 || pad > 2 || bits >= 6) {
        free(o);
        return api_fail(e, field, "%s: not base64 (%s)", field, k ? "bad length or padding" : "empty");
    }
    *out = o;
    *len = k;
    return 0;
}

int api_image_decode(const char *field, const uint8_t *b, size_t n, size_t max_pixels, struct api_image *im,
                     struct api_error *e) {
    static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    memset(im, 0, sizeof *im);
    sd_status st;
    if (n >= 8 && !memcmp(b, png_sig, 8)) st = png_decode_rgba(b, n, max_pixels, &im->rgba, &im->w, &im->h);
    else if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        st = jpeg_decode_rgba(b, n, max_pixels, &im->rgba, &im->w, &im->h);
    else if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        st = webp_decode_rgba(b, n, max_pixels, &im->rgba, &im->w, &im->h);
    else
        return api_fail(e, field, "%s: not a PNG, JPEG or WebP image", field);
    if (st == SD_ERR_NOMEM) return api_fail(e, field, "%s: out of memory decoding the image", field);
    if (st != SD_OK) return api_fail(e, field, "%s: %s", field, sd_last_error());
    return 0;
}

int api_image_from_json(const char *field, json_t *v, size_t max_pixels, struct api_image *im, struct api_error *e) {
    memset(im, 0, sizeof *im);
    if (!json_is_string(v))
        return api_fail(e, field, "%s: expected a base64 PNG, JPEG or WebP image (or a data: URL), got %s", field,
                        sd_json_kind(v));
    uint8_t *b;
    size_t n;
    if (api_b64_decode(field, json_string_value(v), json_string_length(v), &b, &n, e)) return -1;
    int rc = api_image_decode(field, b, n, max_pixels, im, e);
    free(b);
    return rc;
}

int api_parse_strength(const char *field, json_t *v, struct gen_request *g, struct api_error *e) {
    if (!json_is_number(v)) return api_fail(e, field, "%s: expected a number, got %s", field, sd_json_kind(v));
    return api_set_strength(field, json_number_value(v), g, e);
}

int api_set_strength(const char *field, double s, struct gen_request *g, struct api_error *e) {
    const struct gen_params *p = &g->params;
    double last = p->nsteps > 0 ? p->timesteps[p->nsteps - 1] / 1000.0 : 0;
    if (!(s > 0 && s <= 1))
        return api_fail(e, field, "%s: %g is outside (0, 1] (1 = from noise, lower keeps more of the image)", field, s);
    g->params.strength = (float)s;
    if (engine_img2img_start(&g->params) < 0)
        return api_fail(e, field, "%s: %g leaves no step of the %d timesteps: the run starts at the first "
                        "timestep below strength x 1000, so the strength must be above %g", field, s, p->nsteps, last);
    return 0;
}

int api_strength_or_default(const char *field, json_t *v, struct gen_request *g, struct api_error *e) {
    if (v && !json_is_null(v)) return api_parse_strength(field, v, g, e);
    return api_set_strength(field, g->mask ? 1.0 : API_DEFAULT_STRENGTH, g, e);
}

int api_size_from_image(struct sdxld *d, const char *field, const struct api_image *im, struct gen_request *g,
                        struct api_error *e) {
    if (api_check_size(d, field, im->w, d->cfg.max_width, e) || api_check_size(d, field, im->h, d->cfg.max_height, e))
        return -1;
    g->params.width = im->w;
    g->params.height = im->h;
    return 0;
}

/* The image's size must be the request's (sdxld does not resize). */
static int check_dims(const char *field, const struct api_image *im, const struct gen_request *g, struct api_error *e) {
    if (im->w == g->params.width && im->h == g->params.height) return 0;
    return api_fail(e, field, "%s: the image is %dx%d but the request's size is %dx%d; send an image of that size "
                    "(sdxld does not resize)", field, im->w, im->h, g->params.width, g->params.height);
}

int api_set_init(struct gen_request *g, const struct api_image *img, const char *field, const struct api_image *mask,
                 const char *mask_field, enum api_mask_kind kind, struct api_error *e) {
    if (check_dims(field, img, g, e) || (mask && check_dims(mask_field, mask, g, e))) return -1;
    size_t npix = (size_t)img->w * img->h;
    if (!(g->init = malloc(npix * 3)) || (mask && !(g->mask = malloc(npix))))
        return api_fail(e, field, "%s: out of memory", field);
    for (size_t q = 0; q < npix; q++) memcpy(g->init + q * 3, img->rgba + q * 4, 3);
    if (!mask) return 0;
    int repaint = 0, alpha = 0;   /* a white-mask with transparency: its alpha is the mask (A1111) */
    for (size_t q = 0; q < npix && kind != API_MASK_ALPHA && !alpha; q++) alpha = mask->rgba[q * 4 + 3] != 255;
    for (size_t q = 0; q < npix; q++) {
        const uint8_t *p = mask->rgba + q * 4;
        int r = kind == API_MASK_ALPHA ? p[3] == 0 : alpha ? p[3] > 128 : (p[0] + p[1] + p[2]) / 3 >= 128;
        if (kind == API_MASK_BLACK) r = !r;
        g->mask[q] = r ? 255 : 0;
        repaint += r;
    }
    if (!repaint)
        return api_fail(e, mask_field, "%s: the mask marks no pixel to repaint (%s)", mask_field,
                        kind == API_MASK_ALPHA ? "the pixels to edit are the fully transparent ones, alpha 0"
                        : kind == API_MASK_WHITE ? "white marks what to repaint" : "black marks what to repaint");
    return 0;
}

int api_parse_img2img(struct sdxld *d, json_t *vi, json_t *vm, json_t *vs, const struct api_img2img_fields *f,
                      int size_given, struct gen_request *g, struct api_error *e) {
    if (json_is_null(vm)) vm = NULL;
    if (json_is_null(vi)) vi = NULL;
    if (!vi) {
        if (vm) return api_fail(e, f->mask, "%s: needs %s", f->mask, f->init);
        if (vs && !json_is_null(vs)) return api_fail(e, f->strength, "%s: needs %s", f->strength, f->init);
        return 0;
    }
    size_t maxpix = (size_t)d->cfg.max_width * d->cfg.max_height;
    struct api_image img = { 0 }, mask = { 0 };
    int rc = api_image_from_json(f->init, vi, maxpix, &img, e) || (vm && api_image_from_json(f->mask, vm, maxpix, &mask, e));
    if (!rc && !size_given) rc = api_size_from_image(d, f->init, &img, g, e);
    if (!rc) rc = api_set_init(g, &img, f->init, vm ? &mask : NULL, f->mask, f->kind, e);
    if (!rc) rc = api_strength_or_default(f->strength, vs, g, e);
    api_image_free(&img);
    api_image_free(&mask);
    return rc ? -1 : 0;
}
