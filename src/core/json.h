/* json.h — small helpers over jansson shared by the layers that read JSON from users. */
#ifndef SD_JSON_H
#define SD_JSON_H

#include <jansson.h>

/* What a value is, for error messages: "an integer", "a string", "an array", ... */
const char *sd_json_kind(const json_t *v);

#endif
