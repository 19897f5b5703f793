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

int cli_generate(int argc, char **argv) {
    struct engine_config ec = { 0 };
    const char *prompts_path = NULL, *prompt = NULL, *noise_path = NULL, *out_tensor = NULL, *outs[64];
    int nout = 0, width = 0, height = 0, steps = 4, nts = 0, ts[ENGINE_MAX_STEPS], tid[6] = { 0 }, have_seed = 0;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help")) {
            printf("sdxld generate [--model DIR|FILE [--config DIR] [--tokenizers DIR]] [--unet FILE] [--lora FILE [--lora-scale X]]\n"
                   "               (--prompts P.json | --prompt TEXT)\n"
                   "               [--width W] [--height H] [--seed S] [--steps N] [--timesteps 999,749,...]\n"
                   "               [--time-ids OH,OW,CT,CL,TH,TW] [--noise IN.safetensors]\n"
                   "               [--out-tensor OUT.safetensors] [-o image.png ...] [--backend cpu] [--threads N]\n"
                   "image i uses seed+i; with one -o and several images, files are numbered name-i.png;\n"
                   "without --model the built-in model (%s) is used\n", cli_default_model());
            return 0;
        }
        if (i + 1 >= argc) { fprintf(stderr, "sdxld generate: option %s needs a value\n", a); return 2; }
        v = argv[++i];
        if (!strcmp(a, "--model")) ec.model_dir = v;
        else if (!strcmp(a, "--config")) ec.config_dir = v;
        else if (!strcmp(a, "--tokenizers")) ec.tokenizer_dir = v;
        else if (!strcmp(a, "--unet")) ec.unet_path = v;
        else if (!strcmp(a, "--lora")) ec.lora_path = v;
        else if (!strcmp(a, "--lora-scale")) ec.lora_scale = (float)atof(v);
        else if (!strcmp(a, "--backend")) ec.backend = v;
        else if (!strcmp(a, "--threads")) ec.threads = atoi(v);
        else if (!strcmp(a, "--prompts")) prompts_path = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--width")) width = atoi(v);
        else if (!strcmp(a, "--height")) height = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--seed")) { seed = strtoull(v, NULL, 10); have_seed = 1; }
        else if (!strcmp(a, "--noise")) noise_path = v;
        else if (!strcmp(a, "--out-tensor")) out_tensor = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (nout < 64) outs[nout++] = v; }
        else if (!strcmp(a, "--timesteps")) {
            char why[160];
            if ((nts = timesteps_parse(v, ts, ENGINE_MAX_STEPS, 0, "--timesteps", why, sizeof why)) < 1) {
                fprintf(stderr, "sdxld generate: %s\n", why);
                return 2;
            }
        } else if (!strcmp(a, "--time-ids")) {
            if (parse_ints(v, tid, 6) != 6) { fprintf(stderr, "sdxld generate: --time-ids needs 6 integers\n"); return 2; }
        } else { fprintf(stderr, "sdxld generate: unknown option '%s'\n", a); return 2; }
    }
    if (!ec.model_dir) ec.model_dir = cli_default_model();
    if (!prompts_path && !prompt) {
        fprintf(stderr, "sdxld generate: need --prompts or --prompt (see --help)\n");
        return 2;
    }
    if (!nout && !out_tensor) { fprintf(stderr, "sdxld generate: nothing to write: give -o and/or --out-tensor\n"); return 2; }
    char **prompts = NULL;
    int n = 0, nprompts = 0, rc = 1;
    if (prompts_path) {
        if (cli_read_prompts(prompts_path, &prompts, &n)) return cli_fail("prompts");
    } else {
        prompts = sd_calloc(1, sizeof(char *));
        if (prompts) prompts[0] = sd_strdup(prompt);
        n = 1;
        if (!prompts || !prompts[0]) { cli_free_prompts(prompts, 1); return cli_fail("prompts"); }
    }
    nprompts = n;
    struct engine *e = NULL;
    struct st_file nf = { 0 };
    int have_nf = 0;
    struct gen_trace tr = { 0 };
    struct gen_item *items = NULL;
    uint8_t *rgb = NULL;
    if (cli_model_defaults(&ec) || engine_load(&e, &ec)) { cli_fail("loading model"); goto out; }
    const struct engine_info *info = engine_info(e);
    struct gen_params p = { .width = width ? width : info->default_width,
                            .height = height ? height : info->default_height, .nsteps = nts ? nts : steps };
    if (nts) memcpy(p.timesteps, ts, sizeof(int) * nts);
    else if (p.nsteps >= 1 && p.nsteps <= ENGINE_MAX_STEPS) engine_default_timesteps(p.nsteps, p.timesteps);
    memcpy(p.time_ids, tid, sizeof tid);
    if (engine_check_params(e, &p)) { cli_fail("parameters"); goto out; }
    int C = info->latent_channels, h = p.height / info->vae_scale, w = p.width / info->vae_scale;
    if (noise_path) {
        if (st_open(&nf, noise_path)) { cli_fail("noise"); goto out; }
        have_nf = 1;
        int64_t s[4];
        if (!(tr.init_noise = cli_tensor(&nf, "sample_init", 4, s, 1))) { cli_fail("noise"); goto out; }
        if (s[1] != C || s[2] != h || s[3] != w || s[0] < 1) {
            sd_fail(SD_ERR_SHAPE, "%s: sample_init must be [B,%d,%d,%d] for %dx%d", noise_path, C, h, w, p.width, p.height);
            cli_fail("noise");
            goto out;
        }
        if (s[0] > n) { sd_fail(SD_ERR_SHAPE, "%s: %d noises but only %d prompts", noise_path, (int)s[0], n); cli_fail("noise"); goto out; }
        n = (int)s[0];   /* the first B prompts */
        for (int k = 0; k + 1 < p.nsteps; k++) {
            char name[32];
            int64_t s2[4];
            snprintf(name, sizeof name, "sample_noise_%d", k);
            if (!(tr.step_noise[k] = cli_tensor(&nf, name, 4, s2, 1))) { cli_fail("noise"); goto out; }
            if (memcmp(s, s2, sizeof s)) { sd_fail(SD_ERR_SHAPE, "%s: %s shape differs from sample_init", noise_path, name); cli_fail("noise"); goto out; }
        }
    }
    size_t per = (size_t)n * C * h * w;
    if (out_tensor) {
        for (int k = 0; k < p.nsteps; k++) {
            tr.eps[k] = sd_malloc(per * 4);
            tr.denoised[k] = sd_malloc(per * 4);
            if (!tr.eps[k] || !tr.denoised[k]) { cli_fail("generate"); goto out; }
        }
        if (!(tr.image = sd_malloc((size_t)n * 3 * p.width * p.height * 4))) { cli_fail("generate"); goto out; }
    }
    if (!have_seed) seed = random_seed();
    items = sd_calloc(n, sizeof *items);
    rgb = sd_malloc((size_t)n * p.width * p.height * 3);
    if (!items || !rgb) { cli_fail("generate"); goto out; }
    for (int i = 0; i < n; i++) { items[i].prompt = prompts[i]; items[i].seed = engine_image_seed(seed, i); }
    struct gen_timings tm;
    if (engine_generate(e, &p, items, n, rgb, &tm, NULL, NULL, &tr)) { cli_fail("generate"); goto out; }
    fprintf(stderr, "sdxld: %d image(s) %dx%d, %d steps: text %.1f ms, unet %.1f ms, vae %.1f ms\n", n,
            p.width, p.height, p.nsteps, tm.text_ms, tm.unet_ms, tm.vae_ms);
    for (int i = 0; i < n && nout; i++) {
        char path[4096], params[8192];
        if (nout == n) snprintf(path, sizeof path, "%s", outs[i]);
        else if (n == 1) snprintf(path, sizeof path, "%s", outs[0]);
        else numbered(path, sizeof path, outs[0], i);
        engine_parameters_text(params, sizeof params, items[i].prompt, items[i].seed, &p, info->model_name,
                               noise_path ? "Noise: file" : NULL);
        struct png_text txt = { "parameters", params };
        if (png_write_file(path, rgb + (size_t)i * p.width * p.height * 3, p.width, p.height, &txt, 1)) {
            cli_fail(path);
            goto out;
        }
        printf("%s seed=%" PRIu64 "%s\n", path, items[i].seed, items[i].truncated ? " (prompt truncated)" : "");
    }
    if (out_tensor) {
        struct st_writer wr;
        st_writer_init(&wr);
        int64_t sl[4] = { n, C, h, w }, si[4] = { n, 3, p.height, p.width };
        sd_status st = SD_OK;
        char name[48];
        for (int k = 0; k < p.nsteps && !st; k++) {
            snprintf(name, sizeof name, "sample_eps_%d", k);
            st = st_writer_add(&wr, name, DT_F32, 4, sl, tr.eps[k]);
            snprintf(name, sizeof name, "sample_denoised_%d", k);
            if (!st) st = st_writer_add(&wr, name, DT_F32, 4, sl, tr.denoised[k]);
        }
        if (!st) st = st_writer_add(&wr, "sample_final_latent", DT_F32, 4, sl, tr.denoised[p.nsteps - 1]);
        if (!st) st = st_writer_add(&wr, "sample_image", DT_F32, 4, si, tr.image);
        if (!st) st = st_writer_write(&wr, out_tensor);
        st_writer_free(&wr);
        if (st) { cli_fail(out_tensor); goto out; }
    }
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
    if (have_nf) st_close(&nf);
    cli_free_prompts(prompts, nprompts);
    engine_free(e);
    return rc;
}
