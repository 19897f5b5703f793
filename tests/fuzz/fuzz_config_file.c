/* fuzz_config_file.c — libFuzzer harness: any bytes as the daemon's config file
 * (server/config.c: the one option table; `name value` lines, comments, quoting), then the
 * whole-configuration check, as `sdxld serve --config FILE` runs them. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/sdxld-fuzz-conf-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct sdxld_config c;
    char err[512];
    config_defaults(&c);
    if (!config_load_file(&c, path, err, sizeof err)) config_check(&c, err, sizeof err);
    return 0;
}
