/* cond.c — see cond.h. */
#include <string.h>

#include "cond.h"

void cond_free(struct cond *k) {
    if (k->loaded1) clip_free(&k->te1);
    if (k->loaded2) clip_free(&k->te2);
    tokenizer_free(k->tok1);
    tokenizer_free(k->tok2);
    memset(k, 0, sizeof *k);
}

void cond_set_dims(struct cond *k) {
    k->L = tokenizer_max_length(k->tok1);
    k->X = k->te1.cfg.hidden + k->te2.cfg.hidden;
    k->P = k->te2.cfg.projection_dim;
}

sd_status cond_load(struct cond *k, struct backend *be, const char *dir) {
    memset(k, 0, sizeof *k);
    static const char *const sub[4] = { "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2" };
    sd_status st = SD_OK;
    for (int i = 0; i < 4 && !st; i++) {
        char *p = sd_path_join(dir, sub[i]);
        if (!p) { st = SD_ERR_NOMEM; break; }   /* cond_free below: what loaded so far */
        st = i == 0 ? tokenizer_load(&k->tok1, p) : i == 1 ? tokenizer_load(&k->tok2, p)
           : i == 2 ? clip_load(&k->te1, be, p, 0, DT_F32) : clip_load(&k->te2, be, p, 1, DT_F32);
        if (!st && i == 2) k->loaded1 = 1;
        if (!st && i == 3) k->loaded2 = 1;
        sd_free(p);
    }
    if (st) { cond_free(k); return st; }
    cond_set_dims(k);
    return SD_OK;
}

/* Token ids of both tokenizers, [n, L] each, as ints for the encoders (ids32) and int64
 * for the trace. */
static sd_status tokenize(struct cond *k, const char *const *prompts, int n, int64_t *ids, int *ids32,
                          struct cond_trace *tr) {
    size_t R = (size_t)n * k->L;
    for (int i = 0; i < n; i++) {
        int tr1 = 0, tr2 = 0;
        SD_TRY(tokenizer_encode(k->tok1, prompts[i], ids + (size_t)i * k->L, &tr1));
        SD_TRY(tokenizer_encode(k->tok2, prompts[i], ids + R + (size_t)i * k->L, &tr2));
        if (tr && tr->truncated) tr->truncated[i] = tr1 || tr2;
    }
    for (size_t i = 0; i < 2 * R; i++) ids32[i] = (int)ids[i];
    if (tr && tr->ids1) memcpy(tr->ids1, ids, sizeof(int64_t) * R);
    if (tr && tr->ids2) memcpy(tr->ids2, ids + R, sizeof(int64_t) * R);
    return SD_OK;
}

sd_status cond_encode(struct cond *k, struct fwd *f, const char *const *prompts, int n, float *ctx,
                      float *pooled, struct cond_trace *tr) {
    struct backend *be = f->be;
    int L = k->L, D1 = k->te1.cfg.hidden, D2 = k->te2.cfg.hidden;
    size_t R = (size_t)n * L;
    int64_t *ids = sd_malloc(sizeof(int64_t) * R * 2);
    int *ids32 = sd_malloc(sizeof(int) * R * 2);
    sd_status st = ids && ids32 ? tokenize(k, prompts, n, ids, ids32, tr) : SD_ERR_NOMEM;
    if (!st) {
        uint64_t mk = arena_mark(f->ar);
        float *p1 = fwd_alloc(f, R * D1), *p2 = fwd_alloc(f, R * D2);
        float *last1 = tr && tr->te1_last ? fwd_alloc(f, R * D1) : NULL;
        /* prompt by prompt: every GEMM has L rows whatever the batch, so a prompt encodes to
         * the same bits alone or batched (and short products are not padded: cpu.c) */
        for (int i = 0; i < n; i++) {
            size_t o = (size_t)i * L;
            clip_forward(f, &k->te1, ids32 + o, 1, L, p1 + o * D1, last1 ? last1 + o * D1 : NULL, NULL);
            clip_forward(f, &k->te2, ids32 + R + o, 1, L, p2 + o * D2, NULL, pooled + (size_t)i * k->P);
        }
        be->ops->concat_channels(be, ctx, p1, D1, p2, D2, (int)R, 1);
        st = backend_status(be);
        if (!st && tr && tr->te1_penult) be->ops->download(be, tr->te1_penult, p1, R * D1 * sizeof(float));
        if (!st && tr && tr->te1_last) be->ops->download(be, tr->te1_last, last1, R * D1 * sizeof(float));
        if (!st && tr && tr->te2_penult) be->ops->download(be, tr->te2_penult, p2, R * D2 * sizeof(float));
        arena_reset(f->ar, mk);
    }
    sd_free(ids);
    sd_free(ids32);
    return st;
}
