/* fuzz_config_file.c — libFuzzer harness: any bytes as the daemon's config file
 * (server/config.c: the one option table; `name value` lines, comments, quoting), then the
 * whole-configuration check, as `sdxld serve --config FILE` runs them. */
#include <stdint.h>

#include "config.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("conf", data, size);
    if (!path) return 0;
    struct sdxld_config c;
    char err[512];
    config_defaults(&c);
    if (!config_load_file(&c, path, err, sizeof err)) config_check(&c, err, sizeof err);
    return 0;
}
