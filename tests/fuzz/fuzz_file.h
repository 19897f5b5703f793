/* fuzz_file.h — the harnesses whose code under test reads a path: the input bytes as this
 * process's scratch file (/tmp/sdxld-fuzz-TAG-PID), its path returned (NULL on failure). */
#ifndef SD_FUZZ_FILE_H
#define SD_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static inline const char *fuzz_file(const char *tag, const uint8_t *data, size_t size) {
    static char path[96];
    snprintf(path, sizeof path, "/tmp/sdxld-fuzz-%s-%d", tag, (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    size_t n = fwrite(data, 1, size, f);
    return fclose(f) == 0 && n == size ? path : NULL;
}

#endif
