/* weights.c — see weights.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fs.h"
#include "../core/rng.h"
#include "safetensors.h"
#include "weights.h"

void wt_init(struct weight_table *t) { memset(t, 0, sizeof *t); }

void wt_free(struct weight_table *t) {
    sd_free(t->rows);
    sd_free(t->hash);
    memset(t, 0, sizeof *t);
}

void wt_add(struct weight_table *t, float **dst, enum wt_init init, float init_std, int ndim,
            const int64_t *shape, const char *fmt, ...) {
    if (t->err) return;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 256;
        struct weight_row *r = sd_realloc(t->rows, sizeof *r * cap);
        if (!r) { t->err = SD_ERR_NOMEM; return; }
        t->rows = r;
        t->cap = cap;
    }
    struct weight_row *r = &t->rows[t->n];
    memset(r, 0, sizeof *r);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(r->name, sizeof r->name, fmt, ap);
    va_end(ap);
    if (len >= (int)sizeof r->name) {
        t->err = sd_fail(SD_ERR_INVALID, "weight name too long: %s...", r->name);
        return;
    }
    SD_ASSERT(ndim >= 1 && ndim <= 4);
    r->dst = dst;
    r->ndim = ndim;
    memcpy(r->shape, shape, sizeof *shape * ndim);
    r->init = init;
    r->init_std = init_std;
    *dst = NULL;
    t->total += sd_numel(ndim, shape);
    t->n++;
}

void wt_lowp(struct weight_table *t, sd_dtype *slot) {
    if (t->err || t->n == 0) return;
    t->rows[t->n - 1].dt_slot = slot;
    *slot = DT_F32;
}

int wt_dtype_parse(const char *s, sd_dtype *out) {
    static const struct { const char *name; sd_dtype dt; } names[] = {
        { "auto", WT_DTYPE_AUTO }, { "f32", DT_F32 }, { "f16", DT_F16 }, { "bf16", DT_BF16 },
        { "fp32", DT_F32 }, { "fp16", DT_F16 }, { "float32", DT_F32 }, { "float16", DT_F16 }, { "bfloat16", DT_BF16 },
    };
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name)) { *out = names[i].dt; return 0; }
    return -1;
}

const char *wt_dtype_name(sd_dtype dt) {
    return dt == WT_DTYPE_AUTO ? "auto" : dt == DT_F16 ? "f16" : dt == DT_BF16 ? "bf16" : "f32";
}

static size_t row_numel(const struct weight_row *r) { return (size_t)sd_numel(r->ndim, r->shape); }
static size_t row_bytes(const struct weight_row *r) { return row_numel(r) * sd_dtype_size(r->dt); }

void wt_row_read(struct backend *be, const struct weight_row *r, float *dst) {
    size_t n = row_numel(r);
    if (r->dt == DT_F32) { be->ops->download(be, dst, *r->dst, n * sizeof(float)); return; }
    /* 16-bit values land in the upper half of dst, then widen from the front: element i
     * is read (at byte 2n + 2i) before anything writes past byte 4i + 4 <= 2n + 2i + 2 */
    uint16_t *h = (uint16_t *)(dst + n) - n;
    be->ops->download(be, h, *r->dst, n * sizeof(uint16_t));
    sd_convert_to_f32(dst, h, r->dt, n);
}

sd_status wt_row_write(struct backend *be, const struct weight_row *r, const float *src) {
    size_t n = row_numel(r);
    if (r->dt == DT_F32) { be->ops->upload(be, *r->dst, src, n * sizeof(float)); return SD_OK; }
    uint16_t *h = sd_malloc(n * sizeof(uint16_t) + 2);
    if (!h) return SD_ERR_NOMEM;
    sd_convert_from_f32(h, src, r->dt, n);
    be->ops->upload(be, *r->dst, h, n * sizeof(uint16_t));
    sd_free(h);
    return SD_OK;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

sd_status wt_alloc(struct weight_table *t, struct arena *params, struct backend *be) {
    if (t->err) return t->err == SD_ERR_NOMEM ? sd_fail(SD_ERR_NOMEM, "declaring weights: out of memory") : t->err;
    t->hash_cap = 16;
    while (t->hash_cap < 2 * t->n) t->hash_cap *= 2;
    t->hash = sd_malloc(sizeof(int) * t->hash_cap);
    if (!t->hash) return SD_ERR_NOMEM;
    memset(t->hash, -1, sizeof(int) * t->hash_cap);
    for (int i = 0; i < t->n; i++) {
        size_t h = hash_str(t->rows[i].name) & (t->hash_cap - 1);
        while (t->hash[h] >= 0) {
            if (!strcmp(t->rows[t->hash[h]].name, t->rows[i].name))
                SD_PANIC("weight %s declared twice", t->rows[i].name);
            h = (h + 1) & (t->hash_cap - 1);
        }
        t->hash[h] = i;
    }
    if (t->wdt != DT_F32 && t->wdt != DT_F16 && t->wdt != DT_BF16)
        return sd_fail(SD_ERR_INVALID, "weights: storage dtype %s is not f32, f16 or bf16", sd_dtype_name(t->wdt));
    struct arena_allocator al = backend_allocator(be);
    arena_init(params, "params", &al, 0);
    t->bytes = 0;
    for (int i = 0; i < t->n; i++) {
        struct weight_row *r = &t->rows[i];
        r->dt = r->dt_slot ? t->wdt : DT_F32;
        if (r->dt_slot) *r->dt_slot = r->dt;
        t->bytes += (row_bytes(r) + 63) / 64 * 64;
    }
    sd_status st = arena_reserve(params, t->bytes);
    if (st) return st;
    for (int i = 0; i < t->n; i++) *t->rows[i].dst = arena_alloc(params, row_bytes(&t->rows[i]));
    return SD_OK;
}

const struct weight_row *wt_find(const struct weight_table *t, const char *name) {
    if (!t->hash) return NULL;
    size_t h = hash_str(name) & (t->hash_cap - 1);
    while (t->hash[h] >= 0) {
        if (!strcmp(t->rows[t->hash[h]].name, name)) return &t->rows[t->hash[h]];
        h = (h + 1) & (t->hash_cap - 1);
    }
    return NULL;
}

/* Shapes match if equal after dropping trailing 1s (an LDM 1×1 conv [C,C,1,1] binds to a
 * linear [C,C]).  x's shape as bound: dim 0 divided by nparts, 2-D transposed. */
static int shape_match(const struct weight_row *r, int ndim, const int64_t *xs) {
    int a = r->ndim, b = ndim;
    while (a > 1 && r->shape[a - 1] == 1) a--;
    while (b > 1 && xs[b - 1] == 1) b--;
    if (a != b) return 0;
    for (int i = 0; i < a; i++)
        if (r->shape[i] != xs[i]) return 0;
    return 1;
}

void wt_begin(struct weight_table *t) {
    for (int i = 0; i < t->n; i++) t->rows[i].loaded = 0;
}

/* The rows one tensor binds to, checked for existence, double binding and shape. */
static sd_status bind_rows(struct weight_table *t, const struct st_file *f, const struct st_tensor *x,
                           const struct wt_bind *b, struct weight_row **rows) {
    char s1[64], s2[64];
    int64_t xs[SD_MAX_DIMS];
    memcpy(xs, x->shape, sizeof xs);
    if (b->n < 1 || b->n > WT_MAX_PARTS || (b->n > 1 && (x->ndim < 1 || xs[0] % b->n)) || (b->transpose && x->ndim != 2))
        return sd_fail(SD_ERR_SHAPE, "%s: %s: shape %s cannot be split in %d / transposed", f->path, x->name,
                       sd_shape_str(s2, sizeof s2, x->ndim, x->shape), b->n);
    if (b->n > 1) xs[0] /= b->n;
    if (b->transpose) { int64_t k = xs[0]; xs[0] = xs[1]; xs[1] = k; }
    for (int p = 0; p < b->n; p++) {
        struct weight_row *r = rows[p] = (struct weight_row *)wt_find(t, b->name[p]);
        if (!r) return sd_fail(SD_ERR_FORMAT, "%s: unexpected tensor '%s'", f->path, x->name);
        if (r->loaded) return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' bound twice (as %s)", f->path, x->name, r->name);
        if (!shape_match(r, x->ndim, xs))
            return sd_fail(SD_ERR_SHAPE, "%s: %s: expected %s, file has %s", f->path, x->name,
                           sd_shape_str(s1, sizeof s1, r->ndim, r->shape),
                           sd_shape_str(s2, sizeof s2, x->ndim, xs));
    }
    if (x->dtype == DT_I64) return sd_fail(SD_ERR_FORMAT, "%s: %s: integer tensor where weights are expected", f->path, x->name);
    return SD_OK;
}

struct stage { float *a, *b; size_t n; };

static sd_status stage_grow(struct stage *s, size_t n) {
    if (n <= s->n) return SD_OK;
    float *a = sd_realloc(s->a, n * sizeof(float));
    if (a) s->a = a;
    float *b = a ? sd_realloc(s->b, n * sizeof(float)) : NULL;
    if (b) s->b = b;
    if (!a || !b) return SD_ERR_NOMEM;
    s->n = n;
    return SD_OK;
}

/* Convert, check, (transpose,) and upload one tensor into its rows. */
static sd_status bind_tensor(struct backend *be, const struct st_file *f, const struct st_tensor *x,
                             const struct wt_bind *b, struct weight_row **rows, struct stage *s) {
    size_t n = (size_t)st_numel(x);
    SD_TRY(stage_grow(s, n));
    st_read_f32(x, s->a);
    st_release(f, x);
    long long bad = sd_find_nonfinite(s->a, n);
    if (bad >= 0)
        return sd_fail(SD_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value (%g at element %lld)", f->path,
                       x->name, s->a[bad], bad);
    const float *src = s->a;
    if (b->transpose) {   /* file [R, C] -> row [C, R] */
        int64_t R = x->shape[0], C = x->shape[1];
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++) s->b[j * R + i] = s->a[i * C + j];
        src = s->b;
    }
    size_t part = n / (size_t)b->n;
    for (int p = 0; p < b->n; p++) {
        SD_TRY(wt_row_write(be, rows[p], src + part * p));
        rows[p]->loaded = 1;
    }
    return SD_OK;
}

sd_status wt_bind_file(struct weight_table *t, struct backend *be, const struct st_file *f,
                       wt_resolve_fn fn, void *ud, unsigned char *used) {
    struct stage s = { 0 };
    struct wt_bind b;
    struct weight_row *rows[WT_MAX_PARTS];
    sd_status st = SD_OK;
    for (int i = 0; i < f->ntensors && !st; i++) {
        const struct st_tensor *x = &f->tensors[i];
        memset(&b, 0, sizeof b);
        b.n = 1;
        enum wt_resolution r = fn(ud, x->name, &b);
        if (r == WT_FOREIGN) continue;
        if (r == WT_BIND && !(st = bind_rows(t, f, x, &b, rows))) st = bind_tensor(be, f, x, &b, rows, &s);
        if (!st && used) used[i] = 1;
    }
    sd_free(s.a);
    sd_free(s.b);
    return st;
}

sd_status wt_check_complete(const struct weight_table *t, const char *what) {
    char s1[64];
    for (int i = 0; i < t->n; i++)
        if (!t->rows[i].loaded)
            return sd_fail(SD_ERR_NOTFOUND, "%s: missing tensor '%s' %s", what, t->rows[i].name,
                           sd_shape_str(s1, sizeof s1, t->rows[i].ndim, t->rows[i].shape));
    return SD_OK;
}

enum wt_resolution wt_map_resolve(void *ud, const char *key, struct wt_bind *b) {
    wt_name_map map = *(wt_name_map *)ud;
    if (!map) { snprintf(b->name[0], WT_NAME_MAX, "%s", key); return WT_BIND; }
    return map(key, b->name[0], WT_NAME_MAX) ? WT_SKIP : WT_BIND;
}

sd_status wt_load(struct weight_table *t, struct backend *be, const char *path, wt_name_map map) {
    struct st_file f;
    sd_status st = st_open(&f, path);
    if (st) return st;
    wt_begin(t);
    st = wt_bind_file(t, be, &f, wt_map_resolve, &map, NULL);
    if (!st) st = wt_check_complete(t, path);
    st_close(&f);
    return st;
}

char *wt_weights_path(const char *dir, const char *st_name, const char *bin_name) {
    struct stat sb;
    char *st = sd_path_join(dir, st_name);
    if (!st || sd_stat(st, &sb) == 0) return st;
    char *bin = sd_path_join(dir, bin_name);
    if (!bin) { sd_free(st); return NULL; }
    if (sd_stat(bin, &sb) == 0) { sd_free(st); return bin; }
    sd_free(bin);
    return st;   /* neither exists: the error will name the safetensors file */
}

/* Normals for one tensor, split across threads.  The RNG is counter-based and draws
 * one 4-word block per 4 values, so the values from element e (a multiple of 4) on come
 * from offset + e/4: each thread takes its own range of blocks and the result is bit for
 * bit the sequential one.  (Drawing is most of `sdxld init` at SDXL size: 3.5 G values.) */
struct normal_job { float *out; size_t n; uint64_t seed, offset; float scale; };

static void *normal_worker(void *p) {
    struct normal_job *j = p;
    struct sd_rng r = { j->seed, j->offset };
    sd_rng_normal(&r, j->out, j->n);
    for (size_t i = 0; i < j->n; i++) j->out[i] *= j->scale;
    return NULL;
}

#define NORMAL_THREADS_MAX 64
#define NORMAL_PAR_MIN (1u << 20)   /* values below which one thread is faster */

static void fill_normal(struct sd_rng *rng, float *out, size_t n, float scale, int nthreads) {
    struct normal_job jobs[NORMAL_THREADS_MAX];
    pthread_t tid[NORMAL_THREADS_MAX];
    int started[NORMAL_THREADS_MAX] = { 0 };
    if (n < NORMAL_PAR_MIN || nthreads < 2) nthreads = 1;
    if (nthreads > NORMAL_THREADS_MAX) nthreads = NORMAL_THREADS_MAX;
    size_t blocks = (n + 3) / 4;
    for (int k = 0; k < nthreads; k++) {
        size_t b0 = blocks * k / nthreads, b1 = blocks * (k + 1) / nthreads;
        size_t e0 = 4 * b0, e1 = 4 * b1 < n ? 4 * b1 : n;
        jobs[k] = (struct normal_job){ out + e0, e1 - e0, rng->seed, rng->offset + b0, scale };
    }
    for (int k = 1; k < nthreads; k++) started[k] = pthread_create(&tid[k], NULL, normal_worker, &jobs[k]) == 0;
    normal_worker(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else normal_worker(&jobs[k]);
    }
    rng->offset += blocks;
}

sd_status wt_init_random(struct weight_table *t, struct backend *be, uint64_t seed) {
    struct sd_rng rng;
    sd_rng_init(&rng, seed);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ncpu > 0 ? (int)ncpu : 1;
    size_t maxn = 0;
    for (int i = 0; i < t->n; i++) {
        size_t n = (size_t)sd_numel(t->rows[i].ndim, t->rows[i].shape);
        if (n > maxn) maxn = n;
    }
    float *buf = sd_malloc(maxn * sizeof(float) + 4);
    if (!buf) return SD_ERR_NOMEM;
    for (int i = 0; i < t->n; i++) {
        const struct weight_row *r = &t->rows[i];
        size_t n = (size_t)sd_numel(r->ndim, r->shape);
        if (r->init == WT_INIT_NORMAL) {
            fill_normal(&rng, buf, n, r->init_std, nthreads);
        } else {
            for (size_t j = 0; j < n; j++) buf[j] = r->init == WT_INIT_ONE ? 1.0f : 0.0f;
        }
        sd_status st = wt_row_write(be, r, buf);
        if (st) { sd_free(buf); return st; }
    }
    sd_free(buf);
    return SD_OK;
}

void wt_zero(const struct weight_table *t, struct backend *be) {
    for (int i = 0; i < t->n; i++)
        be->ops->zero(be, *t->rows[i].dst, row_bytes(&t->rows[i]));
}

sd_status wt_save(const struct weight_table *t, struct backend *be, const char *path, sd_dtype dt) {
    struct st_writer w;
    st_writer_init(&w);
    sd_status st = SD_OK;
    float *buf = NULL;
    size_t bufn = 0;
    for (int i = 0; i < t->n && !st; i++) {
        const struct weight_row *r = &t->rows[i];
        size_t n = (size_t)sd_numel(r->ndim, r->shape);
        if (n > bufn) {
            float *p = sd_realloc(buf, n * sizeof(float) + 4);
            if (!p) { st = SD_ERR_NOMEM; break; }
            buf = p;
            bufn = n;
        }
        wt_row_read(be, r, buf);
        st = st_writer_add_f32(&w, r->name, dt, r->ndim, r->shape, buf);
    }
    if (!st) st = st_writer_write(&w, path);
    st_writer_free(&w);
    sd_free(buf);
    return st;
}
