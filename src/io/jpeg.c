/* jpeg.c — JPEG encoding through libjpeg-turbo (see jpeg.h).
 *
 * libjpeg reports errors through error_exit, which must not return: it longjmps back
 * into encode_run, the helper that called setjmp.  As in png.c, all state lives in a
 * struct owned by the caller and reached through a pointer, so nothing the cleanup needs
 * is an automatic variable of the function that called setjmp.
 *
 * The output goes to a destination manager that grows an sd_malloc'ed buffer (not
 * jpeg_mem_dest, whose buffer comes from malloc), so the caller frees it like every other
 * encoder's output and the fault-injection tests reach the out-of-memory path.  libjpeg's
 * own working memory comes from its memory manager (malloc). */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "jpeg.h"

#define COM_MAX 65533      /* a marker's payload: 65535 minus its length field */

struct jpeg_enc {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    struct jpeg_destination_mgr dest;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int nomem;
    uint8_t *buf;
    size_t cap;
};

static void on_error_exit(j_common_ptr c) {
    struct jpeg_enc *e = (struct jpeg_enc *)c->client_data;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_output_message(j_common_ptr c) { (void)c; }   /* warnings are dropped */

/* Grow the buffer to hold at least `need` bytes; -1 when out of memory. */
static int grow(struct jpeg_enc *e, size_t need) {
    size_t cap = e->cap ? e->cap : 16384;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    if (cap == e->cap) return 0;
    uint8_t *b = sd_realloc(e->buf, cap);
    if (!b) return -1;
    e->buf = b;
    e->cap = cap;
    return 0;
}

static void dest_init(j_compress_ptr c) {
    struct jpeg_enc *e = (struct jpeg_enc *)c->client_data;
    if (grow(e, 1)) { e->nomem = 1; ERREXIT(c, JERR_OUT_OF_MEMORY); }
    e->dest.next_output_byte = e->buf;
    e->dest.free_in_buffer = e->cap;
}

/* The whole buffer is full (libjpeg calls this only then): double it. */
static boolean dest_empty(j_compress_ptr c) {
    struct jpeg_enc *e = (struct jpeg_enc *)c->client_data;
    size_t used = e->cap;
    if (grow(e, used + 1)) { e->nomem = 1; ERREXIT(c, JERR_OUT_OF_MEMORY); }
    e->dest.next_output_byte = e->buf + used;
    e->dest.free_in_buffer = e->cap - used;
    return TRUE;
}

static void dest_term(j_compress_ptr c) { (void)c; }

static sd_status encode_run(struct jpeg_enc *e, const uint8_t *rgb, int width, int height,
                            int quality, const char *comment) {
    if (setjmp(e->jb)) {
        if (e->nomem) return sd_fail(SD_ERR_NOMEM, "jpeg: encode: out of memory");
        return sd_fail(SD_ERR_FORMAT, "jpeg: encode: %s", e->msg);
    }
    jpeg_create_compress(&e->c);
    e->c.client_data = e;
    e->dest.init_destination = dest_init;
    e->dest.empty_output_buffer = dest_empty;
    e->dest.term_destination = dest_term;
    e->c.dest = &e->dest;
    e->c.image_width = (JDIMENSION)width;
    e->c.image_height = (JDIMENSION)height;
    e->c.input_components = 3;
    e->c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&e->c);
    jpeg_set_quality(&e->c, quality, TRUE);
    if (quality >= 90)   /* no chroma subsampling where the caller asks for fidelity */
        for (int i = 0; i < e->c.num_components; i++)
            e->c.comp_info[i].h_samp_factor = e->c.comp_info[i].v_samp_factor = 1;
    e->c.optimize_coding = TRUE;   /* smaller files, same pixels */
    jpeg_start_compress(&e->c, TRUE);
    if (comment && *comment) {
        size_t n = strlen(comment);
        jpeg_write_marker(&e->c, JPEG_COM, (const JOCTET *)comment,
                          (unsigned)(n > COM_MAX ? COM_MAX : n));
    }
    while (e->c.next_scanline < e->c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)e->c.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&e->c, &row, 1);
    }
    jpeg_finish_compress(&e->c);
    return SD_OK;
}

sd_status jpeg_encode(const uint8_t *rgb, int width, int height, int quality,
                      const char *comment, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!rgb || width <= 0 || height <= 0 || width > JPEG_MAX_DIMENSION ||
        height > JPEG_MAX_DIMENSION)
        return sd_fail(SD_ERR_INVALID, "jpeg: encode: invalid image %dx%d", width, height);
    if (quality < 0 || quality > 100)
        return sd_fail(SD_ERR_INVALID, "jpeg: encode: quality %d is not in 0..100", quality);
    struct jpeg_enc *e = sd_calloc(1, sizeof *e);
    if (!e) return SD_ERR_NOMEM;
    e->c.err = jpeg_std_error(&e->err);
    e->err.error_exit = on_error_exit;
    e->err.output_message = on_output_message;
    e->c.client_data = e;
    sd_status st = encode_run(e, rgb, width, height, quality ? quality : 1, comment);
    size_t len = st == SD_OK ? e->cap - e->dest.free_in_buffer : 0;
    jpeg_destroy_compress(&e->c);
    if (st == SD_OK) {
        *out = e->buf;
        *out_len = len;
    } else {
        sd_free(e->buf);
    }
    sd_free(e);
    return st;
}

/* ---- decoding ---- */

struct jpeg_dec {
    struct jpeg_decompress_struct c;
    struct jpeg_error_mgr err;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *pix;           /* RGBA */
    int width, height;
};

static void on_dec_error_exit(j_common_ptr c) {
    struct jpeg_dec *d = (struct jpeg_dec *)c->client_data;
    c->err->format_message(c, d->msg);
    longjmp(d->jb, 1);
}

/* The scanlines land RGB at the start of each RGBA row and are spread out from its end. */
static sd_status decode_run(struct jpeg_dec *d, const uint8_t *data, size_t len, size_t max_pixels) {
    if (setjmp(d->jb)) return sd_fail(SD_ERR_FORMAT, "jpeg: decode: %s", d->msg);
    jpeg_create_decompress(&d->c);
    d->c.client_data = d;
    jpeg_mem_src(&d->c, data, (unsigned long)len);
    jpeg_read_header(&d->c, TRUE);
    if ((uint64_t)d->c.image_width * d->c.image_height > max_pixels)
        return sd_fail(SD_ERR_INVALID, "jpeg: image %ux%u exceeds the limit of %zu pixels",
                       (unsigned)d->c.image_width, (unsigned)d->c.image_height, max_pixels);
    d->c.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d->c);
    if (d->c.output_components != 3) return sd_fail(SD_ERR_FORMAT, "jpeg: decode: unsupported color layout");
    d->width = (int)d->c.output_width;
    d->height = (int)d->c.output_height;
    if (!(d->pix = sd_malloc((size_t)d->width * d->height * 4))) return SD_ERR_NOMEM;
    while (d->c.output_scanline < d->c.output_height) {
        uint8_t *row = d->pix + (size_t)d->c.output_scanline * d->width * 4;
        JSAMPROW r = row;
        jpeg_read_scanlines(&d->c, &r, 1);
        for (int x = d->width - 1; x >= 0; x--) {   /* backwards: dst index >= src index */
            row[4 * x + 3] = 255;
            row[4 * x + 2] = row[3 * x + 2];
            row[4 * x + 1] = row[3 * x + 1];
            row[4 * x + 0] = row[3 * x + 0];
        }
    }
    jpeg_finish_decompress(&d->c);
    return SD_OK;
}

sd_status jpeg_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                           uint8_t **rgba, int *width, int *height) {
    *rgba = NULL;
    *width = *height = 0;
    if (!data || len < 3 || data[0] != 0xFF || data[1] != 0xD8)
        return sd_fail(SD_ERR_FORMAT, "jpeg: not a JPEG file (bad signature)");
    struct jpeg_dec *d = sd_calloc(1, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    d->c.err = jpeg_std_error(&d->err);
    d->err.error_exit = on_dec_error_exit;
    d->err.output_message = on_output_message;
    d->c.client_data = d;
    sd_status st = decode_run(d, data, len, max_pixels);
    jpeg_destroy_decompress(&d->c);
    if (st == SD_OK) {
        *rgba = d->pix;
        *width = d->width;
        *height = d->height;
    } else {
        sd_free(d->pix);
    }
    sd_free(d);
    return st;
}
