/* test_img2img.c — img2img and inpainting in engine_generate (src/img2img.h), on the
 * built-in shapes-small model at 64x64, four DMD2 steps:
 *   - strength 1 with an init image is the txt2img image of the seed, byte for byte;
 *   - the mean absolute pixel difference to the input falls with the strength;
 *   - a strength that leaves no step, or an item without its init image, is refused;
 *   - a masked edit keeps the unmasked pixels within one level of the input's VAE round
 *     trip and repaints the masked ones;
 *   - in a batch mixing init images, masks and seeds, each item has the pixels it has alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "engine.h"

#define S 64
#define BYTES (S * S * 3)

static struct gen_params params(float strength) {
    struct gen_params p = { .width = S, .height = S, .nsteps = 4, .strength = strength };
    engine_default_timesteps(p.nsteps, p.timesteps);
    return p;
}

/* A yellow background with a blue square (kind 0) or a red disc (kind 1). */
static void draw(uint8_t *rgb, int kind) {
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            uint8_t *p = rgb + ((size_t)y * S + x) * 3;
            int in = kind ? (x - 32) * (x - 32) + (y - 30) * (y - 30) < 18 * 18 : x >= 16 && x < 44 && y >= 20 && y < 48;
            p[0] = in ? (kind ? 220 : 30) : 240;
            p[1] = in ? 30 : 220;
            p[2] = in ? (kind ? 40 : 200) : 40;
        }
}

static double mad(const uint8_t *a, const uint8_t *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs((int)a[i] - (int)b[i]);
    return s / (double)n;
}

static sd_status gen1(struct engine *e, float strength, const char *prompt, uint64_t seed, const uint8_t *init,
                      const uint8_t *mask, uint8_t *out) {
    struct gen_params p = params(strength);
    struct gen_item it = { .prompt = prompt, .seed = seed, .init = init, .mask = mask };
    return engine_generate(e, &p, &it, 1, out, NULL, NULL, NULL);
}

/* The input's VAE round trip as 8-bit pixels (HWC), as engine_generate rounds them. */
static int round_trip(struct engine *e, const uint8_t *rgb, uint8_t *out) {
    const struct engine_info *in = engine_info(e);
    int h = S / in->vae_scale, C = in->latent_channels;
    float *img = malloc(sizeof(float) * 3 * S * S), *mean = malloc(sizeof(float) * C * h * h);
    for (int q = 0; q < S * S; q++)
        for (int c = 0; c < 3; c++) img[c * S * S + q] = rgb[q * 3 + c] / 127.5f - 1.0f;
    int bad = engine_vae_encode(e, img, 1, S, S, mean) || engine_vae_decode(e, mean, 1, h, h, img);
    for (int q = 0; q < S * S && !bad; q++)
        for (int c = 0; c < 3; c++) {
            float v = img[c * S * S + q] * 0.5f + 0.5f;
            v = v > 0 ? (v < 1 ? v : 1) : 0;
            out[q * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
        }
    free(img);
    free(mean);
    return bad ? -1 : 0;
}

static void test_strength(struct engine *e, const uint8_t *init) {
    uint8_t *ref = malloc(BYTES), *out = malloc(BYTES);
    ok(gen1(e, 0, "a red circle", 5, NULL, NULL, ref) == SD_OK, "txt2img");
    ok(gen1(e, 1.0f, "a red circle", 5, init, NULL, out) == SD_OK && !memcmp(out, ref, BYTES),
       "strength 1 with an init image is the txt2img image, byte for byte");
    static const float st[] = { 0.3f, 0.5f, 0.8f, 1.0f };
    double d[4];
    for (int k = 0; k < 4; k++) {
        ok(gen1(e, st[k], "a red circle", 5, init, NULL, out) == SD_OK, "strength %.1f runs", st[k]);
        d[k] = mad(out, init, BYTES);
        diag("strength %.1f: mean absolute difference to the input %.2f levels", st[k], d[k]);
    }
    ok(d[0] < d[1] && d[1] < d[2] && d[2] < d[3], "the distance to the input falls with the strength "
       "(%.2f < %.2f < %.2f < %.2f)", d[0], d[1], d[2], d[3]);
    struct gen_params p = params(0.2f);
    sd_status s = engine_check_params(e, &p);
    ok(s == SD_ERR_INVALID && strstr(sd_last_error(), "strength"), "strength 0.2 leaves no step: %s", sd_last_error());
    ok(engine_img2img_start(&p) == -1, "engine_img2img_start(0.2) is -1");
    p = params(0.5f);
    ok(engine_img2img_start(&p) == 2, "strength 0.5 starts at step 2 (timestep 499)");
    p = params(1.5f);
    ok(engine_check_params(e, &p) == SD_ERR_INVALID, "strength 1.5 is refused");
    ok(gen1(e, 0.5f, "x", 1, NULL, NULL, out) == SD_ERR_INVALID && strstr(sd_last_error(), "init_image"),
       "strength 0.5 without an init image is refused: %s", sd_last_error());
    uint8_t mask[S * S] = { 0 };
    ok(gen1(e, 1.0f, "x", 1, NULL, mask, out) == SD_ERR_INVALID && strstr(sd_last_error(), "mask"),
       "a mask without an init image is refused: %s", sd_last_error());
    free(ref);
    free(out);
}

static void test_mask(struct engine *e, const uint8_t *init, const uint8_t *mask) {
    uint8_t *round = malloc(BYTES), *out = malloc(BYTES);
    ok(round_trip(e, init, round) == 0, "the input's VAE round trip");
    static const float st[] = { 1.0f, 0.8f };
    for (int k = 0; k < 2; k++) {
        ok(gen1(e, st[k], "a red circle", 11, init, mask, out) == SD_OK, "a masked edit at strength %.1f", st[k]);
        int kept_max = 0;
        double changed = 0;
        int nchanged = 0;
        for (int q = 0; q < S * S; q++)
            for (int c = 0; c < 3; c++) {
                int dd = abs((int)out[q * 3 + c] - (int)round[q * 3 + c]);
                if (mask[q] < 128) { if (dd > kept_max) kept_max = dd; }
                else { changed += dd; nchanged++; }
            }
        ok(kept_max <= 1, "strength %.1f: unmasked pixels within one level of the round trip (max %d)", st[k], kept_max);
        ok(changed / nchanged > 2.0, "strength %.1f: masked pixels repainted (mean difference %.2f levels)", st[k],
           changed / nchanged);
    }
    free(round);
    free(out);
}

static void test_batch(struct engine *e, const uint8_t *a, const uint8_t *b, const uint8_t *mask) {
    struct gen_params p = params(0.5f);
    struct gen_item items[3] = { { .prompt = "a red circle", .seed = 3, .init = a },
                                 { .prompt = "a blue square", .seed = 4, .init = b, .mask = mask },
                                 { .prompt = "a red circle", .seed = 9, .init = b } };
    uint8_t *all = malloc(3 * BYTES), *one = malloc(BYTES);
    ok(engine_generate(e, &p, items, 3, all, NULL, NULL, NULL) == SD_OK, "a batch of three img2img items");
    for (int i = 0; i < 3; i++) {
        ok(engine_generate(e, &p, &items[i], 1, one, NULL, NULL, NULL) == SD_OK &&
           !memcmp(one, all + (size_t)i * BYTES, BYTES), "item %d has the same pixels alone as in the batch", i);
    }
    free(all);
    free(one);
}

int main(void) {
    const char *env = getenv("SDXLD_TEST_DATA");
    char model[600];
    snprintf(model, sizeof model, "%s/../../models/shapes-small", env ? env : "tests/data");
    struct engine *e;
    struct engine_config ec = { .model_dir = model, .threads = 2 };
    sd_status st = engine_load(&e, &ec);
    if (!ok(st == SD_OK, "shapes-small loads%s%s", st ? ": " : "", st ? sd_last_error() : ""))
        return done_testing();
    uint8_t *a = malloc(BYTES), *b = malloc(BYTES), mask[S * S];
    draw(a, 0);
    draw(b, 1);
    for (int q = 0; q < S * S; q++) mask[q] = (q % S) < S / 2 ? 255 : 0;   /* repaint the left half */
    test_strength(e, a);
    test_mask(e, a, mask);
    test_batch(e, a, b, mask);
    free(a);
    free(b);
    engine_free(e);
    return done_testing();
}
