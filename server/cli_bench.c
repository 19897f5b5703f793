/* cli_bench.c — `sdxld bench`: time each pipeline stage on a model folder and print one
 * table.  Inputs are random (the numbers measure speed, not quality); each stage runs
 * once to warm up (sizing the activation arena) and then --repeat times, reporting the
 * best and the mean, and the process CPU time of the best run (all threads: on a machine
 * shared with other work the wall time varies, the CPU time much less).  With --vae-tile
 * and --vae-error, the last tiled decode is compared with one untiled decode of the same
 * latents afterwards (its memory comes after the figures printed for the tiled runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine.h"
#include "cli.h"
#include "cli_util.h"

struct timing { double best, sum, best_cpu; int n; };
struct stamp { double wall, cpu; };

static struct stamp stamp(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (struct stamp){ sd_now_ms(), ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 };
}

static void record(struct timing *t, struct stamp a) {
    struct stamp b = stamp();
    double ms = b.wall - a.wall;
    if (!t->n || ms < t->best) { t->best = ms; t->best_cpu = b.cpu - a.cpu; }
    t->sum += ms;
    t->n++;
}

static void row(const char *stage, int batch, int w, int h, const struct timing *t) {
    printf("| %-18s | %5d | %4dx%-4d | %10.1f | %10.1f | %10.1f |\n", stage, batch, w, h, t->best, t->sum / t->n,
           t->best_cpu);
}

struct bench_args {
    struct engine_config ec;
    int width, height, batch, repeat, steps, vae_error;
    const char *stages;
};

/* -1: go on; else the exit code (--help, a bad flag). */
static int parse_bench_args(int argc, char **argv, struct bench_args *b) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld bench --model DIR " CLI_ENGINE_USAGE "\n"
                   "            [--unet FILE] [--width W] [--height H]\n"
                   "            [--batch N] [--steps 4] [--repeat N] [--stages text,unet,vae,e2e]\n"
                   "            [--vae-error]   (with --vae-tile: the tiled decode against an untiled one)\n");
            return 0;
        }
        if (!strcmp(a, "--vae-error")) { b->vae_error = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        int eo = cli_engine_opt(&b->ec, a, v);   /* -1: a bad value, reported */
        if (eo < 0) return 2;
        if (eo) continue;
        else if (!strcmp(a, "--width")) b->width = atoi(v);
        else if (!strcmp(a, "--height")) b->height = atoi(v);
        else if (!strcmp(a, "--batch")) b->batch = atoi(v);
        else if (!strcmp(a, "--repeat")) b->repeat = atoi(v);
        else if (!strcmp(a, "--steps")) b->steps = atoi(v);
        else if (!strcmp(a, "--stages")) b->stages = v;
        else { fprintf(stderr, "sdxld bench: unknown option '%s'\n", a); return 2; }
    }
    if (!b->ec.model_dir) { fprintf(stderr, "sdxld bench: need --model DIR\n"); return 2; }
    if (b->batch < 1 || b->batch > 64 || b->repeat < 1 || b->repeat > 1000) {
        fprintf(stderr, "sdxld bench: bad --batch/--repeat\n");
        return 2;
    }
    if (b->vae_error && (!b->ec.vae_tile || !strstr(b->stages, "vae"))) {
        fprintf(stderr, "sdxld bench: --vae-error needs --vae-tile N and the vae stage\n");
        return 2;
    }
    return -1;
}

/* The tiled decode img of x against one untiled decode of it, in 8-bit pixels. */
static int vae_error(struct engine *e, const float *x, int batch, int h, int w, const float *img) {
    const struct engine_info *info = engine_info(e);
    int s = info->vae_scale;
    size_t n = (size_t)batch * 3 * h * s * w * s;
    float *ref = sd_malloc(n * sizeof(float));
    if (!ref) return cli_fail("vae error");
    int tile = info->vae_tile, overlap = info->vae_tile_overlap;
    double t0 = sd_now_ms();
    if (engine_set_vae_tile(e, 0, 0) || engine_vae_decode(e, x, batch, h, w, ref)) { sd_free(ref); return cli_fail("vae"); }
    double ms = sd_now_ms() - t0;
    struct engine_pixel_error pe;
    engine_pixel_error(img, ref, n, &pe);
    printf("tiled decode (tiles of %d, overlap %d) vs untiled: max |diff| %d/255, PSNR %.2f dB, max |diff| %.4g of "
           "[-1, 1] (the untiled decode, cold: %.1f ms)\n", tile, overlap, pe.max_abs, pe.psnr_db, pe.max_abs_float, ms);
    sd_free(ref);
    return engine_set_vae_tile(e, tile, overlap) ? cli_fail("vae") : 0;
}

int cli_bench(int argc, char **argv) {
    struct bench_args b = { .batch = 1, .repeat = 1, .steps = 4, .stages = "text,unet,vae,e2e" };
    int rc = parse_bench_args(argc, argv, &b);
    if (rc >= 0) return rc;
    struct engine_config ec = b.ec;
    int width = b.width, height = b.height, batch = b.batch, repeat = b.repeat, steps = b.steps;
    const char *stages = b.stages;
    struct engine *e;
    double t0 = sd_now_ms();
    if (engine_load(&e, &ec)) return cli_fail("loading model");
    double load_ms = sd_now_ms() - t0;
    const struct engine_info *info = engine_info(e);
    if (!width) width = info->default_width;
    if (!height) height = info->default_height;
    struct engine_dims d;
    engine_dims(e, &d);
    int s = info->vae_scale, h = height / s, w = width / s;
    rc = 1;
    size_t nl = (size_t)batch * d.latent_ch * h * w;
    float *x = sd_malloc(nl * 4), *out = sd_malloc(nl * 4), *ctx = sd_malloc((size_t)batch * d.L * d.cross * 4);
    float *pooled = sd_malloc((size_t)batch * d.P * 4), *tid = sd_malloc((size_t)batch * 6 * 4), *tv = sd_malloc(batch * 4);
    float *img = sd_malloc((size_t)batch * 3 * width * height * 4);
    uint8_t *rgb = sd_malloc((size_t)batch * 3 * width * height);
    const char **prompts = sd_malloc(sizeof(char *) * batch);
    struct gen_item *items = sd_calloc(batch, sizeof *items);
    if (!x || !out || !ctx || !pooled || !tid || !tv || !img || !rgb || !prompts || !items) { cli_fail("bench"); goto done; }
    struct sd_rng r;
    sd_rng_init(&r, 1234);
    sd_rng_normal(&r, x, nl);
    sd_rng_normal(&r, ctx, (size_t)batch * d.L * d.cross);
    sd_rng_normal(&r, pooled, (size_t)batch * d.P);
    for (int i = 0; i < batch; i++) {
        float ids[6] = { (float)height, (float)width, 0, 0, (float)height, (float)width };
        memcpy(tid + 6 * i, ids, sizeof ids);
        tv[i] = 999;
        prompts[i] = "a photograph of an astronaut riding a horse on the moon, highly detailed";
        items[i].prompt = prompts[i];
        items[i].seed = (uint64_t)i;
    }
    printf("sdxld bench: %s on %s (%s threads), load %.0f ms, weights %.1f MiB (UNet %s)\nkernels: %s\n",
           info->model_name, info->backend, ec.threads ? "set" : "all", load_ms, info->param_bytes / 1048576.0,
           info->weights_dtype, info->kernels);
    if (info->vae_tile) printf("vae decode tiled: tiles of %d latent pixels, overlap %d\n", info->vae_tile, info->vae_tile_overlap);
    printf("\n");
    printf("| %-18s | %5s | %-9s | %10s | %10s | %10s |\n", "stage", "batch", "size", "best ms", "mean ms", "cpu ms");
    printf("|%s|%s|%s|%s|%s|%s|\n", "--------------------", "-------", "-----------", "------------", "------------",
           "------------");
    for (int pass = 0; pass <= repeat; pass++) {   /* pass 0 warms up and is not recorded */
        static struct timing tt, tu, tvae, te;
        struct stamp a;
        if (strstr(stages, "text")) {
            struct engine_text et = { .context = ctx, .pooled = pooled };
            a = stamp();
            if (engine_encode(e, prompts, batch, &et)) { cli_fail("text"); goto done; }
            if (pass) record(&tt, a);
        }
        if (strstr(stages, "unet")) {
            a = stamp();
            if (engine_unet(e, x, tv, ctx, pooled, tid, batch, h, w, out)) { cli_fail("unet"); goto done; }
            if (pass) record(&tu, a);
        }
        if (strstr(stages, "vae")) {
            a = stamp();
            if (engine_vae_decode(e, x, batch, h, w, img)) { cli_fail("vae"); goto done; }
            if (pass) record(&tvae, a);
        }
        if (strstr(stages, "e2e")) {
            struct gen_params p = { .width = width, .height = height, .nsteps = steps };
            engine_default_timesteps(steps, p.timesteps);
            a = stamp();
            if (engine_generate(e, &p, items, batch, rgb, NULL, NULL, NULL)) { cli_fail("generate"); goto done; }
            if (pass) record(&te, a);
        }
        if (pass == repeat) {
            if (tt.n) row("text encoders", batch, width, height, &tt);
            if (tu.n) row("unet (1 step)", batch, width, height, &tu);
            if (tvae.n) row("vae decode", batch, width, height, &tvae);
            if (te.n) { char name[32]; snprintf(name, sizeof name, "end-to-end %d-step", steps); row(name, batch, width, height, &te); }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak RSS %.1f MiB, activation arena peak %.1f MiB\n", ru.ru_maxrss / 1024.0,
           info->scratch_bytes / 1048576.0);
    if (info->device_peak_bytes)   /* backends that count their memory (cuda) */
        printf("device memory held by sdxld: peak %.1f MiB, now %.1f MiB (weights %.1f MiB)\n",
               info->device_peak_bytes / 1048576.0, info->device_bytes / 1048576.0, info->param_bytes / 1048576.0);
    fflush(stdout);
    rc = b.vae_error ? vae_error(e, x, batch, h, w, img) : 0;
done:
    sd_free(x); sd_free(out); sd_free(ctx); sd_free(pooled); sd_free(tid); sd_free(tv);
    sd_free(img); sd_free(rgb); sd_free(prompts); sd_free(items);
    engine_free(e);
    return rc;
}
