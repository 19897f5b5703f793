/* lora_rt.c — see lora_rt.h. */
#include <math.h>
#include <string.h>

#include "lora.h"
#include "lora_rt.h"

/* ---- loading ---- */

static size_t adapter_floats(const struct lora_file_adapter *ad) {
    return (size_t)ad->rank * (size_t)ad->K + (size_t)ad->cout * ad->rank;
}

/* Read every adapter of rd into ad (its arena already reserved). */
static sd_status upload_all(struct lora_adapter *ad, struct backend *be, const struct lora_reader *rd) {
    size_t most = 0;
    for (int i = 0; i < rd->n; i++)
        if (adapter_floats(&rd->ad[i]) > most) most = adapter_floats(&rd->ad[i]);
    float *host = sd_malloc(most * sizeof(float));
    if (!host) return SD_ERR_NOMEM;
    sd_status st = SD_OK;
    for (int i = 0; i < rd->n && !st; i++) {
        const struct lora_file_adapter *fa = &rd->ad[i];
        struct lora_rt_module *m = &ad->m[i];
        size_t na = (size_t)fa->rank * fa->K, nb = (size_t)fa->cout * fa->rank;
        float alpha;
        if ((st = lora_reader_read(rd, i, host, host + na, &alpha))) break;
        m->row = fa->row;
        m->rank = fa->rank;
        m->s = alpha / (float)fa->rank;
        m->a = arena_floats(&ad->mem, na);
        m->b = arena_floats(&ad->mem, nb);
        if (!m->a || !m->b) { st = SD_ERR_NOMEM; break; }
        be->ops->upload(be, m->a, host, na * sizeof(float));
        be->ops->upload(be, m->b, host + na, nb * sizeof(float));
        st = backend_status(be);
    }
    sd_free(host);
    return st;
}

sd_status lora_adapter_load(struct lora_adapter *ad, struct backend *be, const struct weight_table *wt,
                            const char *path, sd_status (*room)(void *ud, size_t bytes), void *ud) {
    memset(ad, 0, sizeof *ad);
    struct lora_reader rd;
    SD_TRY(lora_reader_open(&rd, wt, path));
    size_t bytes = 0;
    for (int i = 0; i < rd.n; i++) bytes += adapter_floats(&rd.ad[i]) * sizeof(float) + 2 * 64;   /* + alignment */
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ad->mem, "lora adapters", &al, 0);
    sd_status st = room ? room(ud, bytes) : SD_OK;
    if (!st && !(ad->m = sd_calloc((size_t)rd.n, sizeof *ad->m))) st = SD_ERR_NOMEM;
    if (!st) st = arena_reserve(&ad->mem, bytes);
    if (!st) {
        ad->n = rd.n;
        st = upload_all(ad, be, &rd);
    }
    lora_reader_close(&rd);
    if (st) { lora_adapter_free(ad); return st; }
    ad->bytes = arena_capacity(&ad->mem);
    return SD_OK;
}

void lora_adapter_free(struct lora_adapter *ad) {
    arena_free(&ad->mem);
    sd_free(ad->m);
    memset(ad, 0, sizeof *ad);
}

/* ---- the active set ---- */

sd_status lora_active_build(struct lora_active *act, int nrows, const struct lora_adapter *const *ads,
                            const float *scales, int n) {
    memset(act, 0, sizeof *act);
    int total = 0;
    for (int i = 0; i < n; i++) total += ads[i]->n;
    act->nrows = nrows;
    act->head = sd_malloc(sizeof(int) * (size_t)(nrows > 0 ? nrows : 1));
    act->t = sd_malloc(sizeof *act->t * (size_t)(total > 0 ? total : 1));
    if (!act->head || !act->t) { lora_active_free(act); return SD_ERR_NOMEM; }
    for (int r = 0; r < nrows; r++) act->head[r] = -1;
    int *tail = sd_malloc(sizeof(int) * (size_t)(nrows > 0 ? nrows : 1));   /* a row's last term */
    if (!tail) { lora_active_free(act); return SD_ERR_NOMEM; }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ads[i]->n; k++) {
            const struct lora_rt_module *m = &ads[i]->m[k];
            SD_ASSERT(m->row >= 0 && m->row < nrows);
            act->t[act->nt] = (struct lora_term){ m->a, m->b, m->rank, scales[i] * m->s, -1 };
            if (act->head[m->row] < 0) act->head[m->row] = act->nt;
            else act->t[tail[m->row]].next = act->nt;
            tail[m->row] = act->nt++;
        }
    sd_free(tail);
    return SD_OK;
}

void lora_active_free(struct lora_active *act) {
    sd_free(act->head);
    sd_free(act->t);
    memset(act, 0, sizeof *act);
}

/* ---- the forward hooks ---- */

static int first_term(const struct lora_active *act, int row) {
    return row >= 0 && row < act->nrows ? act->head[row] : -1;
}

void lora_linear_add(struct fwd *f, float *out, const float *inp, int row, int R, int S, int I, int O) {
    int q = first_term(f->lora, row);
    if (q < 0) return;
    struct backend *be = f->be;
    uint64_t mark = arena_mark(f->ar);
    for (; q >= 0; q = f->lora->t[q].next) {
        const struct lora_term *t = &f->lora->t[q];
        float *a = fwd_alloc(f, (size_t)R * t->rank), *u = fwd_alloc(f, (size_t)R * O);
        if (!a || !u) break;
        be->ops->linear(be, a, inp, t->a, DT_F32, NULL, R, S, I, t->rank);    /* A x */
        be->ops->linear(be, u, a, t->b, DT_F32, NULL, R, S, t->rank, O);      /* B (A x) */
        be->ops->axpby(be, out, 1.0f, out, t->s, u, (long long)R * O);
        arena_reset(f->ar, mark);
    }
    arena_reset(f->ar, mark);
}

void lora_conv_add(struct fwd *f, float *out, const float *inp, int row, int N, int C, int H, int W, int K,
                   int k, int stride) {
    int q = first_term(f->lora, row);
    if (q < 0) return;
    struct backend *be = f->be;
    int p = k / 2, Ho = (H + 2 * p - k) / stride + 1, Wo = (W + 2 * p - k) / stride + 1;
    size_t hw = (size_t)Ho * Wo;
    uint64_t mark = arena_mark(f->ar);
    for (; q >= 0; q = f->lora->t[q].next) {
        const struct lora_term *t = &f->lora->t[q];
        float *a = fwd_alloc(f, (size_t)N * t->rank * hw), *u = fwd_alloc(f, (size_t)N * K * hw);
        if (!a || !u) break;
        be->ops->conv2d(be, a, inp, t->a, DT_F32, NULL, N, C, H, W, t->rank, k, k, stride, p, p, p, p);
        be->ops->conv2d(be, u, a, t->b, DT_F32, NULL, N, t->rank, Ho, Wo, K, 1, 1, 1, 0, 0, 0, 0);
        be->ops->axpby(be, out, 1.0f, out, t->s, u, (long long)N * K * hw);
        arena_reset(f->ar, mark);
    }
    arena_reset(f->ar, mark);
}
