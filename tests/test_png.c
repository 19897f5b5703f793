/* test_png.c — PNG encode/decode round trips, every input layout png_decode accepts,
 * text chunks (before and after the image data, Latin-1 and UTF-8, compressed), and
 * hostile input: truncation at every length and a mutation at every byte, with CRCs
 * fixed up so the damage reaches libpng's decoder instead of its CRC check.
 *
 * libpng's allocations go through sd_malloc, so sd_alloc_live_bytes() proves that even
 * its longjmp error paths free everything; valgrind checks the rest. */
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

#include <png.h>

#include "io/png.h"
#include "tap.h"

/* ---- helpers: CRC, chunk surgery, a plain libpng writer for other layouts ---------- */

static uint32_t crc32_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Offset of the first chunk of the given type (its length field), or 0. */
static size_t find_chunk(const uint8_t *png, size_t len, const char *type) {
    for (size_t pos = 8; pos + 12 <= len;) {
        uint32_t n = rd32(png + pos);
        if (memcmp(png + pos + 4, type, 4) == 0) return pos;
        if (n > len - pos - 12) return 0;
        pos += 12 + n;
    }
    return 0;
}

/* A copy of png with a chunk inserted at offset at (malloc'ed). */
static uint8_t *insert_chunk(const uint8_t *png, size_t len, size_t at, const char *type,
                             const void *data, size_t dlen, size_t *out_len) {
    size_t n = len + 12 + dlen;
    uint8_t *b = malloc(n);
    memcpy(b, png, at);
    uint8_t *c = b + at;
    wr32(c, (uint32_t)dlen);
    memcpy(c + 4, type, 4);
    memcpy(c + 8, data, dlen);
    wr32(c + 8 + dlen, crc32_ref(c + 4, dlen + 4));
    memcpy(c + 12 + dlen, png + at, len - at);
    *out_len = n;
    return b;
}

/* Recompute the CRC of every chunk whose length still fits, so mutations reach the
 * parser instead of stopping at the CRC check. */
static void fix_crcs(uint8_t *png, size_t len) {
    for (size_t pos = 8; pos + 12 <= len;) {
        uint32_t n = rd32(png + pos);
        if (n > len - pos - 12) return;
        wr32(png + pos + 8 + n, crc32_ref(png + pos + 4, (size_t)n + 4));
        pos += 12 + n;
    }
}

struct membuf { uint8_t *p; size_t n, cap; };
static void mem_write(png_structp png, png_bytep d, png_size_t n) {
    struct membuf *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}
static void mem_flush(png_structp png) { (void)png; }

/* Write raw PNG rows of any layout with plain libpng (the test's independent writer). */
static uint8_t *write_png_raw(size_t *len, int w, int h, int color, int depth, int interlace,
                              const uint8_t *data, size_t rowbytes, const png_color *pal,
                              int npal, const uint8_t *trns, int ntrns) {
    struct membuf m = { 0 };
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) { fprintf(stderr, "test writer failed\n"); exit(2); }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)data + (size_t)y * rowbytes;
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *len = m.n;
    return m.p;
}

static int decodes_to(const uint8_t *png, size_t len, int w, int h, const uint8_t *want,
                      const char *what) {
    uint8_t *rgb;
    int gw, gh;
    size_t live = sd_alloc_live_bytes();
    sd_status st = png_decode(png, len, (size_t)w * h, &rgb, &gw, &gh);
    int good = st == SD_OK && gw == w && gh == h && memcmp(rgb, want, (size_t)w * h * 3) == 0;
    if (st == SD_OK) sd_free(rgb);
    return ok(good && sd_alloc_live_bytes() == live, "decode %s %dx%d: %s", what, w, h,
              st ? sd_last_error() : "pixels match");
}

static uint8_t *test_image(int w, int h) {
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 11 + y);
            p[1] = (uint8_t)(y * 5 + (x ^ y));
            p[2] = (uint8_t)((x * y) ^ 0xa5);
        }
    return rgb;
}

static const char *PARAMS =
    "a photo of an astronaut riding a horse on mars\n"
    "Steps: 4, Sampler: LCM, CFG scale: 0, Seed: 1234567890, Size: 37x23, Model: dmd2";

/* ---- tests ---------------------------------------------------------------------- */

static void test_roundtrip(void) {
    const int W = 37, H = 23;
    uint8_t *img = test_image(W, H), *png;
    size_t len, live = sd_alloc_live_bytes();
    const struct png_text texts[] = {
        { "parameters", PARAMS },
        { "Software", "sdxld" },
        { "prompt utf8", "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x9a\x80" },
        { "empty", "" },
    };
    sd_status st = png_encode(img, W, H, texts, 4, &png, &len);
    ok(st == SD_OK && len > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0, "encode %dx%d: %s",
       W, H, st ? sd_last_error() : "ok");
    if (st != SD_OK) { free(img); return; }
    ok(find_chunk(png, len, "tEXt") != 0 && find_chunk(png, len, "iTXt") != 0 &&
           find_chunk(png, len, "tEXt") < find_chunk(png, len, "IDAT"),
       "ASCII text in tEXt, UTF-8 in iTXt, both before IDAT");
    decodes_to(png, len, W, H, img, "own RGB");

    char *v = NULL;
    st = png_text_get(png, len, "parameters", &v);
    ok(st == SD_OK && v && strcmp(v, PARAMS) == 0, "parameters text reads back");
    sd_free(v);
    st = png_text_get(png, len, "prompt utf8", &v);
    ok(st == SD_OK && v && strcmp(v, texts[2].text) == 0, "UTF-8 text reads back: %s",
       v ? v : "(null)");
    sd_free(v);
    st = png_text_get(png, len, "empty", &v);
    ok(st == SD_OK && v && v[0] == 0, "empty text reads back as \"\"");
    sd_free(v);
    st = png_text_get(png, len, "Comment", &v);
    ok(st == SD_OK && v == NULL, "absent key gives NULL");
    st = png_text_get(png, len, "Software ", &v);
    ok(st == SD_OK && v == NULL, "keys match exactly");

    /* Both of libpng's interlace-free paths: a 1x1 and a wide single row. */
    uint8_t px[3] = { 1, 2, 3 }, *p1;
    size_t l1;
    ok(png_encode(px, 1, 1, NULL, 0, &p1, &l1) == SD_OK, "encode 1x1 without text");
    decodes_to(p1, l1, 1, 1, px, "1x1");
    sd_free(p1);
    uint8_t *wide = test_image(3000, 1);
    ok(png_encode(wide, 3000, 1, NULL, 0, &p1, &l1) == SD_OK, "encode 3000x1");
    decodes_to(p1, l1, 3000, 1, wide, "3000x1");
    sd_free(p1);
    free(wide);

    /* max_pixels bounds the decode before anything is allocated. */
    uint8_t *rgb = NULL;
    int w = -1, h = -1;
    st = png_decode(png, len, (size_t)W * H - 1, &rgb, &w, &h);
    ok(st == SD_ERR_INVALID && rgb == NULL && w == 0 && h == 0, "max_pixels one short: %s",
       sd_last_error());
    sd_free(png);
    ok(sd_alloc_live_bytes() == live, "encode/decode/get_text leave nothing allocated");
    free(img);
}

static void test_bad_encode(void) {
    uint8_t px[12] = { 0 }, *out = (uint8_t *)1;
    size_t len = 1, live = sd_alloc_live_bytes();
    char long_key[81];
    memset(long_key, 'k', 80);
    long_key[80] = 0;
    struct { const char *what; struct png_text t; } bad[] = {
        { "empty key", { "", "x" } },
        { "80-byte key", { long_key, "x" } },
        { "leading space in key", { " key", "x" } },
        { "double space in key", { "a  b", "x" } },
        { "control byte in key", { "a\nb", "x" } },
        { "non-ASCII key", { "caf\xc3\xa9", "x" } },
        { "NULL text", { "k", NULL } },
        { "invalid UTF-8 text", { "k", "bad \xff byte" } },
        { "overlong UTF-8 text", { "k", "\xc0\xaf" } },
        { "UTF-16 surrogate in text", { "k", "\xed\xa0\x80" } },
        { "truncated UTF-8 text", { "k", "\xe2\x98" } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sd_status st = png_encode(px, 2, 2, &bad[i].t, 1, &out, &len);
        ok(st == SD_ERR_INVALID && out == NULL && len == 0, "encode refuses %s: %s",
           bad[i].what, sd_last_error());
    }
    ok(png_encode(px, 0, 2, NULL, 0, &out, &len) == SD_ERR_INVALID, "encode refuses width 0");
    ok(png_encode(px, 2, -1, NULL, 0, &out, &len) == SD_ERR_INVALID, "encode refuses height -1");
    ok(png_encode(NULL, 2, 2, NULL, 0, &out, &len) == SD_ERR_INVALID, "encode refuses NULL");
    ok(sd_alloc_live_bytes() == live, "refused encodes leave nothing allocated");
}

/* Every layout png_decode accepts, written by plain libpng, against expected RGB. */
static void test_layouts(void) {
    const int W = 19, H = 13;
    uint8_t *want = malloc((size_t)W * H * 3), *raw = malloc((size_t)W * H * 8), *png;
    size_t len;

    for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) {   /* gray 8 */
        uint8_t v = (uint8_t)(x * 7 + y * 13);
        raw[y * W + x] = v;
        memset(want + (y * W + x) * 3, v, 3);
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_GRAY, 8, 0, raw, W, NULL, 0, NULL, 0);
    decodes_to(png, len, W, H, want, "gray 8-bit");
    free(png);

    size_t rb1 = (W + 7) / 8;                                    /* gray 1 */
    memset(raw, 0, rb1 * H);
    for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) {
        int bit = (x + y) % 3 == 0;
        if (bit) raw[y * rb1 + x / 8] |= (uint8_t)(0x80 >> (x % 8));
        memset(want + (y * W + x) * 3, bit ? 255 : 0, 3);
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_GRAY, 1, 0, raw, rb1, NULL, 0, NULL, 0);
    decodes_to(png, len, W, H, want, "gray 1-bit");
    free(png);

    for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) {   /* gray+alpha 8 */
        uint8_t v = (uint8_t)(x * 3 + y * 31);
        raw[(y * W + x) * 2] = v;
        raw[(y * W + x) * 2 + 1] = (uint8_t)(x * 20);
        memset(want + (y * W + x) * 3, v, 3);
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, raw, W * 2, NULL, 0, NULL,
                        0);
    decodes_to(png, len, W, H, want, "gray+alpha (alpha dropped)");
    free(png);

    uint8_t *img = test_image(W, H);                             /* RGBA 8 */
    for (int i = 0; i < W * H; i++) {
        memcpy(raw + i * 4, img + i * 3, 3);
        raw[i * 4 + 3] = (uint8_t)(i * 17);
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, raw, W * 4, NULL, 0, NULL,
                        0);
    decodes_to(png, len, W, H, img, "RGBA (alpha dropped)");
    free(png);

    for (int i = 0; i < W * H * 3; i++) {                        /* RGB 16 */
        raw[i * 2] = img[i];
        raw[i * 2 + 1] = (uint8_t)(i * 37);
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_RGB, 16, 0, raw, W * 6, NULL, 0, NULL, 0);
    decodes_to(png, len, W, H, img, "RGB 16-bit (stripped to high bytes)");
    free(png);

    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, img, W * 3,
                        NULL, 0, NULL, 0);
    decodes_to(png, len, W, H, img, "RGB interlaced");
    free(png);

    png_color pal[16];                                           /* palette 4-bit + tRNS */
    uint8_t trns[16];
    for (int i = 0; i < 16; i++) {
        pal[i] = (png_color){ (uint8_t)(i * 16), (uint8_t)(255 - i * 9), (uint8_t)(i * i) };
        trns[i] = (uint8_t)(i * 15);
    }
    size_t rb4 = (W + 1) / 2;
    memset(raw, 0, rb4 * H);
    for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) {
        int k = (x * 3 + y) % 16;
        raw[y * rb4 + x / 2] |= (uint8_t)(x % 2 ? k : k << 4);
        uint8_t *p = want + (y * W + x) * 3;
        p[0] = pal[k].red; p[1] = pal[k].green; p[2] = pal[k].blue;
    }
    png = write_png_raw(&len, W, H, PNG_COLOR_TYPE_PALETTE, 4, 0, raw, rb4, pal, 16, trns, 16);
    decodes_to(png, len, W, H, want, "palette 4-bit with tRNS");
    free(png);

    free(img);
    free(raw);
    free(want);
}

static void test_text_chunks(void) {
    uint8_t px[3] = { 9, 8, 7 }, *png, *b, *c;
    size_t len, bl, cl, live = sd_alloc_live_bytes();
    png_encode(px, 1, 1, NULL, 0, &png, &len);
    size_t iend = find_chunk(png, len, "IEND");
    char *v = NULL;

    b = insert_chunk(png, len, iend, "tEXt", "after\0late value", 16, &bl);
    ok(png_text_get(b, bl, "after", &v) == SD_OK && v && strcmp(v, "late value") == 0,
       "tEXt after IDAT is found");
    sd_free(v); v = NULL;
    decodes_to(b, bl, 1, 1, px, "with tEXt after IDAT");
    free(b);

    b = insert_chunk(png, len, iend, "tEXt", "l1\0caf\xe9", 7, &bl);
    ok(png_text_get(b, bl, "l1", &v) == SD_OK && v && strcmp(v, "caf\xc3\xa9") == 0,
       "Latin-1 tEXt is returned as UTF-8");
    sd_free(v); v = NULL;
    free(b);

    b = insert_chunk(png, len, iend, "iTXt", "it\0\0\0en\0It\0\xe2\x98\x95", 14, &bl);
    ok(png_text_get(b, bl, "it", &v) == SD_OK && v && strcmp(v, "\xe2\x98\x95") == 0,
       "iTXt with language tag is read");
    sd_free(v); v = NULL;
    free(b);

    b = insert_chunk(png, len, iend, "zTXt", "z\0\0\x78\x9c\x03\0\0\0\0\x01", 11, &bl);
    ok(png_text_get(b, bl, "z", &v) == SD_ERR_UNSUPPORTED && v == NULL,
       "zTXt for the key is reported unsupported: %s", sd_last_error());
    ok(png_text_get(b, bl, "other", &v) == SD_OK && v == NULL, "zTXt of another key is skipped");
    free(b);

    b = insert_chunk(png, len, iend, "iTXt", "ic\0\x01\0\0\0xx", 9, &bl);
    ok(png_text_get(b, bl, "ic", &v) == SD_ERR_UNSUPPORTED && v == NULL,
       "compressed iTXt is reported unsupported");
    free(b);

    b = insert_chunk(png, len, iend, "iTXt", "bad\0\0\0\0\0\xff", 9, &bl);
    ok(png_text_get(b, bl, "bad", &v) == SD_ERR_FORMAT && v == NULL, "iTXt with bad UTF-8: %s",
       sd_last_error());
    free(b);

    b = insert_chunk(png, len, iend, "tEXt", "nokeyterminator", 15, &bl);
    ok(png_text_get(b, bl, "x", &v) == SD_ERR_FORMAT, "tEXt without a keyword: %s",
       sd_last_error());
    free(b);

    b = insert_chunk(png, len, iend, "tEXt", "dup\0first", 9, &bl);
    c = insert_chunk(b, bl, find_chunk(b, bl, "IEND"), "tEXt", "dup\0second", 10, &cl);
    ok(png_text_get(c, cl, "dup", &v) == SD_OK && v && strcmp(v, "first") == 0,
       "the first of two equal keys wins");
    sd_free(v); v = NULL;
    free(b);
    free(c);

    b = insert_chunk(png, len, iend, "tEXt", "crc\0value", 9, &bl);
    b[bl - 12 - 1] ^= 1;   /* last CRC byte of the inserted chunk */
    ok(png_text_get(b, bl, "crc", &v) == SD_ERR_FORMAT && v == NULL, "text with a bad CRC: %s",
       sd_last_error());
    decodes_to(b, bl, 1, 1, px, "with a bad ancillary CRC (libpng skips the chunk)");
    free(b);

    ok(png_text_get(png, iend, "x", &v) == SD_ERR_FORMAT, "no IEND: %s", sd_last_error());
    ok(png_text_get(png + 1, len - 1, "x", &v) == SD_ERR_FORMAT, "bad signature");
    ok(png_text_get(png, 7, "x", &v) == SD_ERR_FORMAT, "7 bytes");
    sd_free(png);
    ok(sd_alloc_live_bytes() == live, "text tests leave nothing allocated");
}

/* Hostile input: every truncation and a mutation of every byte (CRC fixed up, so the
 * damage reaches libpng's parser and zlib). */
static void test_corrupt(void) {
    const int W = 16, H = 11;
    uint8_t *img = test_image(W, H), *png;
    size_t len, live = sd_alloc_live_bytes();
    const struct png_text t = { "parameters", "seed 42" };
    png_encode(img, W, H, &t, 1, &png, &len);
    uint8_t *b = malloc(len);
    int clean = 1, truncated_ok = 0, runs = 0, decoded = 0;
    char *v;

    for (size_t n = 0; n < len; n++) {
        uint8_t *rgb = NULL;
        int w, h;
        sd_status st = png_decode(png, n, 1 << 20, &rgb, &w, &h);
        clean &= st == SD_ERR_FORMAT && rgb == NULL;
        truncated_ok += st == SD_OK;
        if (st == SD_OK) sd_free(rgb);
        st = png_text_get(png, n, "parameters", &v);
        /* the text precedes IDAT, so late truncations still find it */
        clean &= (st == SD_OK && v && strcmp(v, "seed 42") == 0) || (st == SD_ERR_FORMAT && !v);
        sd_free(v);
        runs++;
    }
    ok(clean && truncated_ok == 0, "every truncation (%zu lengths) fails cleanly", len);

    static const uint8_t set[] = { 0, 0xff, 0x7f, 0x80 };
    clean = 1;
    for (size_t pos = 0; pos < len; pos++) {
        for (int m = 0; m < 2 + (int)sizeof set; m++) {
            memcpy(b, png, len);
            if (m == 0) b[pos] ^= 0x01;
            else if (m == 1) b[pos] ^= 0x40;
            else b[pos] = set[m - 2];
            if (m & 1) fix_crcs(b, len);
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            sd_status st = png_decode(b, len, 1 << 16, &rgb, &w, &h);
            runs++;
            if (st == SD_OK) {
                decoded++;
                clean &= rgb != NULL && w > 0 && h > 0 && (size_t)w * h <= 1 << 16;
                sd_free(rgb);
            } else {
                clean &= (st == SD_ERR_FORMAT || st == SD_ERR_INVALID) && rgb == NULL;
            }
            st = png_text_get(b, len, "parameters", &v);
            clean &= (st == SD_OK) || (!v && (st == SD_ERR_FORMAT || st == SD_ERR_UNSUPPORTED));
            sd_free(v);
        }
    }
    ok(clean, "%d mutated or truncated files: %d decoded, the rest failed cleanly", runs,
       decoded);

    /* A header claiming a huge image with no data behind it. */
    memcpy(b, png, len);
    size_t ihdr = find_chunk(b, len, "IHDR");
    wr32(b + ihdr + 8, 1000000);
    wr32(b + ihdr + 12, 1000000);
    fix_crcs(b, len);
    uint8_t *rgb = NULL;
    int w, h;
    sd_status st = png_decode(b, len, 4096 * 4096, &rgb, &w, &h);
    ok(st == SD_ERR_INVALID && !rgb, "1000000x1000000 header refused by max_pixels: %s",
       sd_last_error());
    wr32(b + ihdr + 8, 2048);
    wr32(b + ihdr + 12, 2048);
    fix_crcs(b, len);
    st = png_decode(b, len, 2048 * 2048, &rgb, &w, &h);
    ok(st == SD_ERR_FORMAT && !rgb, "2048x2048 header within the bound, too little data: %s",
       sd_last_error());
    wr32(b + ihdr + 8, 0);
    fix_crcs(b, len);
    ok(png_decode(b, len, 1 << 20, &rgb, &w, &h) == SD_ERR_FORMAT, "width 0 refused: %s",
       sd_last_error());
    ok(png_decode(png, len, 1 << 20, &rgb, &w, &h) == SD_OK, "the original still decodes");
    sd_free(rgb);
    ok(png_decode(NULL, 0, 1 << 20, &rgb, &w, &h) == SD_ERR_FORMAT, "NULL input refused");
    const char *jpeg = "\xff\xd8\xff\xe0\0\x10JFIF\0";
    ok(png_decode((const uint8_t *)jpeg, 11, 1 << 20, &rgb, &w, &h) == SD_ERR_FORMAT,
       "a JPEG is refused: %s", sd_last_error());

    free(b);
    sd_free(png);
    free(img);
    ok(sd_alloc_live_bytes() == live, "corrupt input leaves nothing allocated");
}

/* A chunk declaring a length near 2^31 in a file of a few hundred bytes: refused by its
 * declared size before anything that large is allocated (libpng as distributions build it
 * allocated the 2 GiB first; found by tests/fuzz/fuzz_image). */
static void test_huge_chunk(void) {
    const int W = 8, H = 8;
    uint8_t *img = test_image(W, H), *png;
    size_t len, live = sd_alloc_live_bytes();
    png_encode(img, W, H, NULL, 0, &png, &len);
    size_t at = find_chunk(png, len, "IDAT");
    const uint8_t text[] = "parameters\0x";
    size_t blen;
    uint8_t *b = insert_chunk(png, len, at, "tEXt", text, sizeof text - 1, &blen);
    wr32(b + at, 0x7ffffff0u);    /* the chunk now claims 2 GiB; the file stays short */
    for (int rgba = 0; rgba < 3; rgba++) {
        uint8_t *px = NULL;
        char *v = NULL;
        int w, h;
        sd_status st = rgba == 2 ? png_text_get(b, blen, "parameters", &v)
                     : rgba ? png_decode_rgba(b, blen, 1 << 20, &px, &w, &h) : png_decode(b, blen, 1 << 20, &px, &w, &h);
        /* png_text_get walks the chunks itself and checks each length against the data */
        ok(st == SD_ERR_FORMAT && !px && !v && strstr(sd_last_error(), rgba == 2 ? "runs past the data" : "too large"),
           "%s: a 2 GiB chunk in a %zu-byte file is refused by its size: %s",
           rgba == 2 ? "png_text_get" : rgba ? "png_decode_rgba" : "png_decode", blen, sd_last_error());
    }
    free(b);
    sd_free(png);
    free(img);
    ok(sd_alloc_live_bytes() == live, "nothing left allocated");
}

/* Fail each allocation (libpng's own included) of encode and decode in turn. */
static void test_faults(void) {
    const int W = 24, H = 9;
    uint8_t *img = test_image(W, H), *png = NULL;
    size_t len = 0, live = sd_alloc_live_bytes();
    const struct png_text t = { "parameters", PARAMS };
    int n, clean = 1;
    for (n = 1; n < 200; n++) {
        sd_fault_arm_alloc(n);
        sd_status st = png_encode(img, W, H, &t, 1, &png, &len);
        sd_fault_arm_alloc(0);
        if (st == SD_OK) break;
        clean &= st == SD_ERR_NOMEM && png == NULL && sd_alloc_live_bytes() == live;
    }
    ok(clean && n < 200, "encode: each of %d allocations failing is clean", n - 1);
    if (!png) { free(img); return; }

    clean = 1;
    int good = 0;
    for (n = 1; n < 200; n++) {
        uint8_t *rgb = NULL;
        int w, h;
        size_t before = sd_alloc_live_bytes();
        sd_fault_arm_alloc(n);
        sd_status st = png_decode(png, len, 1 << 20, &rgb, &w, &h);
        sd_fault_arm_alloc(0);
        if (st == SD_OK) {
            good++;
            clean &= memcmp(rgb, img, (size_t)W * H * 3) == 0;
            sd_free(rgb);
        } else {
            clean &= st == SD_ERR_NOMEM && rgb == NULL;
        }
        clean &= sd_alloc_live_bytes() == before;
    }
    ok(clean && good > 0, "decode: allocation failures give NOMEM or a correct image (%d ok)",
       good);
    char *v = NULL;
    ok(png_text_get(png, len, "parameters", &v) == SD_OK && v, "text still readable");
    sd_free(v);
    sd_free(png);
    free(img);
    ok(sd_alloc_live_bytes() == live, "fault injection leaves nothing allocated");
}

static void test_write_file(void) {
    char dir[] = "/tmp/sdxld-png-XXXXXX", path[256], bad[256];
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    snprintf(path, sizeof path, "%s/out.png", dir);
    snprintf(bad, sizeof bad, "%s/missing/out.png", dir);
    const int W = 8, H = 5;
    uint8_t *img = test_image(W, H);
    const struct png_text t = { "parameters", PARAMS };
    size_t live = sd_alloc_live_bytes();
    ok(png_write_file(path, img, W, H, &t, 1) == SD_OK, "png_write_file");
    ok(png_write_file(path, img, W, H, &t, 1) == SD_OK, "png_write_file over an existing file");
    FILE *fp = fopen(path, "rb");
    uint8_t buf[8192];
    size_t len = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    decodes_to(buf, len, W, H, img, "file written by png_write_file");
    char *v = NULL;
    ok(png_text_get(buf, len, "parameters", &v) == SD_OK && v && strcmp(v, PARAMS) == 0,
       "file carries the parameters text");
    sd_free(v);
    ok(png_write_file(bad, img, W, H, &t, 1) == SD_ERR_IO && strstr(sd_last_error(), "missing"),
       "unwritable path: %s", sd_last_error());
    ok(png_write_file(path, img, 0, H, NULL, 0) == SD_ERR_INVALID &&
           strstr(sd_last_error(), path), "invalid image names the path: %s", sd_last_error());
    ok(sd_alloc_live_bytes() == live, "png_write_file leaves nothing allocated");

    int others = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        others += strcmp(e->d_name, "out.png") != 0;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
    ok(others == 0, "no temporary files left behind");
    free(img);
}

int main(void) {
    test_roundtrip();
    test_bad_encode();
    test_layouts();
    test_text_chunks();
    test_corrupt();
    test_huge_chunk();
    test_faults();
    test_write_file();
    return done_testing();
}
