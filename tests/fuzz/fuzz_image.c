/* fuzz_image.c — libFuzzer harness: any bytes as an uploaded image (init_image, mask,
 * /v1/images/edits, A1111's init_images) through the three decoders the daemon picks from
 * by signature (src/io/png.c, jpeg.c, webp.c: error longjmps, pixel bounds, alpha), and the
 * PNG text reader A1111 clients' infotext goes through.  A decoded image larger than the
 * pixel bound, or with a zero side, aborts. */
#include <stdint.h>
#include <stdlib.h>

#include "io/jpeg.h"
#include "io/png.h"
#include "io/webp.h"

#define MAX_PIXELS (1u << 16)

typedef sd_status (*decode_fn)(const uint8_t *, size_t, size_t, uint8_t **, int *, int *);

static void check(decode_fn f, const uint8_t *data, size_t size) {
    uint8_t *px = NULL;
    int w = 0, h = 0;
    if (f(data, size, MAX_PIXELS, &px, &w, &h) == SD_OK) {
        if (!px || w <= 0 || h <= 0 || (size_t)w * (size_t)h > MAX_PIXELS) abort();
        volatile uint8_t sink = px[(size_t)w * (size_t)h * 3 - 1];   /* the last pixel is there */
        (void)sink;
    }
    sd_free(px);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(png_decode, data, size);
    check(png_decode_rgba, data, size);
    check(jpeg_decode_rgba, data, size);
    check(webp_decode_rgba, data, size);
    char *text = NULL;
    if (png_text_get(data, size, "parameters", &text) == SD_OK) sd_free(text);
    sd_clear_error();
    return 0;
}
