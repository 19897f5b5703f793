/* cpu_dnnl.c — bf16 GEMMs through oneDNN's matmul (its JIT kernels: AMX tiles or
 * AVX512-BF16 dot products, fp32 accumulation), for the CPU backend's BF16 weights.
 *
 * Primitives are made once per shape and kept in a per-backend table (making one costs
 * far more than running a small one); their scratch memory is one grow-only buffer per
 * calling slot (user scratchpad mode), so a model with a hundred shapes does not hold a
 * hundred scratch buffers.  Each call runs on one thread (OpenMP's team size 1): the CPU
 * backend splits a product into panels over its own pool (cpu_weights.c), because a
 * second thread pool on the same cores (OpenMP's, spinning between oneDNN calls) cost a
 * quarter of a bf16 UNet step, measured with perf.  Calls from several threads at once are
 * safe: the table is locked, memory objects are per call, scratch is per slot.  Compiled
 * only with SD_HAVE_DNNL (meson option `dnnl`). */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "../core/core.h"
#include "cpu_dnnl.h"

#define CACHE_MAX 512

struct mm_key {
    int M, N, K;
    long long sa0, sa1, sb0, sb1, ldc;
    int bias, accumulate;
};

struct mm_entry {
    struct mm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, bias, c, pad;
    size_t pad_bytes;
};

struct cpu_dnnl {
    dnnl_engine_t eng;
    pthread_mutex_t mu;           /* the table */
    struct mm_entry e[CACHE_MAX];
    int n;                        /* entries in use */
    void *pad[CPU_DNNL_SLOTS];    /* scratchpads, one per slot */
    dnnl_stream_t stream[CPU_DNNL_SLOTS];   /* made on a slot's first call, kept */
    size_t pad_bytes[CPU_DNNL_SLOTS];
};

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "unknown";
    }
}

int cpu_dnnl_has_bf16(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

void cpu_dnnl_describe(char *buf, size_t n) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, n, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch, isa_name(dnnl_get_effective_cpu_isa()));
}

sd_status cpu_dnnl_create(struct cpu_dnnl **out) {
    *out = NULL;
    struct cpu_dnnl *d = sd_calloc(1, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success) { sd_free(d); return SD_OK; }
    pthread_mutex_init(&d->mu, NULL);
    *out = d;
    return SD_OK;
}

static void entry_free(struct mm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

void cpu_dnnl_destroy(struct cpu_dnnl *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) entry_free(&d->e[i]);
    dnnl_engine_destroy(d->eng);
    for (int i = 0; i < CPU_DNNL_SLOTS; i++) {
        sd_free(d->pad[i]);
        if (d->stream[i]) dnnl_stream_destroy(d->stream[i]);
    }
    pthread_mutex_destroy(&d->mu);
    sd_free(d);
}

static dnnl_status_t entry_make(struct cpu_dnnl *d, struct mm_entry *e, const struct mm_key *k) {
    dnnl_memory_desc_t a, b, bias, c;
    dnnl_dims_t da = { k->M, k->K }, db = { k->K, k->N }, dc = { k->M, k->N }, dbias = { 1, k->N };
    dnnl_dims_t sa = { k->sa0, k->sa1 }, sb = { k->sb0, k->sb1 }, sc = { k->ldc, 1 };
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s;
    e->key = *k;
    if ((s = dnnl_memory_desc_init_by_strides(&a, 2, da, dnnl_bf16, sa)) ||
        (s = dnnl_memory_desc_init_by_strides(&b, 2, db, dnnl_bf16, sb)) ||
        (s = dnnl_memory_desc_init_by_strides(&c, 2, dc, dnnl_f32, sc)) ||
        (s = dnnl_memory_desc_init_by_tag(&bias, 2, dbias, dnnl_f32, dnnl_ab)) ||
        (s = dnnl_primitive_attr_create(&attr)) ||
        (s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)))
        goto out;
    if (k->accumulate && ((s = dnnl_post_ops_create(&po)) || (s = dnnl_post_ops_append_sum(po, 1.0f)) ||
                          (s = dnnl_primitive_attr_set_post_ops(attr, po))))
        goto out;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &a, &b, k->bias ? &bias : NULL, &c)) ||
        (s = dnnl_primitive_desc_create(&pd, &md, attr, d->eng, NULL)) || (s = dnnl_primitive_create(&e->prim, pd)))
        goto out;
    e->pad = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->pad_bytes = dnnl_memory_desc_get_size(&e->pad);
    e->a = a; e->b = b; e->c = c; e->bias = bias;
out:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s) entry_free(e);
    return s;
}

/* The primitive for k: from the table, or made and added; when the table is full, made
 * for this call only (*owned: the caller frees it).  Entries are never replaced, so one
 * that another thread is running stays valid. */
static dnnl_status_t find(struct cpu_dnnl *d, const struct mm_key *k, struct mm_entry *out, int *owned) {
    *owned = 0;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n; i++)
        if (!memcmp(&d->e[i].key, k, sizeof *k)) {
            *out = d->e[i];
            pthread_mutex_unlock(&d->mu);
            return dnnl_success;
        }
    dnnl_status_t s = entry_make(d, out, k);
    if (!s && d->n < CACHE_MAX) d->e[d->n++] = *out;
    else if (!s) *owned = 1;
    pthread_mutex_unlock(&d->mu);
    return s;
}

/* A memory object over buf with descriptor md (freed by the caller). */
static dnnl_status_t wrap(dnnl_memory_t *m, const dnnl_memory_desc_t *md, dnnl_engine_t eng, const void *buf) {
    return dnnl_memory_create(m, md, eng, (void *)buf);
}

sd_status cpu_dnnl_gemm(struct cpu_dnnl *d, int slot, const struct cpu_dnnl_mm *p) {
    struct mm_key k;
    memset(&k, 0, sizeof k);   /* the key is compared bytewise: no stray padding bits */
    k.M = p->M; k.N = p->N; k.K = p->K;
    k.sa0 = p->sa0; k.sa1 = p->sa1; k.sb0 = p->sb0; k.sb1 = p->sb1; k.ldc = p->ldc;
    k.bias = p->bias != NULL;
    k.accumulate = p->accumulate;
    struct mm_entry e;
    int owned;
    dnnl_status_t s = find(d, &k, &e, &owned);
    if (s) return sd_fail(SD_ERR_UNSUPPORTED, "oneDNN bf16 matmul %dx%dx%d: status %d", p->M, p->N, p->K, (int)s);
    if (e.pad_bytes > d->pad_bytes[slot]) {
        void *q = sd_realloc(d->pad[slot], e.pad_bytes);
        if (!q) return sd_fail(SD_ERR_NOMEM, "oneDNN scratchpad: %zu bytes", e.pad_bytes);
        d->pad[slot] = q;
        d->pad_bytes[slot] = e.pad_bytes;
    }
    dnnl_memory_t m[5] = { NULL };
    omp_set_num_threads(1);
    if (!d->stream[slot] && (s = dnnl_stream_create(&d->stream[slot], d->eng, dnnl_stream_default_flags))) {
        d->stream[slot] = NULL;
        if (owned) entry_free(&e);
        return sd_fail(SD_ERR_UNSUPPORTED, "oneDNN stream: status %d", (int)s);
    }
    if (!(s = wrap(&m[0], &e.a, d->eng, p->A)) && !(s = wrap(&m[1], &e.b, d->eng, p->B)) &&
        !(s = wrap(&m[2], &e.c, d->eng, p->C)) && !(s = wrap(&m[3], &e.pad, d->eng, d->pad[slot])) &&
        !(p->bias && (s = wrap(&m[4], &e.bias, d->eng, p->bias)))) {
        dnnl_exec_arg_t args[5] = { { DNNL_ARG_SRC, m[0] }, { DNNL_ARG_WEIGHTS, m[1] }, { DNNL_ARG_DST, m[2] },
                                    { DNNL_ARG_SCRATCHPAD, m[3] }, { DNNL_ARG_BIAS, m[4] } };
        s = dnnl_primitive_execute(e.prim, d->stream[slot], p->bias ? 5 : 4, args);
        if (!s) s = dnnl_stream_wait(d->stream[slot]);
    }
    if (owned) entry_free(&e);
    for (int i = 0; i < 5; i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    return s ? sd_fail(SD_ERR_UNSUPPORTED, "oneDNN matmul %dx%dx%d failed: status %d", p->M, p->N, p->K, (int)s) : SD_OK;
}
