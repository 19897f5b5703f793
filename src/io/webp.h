/* webp.h — lossy WebP encoding of 8-bit RGB images into memory (libwebp).
 *
 * The daemon's `output_format: "webp"` (docs/daemon.md).  Quality is libwebp's 0..100
 * scale (100 = the largest, most faithful lossy file).  No metadata is written: a WebP
 * carries no "parameters" text (the PNG and JPEG outputs do).  Deterministic: the same
 * pixels and quality give the same bytes. */
#ifndef SD_WEBP_H
#define SD_WEBP_H

#include "../core/core.h"

#define WEBP_MAX_SIDE 16383   /* the format's limit on width and height */

/* rgb: H*W*3 bytes, row-major.  *out is sd_malloc'ed; the caller sd_free's it.
 * SD_ERR_INVALID for a bad size or quality, SD_ERR_NOMEM, SD_ERR_FORMAT when libwebp
 * fails (its error code in sd_last_error). */
sd_status webp_encode(const uint8_t *rgb, int width, int height, int quality,
                      uint8_t **out, size_t *out_len);

/* Decode a WebP (lossy or lossless, still) into RGBA (sd_malloc'ed, H*W*4; alpha 255 where
 * the file has none).  SD_ERR_FORMAT for anything libwebp does not take; an image of more
 * than max_pixels SD_ERR_INVALID (before decoding). */
sd_status webp_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                           uint8_t **rgba, int *width, int *height);

#endif
