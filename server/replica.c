/* replica.c — replica names and the replica part of job ids (contracts in replica.h). */
#include "replica.h"

#include <stdio.h>
#include <string.h>

static int name_char(char c, int edge) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!edge && c == '-');
}

/* The one rule for a name, on the first n bytes of s. */
static int name_valid(const char *s, size_t n) {
    if (n < 1 || n > REPLICA_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i], i == 0 || i == n - 1)) return 0;
    return 1;
}

int replica_name_check(const char *name, char *err, size_t errlen) {
    if (!name[0] || name_valid(name, strlen(name))) return 0;
    snprintf(err, errlen, "replica: '%.64s' is not a replica name: 1 to " REPLICA_NAME_MAX_TEXT
             " characters of a-z, 0-9 and '-', starting and ending with a letter or digit", name);
    return -1;
}

int replica_of_id(const char *id, char *out, size_t outlen) {
    const char *dash = strrchr(id, '-');
    if (!dash || !name_valid(id, (size_t)(dash - id)) || (size_t)(dash - id) >= outlen) return 0;
    memcpy(out, id, (size_t)(dash - id));
    out[dash - id] = 0;
    return 1;
}
