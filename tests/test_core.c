/* test_core.c — arenas, the RNG, fp16/bf16 conversions, error messages, allocation
 * accounting and fault injection. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "core/arena.h"
#include "core/rng.h"
#include "core/tensor.h"

static void test_arena(void) {
    struct arena a;
    arena_init(&a, "fixed", NULL, 0);
    ok(arena_reserve(&a, 1000) == SD_OK, "reserve");
    float *p = arena_floats(&a, 100), *q = arena_floats(&a, 100);
    ok(p && q && ((uintptr_t)p % 64) == 0 && ((uintptr_t)q % 64) == 0 && q >= p + 100, "aligned, disjoint slices");
    ok(arena_alloc(&a, 10000) == NULL && strstr(sd_last_error(), "fixed"), "fixed arena refuses overflow: %s", sd_last_error());
    uint64_t m = arena_mark(&a);
    float *r = arena_floats(&a, 10);
    arena_reset(&a, m);
    ok(arena_floats(&a, 10) == r, "reset to a mark reuses the space");
    arena_free(&a);

    arena_init(&a, "grow", NULL, 1);
    ok(arena_reserve(&a, 256) == SD_OK, "growable reserve");
    char *x = arena_alloc(&a, 200), *y = arena_alloc(&a, 5000), *z = arena_alloc(&a, 100);
    ok(x && y && z && a.nblocks >= 2, "grows by chaining blocks (%d)", a.nblocks);
    memset(x, 1, 200); memset(y, 2, 5000); memset(z, 3, 100);
    ok(x[199] == 1 && y[0] == 2 && z[99] == 3, "old slices stay valid after growth");
    size_t peak = a.peak;
    arena_reset(&a, 0);
    ok(a.nblocks == 1 && arena_capacity(&a) >= peak, "reset(0) coalesces into one block >= peak");
    size_t live = sd_alloc_live_bytes();
    x = arena_alloc(&a, 200); y = arena_alloc(&a, 5000); z = arena_alloc(&a, 100);
    ok(x && y && z && sd_alloc_live_bytes() == live && a.nblocks == 1, "steady state allocates nothing");
    /* coalescing is optional: when its allocation fails the chain is kept, and the fault
     * sweep is told the failure fell on an optional allocation */
    arena_alloc(&a, 20000);
    int nb = a.nblocks;
    sd_fault_arm_alloc(1);
    arena_reset(&a, 0);
    int hit = sd_fault_hit_optional();
    sd_fault_arm_alloc(0);
    ok(nb >= 2 && a.nblocks == nb && hit && arena_alloc(&a, 20000), "a failed coalesce keeps the chain (optional)");
    arena_reset(&a, 0);
    size_t cap = arena_capacity(&a);
    x = arena_alloc(&a, cap * 2);
    ok(x && a.nblocks == 1 && arena_capacity(&a) >= cap * 2, "growing an empty arena replaces its blocks by one "
       "(%d block, %zu bytes)", a.nblocks, arena_capacity(&a));
    memset(x, 4, cap * 2);
    sd_fault_arm_alloc(1);
    void *v = sd_malloc(8);
    ok(!v && !sd_fault_hit_optional(), "an ordinary allocation's failure is not optional");
    sd_fault_arm_alloc(0);
    arena_free(&a);
}

static void test_rng(void) {
    struct sd_rng a, b;
    float x[1001], y[1001];
    sd_rng_init(&a, 7);
    sd_rng_init(&b, 7);
    sd_rng_normal(&a, x, 1001);
    sd_rng_normal(&b, y, 1001);
    ok(!memcmp(x, y, sizeof x), "same seed, same normals");
    sd_rng_init(&b, 8);
    sd_rng_normal(&b, y, 1001);
    ok(memcmp(x, y, sizeof x) != 0, "different seed, different normals");
    /* moments over many draws */
    size_t n = 1 << 20;
    float *v = malloc(n * sizeof(float));
    sd_rng_init(&a, 123);
    sd_rng_normal(&a, v, n);
    double m = 0, s2 = 0, k4 = 0;
    for (size_t i = 0; i < n; i++) m += v[i];
    m /= n;
    for (size_t i = 0; i < n; i++) { double d = v[i] - m; s2 += d * d; k4 += d * d * d * d; }
    s2 /= n; k4 /= n * s2 * s2;
    ok(fabs(m) < 0.005 && fabs(s2 - 1) < 0.01 && fabs(k4 - 3) < 0.05, "N(0,1): mean %.4f var %.4f kurtosis %.3f", m, s2, k4);
    free(v);
    /* the stream is a function of (seed, offset): two halves equal one whole */
    float whole[16], half[16];
    sd_rng_init(&a, 99); sd_rng_normal(&a, whole, 16);
    sd_rng_init(&a, 99); sd_rng_normal(&a, half, 8); sd_rng_normal(&a, half + 8, 8);
    ok(!memcmp(whole, half, sizeof whole), "drawing in chunks of 4k gives the same stream");
}

static void test_half(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_f16_to_f32((uint16_t)h);
        if (isnan(f)) { bad += !isnan(sd_f16_to_f32(sd_f32_to_f16(f))); continue; }
        bad += sd_f32_to_f16(f) != h;
    }
    ok(bad == 0, "fp16 -> fp32 -> fp16 round-trips all 65536 values (%d bad)", bad);
    ok(sd_f16_to_f32(0x3c00) == 1.0f && sd_f16_to_f32(0xc000) == -2.0f && sd_f16_to_f32(0x0001) == ldexpf(1, -24), "fp16 values");
    ok(sd_f32_to_f16(1e6f) == 0x7c00 && sd_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00 && sd_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02,
       "fp16 overflow to inf, ties to even");
    ok(sd_bf16_to_f32(sd_f32_to_bf16(3.140625f)) == 3.140625f && sd_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80, "bf16 rounding");
    float src[3] = { 1.5f, -2.25f, 65504.0f }, back[3];
    uint16_t st[3];
    sd_convert_from_f32(st, src, DT_F16, 3);
    sd_convert_to_f32(back, st, DT_F16, 3);
    ok(!memcmp(src, back, sizeof src), "bulk f16 conversion");
    int64_t ids[2] = { 49407, -3 };
    sd_convert_to_f32(back, ids, DT_I64, 2);
    ok(back[0] == 49407.0f && back[1] == -3.0f, "I64 converts by value");
    sd_dtype dt;
    ok(!sd_dtype_parse("BF16", &dt) && dt == DT_BF16 && sd_dtype_parse("F64", &dt), "dtype names");
}

static void test_errors(void) {
    ok(sd_fail(SD_ERR_SHAPE, "conv_in.weight: expected %s", "(320,4,3,3)") == SD_ERR_SHAPE &&
       !strcmp(sd_last_error(), "conv_in.weight: expected (320,4,3,3)"), "sd_fail records the message");
    sd_wrap(SD_ERR_SHAPE, "loading %s", "unet");
    ok(!strcmp(sd_last_error(), "loading unet: conv_in.weight: expected (320,4,3,3)"), "sd_wrap prefixes context");
    size_t live = sd_alloc_live_bytes();
    sd_fault_arm_alloc(2);
    void *a = sd_malloc(10), *b = sd_malloc(10), *c = sd_malloc(10);
    ok(a && !b && c && strstr(sd_last_error(), "out of host memory"), "fault injection fails exactly the 2nd allocation");
    sd_free(a); sd_free(c);
    ok(sd_alloc_live_bytes() == live, "live bytes back to where they were");
    char *data;
    ok(sd_read_file("/nonexistent/x", 100, &data, NULL) == SD_ERR_NOTFOUND, "missing file: %s", sd_last_error());
    ok(sd_read_file("/", 100, &data, NULL) == SD_ERR_IO, "a directory is not a file");
}

int main(void) {
    test_arena();
    test_rng();
    test_half();
    test_errors();
    return done_testing();
}
