/* cli_eval.c — `sdxld eval-shapes`: the measurable quality check of a model trained on
 * the shapes dataset.  Generates the fixed prompt set (shapes_eval.h: every colour ×
 * shape alone, plus two-object prompts) with `--seeds` seeds each, scores colour /
 * shape / joint / position accuracy from the pixels, and the MMD² of cheap image
 * features against the same number of dataset images.  One JSON object on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "io/png.h"
#include "train/data.h"
#include "train/shapes_eval.h"

int cli_eval_shapes(int argc, char **argv) {
    struct engine_config ec = { 0 };
    int seeds = 2, steps = 4, nts = 0, ts[ENGINE_MAX_STEPS], res = 64, ddim = 0;
    float guidance = 4.0f;
    const char *label = "model", *save = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld eval-shapes --model DIR [--unet FILE] [--lora FILE] [--sampler dmd2|ddim] [--steps N]\n"
                   "       [--timesteps 999,749,...] [--guidance G] [--seeds K] [--resolution 64]\n"
                   "       [--label NAME] [--save-grid FILE.png]\n");
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) ec.model_dir = v;
        else if (!strcmp(a, "--unet")) ec.unet_path = v;
        else if (!strcmp(a, "--lora")) ec.lora_path = v;
        else if (!strcmp(a, "--threads")) ec.threads = atoi(v);
        else if (!strcmp(a, "--sampler")) ddim = !strcmp(v, "ddim");
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--guidance")) guidance = (float)atof(v);
        else if (!strcmp(a, "--seeds")) seeds = atoi(v);
        else if (!strcmp(a, "--resolution")) res = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--save-grid")) save = v;
        else if (!strcmp(a, "--timesteps")) {
            char *e;
            const char *s = v;
            nts = 0;
            while (*s && nts < ENGINE_MAX_STEPS) { ts[nts++] = (int)strtol(s, &e, 10); s = *e == ',' ? e + 1 : e; if (e == s && *s) break; }
        } else { fprintf(stderr, "sdxld eval-shapes: unknown option '%s'\n", a); return 2; }
    }
    if (!ec.model_dir || seeds < 1 || seeds > 64) { fprintf(stderr, "sdxld eval-shapes: need --model; seeds in [1, 64]\n"); return 2; }
    struct engine *e;
    if (engine_load(&e, &ec)) return cli_fail("loading model");
    int P = shapes_prompt_count(), n = P * seeds, rc = 1;
    size_t img = (size_t)res * res * 3;
    uint8_t *gen = sd_malloc(img * n), *ref = sd_malloc(img * n);
    struct shapes_item *wants = sd_calloc(n, sizeof *wants);
    char cap[512];
    struct dataset *d = NULL;
    struct gen_params p = { .width = res, .height = res, .nsteps = nts ? nts : steps,
                            .sampler = ddim ? GEN_SAMPLER_DDIM : GEN_SAMPLER_DMD2, .guidance = guidance };
    if (!ddim) { if (nts) memcpy(p.timesteps, ts, sizeof(int) * nts); else engine_default_timesteps(p.nsteps, p.timesteps); }
    if (!gen || !ref || !wants) { cli_fail("eval"); goto out; }
    if (engine_check_params(e, &p)) { cli_fail("parameters"); goto out; }
    double t0 = sd_now_ms();
    for (int i = 0; i < P; i++) {
        struct gen_item items[64];
        if (shapes_prompt(i, &wants[i * seeds], cap, sizeof cap)) { cli_fail("prompt"); goto out; }
        for (int s = 0; s < seeds; s++) {
            wants[i * seeds + s] = wants[i * seeds];
            items[s] = (struct gen_item){ .prompt = cap, .seed = (uint64_t)(1000 * i + s) };
        }
        if (engine_generate(e, &p, items, seeds, gen + (size_t)i * seeds * img, NULL, NULL, NULL, NULL)) { cli_fail("generate"); goto out; }
    }
    double gen_s = (sd_now_ms() - t0) / 1e3;
    struct shapes_scores sc;
    if (shapes_eval_set(gen, n, res, wants, &sc)) { cli_fail("score"); goto out; }
    /* reference: as many dataset images, from a seed disjoint from training's */
    if (dataset_shapes(&d, res, 0xe7a1, n)) { cli_fail("dataset"); goto out; }
    for (int i = 0; i < n; i++)
        if (dataset_get(d, i, NULL, ref + (size_t)i * img, NULL, 0, NULL)) { cli_fail("dataset"); goto out; }
    double mmd = 0;
    if (shapes_mmd2(gen, n, ref, n, res, &mmd)) { cli_fail("mmd"); goto out; }
    if (save) {   /* the first seed of every prompt, one row */
        int cols = P < 20 ? P : 20, rows = (P + cols - 1) / cols;
        uint8_t *grid = sd_calloc((size_t)cols * rows * img, 1);
        if (grid) {
            for (int i = 0; i < P; i++)
                for (int y = 0; y < res; y++)
                    memcpy(grid + (((size_t)(i / cols) * res + y) * cols * res + (size_t)(i % cols) * res) * 3,
                           gen + (size_t)i * seeds * img + (size_t)y * res * 3, (size_t)res * 3);
            if (png_write_file(save, grid, cols * res, rows * res, NULL, 0)) cli_fail(save);
            sd_free(grid);
        }
    }
    printf("{\"label\": \"%s\", \"sampler\": \"%s\", \"steps\": %d, \"guidance\": %.2f, \"images\": %d, "
           "\"colour\": %.4f, \"shape\": %.4f, \"joint\": %.4f, \"position\": %.4f, \"mmd2\": %.5f, \"seconds\": %.1f}\n",
           label, ddim ? "ddim" : "dmd2", p.nsteps, ddim ? guidance : 0.0, sc.n, sc.colour, sc.shape, sc.joint, sc.position,
           mmd, gen_s);
    rc = 0;
out:
    dataset_free(d);
    sd_free(gen);
    sd_free(ref);
    sd_free(wants);
    engine_free(e);
    return rc;
}
