/* jpeg.h — baseline JPEG encoding of 8-bit RGB images into memory, and decoding
 * (libjpeg-turbo).
 *
 * The daemon's `output_format: "jpeg"` (docs/daemon.md).  Quality is libjpeg's 1..100
 * scale (0 is taken as 1); at 90 and above chroma is not subsampled (4:4:4), below it is
 * 4:2:0 as usual.  An optional comment (the A1111 "parameters" text) goes into a COM
 * marker, cut to the marker's 65533-byte limit.  The output is deterministic: the same
 * pixels, quality and comment give the same bytes. */
#ifndef SD_JPEG_H
#define SD_JPEG_H

#include "../core/core.h"

/* rgb: H*W*3 bytes, row-major.  *out is sd_malloc'ed; the caller sd_free's it.
 * SD_ERR_INVALID for a bad size or quality, SD_ERR_NOMEM, SD_ERR_FORMAT for an error
 * libjpeg reports (its message in sd_last_error). */
sd_status jpeg_encode(const uint8_t *rgb, int width, int height, int quality,
                      const char *comment, uint8_t **out, size_t *out_len);

/* Decode a baseline or progressive JPEG (any color space libjpeg converts to RGB) into
 * RGBA (sd_malloc'ed, H*W*4, alpha 255).  Hostile input gets SD_ERR_FORMAT; an image of
 * more than max_pixels SD_ERR_INVALID (before the allocation). */
sd_status jpeg_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                           uint8_t **rgba, int *width, int *height);

#endif
