/* png.c — PNG encode/decode through libpng, hardened for hostile input.
 *
 * libpng reports errors by longjmp.  Every libpng call therefore runs inside a helper
 * (encode_run, decode_run) that calls setjmp itself and keeps all state in a
 * struct owned by its caller, reached through a pointer: after a longjmp nothing the
 * cleanup needs lives in an automatic variable of the function that called setjmp, so
 * no value is indeterminate, and the caller frees whatever was allocated in one place.
 *
 * All of libpng's allocations (zlib included) go through sd_malloc/sd_free
 * (png_create_*_struct_2), so the fault-injection tests reach its error paths too.
 * Warnings are dropped; errors become SD_ERR_FORMAT (SD_ERR_NOMEM when an allocation
 * failed) with libpng's message.
 *
 * Text: ASCII values go into tEXt; other values must be UTF-8 and go into iTXt, since
 * tEXt is Latin-1.  png_text_get returns UTF-8 either way (tEXt is converted from
 * Latin-1). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <png.h>

#include "png.h"
#include "../core/fs.h"

/* ---- shared libpng plumbing ----------------------------------------------------- */

#define PNG_CHUNK_MAX (8u << 20)   /* the largest chunk a decode reads (text, ICC, ...) */
#define PNG_CHUNK_CACHE 1000        /* ancillary chunks kept at most */

struct png_io {
    char msg[192];          /* libpng's error message */
    int nomem;              /* an allocation failed */
    size_t alloc_max;       /* decoding: libpng's largest allowed allocation (0: no bound) */
    int toolarge;           /* an allocation went over alloc_max */
    /* read side */
    const uint8_t *data;
    size_t len, pos;
    /* write side */
    uint8_t *buf;
    size_t blen, bcap;
};

static void on_error(png_structp png, png_const_charp msg) {
    struct png_io *io = png_get_error_ptr(png);
    snprintf(io->msg, sizeof io->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static png_voidp on_malloc(png_structp png, png_alloc_size_t n) {
    struct png_io *io = png_get_mem_ptr(png);
    if (io && io->alloc_max && n > io->alloc_max) {
        io->toolarge = 1;
        return NULL;
    }
    void *p = sd_malloc(n ? n : 1);
    if (!p && io) io->nomem = 1;
    return p;
}

static void on_free(png_structp png, png_voidp p) { (void)png; sd_free(p); }

static void on_read(png_structp png, png_bytep out, png_size_t n) {
    struct png_io *io = png_get_io_ptr(png);
    if (n > io->len - io->pos) png_error(png, "truncated PNG data");
    memcpy(out, io->data + io->pos, n);
    io->pos += n;
}

static void on_write(png_structp png, png_bytep in, png_size_t n) {
    struct png_io *io = png_get_io_ptr(png);
    if (n > io->bcap - io->blen) {
        size_t cap = io->bcap ? io->bcap : 4096;
        while (cap - io->blen < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "output too large");
            cap *= 2;
        }
        uint8_t *b = sd_realloc(io->buf, cap);
        if (!b) { io->nomem = 1; png_error(png, "out of memory"); }
        io->buf = b;
        io->bcap = cap;
    }
    memcpy(io->buf + io->blen, in, n);
    io->blen += n;
}

static void on_flush(png_structp png) { (void)png; }

static sd_status io_status(const struct png_io *io, const char *what) {
    if (io->toolarge)
        return sd_fail(SD_ERR_FORMAT, "png: %s: a chunk or row too large for the image (over %zu bytes)", what,
                       io->alloc_max);
    if (io->nomem) return sd_fail(SD_ERR_NOMEM, "png: %s: out of memory", what);
    return sd_fail(SD_ERR_FORMAT, "png: %s: %s", what, io->msg);
}

/* ---- encoding ------------------------------------------------------------------- */

/* tEXt keywords: 1-79 printable characters, no leading, trailing or double spaces. */
static int key_valid(const char *k) {
    size_t n = k ? strlen(k) : 0;
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c < 0x20 || c > 0x7e || (c == ' ' && k[i + 1] == ' ')) return 0;
    }
    return 1;
}

/* 0: not UTF-8; 1: ASCII; 2: UTF-8 with non-ASCII characters. */
static int utf8_kind(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    int ascii = 1;
    while (*p) {
        if (*p < 0x80) { p++; continue; }
        ascii = 0;
        int n;
        uint32_t c;
        if ((*p & 0xe0) == 0xc0) { n = 1; c = *p & 0x1f; }
        else if ((*p & 0xf0) == 0xe0) { n = 2; c = *p & 0x0f; }
        else if ((*p & 0xf8) == 0xf0) { n = 3; c = *p & 0x07; }
        else return 0;
        p++;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xc0) != 0x80) return 0;
            c = (c << 6) | (*p & 0x3f);
        }
        static const uint32_t min[4] = { 0, 0x80, 0x800, 0x10000 };
        if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    }
    return ascii ? 1 : 2;
}

struct png_enc {
    struct png_io io;
    png_structp png;
    png_infop info;
    png_textp texts;
};

static sd_status encode_run(struct png_enc *e, const uint8_t *rgb, int width, int height,
                            int ntexts) {
    if (setjmp(png_jmpbuf(e->png))) return io_status(&e->io, "encode");
    png_set_write_fn(e->png, &e->io, on_write, on_flush);
    png_set_IHDR(e->png, e->info, (png_uint_32)width, (png_uint_32)height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (ntexts > 0) png_set_text(e->png, e->info, e->texts, ntexts);
    png_write_info(e->png, e->info);
    for (int y = 0; y < height; y++)
        png_write_row(e->png, rgb + (size_t)y * (size_t)width * 3);
    png_write_end(e->png, e->info);
    return SD_OK;
}

sd_status png_encode(const uint8_t *rgb, int width, int height,
                     const struct png_text *texts, int ntexts,
                     uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!rgb || width <= 0 || height <= 0 || width > (int)(PNG_UINT_31_MAX / 3) ||
        ntexts < 0 || (ntexts > 0 && !texts))
        return sd_fail(SD_ERR_INVALID, "png: encode: invalid image %dx%d", width, height);
    for (int i = 0; i < ntexts; i++) {
        if (!key_valid(texts[i].key))
            return sd_fail(SD_ERR_INVALID, "png: text key %d is not a valid PNG keyword (1-79 "
                           "printable ASCII characters, single inner spaces)", i);
        if (!texts[i].text || utf8_kind(texts[i].text) == 0)
            return sd_fail(SD_ERR_INVALID, "png: text '%s' is not valid UTF-8", texts[i].key);
    }

    struct png_enc e;
    memset(&e, 0, sizeof e);
    sd_status st = SD_OK;
    if (ntexts > 0) {
        if (!(e.texts = sd_calloc((size_t)ntexts, sizeof *e.texts))) return SD_ERR_NOMEM;
        for (int i = 0; i < ntexts; i++) {
            png_textp t = &e.texts[i];
            t->compression = utf8_kind(texts[i].text) == 1 ? PNG_TEXT_COMPRESSION_NONE
                                                           : PNG_ITXT_COMPRESSION_NONE;
            t->key = (png_charp)texts[i].key;     /* libpng copies; it does not write */
            t->text = (png_charp)texts[i].text;
            t->text_length = strlen(texts[i].text);
        }
    }
    e.png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, &e.io, on_error, on_warning,
                                      &e.io, on_malloc, on_free);
    if (!e.png || !(e.info = png_create_info_struct(e.png))) {
        st = sd_fail(SD_ERR_NOMEM, "png: encode: out of memory");
        goto out;
    }
    st = encode_run(&e, rgb, width, height, ntexts);
out:
    if (e.png) png_destroy_write_struct(&e.png, &e.info);
    sd_free(e.texts);
    if (st != SD_OK) {
        sd_free(e.io.buf);
        return st;
    }
    *out = e.io.buf;
    *out_len = e.io.blen;
    return SD_OK;
}

sd_status png_write_file(const char *path, const uint8_t *rgb, int width, int height,
                         const struct png_text *texts, int ntexts) {
    uint8_t *buf;
    size_t len;
    sd_status st = png_encode(rgb, width, height, texts, ntexts, &buf, &len);
    if (st != SD_OK) return sd_wrap(st, "%s", path);

    st = sd_write_file_atomic(path, buf, len);
    sd_free(buf);
    return st;
}

/* ---- decoding ------------------------------------------------------------------- */

struct png_dec {
    struct png_io io;
    png_structp png;
    png_infop info;
    uint8_t *pix;           /* the image, RGBA while decoding, packed to RGB at the end */
    png_bytep *rows;
    int width, height;
};

static sd_status dec_init(struct png_dec *d, const uint8_t *data, size_t len) {
    memset(d, 0, sizeof *d);
    if (!data || len < 8 || png_sig_cmp(data, 0, 8) != 0)
        return sd_fail(SD_ERR_FORMAT, "png: not a PNG file (bad signature)");
    d->io.data = data;
    d->io.len = len;
    d->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &d->io, on_error, on_warning,
                                      &d->io, on_malloc, on_free);
    if (!d->png || !(d->info = png_create_info_struct(d->png)))
        return sd_fail(SD_ERR_NOMEM, "png: decode: out of memory");
    png_set_read_fn(d->png, &d->io, on_read);
    /* No chunk is read into a buffer larger than PNG_CHUNK_MAX: Debian's libpng 1.6.39
     * allocated a tEXt chunk's declared length (2 GiB from a 100-byte upload) before the
     * short read was noticed, whatever png_set_chunk_malloc_max said, so on_malloc refuses
     * anything larger until the image's size is known and checked (decode_run).  At most
     * PNG_CHUNK_CACHE ancillary chunks are kept. */
    d->io.alloc_max = PNG_CHUNK_MAX;
    png_set_chunk_malloc_max(d->png, PNG_CHUNK_MAX);
    png_set_chunk_cache_max(d->png, PNG_CHUNK_CACHE);
    return SD_OK;
}

static void dec_free(struct png_dec *d) {
    if (d->png) png_destroy_read_struct(&d->png, d->info ? &d->info : NULL, NULL);
    sd_free(d->rows);
    sd_free(d->pix);
    memset(d, 0, sizeof *d);
}

/* Every supported layout is normalised by libpng to 8-bit RGBA (palette and low-depth
 * gray expanded, 16-bit stripped, gray widened, opaque filler added), then packed to RGB
 * in place: one code path for every input type. */
static sd_status decode_run(struct png_dec *d, size_t max_pixels, int rgba) {
    if (setjmp(png_jmpbuf(d->png))) return io_status(&d->io, "decode");
    png_read_info(d->png, d->info);
    png_uint_32 w = png_get_image_width(d->png, d->info);
    png_uint_32 h = png_get_image_height(d->png, d->info);
    if ((uint64_t)w * h > max_pixels)
        return sd_fail(SD_ERR_INVALID, "png: image %ux%u exceeds the limit of %zu pixels",
                       (unsigned)w, (unsigned)h, max_pixels);
    /* libpng's row buffers: up to 8 bytes a pixel (16-bit RGBA) plus its slack */
    if ((size_t)w * 8 + 4096 > d->io.alloc_max) d->io.alloc_max = (size_t)w * 8 + 4096;
    png_set_expand(d->png);
    png_set_strip_16(d->png);
    png_set_gray_to_rgb(d->png);
    png_set_add_alpha(d->png, 0xff, PNG_FILLER_AFTER);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    if (png_get_bit_depth(d->png, d->info) != 8 || png_get_channels(d->png, d->info) != 4 ||
        png_get_rowbytes(d->png, d->info) != (size_t)w * 4)
        return sd_fail(SD_ERR_FORMAT, "png: unsupported pixel layout");

    d->width = (int)w;
    d->height = (int)h;
    d->pix = sd_malloc((size_t)w * h * 4);
    d->rows = sd_malloc((size_t)h * sizeof *d->rows);
    if (!d->pix || !d->rows) return SD_ERR_NOMEM;
    for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->pix + (size_t)y * w * 4;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, NULL);

    size_t n = rgba ? 0 : (size_t)w * h;
    for (size_t i = 0; i < n; i++) {   /* dst index <= src index: safe in place */
        d->pix[3 * i + 0] = d->pix[4 * i + 0];
        d->pix[3 * i + 1] = d->pix[4 * i + 1];
        d->pix[3 * i + 2] = d->pix[4 * i + 2];
    }
    return SD_OK;
}

static sd_status decode(const uint8_t *data, size_t len, size_t max_pixels, int rgba,
                        uint8_t **rgb, int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    struct png_dec d;
    sd_status st = dec_init(&d, data, len);
    if (st == SD_OK) st = decode_run(&d, max_pixels, rgba);
    if (st == SD_OK) {
        *rgb = d.pix;
        *width = d.width;
        *height = d.height;
        d.pix = NULL;
    }
    dec_free(&d);
    return st;
}

sd_status png_decode(const uint8_t *data, size_t len, size_t max_pixels,
                     uint8_t **rgb, int *width, int *height) {
    return decode(data, len, max_pixels, 0, rgb, width, height);
}

sd_status png_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                          uint8_t **rgba, int *width, int *height) {
    return decode(data, len, max_pixels, 1, rgba, width, height);
}

/* ---- text ----------------------------------------------------------------------- */

/* Text chunks are found by walking the chunk list directly: no image decoding is needed
 * to reach chunks after IDAT, and libpng's own text getter is not reachable by name (see
 * the include above).  Compressed text (zTXt, compressed iTXt) would need zlib, which
 * the build does not link; we never write it, and asking for such a key is reported as
 * unsupported rather than silently missed. */

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

/* A fresh NUL-terminated copy of text[0..n), converted from Latin-1 when latin1. */
static char *text_copy(const uint8_t *text, size_t n, int latin1) {
    char *v = sd_malloc(2 * n + 1);
    if (!v) return NULL;
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        if (latin1 && text[k] >= 0x80) {
            v[o++] = (char)(0xc0 | (text[k] >> 6));
            v[o++] = (char)(0x80 | (text[k] & 0x3f));
        } else {
            v[o++] = (char)text[k];
        }
    }
    v[o] = 0;
    return v;
}

/* If this text chunk (type t, body b[0..n)) holds key, set *value.  Bodies are
 * "key\0text" (tEXt), "key\0method data" (zTXt) and
 * "key\0flag method lang\0translated\0text" (iTXt). */
static sd_status text_chunk(const char *t, const uint8_t *b, size_t n, const char *key,
                            char **value) {
    const uint8_t *z = memchr(b, 0, n);
    if (!z || z == b || z - b > 79) return sd_fail(SD_ERR_FORMAT, "png: bad %.4s keyword", t);
    size_t klen = (size_t)(z - b);
    if (klen != strlen(key) || memcmp(b, key, klen) != 0) return SD_OK;
    const uint8_t *p = z + 1, *end = b + n;
    if (memcmp(t, "zTXt", 4) == 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "png: text '%s' is compressed (zTXt)", key);
    int latin1 = memcmp(t, "tEXt", 4) == 0;
    if (!latin1) {
        if (end - p < 2) return sd_fail(SD_ERR_FORMAT, "png: truncated iTXt '%s'", key);
        if (p[0] != 0)
            return sd_fail(SD_ERR_UNSUPPORTED, "png: text '%s' is compressed (iTXt)", key);
        p += 2;
        for (int i = 0; i < 2; i++) {   /* language tag, translated keyword */
            const uint8_t *q = memchr(p, 0, (size_t)(end - p));
            if (!q) return sd_fail(SD_ERR_FORMAT, "png: truncated iTXt '%s'", key);
            p = q + 1;
        }
    }
    size_t len = (size_t)(end - p);
    if (memchr(p, 0, len)) return sd_fail(SD_ERR_FORMAT, "png: text '%s' contains NUL", key);
    char *v = text_copy(p, len, latin1);
    if (!v) return SD_ERR_NOMEM;
    if (!latin1 && utf8_kind(v) == 0) {
        sd_free(v);
        return sd_fail(SD_ERR_FORMAT, "png: iTXt '%s' is not valid UTF-8", key);
    }
    *value = v;
    return SD_OK;
}

sd_status png_text_get(const uint8_t *data, size_t len, const char *key, char **value) {
    *value = NULL;
    if (!data || len < 8 || png_sig_cmp(data, 0, 8) != 0)
        return sd_fail(SD_ERR_FORMAT, "png: not a PNG file (bad signature)");
    if (!key) return sd_fail(SD_ERR_INVALID, "png: no text key given");
    for (size_t pos = 8, nchunk = 0;; nchunk++) {
        if (len - pos < 12) return sd_fail(SD_ERR_FORMAT, "png: truncated before IEND");
        uint32_t n = be32(data + pos);
        const char *t = (const char *)data + pos + 4;
        if (n > PNG_UINT_31_MAX || n > len - pos - 12)
            return sd_fail(SD_ERR_FORMAT, "png: chunk %zu length %u runs past the data",
                           nchunk, (unsigned)n);
        if ((nchunk == 0) != (memcmp(t, "IHDR", 4) == 0))
            return sd_fail(SD_ERR_FORMAT, "png: IHDR is not the first chunk");
        if (memcmp(t, "IEND", 4) == 0) return SD_OK;
        const uint8_t *body = data + pos + 8;
        if (memcmp(t, "tEXt", 4) == 0 || memcmp(t, "zTXt", 4) == 0 ||
            memcmp(t, "iTXt", 4) == 0) {
            if (crc32_png(data + pos + 4, (size_t)n + 4) != be32(body + n))
                return sd_fail(SD_ERR_FORMAT, "png: %.4s chunk has a bad CRC", t);
            SD_TRY(text_chunk(t, body, n, key, value));
            if (*value) return SD_OK;
        }
        pos += (size_t)n + 12;
    }
}
