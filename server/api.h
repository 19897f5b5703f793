/* api.h — the endpoint handlers (routes.c holds the table that maps paths to them). */
#ifndef SD_SERVER_API_H
#define SD_SERVER_API_H

#include "http.h"

/* api_generate.c */
enum MHD_Result api_generate(struct req *r);            /* POST /v1/generate */
enum MHD_Result api_images_generations(struct req *r);  /* POST /v1/images/generations */
/* Base64 (RFC 4648, padded) into a fresh malloc'ed, NUL-terminated string. */
char *b64_encode(const uint8_t *p, size_t n, size_t *out_len);

/* webui.c */
enum MHD_Result api_webui(struct req *r);               /* GET / */

#endif
