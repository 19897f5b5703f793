/* webp.c — WebP encoding through libwebp's advanced API (see webp.h).
 *
 * libwebp writes into its own WebPMemoryWriter (WebPMalloc); the bytes are copied into
 * an sd_malloc'ed buffer so callers free every encoder's output the same way. */
#include <string.h>

#include <webp/decode.h>
#include <webp/encode.h>

#include "webp.h"

static const char *webp_error_text(WebPEncodingError e) {
    switch (e) {
    case VP8_ENC_ERROR_OUT_OF_MEMORY: case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_ENC_ERROR_BAD_DIMENSION: return "bad dimension";
    case VP8_ENC_ERROR_PARTITION0_OVERFLOW: case VP8_ENC_ERROR_PARTITION_OVERFLOW:
        return "partition overflow";
    case VP8_ENC_ERROR_FILE_TOO_BIG: return "file too big";
    default: return "encoder error";
    }
}

sd_status webp_encode(const uint8_t *rgb, int width, int height, int quality,
                      uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!rgb || width <= 0 || height <= 0 || width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE)
        return sd_fail(SD_ERR_INVALID, "webp: encode: invalid image %dx%d", width, height);
    if (quality < 0 || quality > 100)
        return sd_fail(SD_ERR_INVALID, "webp: encode: quality %d is not in 0..100", quality);
    WebPConfig cfg;
    WebPPicture pic;
    WebPMemoryWriter wr;
    if (!WebPConfigPreset(&cfg, WEBP_PRESET_DEFAULT, (float)quality) || !WebPPictureInit(&pic))
        return sd_fail(SD_ERR_FORMAT, "webp: encode: libwebp version mismatch");
    cfg.method = 4;   /* libwebp's default speed/size trade-off, written down */
    pic.width = width;
    pic.height = height;
    WebPMemoryWriterInit(&wr);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &wr;
    sd_status st = SD_OK;
    if (!WebPPictureImportRGB(&pic, rgb, width * 3))
        st = sd_fail(SD_ERR_NOMEM, "webp: encode: out of memory importing the pixels");
    else if (!WebPEncode(&cfg, &pic))
        st = sd_fail(pic.error_code == VP8_ENC_ERROR_OUT_OF_MEMORY ? SD_ERR_NOMEM : SD_ERR_FORMAT,
                     "webp: encode: %s", webp_error_text(pic.error_code));
    else if (!(*out = sd_malloc(wr.size ? wr.size : 1)))
        st = SD_ERR_NOMEM;
    if (st == SD_OK) {
        memcpy(*out, wr.mem, wr.size);
        *out_len = wr.size;
    }
    WebPPictureFree(&pic);
    WebPMemoryWriterClear(&wr);
    return st;
}

sd_status webp_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                           uint8_t **rgba, int *width, int *height) {
    *rgba = NULL;
    *width = *height = 0;
    int w, h;
    if (!data || !WebPGetInfo(data, len, &w, &h))
        return sd_fail(SD_ERR_FORMAT, "webp: not a WebP image (or a damaged one)");
    if ((uint64_t)w * (uint64_t)h > max_pixels)
        return sd_fail(SD_ERR_INVALID, "webp: image %dx%d exceeds the limit of %zu pixels", w, h, max_pixels);
    uint8_t *p = sd_malloc((size_t)w * h * 4);
    if (!p) return SD_ERR_NOMEM;
    if (!WebPDecodeRGBAInto(data, len, p, (size_t)w * h * 4, w * 4)) {
        sd_free(p);
        return sd_fail(SD_ERR_FORMAT, "webp: decode: the image data is damaged or unsupported");
    }
    *rgba = p;
    *width = w;
    *height = h;
    return SD_OK;
}
