/* cli_gen.c — `sdxld generate`: images from prompts (image i of a run uses seed + i, each
 * PNG carries its A1111 parameters text); with --noise it replays the golden run's noises
 * and --out-tensor dumps every intermediate tensor for the conformance checks.  (`sdxld
 * init`, fresh weights of any config, is cli_init.c.) */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "advice.h"
#include "cli.h"
#include "cli_util.h"

static int parse_ints(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *s ? -1 : n;
}

static uint64_t random_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
    return x & 0x7fffffffffffffffull;
}

/* out.png -> out-3.png */
static void numbered(char *buf, size_t n, const char *path, int i) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    snprintf(buf, n, "%.*s-%d%s", (int)(dot - path), path, i, dot);
}

struct gen_args {
    struct engine_config ec;
    const char *prompts_path, *prompt, *noise_path, *out_tensor, *outs[64];
    int nout, width, height, steps, nts, ts[ENGINE_MAX_STEPS], tid[6], have_seed, n;
    uint64_t seed;
};

/* -1: go on; else the exit code (--help, a bad flag). */
static int parse_gen_args(int argc, char **argv, struct gen_args *g) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help")) {
            printf("sdxld generate [--model DIR|FILE [--config DIR] [--tokenizers DIR]] [--unet FILE] [--lora FILE [--lora-scale X]]\n"
                   "               (--prompts P.json | --prompt TEXT [-n N])\n"
                   "               [--width W] [--height H] [--seed S] [--steps N] [--timesteps 999,749,...]\n"
                   "               [--time-ids OH,OW,CT,CL,TH,TW] [--noise IN.safetensors]\n"
                   "               [--out-tensor OUT.safetensors] [-o image.png ...] " CLI_ENGINE_USAGE "\n"
                   "image i uses seed+i; with one -o and several images, files are numbered name-i.png;\n"
                   "without --model the built-in model (%s) is used\n", cli_default_model());
            return 0;
        }
        if (i + 1 >= argc) { fprintf(stderr, "sdxld generate: option %s needs a value\n", a); return 2; }
        v = argv[++i];
        int eo = cli_engine_opt(&g->ec, a, v);   /* -1: a bad value, reported */
        if (eo < 0) return 2;
        if (eo) continue;
        else if (!strcmp(a, "--prompts")) g->prompts_path = v;
        else if (!strcmp(a, "--prompt")) g->prompt = v;
        else if (!strcmp(a, "-n")) {
            g->n = atoi(v);
            if (g->n < 1 || g->n > 64) { fprintf(stderr, "sdxld generate: -n must be 1..64\n"); return 2; }
        }
        else if (!strcmp(a, "--width")) g->width = atoi(v);
        else if (!strcmp(a, "--height")) g->height = atoi(v);
        else if (!strcmp(a, "--steps")) g->steps = atoi(v);
        else if (!strcmp(a, "--seed")) { g->seed = strtoull(v, NULL, 10); g->have_seed = 1; }
        else if (!strcmp(a, "--noise")) g->noise_path = v;
        else if (!strcmp(a, "--out-tensor")) g->out_tensor = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (g->nout < 64) g->outs[g->nout++] = v; }
        else if (!strcmp(a, "--timesteps")) {
            char why[160];
            if ((g->nts = timesteps_parse(v, g->ts, ENGINE_MAX_STEPS, 0, "--timesteps", why, sizeof why)) < 1) {
                fprintf(stderr, "sdxld generate: %s\n", why);
                return 2;
            }
        } else if (!strcmp(a, "--time-ids")) {
            if (parse_ints(v, g->tid, 6) != 6) { fprintf(stderr, "sdxld generate: --time-ids needs 6 integers\n"); return 2; }
        } else { fprintf(stderr, "sdxld generate: unknown option '%s'\n", a); return 2; }
    }
    if (!g->ec.model_dir) g->ec.model_dir = cli_default_model();
    if (!g->prompts_path && !g->prompt) {
        fprintf(stderr, "sdxld generate: need --prompts or --prompt (see --help)\n");
        return 2;
    }
    if (!g->nout && !g->out_tensor) { fprintf(stderr, "sdxld generate: nothing to write: give -o and/or --out-tensor\n"); return 2; }
    if (g->n > 1 && !g->prompt) { fprintf(stderr, "sdxld generate: -n goes with --prompt (n images of one prompt)\n"); return 2; }
    return -1;
}

/* The golden run's noises from --noise into tr (the first B prompts: *n = B). */
static sd_status load_noise(const char *path, struct st_file *nf, struct gen_trace *tr, const struct gen_params *p,
                            int C, int h, int w, int *n) {
    SD_TRY(st_open(nf, path));
    int64_t s[4];
    if (!(tr->init_noise = cli_tensor(nf, "sample_init", 4, s, 1))) return SD_ERR_NOTFOUND;
    if (s[1] != C || s[2] != h || s[3] != w || s[0] < 1)
        return sd_fail(SD_ERR_SHAPE, "%s: sample_init must be [B,%d,%d,%d] for %dx%d", path, C, h, w, p->width, p->height);
    if (s[0] > *n) return sd_fail(SD_ERR_SHAPE, "%s: %d noises but only %d prompts", path, (int)s[0], *n);
    *n = (int)s[0];
    for (int k = 0; k + 1 < p->nsteps; k++) {
        char name[32];
        int64_t s2[4];
        snprintf(name, sizeof name, "sample_noise_%d", k);
        if (!(tr->step_noise[k] = cli_tensor(nf, name, 4, s2, 1))) return SD_ERR_NOTFOUND;
        if (memcmp(s, s2, sizeof s)) return sd_fail(SD_ERR_SHAPE, "%s: %s shape differs from sample_init", path, name);
    }
    return SD_OK;
}

/* Every intermediate of the run into --out-tensor. */
static sd_status write_trace(const char *path, const struct gen_trace *tr, const struct gen_params *p, int n, int C,
                             int h, int w) {
    struct st_writer wr;
    st_writer_init(&wr);
    int64_t sl[4] = { n, C, h, w }, si[4] = { n, 3, p->height, p->width };
    sd_status st = SD_OK;
    char name[48];
    for (int k = 0; k < p->nsteps && !st; k++) {
        snprintf(name, sizeof name, "sample_eps_%d", k);
        st = st_writer_add(&wr, name, DT_F32, 4, sl, tr->eps[k]);
        snprintf(name, sizeof name, "sample_denoised_%d", k);
        if (!st) st = st_writer_add(&wr, name, DT_F32, 4, sl, tr->denoised[k]);
    }
    if (!st) st = st_writer_add(&wr, "sample_final_latent", DT_F32, 4, sl, tr->denoised[p->nsteps - 1]);
    if (!st) st = st_writer_add(&wr, "sample_image", DT_F32, 4, si, tr->image);
    if (!st) st = st_writer_write(&wr, path);
    st_writer_free(&wr);
    return st;
}

/* The PNGs: one per -o, or numbered name-i.png from one -o. */
static int write_images(const struct gen_args *g, const struct gen_item *items, int n, const uint8_t *rgb,
                        const struct gen_params *p, const char *model) {
    for (int i = 0; i < n && g->nout; i++) {
        char path[4096], params[8192];
        if (g->nout == n) snprintf(path, sizeof path, "%s", g->outs[i]);
        else if (n == 1) snprintf(path, sizeof path, "%s", g->outs[0]);
        else numbered(path, sizeof path, g->outs[0], i);
        engine_parameters_text(params, sizeof params, items[i].prompt, items[i].seed, p, model,
                               g->noise_path ? "Noise: file" : NULL);
        struct png_text txt = { "parameters", params };
        if (png_write_file(path, rgb + (size_t)i * p->width * p->height * 3, p->width, p->height, &txt, 1))
            return cli_fail(path);
        printf("%s seed=%" PRIu64 "%s\n", path, items[i].seed, items[i].truncated ? " (prompt truncated)" : "");
    }
    return 0;
}

static char **read_prompts(const struct gen_args *g, int *n) {
    char **prompts = NULL;
    if (g->prompts_path) return cli_read_prompts(g->prompts_path, &prompts, n) ? NULL : prompts;
    int k = g->n > 1 ? g->n : 1;   /* -n: k images of one prompt, seeds seed .. seed + k - 1 */
    prompts = sd_calloc((size_t)k, sizeof(char *));
    int bad = !prompts;
    for (int i = 0; !bad && i < k; i++) bad = !(prompts[i] = sd_strdup(g->prompt));
    *n = k;
    if (bad) { cli_free_prompts(prompts, k); return NULL; }
    return prompts;
}

int cli_generate(int argc, char **argv) {
    struct gen_args g = { .steps = 4 };
    int rc = parse_gen_args(argc, argv, &g);
    if (rc >= 0) return rc;
    int n = 0, nprompts;
    char **prompts = read_prompts(&g, &n);
    if (!prompts) return cli_fail("prompts");
    nprompts = n;
    rc = 1;
    struct engine *e = NULL;
    struct st_file nf = { 0 };
    struct gen_trace tr = { 0 };
    struct gen_item *items = NULL;
    uint8_t *rgb = NULL;
    if (cli_model_defaults(&g.ec) || engine_load(&e, &g.ec)) { cli_fail("loading model"); goto out; }
    const struct engine_info *info = engine_info(e);
    struct gen_params p = { .width = g.width ? g.width : info->default_width,
                            .height = g.height ? g.height : info->default_height, .nsteps = g.nts ? g.nts : g.steps };
    if (g.nts) memcpy(p.timesteps, g.ts, sizeof(int) * g.nts);
    else if (p.nsteps >= 1 && p.nsteps <= ENGINE_MAX_STEPS) engine_default_timesteps(p.nsteps, p.timesteps);
    memcpy(p.time_ids, g.tid, sizeof g.tid);
    if (engine_check_params(e, &p)) { cli_fail("parameters"); goto out; }
    char warn[256];
    if (advice_size(p.width, p.height, info->default_width, info->default_height, warn, sizeof warn)) LOG_W("%s", warn);
    int C = info->latent_channels, h = p.height / info->vae_scale, w = p.width / info->vae_scale;
    if (g.noise_path && load_noise(g.noise_path, &nf, &tr, &p, C, h, w, &n)) { cli_fail("noise"); goto out; }
    size_t per = (size_t)n * C * h * w;
    for (int k = 0; g.out_tensor && k < p.nsteps; k++)
        if (!(tr.eps[k] = sd_malloc(per * 4)) || !(tr.denoised[k] = sd_malloc(per * 4))) { cli_fail("generate"); goto out; }
    if (g.out_tensor && !(tr.image = sd_malloc((size_t)n * 3 * p.width * p.height * 4))) { cli_fail("generate"); goto out; }
    uint64_t seed = g.have_seed ? g.seed : random_seed();
    items = sd_calloc(n, sizeof *items);
    rgb = sd_malloc((size_t)n * p.width * p.height * 3);
    if (!items || !rgb) { cli_fail("generate"); goto out; }
    for (int i = 0; i < n; i++) { items[i].prompt = prompts[i]; items[i].seed = engine_image_seed(seed, i); }
    struct gen_timings tm;
    if (engine_generate(e, &p, items, n, rgb, &tm, NULL, &tr)) { cli_fail("generate"); goto out; }
    fprintf(stderr, "sdxld: %d image(s) %dx%d, %d steps: text %.1f ms, unet %.1f ms, vae %.1f ms\n", n,
            p.width, p.height, p.nsteps, tm.text_ms, tm.unet_ms, tm.vae_ms);
    if (write_images(&g, items, n, rgb, &p, info->model_name)) goto out;
    if (g.out_tensor && write_trace(g.out_tensor, &tr, &p, n, C, h, w)) { cli_fail(g.out_tensor); goto out; }
    rc = 0;
out:
    for (int k = 0; k < ENGINE_MAX_STEPS; k++) {
        sd_free(tr.eps[k]);
        sd_free(tr.denoised[k]);
        sd_free((void *)tr.step_noise[k]);
    }
    sd_free((void *)tr.init_noise);
    sd_free(tr.image);
    sd_free(items);
    sd_free(rgb);
    if (nf.map) st_close(&nf);
    cli_free_prompts(prompts, nprompts);
    engine_free(e);
    return rc;
}
