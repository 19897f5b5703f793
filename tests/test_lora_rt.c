/* test_lora_rt.c — LoRA adapters applied at run time, unmerged (model/lora_rt.h), found by
 * name and cached (model/lora_cache.h), through the engine (gen_params.lora):
 *   - the UNet with two adapters applied unmerged = the UNet with both merged (model level,
 *     every adapted module kind: linear, conv, strided downsampler conv, shortcut);
 *   - a generation with an adapter = the engine of today with the same file merged at the
 *     same scale (pixels as floats in [0, 1], absolute difference);
 *   - batching under an adapter changes no image; no adapter after adapters = never any;
 *   - switching adapters between generations loads each file once (the cache's counters);
 *     a file replaced on disk is loaded again, a UNet swap empties the cache; the bound
 *     evicts least recently used and refuses a set that cannot fit;
 *   - names and scales: engine_lora_add's canonical order and refusals, unknown names.
 * The built-in model models/shapes-small (64x64), weights in f32 so that the merge is
 * exact enough to compare with. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "core/rng.h"
#include "engine.h"
#include "model/lora.h"
#include "model/lora_cache.h"
#include "model/lora_rt.h"
#include "model/unet.h"

static char model[1024], unet_dir[1100], dir[256];
static const int S = 64;   /* image side */

/* An adapter file of rank r for the UNet, its B random (scaled by bscale) so it changes
 * every adapted module. */
static int make_lora(struct backend *be, struct unet *u, const char *path, int r, uint64_t seed, float bscale) {
    struct lora l;
    if (lora_create(&l, be, &u->wt, NULL, r, (float)(2 * r), seed)) return -1;
    struct sd_rng rng;
    sd_rng_init(&rng, seed + 1000);
    for (int i = 0; i < l.n; i++) {
        size_t nb = (size_t)l.m[i].cout * r;
        sd_rng_normal(&rng, l.m[i].b, nb);
        for (size_t k = 0; k < nb; k++) l.m[i].b[k] *= bscale;
    }
    sd_status st = lora_save(&l, be, path, DT_F32);
    lora_free(&l);
    return st ? -1 : 0;
}

/* Model level: two adapters unmerged (fwd.lora) against both merged. */
static void test_unet_unmerged(struct backend *be, const char *pa, const char *pb) {
    struct unet u, m;
    ok(unet_load(&u, be, unet_dir, NULL, DT_F32) == SD_OK && unet_load(&m, be, unet_dir, NULL, DT_F32) == SD_OK,
       "two copies of the UNet");
    ok(lora_apply_file(&m.wt, be, pa, 0.8f) == SD_OK && lora_apply_file(&m.wt, be, pb, -0.5f) == SD_OK,
       "merged: a × 0.8, b × -0.5");
    struct lora_adapter a, b;
    int loaded = lora_adapter_load(&a, be, &u.wt, pa, NULL, NULL) == SD_OK &&
                 lora_adapter_load(&b, be, &u.wt, pb, NULL, NULL) == SD_OK;
    ok(loaded && a.n == b.n && a.n > 50, "loaded for run time: %d modules, %zu bytes", a.n, a.bytes);
    const struct lora_adapter *ads[2] = { &a, &b };
    const float sc[2] = { 0.8f, -0.5f };
    struct lora_active act;
    sd_status built = lora_active_build(&act, u.wt.n, ads, sc, 2);
    ok(built == SD_OK && act.nt == a.n + b.n, "active set of %d terms", act.nt);
    int h = 16, N = 2, L = 77, X = u.cfg.cross_dim, P = u.pooled_dim;
    size_t nx = (size_t)N * 4 * h * h;
    float *x = malloc(sizeof(float) * nx), *ctx = malloc(sizeof(float) * N * L * X), *pool = malloc(sizeof(float) * N * P);
    float *o1 = malloc(sizeof(float) * nx), *o2 = malloc(sizeof(float) * nx), *o0 = malloc(sizeof(float) * nx);
    float t[2] = { 999, 499 }, tid[12] = { 64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64 };
    struct sd_rng rng;
    sd_rng_init(&rng, 3);
    sd_rng_normal(&rng, x, nx);
    sd_rng_normal(&rng, ctx, (size_t)N * L * X);
    sd_rng_normal(&rng, pool, (size_t)N * P);
    struct arena ar;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    struct fwd f = { .be = be, .ar = &ar };
    unet_forward(&f, &u, o0, x, t, ctx, pool, tid, N, h, h, L);
    arena_reset(&ar, 0);
    unet_forward(&f, &m, o1, x, t, ctx, pool, tid, N, h, h, L);
    arena_reset(&ar, 0);
    f.lora = &act;
    unet_forward(&f, &u, o2, x, t, ctx, pool, tid, N, h, h, L);
    arena_reset(&ar, 0);
    double e = rel_err(o2, o1, nx), moved = rel_err(o0, o1, nx);
    ok(backend_status(be) == SD_OK && e < 1e-5 && moved > 1e-2,
       "UNet output, unmerged = merged: rel err %.2g (max|diff| / max|merged|); the adapters move it by %.2g", e, moved);
    free(x); free(ctx); free(pool); free(o0); free(o1); free(o2);
    arena_free(&ar);
    lora_active_free(&act);
    lora_adapter_free(&a);
    lora_adapter_free(&b);
    unet_free(&u);
    unet_free(&m);
}

/* Every allocation of a cache load (file, adapters, entry) and of the active set failed in
 * turn: a clean error each time, nothing leaked, then a success. */
static void test_alloc_failures(struct backend *be, const char *pa, const char *pb) {
    struct unet u;
    if (!ok(unet_load(&u, be, unet_dir, NULL, DT_F32) == SD_OK, "a UNet for the fault sweep")) return;
    const char *paths[2] = { pa, pb };
    int leaks = 0, n;
    sd_status st = SD_OK;
    for (n = 1; n < 400; n++) {
        struct lora_cache c;
        const struct lora_adapter *ads[2];
        struct lora_active act;
        const float sc[2] = { 1, 1 };
        size_t before = sd_alloc_live_bytes();
        lora_cache_init(&c, (size_t)1 << 30);
        sd_fault_arm_alloc(n);
        st = lora_cache_get(&c, be, &u.wt, paths, 2, ads);
        if (!st && !(st = lora_active_build(&act, u.wt.n, ads, sc, 2))) lora_active_free(&act);
        sd_fault_arm_alloc(0);
        lora_cache_free(&c);
        be->err = SD_OK;   /* a failed allocation may leave the backend's sticky error */
        leaks += sd_alloc_live_bytes() != before;
        if (st == SD_OK) break;
    }
    ok(leaks == 0 && st == SD_OK && n > 5, "allocation failures 1..%d while loading two adapters: clean errors, "
       "no leaks", n - 1);
    unet_free(&u);
}

/* One generation of n images (seeds 5, 6, ...) as floats in [0, 1] and bytes. */
static sd_status gen(struct engine *e, const struct gen_params *p, int n, float *img, uint8_t *rgb) {
    struct gen_item it[4] = { { .prompt = "a red circle", .seed = 5 }, { .prompt = "a blue square", .seed = 6 },
                              { .prompt = "a green star", .seed = 7 }, { .prompt = "a cube", .seed = 8 } };
    static uint8_t scratch[4 * 3 * 64 * 64];
    struct gen_trace tr = { .image = img };
    return engine_generate(e, p, it, n, rgb ? rgb : scratch, NULL, NULL, img ? &tr : NULL);
}

static struct gen_params params(const char *a, float sa, const char *b, float sb) {
    struct gen_params p = { .width = S, .height = S, .nsteps = 4 };
    engine_default_timesteps(4, p.timesteps);
    if (a) engine_lora_add(&p, a, sa);
    if (b) engine_lora_add(&p, b, sb);
    return p;
}

static double max_abs(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void test_names(void) {
    struct gen_params p = params(NULL, 0, NULL, 0), q = params(NULL, 0, NULL, 0);
    ok(engine_lora_add(&p, "zeta", 1) == SD_OK && engine_lora_add(&p, "alpha", 0.5f) == SD_OK &&
       engine_lora_add(&q, "alpha", 0.5f) == SD_OK && engine_lora_add(&q, "zeta", 1) == SD_OK &&
       !memcmp(&p, &q, sizeof p) && !strcmp(p.lora[0].name, "alpha"),
       "the same set in either order is the same bytes (sorted by name)");
    ok(engine_lora_add(&p, "none", 0) == SD_OK && !p.lora[2].name[0], "a scale of 0 adds nothing");
    const char *bad[] = { "", "../x", "a/b", ".hidden", "a\\b", "tab\there",
                          "0123456789012345678901234567890123456789012345678901234567890123" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sd_status st = engine_lora_add(&p, bad[i], 1);
        ok(st == SD_ERR_INVALID && strstr(sd_last_error(), "lora"), "name '%s' refused: %s", bad[i], sd_last_error());
    }
    ok(engine_lora_add(&p, "x", NAN) == SD_ERR_INVALID && engine_lora_add(&p, "x", 10.5f) == SD_ERR_INVALID &&
       engine_lora_add(&p, "x", -11) == SD_ERR_INVALID, "scales not finite or beyond ±10 refused: %s", sd_last_error());
    ok(engine_lora_add(&p, "zeta", 2) == SD_ERR_INVALID && strstr(sd_last_error(), "twice"), "a name twice: %s",
       sd_last_error());
    ok(engine_lora_add(&p, "c", 1) == SD_OK && engine_lora_add(&p, "d", 1) == SD_OK &&
       engine_lora_add(&p, "e", 1) == SD_ERR_INVALID, "at most %d adapters: %s", ENGINE_LORA_MAX, sd_last_error());
    char path[512];
    ok(engine_lora_path(dir, "a", path, sizeof path) == SD_OK && strstr(path, "/a.safetensors"), "a: %s", path);
    ok(engine_lora_path(dir, "b", path, sizeof path) == SD_OK && strstr(path, "/loras/b.safetensors"), "b: %s", path);
    ok(engine_lora_path(dir, "nope", path, sizeof path) == SD_ERR_NOTFOUND, "unknown: %s", sd_last_error());
    ok(engine_lora_path(NULL, "a", path, sizeof path) == SD_ERR_NOTFOUND, "no folder: %s", sd_last_error());
}

static struct engine *load(const char *lora_path, float scale, size_t cache) {
    struct engine *e = NULL;
    struct engine_config ec = { .model_dir = model, .threads = 1, .weights_dtype = "f32", .lora_dir = dir,
                                .lora_path = lora_path, .lora_scale = scale, .lora_cache_bytes = cache };
    sd_status st = engine_load(&e, &ec);
    if (st) diag("engine_load: %s", sd_last_error());
    return e;
}

int main(void) {
    const char *data = getenv("SDXLD_TEST_DATA");
    snprintf(model, sizeof model, "%s/../../models/shapes-small", data ? data : "tests/data");
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", model);
    snprintf(dir, sizeof dir, "/tmp/sdxld-test-lora-rt-%d", (int)getpid());
    char pa[512], pb[512], sub[300];
    snprintf(sub, sizeof sub, "%s/loras", dir);
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b.safetensors", sub);
    mkdir(dir, 0700);
    mkdir(sub, 0700);
    struct backend *be;
    if (backend_create(&be, "cpu", 1)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    struct unet u;
    if (unet_load(&u, be, unet_dir, NULL, DT_F32)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    ok(make_lora(be, &u, pa, 4, 21, 0.05f) == 0 && make_lora(be, &u, pb, 2, 22, 0.08f) == 0,
       "two adapter files: %s, %s", pa, pb);
    unet_free(&u);
    test_unet_unmerged(be, pa, pb);
    test_alloc_failures(be, pa, pb);
    backend_destroy(be);
    test_names();

    struct engine *merged = load(pa, 0.8f, 0), *e = load(NULL, 0, 0);
    if (!ok(merged && e, "two engines: a merged at 0.8, and one with run-time adapters")) return done_testing();
    const size_t npx = (size_t)3 * S * S;
    float *ref = malloc(sizeof(float) * 4 * npx), *img = malloc(sizeof(float) * 4 * npx), *base = malloc(sizeof(float) * 4 * npx);
    uint8_t *rgb = malloc(4 * npx), *rgb_ref = malloc(4 * npx);
    struct gen_params none = params(NULL, 0, NULL, 0), pa8 = params("a", 0.8f, NULL, 0), pb5 = params("b", -0.5f, NULL, 0);
    struct gen_params pab = params("a", 0.8f, "b", -0.5f);
    ok(gen(merged, &none, 1, ref, NULL) == SD_OK && gen(e, &none, 1, base, NULL) == SD_OK, "base generations");
    ok(gen(e, &pa8, 1, img, NULL) == SD_OK, "a generation with lora a × 0.8");
    double d = max_abs(img, ref, npx), moved = max_abs(base, ref, npx);
    ok(d < 1e-4 && moved > 1e-2, "pixels unmerged = merged within %.2g (absolute, pixels in [0, 1]); the adapter "
       "moves them by %.2g", d, moved);

    /* batching under an adapter changes no image */
    ok(gen(e, &pa8, 3, img, rgb) == SD_OK, "a batch of 3 under lora a");
    int same = 1;
    for (int i = 0; i < 3; i++) {
        struct gen_item one = { .prompt = (const char *[]){ "a red circle", "a blue square", "a green star" }[i],
                                .seed = (uint64_t)(5 + i) };
        same &= engine_generate(e, &pa8, &one, 1, rgb_ref, NULL, NULL, NULL) == SD_OK &&
                !memcmp(rgb_ref, rgb + (size_t)i * npx, npx);
    }
    ok(same, "each image of the batch = that image alone, byte for byte");
    ok(gen(e, &none, 1, img, NULL) == SD_OK && !memcmp(img, base, sizeof(float) * npx),
       "no adapter after adapters = before any, bit for bit (nothing merged)");

    /* switching: each file read once */
    const struct engine_info *in = engine_info(e);
    size_t size_a = in->lora_bytes;
    ok(in->lora_loads == 1 && in->lora_cached == 1 && size_a > 0, "one file loaded so far (%lld), %zu bytes cached",
       in->lora_loads, size_a);
    ok(gen(e, &pb5, 1, NULL, rgb) == SD_OK && gen(e, &pa8, 1, NULL, rgb) == SD_OK && gen(e, &pab, 1, NULL, rgb) == SD_OK &&
       gen(e, &pb5, 1, NULL, rgb) == SD_OK && gen(e, &none, 1, NULL, rgb) == SD_OK, "b, a, a+b, b, none");
    size_t size_b = in->lora_bytes - size_a;
    ok(in->lora_loads == 2 && in->lora_hits == 8 && in->lora_evictions == 0 && in->lora_cached == 2,
       "switching adapters read only b's file besides: %lld loads, %lld hits", in->lora_loads, in->lora_hits);

    /* a file replaced on disk (a new inode) is read again */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/tmp.safetensors", dir);
    FILE *fi = fopen(pb, "rb"), *fo = fopen(tmp, "wb");
    char buf[65536];
    size_t k;
    while (fi && fo && (k = fread(buf, 1, sizeof buf, fi)) > 0) fwrite(buf, 1, k, fo);
    if (fi) fclose(fi);
    if (fo) fclose(fo);
    int again = rename(tmp, pa) == 0 && gen(e, &pa8, 1, NULL, rgb) == SD_OK;
    ok(again && in->lora_loads == 3 && in->lora_cached == 2,
       "a replaced on disk: loaded again (%lld loads), the old copy dropped (%d cached)", in->lora_loads, in->lora_cached);

    /* unknown names fail the generation, which leaves the engine serving */
    struct gen_params bad = params("nope", 1, NULL, 0);
    sd_status st = gen(e, &bad, 1, NULL, rgb);
    ok(st == SD_ERR_NOTFOUND && strstr(sd_last_error(), "nope"), "unknown LoRA: %s", sd_last_error());
    ok(gen(e, &none, 1, img, NULL) == SD_OK && !memcmp(img, base, sizeof(float) * npx), "and the next one is as before");

    /* a UNet swap drops the cached adapters (bound to the old UNet's table) */
    int swapped = engine_load_unet(e, NULL, NULL, 0, NULL) == SD_OK;
    ok(swapped && in->lora_cached == 0 && in->lora_bytes == 0, "engine_load_unet empties the adapter cache");
    int again2 = gen(e, &pa8, 1, NULL, rgb) == SD_OK;
    ok(again2 && in->lora_loads == 4, "and the next use of a reads its file again (%lld loads)", in->lora_loads);
    engine_free(e);
    engine_free(merged);

    /* the bound: room for one adapter (a now holds b's content: both are size_b) */
    e = load(NULL, 0, size_b + 1);
    in = e ? engine_info(e) : NULL;
    st = e ? engine_set_lora_dir(e, NULL, 0) : SD_ERR_INVALID;
    st = st ? st : gen(e, &pa8, 1, NULL, rgb);
    ok(st == SD_ERR_NOTFOUND && strstr(sd_last_error(), "no models_dir"), "engine_set_lora_dir(NULL): %s",
       sd_last_error());
    ok(e && engine_set_lora_dir(e, dir, size_b + 1) == SD_OK, "engine_set_lora_dir: the folder and the bound again");
    ok(e && gen(e, &pa8, 1, NULL, rgb) == SD_OK && gen(e, &pb5, 1, NULL, rgb) == SD_OK && gen(e, &pa8, 1, NULL, rgb) == SD_OK &&
       in->lora_loads == 3 && in->lora_evictions == 2 && in->lora_cached == 1 && in->lora_bytes == size_b,
       "a cache of one adapter: a, b, a = 3 loads, 2 evictions (least recently used first)");
    st = e ? gen(e, &pab, 1, NULL, rgb) : SD_ERR_INVALID;
    ok(st == SD_ERR_NOMEM && strstr(sd_last_error(), "lora_cache_mb"), "a set larger than the cache is refused: %s",
       sd_last_error());
    ok(e && gen(e, &none, 1, img, NULL) == SD_OK && !memcmp(img, base, sizeof(float) * npx), "and the engine serves on");
    engine_free(e);

    free(ref); free(img); free(base); free(rgb); free(rgb_ref);
    unlink(pa);
    unlink(pb);
    rmdir(sub);
    rmdir(dir);
    ok(sd_alloc_live_bytes() == 0, "every sd_malloc freed (%zu bytes live)", sd_alloc_live_bytes());
    return done_testing();
}
