/* test_jpeg_webp.c — the JPEG and WebP encoders (src/io/jpeg.c, webp.c): each output is
 * decoded again by the library's own decoder (libjpeg, libwebp) and compared with the
 * input pixels; quality orders file sizes; the JPEG comment (the "parameters" text) is
 * read back; bad arguments are refused; out-of-memory paths free everything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <webp/decode.h>

#include "io/jpeg.h"
#include "io/png.h"
#include "io/webp.h"
#include "tap.h"

#define W 96
#define H 64

/* A smooth colour gradient with a soft disc: lossy codecs keep it within a few levels. */
static void make_image(uint8_t *rgb) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            int dx = x - W / 2, dy = y - H / 2, in = dx * dx + dy * dy < 400;
            p[0] = (uint8_t)(x * 255 / (W - 1));
            p[1] = (uint8_t)(y * 255 / (H - 1));
            p[2] = (uint8_t)(in ? 200 : 60);
        }
}

static double mean_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs((int)a[i] - (int)b[i]);
    return s / (double)n;
}

/* Decode with libjpeg; the COM marker (if any) into comment.  NULL on failure. */
static uint8_t *jpeg_decode_ref(const uint8_t *data, size_t len, int *w, int *h, char *comment,
                                size_t clen) {
    struct jpeg_decompress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, data, (unsigned long)len);
    jpeg_save_markers(&c, JPEG_COM, 0xffff);
    if (jpeg_read_header(&c, TRUE) != JPEG_HEADER_OK) { jpeg_destroy_decompress(&c); return NULL; }
    comment[0] = 0;
    for (jpeg_saved_marker_ptr m = c.marker_list; m; m = m->next)
        if (m->marker == JPEG_COM) {
            size_t n = m->data_length < clen - 1 ? m->data_length : clen - 1;
            memcpy(comment, m->data, n);
            comment[n] = 0;
        }
    c.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c);
    *w = (int)c.output_width;
    *h = (int)c.output_height;
    uint8_t *rgb = malloc((size_t)*w * *h * 3);
    while (c.output_scanline < c.output_height) {
        JSAMPROW row = rgb + (size_t)c.output_scanline * *w * 3;
        jpeg_read_scanlines(&c, &row, 1);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    return rgb;
}

static void test_jpeg(const uint8_t *rgb) {
    uint8_t *hi = NULL, *lo = NULL;
    size_t nhi = 0, nlo = 0;
    const char *text = "a red cube\nSteps: 4, Sampler: DMD2, Seed: 7, Size: 96x64";
    ok(jpeg_encode(rgb, W, H, 95, text, &hi, &nhi) == SD_OK && nhi > 4, "jpeg: encode at quality 95");
    ok(nhi > 4 && hi[0] == 0xff && hi[1] == 0xd8 && hi[nhi - 2] == 0xff && hi[nhi - 1] == 0xd9,
       "jpeg: starts with SOI and ends with EOI");
    int w = 0, h = 0;
    char comment[256];
    uint8_t *dec = jpeg_decode_ref(hi, nhi, &w, &h, comment, sizeof comment);
    ok(dec && w == W && h == H, "jpeg: libjpeg decodes it at %dx%d", w, h);
    double d = dec ? mean_abs_diff(dec, rgb, (size_t)W * H * 3) : 999;
    ok(d < 3.0, "jpeg: decoded pixels within %.2f levels (mean) of the input", d);
    ok(!strcmp(comment, text), "jpeg: the COM marker carries the parameters text");
    free(dec);
    sd_status st = jpeg_encode(rgb, W, H, 10, NULL, &lo, &nlo);
    ok(st == SD_OK && nlo < nhi, "jpeg: quality 10 gives a smaller file (%zu < %zu bytes)", nlo, nhi);
    uint8_t *again = NULL;
    size_t nagain = 0;
    ok(jpeg_encode(rgb, W, H, 95, text, &again, &nagain) == SD_OK && nagain == nhi &&
       !memcmp(again, hi, nhi), "jpeg: deterministic (same input, same bytes)");
    sd_free(again);
    sd_free(hi);
    sd_free(lo);
    uint8_t *o = NULL;
    size_t n = 0;
    ok(jpeg_encode(rgb, 0, H, 90, NULL, &o, &n) == SD_ERR_INVALID && !o, "jpeg: width 0 refused");
    ok(jpeg_encode(rgb, W, H, 101, NULL, &o, &n) == SD_ERR_INVALID && !o, "jpeg: quality 101 refused");
    ok(jpeg_encode(rgb, W, H, 0, NULL, &o, &n) == SD_OK && n > 0, "jpeg: quality 0 encodes (as 1)");
    sd_free(o);
}

static void test_webp(const uint8_t *rgb) {
    uint8_t *hi = NULL, *lo = NULL;
    size_t nhi = 0, nlo = 0;
    ok(webp_encode(rgb, W, H, 95, &hi, &nhi) == SD_OK && nhi > 12, "webp: encode at quality 95");
    ok(nhi > 12 && !memcmp(hi, "RIFF", 4) && !memcmp(hi + 8, "WEBP", 4) &&
       (size_t)(hi[4] | hi[5] << 8 | hi[6] << 16 | (uint32_t)hi[7] << 24) == nhi - 8,
       "webp: a RIFF/WEBP container whose size field matches");
    int w = 0, h = 0;
    uint8_t *dec = nhi ? WebPDecodeRGB(hi, nhi, &w, &h) : NULL;
    ok(dec && w == W && h == H, "webp: libwebp decodes it at %dx%d", w, h);
    double d = dec ? mean_abs_diff(dec, rgb, (size_t)W * H * 3) : 999;
    ok(d < 4.0, "webp: decoded pixels within %.2f levels (mean) of the input", d);
    WebPFree(dec);
    sd_status st = webp_encode(rgb, W, H, 5, &lo, &nlo);
    ok(st == SD_OK && nlo < nhi, "webp: quality 5 gives a smaller file (%zu < %zu bytes)", nlo, nhi);
    uint8_t *again = NULL;
    size_t nagain = 0;
    ok(webp_encode(rgb, W, H, 95, &again, &nagain) == SD_OK && nagain == nhi &&
       !memcmp(again, hi, nhi), "webp: deterministic (same input, same bytes)");
    sd_free(again);
    sd_free(hi);
    sd_free(lo);
    uint8_t *o = NULL;
    size_t n = 0;
    ok(webp_encode(rgb, WEBP_MAX_SIDE + 1, 1, 90, &o, &n) == SD_ERR_INVALID && !o,
       "webp: a side past 16383 refused");
    ok(webp_encode(rgb, W, H, -1, &o, &n) == SD_ERR_INVALID && !o, "webp: quality -1 refused");
}

/* Fail each sd_malloc of an encode in turn: an error, never a leak. */
static void test_nomem(const uint8_t *rgb) {
    size_t live = sd_alloc_live_bytes();
    int fails = 0, leaks = 0;
    for (long nth = 1; nth <= 8; nth++) {
        uint8_t *o = NULL;
        size_t n = 0;
        sd_fault_arm_alloc(nth);
        sd_status a = jpeg_encode(rgb, W, H, 80, "x", &o, &n);
        sd_fault_arm_alloc(0);
        if (a == SD_OK) sd_free(o); else fails += a == SD_ERR_NOMEM;
        o = NULL;
        sd_fault_arm_alloc(nth);
        sd_status b = webp_encode(rgb, W, H, 80, &o, &n);
        sd_fault_arm_alloc(0);
        if (b == SD_OK) sd_free(o); else fails += b == SD_ERR_NOMEM;
        leaks += sd_alloc_live_bytes() != live;
    }
    ok(fails >= 2, "out of memory: both encoders report SD_ERR_NOMEM (%d failed calls)", fails);
    ok(leaks == 0, "out of memory: nothing leaked through sd_malloc");
}

/* The decoders (img2img's init images and masks): each encoder's output decodes back to
 * RGBA near the input (alpha 255), hostile bytes are SD_ERR_FORMAT, and an image over
 * max_pixels is SD_ERR_INVALID before any allocation. */
static void test_decode(const uint8_t *rgb) {
    typedef sd_status (*dec_fn)(const uint8_t *, size_t, size_t, uint8_t **, int *, int *);
    static const char *const names[] = { "jpeg", "webp", "png" };
    const dec_fn decs[] = { jpeg_decode_rgba, webp_decode_rgba, png_decode_rgba };
    for (int k = 0; k < 3; k++) {
        uint8_t *enc = NULL, *px = NULL;
        size_t len = 0;
        sd_status st = k == 0 ? jpeg_encode(rgb, W, H, 95, NULL, &enc, &len)
                     : k == 1 ? webp_encode(rgb, W, H, 95, &enc, &len) : png_encode(rgb, W, H, NULL, 0, &enc, &len);
        int w = 0, h = 0;
        if (st == SD_OK) st = decs[k](enc, len, (size_t)W * H, &px, &w, &h);
        double d = 0;
        int alpha = 1;
        for (size_t q = 0; st == SD_OK && q < (size_t)W * H; q++) {
            for (int c = 0; c < 3; c++) d += abs((int)px[q * 4 + c] - (int)rgb[q * 3 + c]);
            alpha &= px[q * 4 + 3] == 255;
        }
        d /= 3.0 * W * H;
        ok(st == SD_OK && w == W && h == H && alpha && d < (k == 2 ? 0.001 : 4.0),
           "%s decodes to RGBA near the input (mean difference %.2f levels, alpha 255)", names[k], d);
        sd_free(px);
        ok(decs[k](enc, len, (size_t)W * H - 1, &px, &w, &h) == SD_ERR_INVALID && !px,
           "%s: an image over max_pixels is refused: %s", names[k], sd_last_error());
        uint8_t junk[64];
        memcpy(junk, enc, sizeof junk);
        ok(decs[k](junk, sizeof junk, (size_t)W * H, &px, &w, &h) != SD_OK && !px,
           "%s: a cut-off file is refused: %s", names[k], sd_last_error());
        ok(decs[k]((const uint8_t *)"GIF89a........", 14, (size_t)W * H, &px, &w, &h) == SD_ERR_FORMAT && !px,
           "%s: another format is SD_ERR_FORMAT", names[k]);
        sd_free(enc);
    }
}

int main(void) {
    uint8_t *rgb = malloc((size_t)W * H * 3);
    make_image(rgb);
    test_jpeg(rgb);
    test_webp(rgb);
    test_nomem(rgb);
    test_decode(rgb);
    free(rgb);
    return done_testing();
}
