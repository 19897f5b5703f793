/* test_weights.c — the strict name-table loader: a complete file binds; a missing,
 * unexpected, mis-shaped, integer-typed or duplicated-by-mapping tensor is an error that
 * names the key; LDM 1×1 conv shapes bind to linears; F16/BF16 convert; fault
 * injection during load leaks nothing. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "io/safetensors.h"
#include "io/weights.h"

static char dir[256];
static struct backend *be;

struct model { float *a, *b, *c; };

static void declare(struct weight_table *t, struct model *m) {
    wt_init(t);
    wt_add(t, &m->a, WT_INIT_NORMAL, 1, 2, (int64_t[]){ 4, 3 }, "blk.%d.weight", 0);
    wt_add(t, &m->b, WT_INIT_ZERO, 0, 1, (int64_t[]){ 4 }, "blk.%d.bias", 0);
    wt_add(t, &m->c, WT_INIT_ONE, 0, 2, (int64_t[]){ 2, 2 }, "attn.to_q.weight");
}

/* Write a file with the listed tensors: name, dtype, ndim, shape. */
static void write_file(const char *path, int n, const char *const *names, const sd_dtype *dts, const int *nd,
                  const int64_t (*shapes)[4]) {
    struct st_writer w;
    st_writer_init(&w);
    float buf[64];
    for (int i = 0; i < 64; i++) buf[i] = (float)i * 0.5f;
    for (int i = 0; i < n; i++) {
        if (dts[i] == DT_I64) {
            int64_t ids[64] = { 0 };
            st_writer_add(&w, names[i], DT_I64, nd[i], shapes[i], ids);
        } else st_writer_add_f32(&w, names[i], dts[i], nd[i], shapes[i], buf);
    }
    st_writer_write(&w, path);
    st_writer_free(&w);
}

static sd_status load(const char *path, struct model *m, struct arena *ar) {
    struct weight_table t;
    declare(&t, m);
    sd_status st = wt_alloc(&t, ar, be);
    if (!st) st = wt_load(&t, be, path, NULL);
    wt_free(&t);
    return st;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/sdxld-weights-XXXXXX");
    if (!mkdtemp(dir) || backend_create(&be, "cpu", 1)) return 1;
    char p[512];
    const char *names[] = { "blk.0.weight", "blk.0.bias", "attn.to_q.weight", "extra" };
    const sd_dtype f32[] = { DT_F32, DT_F16, DT_BF16, DT_F32 };
    const int nd[] = { 2, 1, 4, 1 };
    const int64_t shp[][4] = { { 4, 3 }, { 4 }, { 2, 2, 1, 1 }, { 1 } };
    struct model m;
    struct arena ar;
    snprintf(p, sizeof p, "%s/good.safetensors", dir);
    write_file(p, 3, names, f32, nd, shp);
    ok(load(p, &m, &ar) == SD_OK, "complete file binds (F32, F16, BF16; [2,2,1,1] binds to [2,2]): %s", sd_last_error());
    ok(m.a[5] == 2.5f && m.b[3] == 1.5f && m.c[1] == 0.5f, "values converted to fp32");
    arena_free(&ar);

    snprintf(p, sizeof p, "%s/missing.safetensors", dir);
    write_file(p, 2, names, f32, nd, shp);
    ok(load(p, &m, &ar) == SD_ERR_NOTFOUND && strstr(sd_last_error(), "attn.to_q.weight"), "missing tensor named: %s", sd_last_error());
    arena_free(&ar);

    snprintf(p, sizeof p, "%s/extra.safetensors", dir);
    write_file(p, 4, names, f32, nd, shp);
    ok(load(p, &m, &ar) == SD_ERR_FORMAT && strstr(sd_last_error(), "unexpected tensor 'extra'"), "unexpected tensor named: %s", sd_last_error());
    arena_free(&ar);

    const int64_t bad[][4] = { { 3, 4 }, { 4 }, { 2, 2 } };
    snprintf(p, sizeof p, "%s/shape.safetensors", dir);
    write_file(p, 3, names, f32, (const int[]){ 2, 1, 2 }, bad);
    ok(load(p, &m, &ar) == SD_ERR_SHAPE && strstr(sd_last_error(), "blk.0.weight: expected (4,3), file has (3,4)"),
       "mis-shaped tensor named with both shapes: %s", sd_last_error());
    arena_free(&ar);

    const sd_dtype i64[] = { DT_I64, DT_F32, DT_F32 };
    snprintf(p, sizeof p, "%s/int.safetensors", dir);
    write_file(p, 3, names, i64, nd, shp);
    ok(load(p, &m, &ar) == SD_ERR_FORMAT && strstr(sd_last_error(), "integer"), "integer weights rejected: %s", sd_last_error());
    arena_free(&ar);

    /* fail every allocation in turn: an error, never a crash or a leak */
    snprintf(p, sizeof p, "%s/good.safetensors", dir);
    size_t live = sd_alloc_live_bytes();
    int fails = 0, leaks = 0;
    for (int k = 1; k < 40; k++) {
        sd_fault_arm_alloc(k);
        sd_status st = load(p, &m, &ar);
        sd_fault_arm_alloc(0);
        arena_free(&ar);
        fails += st != SD_OK;
        leaks += sd_alloc_live_bytes() != live;
        if (st == SD_OK) break;
    }
    ok(fails > 0 && leaks == 0, "%d injected allocation failures, no leak", fails);
    backend_destroy(be);
    snprintf(p, sizeof p, "rm -rf %s", dir);
    if (system(p)) return 1;
    return done_testing();
}
