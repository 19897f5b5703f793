/* fuzz_args.c — libFuzzer harness: any bytes as a command line, split into arguments at NUL
 * and newline bytes, through `sdxld serve`'s option parsing (serve_parse_args: modes, a
 * --config file, the --flags of the one option table in server/config.c, the whole-
 * configuration check) and its --check-config output (config_to_json), and through the
 * engine options every model-loading subcommand takes (cli_engine_opt).  Nothing may
 * crash, leak or exit the process; a --config path the input names is read (stdin is
 * /dev/null here, so no path can block). */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_util.h"
#include "config.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0 && fd != 0) {
            dup2(fd, 0);
            close(fd);
        }
        ready = 1;
    }
    char *buf = malloc(size + 1), *argv[MAX_ARGS + 2];
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    int argc = 0;
    argv[argc++] = "serve";
    for (char *p = buf; argc <= MAX_ARGS && p <= buf + size;) {
        size_t n = strcspn(p, "\n");
        p[n] = 0;
        argv[argc++] = p;
        p += n + 1;
    }
    argv[argc] = NULL;

    struct sdxld_config *cfg = malloc(sizeof *cfg);
    struct serve_opts o;
    if (cfg && serve_parse_args(argc, argv, cfg, &o) < 0) json_decref(config_to_json(cfg));
    free(cfg);

    struct engine_config ec = { 0 };
    for (int i = 1; i + 1 < argc; i++)
        if (cli_engine_opt(&ec, argv[i], argv[i + 1])) i++;
    free(buf);
    return 0;
}
