/* png.h — 8-bit RGB PNG encoding with text chunks (libpng).
 *
 * Images carry an A1111-style tEXt chunk "parameters" (prompt, seed, steps, size,
 * model) so any image can be regenerated.  Encoding goes to memory (the daemon sends
 * it) or to a file (written atomically: temp + rename). */
#ifndef SD_PNG_H
#define SD_PNG_H

#include "../core/core.h"

struct png_text { const char *key; const char *text; };

/* rgb: H*W*3 bytes, row-major.  *out is sd_malloc'ed; the caller sd_free's it. */
sd_status png_encode(const uint8_t *rgb, int width, int height,
                     const struct png_text *texts, int ntexts,
                     uint8_t **out, size_t *out_len);
sd_status png_write_file(const char *path, const uint8_t *rgb, int width, int height,
                         const struct png_text *texts, int ntexts);
/* Decode an 8-bit RGB or RGBA (alpha dropped), gray, or palette PNG into rgb (sd_malloc'ed,
 * H*W*3; the caller sd_free's it).  Hostile input gets SD_ERR_FORMAT.  max_pixels bounds the allocation. */
sd_status png_decode(const uint8_t *data, size_t len, size_t max_pixels,
                     uint8_t **rgb, int *width, int *height);
/* The same into RGBA, H*W*4 (alpha kept; 255 where the file has none). */
sd_status png_decode_rgba(const uint8_t *data, size_t len, size_t max_pixels,
                          uint8_t **rgba, int *width, int *height);
/* Read the text value of key (tEXt or uncompressed iTXt, as UTF-8) from a PNG in memory
 * into a fresh sd_malloc'ed string (NULL if absent).  (Not png_get_text: libpng owns
 * that name.) */
sd_status png_text_get(const uint8_t *data, size_t len, const char *key, char **value);

#endif
