/* cli_eval.c — `sdxld eval-shapes`: the measurable quality check of a model trained on
 * the shapes dataset; `sdxld eval-cond`: how much a denoiser uses its text (below).
 * eval-shapes:  Generates the fixed prompt set (shapes_eval.h: every colour ×
 * shape alone, plus two-object prompts) with `--seeds` seeds each, scores colour /
 * shape / joint / position accuracy from the pixels, and the MMD² of cheap image
 * features against the same number of dataset images.  One JSON object on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "training.h"
#include "cli.h"
#include "cli_util.h"

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
        if (engine_generate(e, &p, items, seeds, gen + (size_t)i * seeds * img, NULL, NULL, NULL)) { cli_fail("generate"); goto out; }
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

/* `sdxld eval-cond`: the ε-MSE of the UNet on held-out dataset items (VAE latents,
 * noised at several t) with their own captions, another item's and the null condition —
 * a teacher that has learnt its conditioning predicts much better with its own caption.
 * One JSON object: per t the three MSEs and gain = other / own − 1. */
int cli_eval_cond(int argc, char **argv) {
    const char *dir = NULL, *unet_path = NULL, *label = "model", *data = "shapes";
    int items = 64, res = 64, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld eval-cond --model DIR [--unet FILE] [--data shapes|FOLDER] [--items 64] [--resolution 64]\n"
                   "       [--label NAME] [--threads N]\n");
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) dir = v;
        else if (!strcmp(a, "--unet")) unet_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--items")) items = atoi(v);
        else if (!strcmp(a, "--resolution")) res = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else { fprintf(stderr, "sdxld eval-cond: unknown option '%s'\n", a); return 2; }
    }
    if (!dir || items < 2 || items > 4096) { fprintf(stderr, "sdxld eval-cond: need --model; items in [2, 4096]\n"); return 2; }
    static const int ts[5] = { 100, 300, 500, 700, 900 };
    double mse[5][3];
    struct backend *be = NULL;
    struct cond k = { 0 };
    struct vae v = { 0 };
    struct unet u = { 0 };
    struct schedule sch = { 0 };
    struct latent_cache c = { 0 };
    struct dataset *d = NULL;
    struct arena ar;
    int have[4] = { 0 }, rc = 1;
    char *p = NULL;
    if (backend_create(&be, "cpu", threads)) return cli_fail("backend");
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "activations", &al, 1);
    struct fwd f = { .be = be, .ar = &ar };
    struct sched_config sc;
    float tid[6 * 16];
    for (int i = 0; i < 16; i++) {
        float t6[6] = { (float)res, (float)res, 0, 0, (float)res, (float)res };
        memcpy(tid + 6 * i, t6, sizeof t6);
    }
    if (cond_load(&k, be, dir)) { cli_fail("text encoders"); goto out; }
    have[0] = 1;
    if (!(p = sd_path_join(dir, "vae")) || vae_load(&v, be, p, DT_F32)) { cli_fail("vae"); goto out; }
    have[1] = 1;
    sd_free(p);
    if (!(p = sd_path_join(dir, "unet")) || unet_load(&u, be, p, unet_path, DT_F32)) { cli_fail("unet"); goto out; }
    have[2] = 1;
    sd_free(p);
    if (!(p = sd_path_join(dir, "scheduler/scheduler_config.json")) || sched_config_load(&sc, p) || schedule_init(&sch, &sc)) {
        cli_fail("scheduler");
        goto out;
    }
    have[3] = 1;
    if (!strcmp(data, "shapes") ? dataset_shapes(&d, res, 0xe7a1, items) : dataset_folder(&d, data, res)) {
        cli_fail("dataset");
        goto out;
    }
    if (cache_build(&c, &f, &k, &v, d, items, NULL) || eval_conditioning(&f, &u, &sch, &c, k.L, tid, 5, ts, 11, mse)) {
        cli_fail("eval-cond");
        goto out;
    }
    printf("{\"label\": \"%s\", \"items\": %lld", label, c.K);
    static const char *const names[4] = { "own", "other", "null", "gain" };
    for (int m = 0; m < 4; m++) {
        printf(", \"%s\": [", names[m]);
        for (int i = 0; i < 5; i++) printf("%s%.5f", i ? ", " : "", m < 3 ? mse[i][m] : mse[i][1] / mse[i][0] - 1);
        printf("]");
    }
    printf(", \"t\": [100, 300, 500, 700, 900]}\n");
    rc = 0;
out:
    sd_free(p);
    cache_free(&c);
    dataset_free(d);
    if (have[3]) schedule_free(&sch);
    if (have[2]) unet_free(&u);
    if (have[1]) vae_free(&v);
    if (have[0]) cond_free(&k);
    arena_free(&ar);
    backend_destroy(be);
    return rc;
}
