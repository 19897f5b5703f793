/* cli_init.c — `sdxld init`: write a diffusers model folder with freshly initialised
 * weights for any SDXL-shaped config (benchmarks at SDXL size without downloads; the
 * starting point for training from scratch).  Each part is built, initialised, saved and
 * freed in turn, so peak memory is the largest part, not the whole model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "engine.h"
#include "cli_util.h"

/* OUT/sub and the folders above it. */
static sd_status mkdir_p(const char *dir, const char *sub) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    return sd_mkdir_p(path, 0);
}


/* Config for part `sub`: the explicit file, else FROM/sub/config.json. */
static const char *pick(const char *explicit_path, const char *from, const char *sub, const char *file, char *buf, size_t n) {
    if (explicit_path) return explicit_path;
    if (!from) return NULL;
    snprintf(buf, n, "%s/%s/%s", from, sub, file);
    return buf;
}

static sd_status init_part(const char *out, const char *sub, const char *cfg_path,
                           uint64_t seed, sd_dtype dt) {
    char dst[4096], wpath[4096];
    SD_TRY(mkdir_p(out, sub));
    snprintf(dst, sizeof dst, "%s/%s/config.json", out, sub);
    double t0 = sd_now_ms();
    if (!strcmp(sub, "unet") || !strcmp(sub, "vae"))
        snprintf(wpath, sizeof wpath, "%s/%s/diffusion_pytorch_model.safetensors", out, sub);
    else
        snprintf(wpath, sizeof wpath, "%s/%s/model.safetensors", out, sub);
    sd_status st = engine_init_component(sub, cfg_path, wpath, seed, dt);
    if (!st) st = sd_copy_file(cfg_path, dst, 64u << 20);
    if (!st) LOG_I("wrote %s in %.1f s", wpath, (sd_now_ms() - t0) / 1e3);
    return st;
}

int cli_init(int argc, char **argv) {
    const char *out = NULL, *from = NULL, *tok_from = NULL, *cfg[4] = { 0 };
    static const char *const parts[4] = { "unet", "vae", "text_encoder", "text_encoder_2" };
    uint64_t seed = 0;
    sd_dtype dt = DT_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld init --out DIR [--from MODEL_DIR] [--config UNET.json] [--vae-config VAE.json]\n"
                   "           [--text-encoder-config TE1.json] [--text-encoder-2-config TE2.json]\n"
                   "           [--tokenizers-from MODEL_DIR] [--seed N] [--dtype F16|BF16|F32]\n"
                   "Writes a diffusers folder with fresh weights.  Configs default to MODEL_DIR's; the\n"
                   "tokenizers and scheduler config are copied from MODEL_DIR (e.g. conf/models/sdxl-base\n"
                   "with --from tests/data/tiny-sdxl-a for the tokenizers).  Parts without a config are skipped.\n");
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--from")) from = v;
        else if (!strcmp(a, "--tokenizers-from")) tok_from = v;
        else if (!strcmp(a, "--config")) cfg[0] = v;
        else if (!strcmp(a, "--vae-config")) cfg[1] = v;
        else if (!strcmp(a, "--text-encoder-config")) cfg[2] = v;
        else if (!strcmp(a, "--text-encoder-2-config")) cfg[3] = v;
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dtype")) {
            if (sd_dtype_parse(v, &dt) || dt == DT_I64) { fprintf(stderr, "sdxld init: --dtype F16, BF16 or F32\n"); return 2; }
        } else { fprintf(stderr, "sdxld init: unknown option '%s'\n", a); return 2; }
    }
    if (!out || (!from && !cfg[0])) { fprintf(stderr, "sdxld init: need --out and --config or --from\n"); return 2; }
    if (sd_mkdir_p(out, 0)) { fprintf(stderr, "sdxld init: %s\n", sd_last_error()); return 1; }
    int rc = 0;
    char buf[4096];
    for (int i = 0; i < 4 && !rc; i++) {
        const char *c = pick(cfg[i], from, parts[i], "config.json", buf, sizeof buf);
        struct stat sb;
        if (!c || stat(c, &sb)) { if (cfg[i]) { fprintf(stderr, "sdxld init: %s: missing\n", c); rc = 1; } continue; }
        if (init_part(out, parts[i], c, seed + (uint64_t)i * 1000003u, dt)) rc = cli_fail(parts[i]);
    }
    /* tokenizers, scheduler and index copied verbatim from --from */
    static const char *const copies[][2] = {
        { "tokenizer", "vocab.json" }, { "tokenizer", "merges.txt" }, { "tokenizer", "special_tokens_map.json" },
        { "tokenizer", "tokenizer_config.json" }, { "tokenizer_2", "vocab.json" }, { "tokenizer_2", "merges.txt" },
        { "tokenizer_2", "special_tokens_map.json" }, { "tokenizer_2", "tokenizer_config.json" },
        { "scheduler", "scheduler_config.json" }, { ".", "model_index.json" },
    };
    if (!tok_from) tok_from = from;
    for (size_t i = 0; from && !rc && i < sizeof copies / sizeof copies[0]; i++) {
        char src[4096], dst[4096];
        struct stat sb;
        snprintf(src, sizeof src, "%s/%s/%s", !strncmp(copies[i][0], "tokenizer", 9) ? tok_from : from,
                 copies[i][0], copies[i][1]);
        if (stat(src, &sb)) continue;
        snprintf(dst, sizeof dst, "%s/%s/%s", out, copies[i][0], copies[i][1]);
        if (mkdir_p(out, copies[i][0]) || sd_copy_file(src, dst, 64u << 20)) rc = cli_fail(dst);
    }
    if (!rc) printf("%s\n", out);
    return rc;
}
