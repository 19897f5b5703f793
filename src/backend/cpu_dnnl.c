/* cpu_dnnl.c — bf16 GEMMs through oneDNN's matmul (its JIT kernels: AMX tiles or
 * AVX512-BF16 dot products, fp32 accumulation), for the CPU backend's BF16 weights.
 *
 * Primitives are made once per shape and kept in a small per-backend table (making one
 * costs far more than running a small one); their scratch memory is one grow-only buffer
 * of ours (user scratchpad mode), so a model with a hundred shapes does not hold a
 * hundred scratch buffers.  oneDNN threads with OpenMP: each call sets the thread count
 * to the backend's.  Compiled only with SD_HAVE_DNNL (meson option `dnnl`). */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "../core/core.h"
#include "cpu_dnnl.h"

#define CACHE_MAX 256

struct mm_key {
    int M, N, K;
    long long sa0, sa1, sb0, sb1, ldc;
    int bias, accumulate;
};

struct mm_entry {
    struct mm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, bias, c, pad;
    size_t pad_bytes;
};

struct cpu_dnnl {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    struct mm_entry e[CACHE_MAX];
    int n, next;                  /* entries in use; the next one to recycle when full */
    void *pad;                    /* the shared scratchpad */
    size_t pad_bytes;
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
    if (dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags) != dnnl_success) {
        dnnl_engine_destroy(d->eng);
        sd_free(d);
        return SD_OK;
    }
    *out = d;
    return SD_OK;
}

static void entry_free(struct mm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    dnnl_memory_t m[5] = { e->a, e->b, e->bias, e->c, e->pad };
    for (int i = 0; i < 5; i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    memset(e, 0, sizeof *e);
}

void cpu_dnnl_destroy(struct cpu_dnnl *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) entry_free(&d->e[i]);
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->eng);
    sd_free(d->pad);
    sd_free(d);
}

/* A memory object for md with no buffer yet (handles are set per call). */
static dnnl_status_t mem(dnnl_memory_t *m, const dnnl_memory_desc_t *md, dnnl_engine_t eng) {
    return dnnl_memory_create(m, md, eng, DNNL_MEMORY_NONE);
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
    const dnnl_memory_desc_t *pmd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->pad_bytes = dnnl_memory_desc_get_size(pmd);
    if ((s = mem(&e->a, &a, d->eng)) || (s = mem(&e->b, &b, d->eng)) || (s = mem(&e->c, &c, d->eng)) ||
        (k->bias && (s = mem(&e->bias, &bias, d->eng))) || (s = mem(&e->pad, pmd, d->eng)))
        goto out;
out:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s) entry_free(e);
    return s;
}

static struct mm_entry *lookup(struct cpu_dnnl *d, const struct mm_key *k, dnnl_status_t *s) {
    for (int i = 0; i < d->n; i++)
        if (!memcmp(&d->e[i].key, k, sizeof *k)) return &d->e[i];
    struct mm_entry *e;
    if (d->n < CACHE_MAX) e = &d->e[d->n++];
    else { e = &d->e[d->next]; d->next = (d->next + 1) % CACHE_MAX; entry_free(e); }
    if ((*s = entry_make(d, e, k))) {
        *e = d->e[--d->n];   /* give the slot back (the last entry moves into it) */
        memset(&d->e[d->n], 0, sizeof d->e[d->n]);
        return NULL;
    }
    return e;
}

sd_status cpu_dnnl_gemm(struct cpu_dnnl *d, int nthreads, const struct cpu_dnnl_mm *p) {
    struct mm_key k;
    memset(&k, 0, sizeof k);   /* the key is compared bytewise: no stray padding bits */
    k.M = p->M; k.N = p->N; k.K = p->K;
    k.sa0 = p->sa0; k.sa1 = p->sa1; k.sb0 = p->sb0; k.sb1 = p->sb1; k.ldc = p->ldc;
    k.bias = p->bias != NULL;
    k.accumulate = p->accumulate;
    dnnl_status_t s = dnnl_success;
    struct mm_entry *e = lookup(d, &k, &s);
    if (!e) return sd_fail(SD_ERR_UNSUPPORTED, "oneDNN bf16 matmul %dx%dx%d: status %d", p->M, p->N, p->K, (int)s);
    if (e->pad_bytes > d->pad_bytes) {
        void *q = sd_realloc(d->pad, e->pad_bytes);
        if (!q) return sd_fail(SD_ERR_NOMEM, "oneDNN scratchpad: %zu bytes", e->pad_bytes);
        d->pad = q;
        d->pad_bytes = e->pad_bytes;
    }
    dnnl_memory_set_data_handle(e->a, (void *)p->A);
    dnnl_memory_set_data_handle(e->b, (void *)p->B);
    dnnl_memory_set_data_handle(e->c, p->C);
    dnnl_memory_set_data_handle(e->pad, d->pad);
    if (e->bias) dnnl_memory_set_data_handle(e->bias, (void *)p->bias);
    dnnl_exec_arg_t args[5] = { { DNNL_ARG_SRC, e->a }, { DNNL_ARG_WEIGHTS, e->b }, { DNNL_ARG_DST, e->c },
                                { DNNL_ARG_SCRATCHPAD, e->pad }, { DNNL_ARG_BIAS, e->bias } };
    omp_set_num_threads(nthreads);
    s = dnnl_primitive_execute(e->prim, d->stream, e->bias ? 5 : 4, args);
    if (!s) s = dnnl_stream_wait(d->stream);
    return s ? sd_fail(SD_ERR_UNSUPPORTED, "oneDNN matmul %dx%dx%d failed: status %d", p->M, p->N, p->K, (int)s) : SD_OK;
}
