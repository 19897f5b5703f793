/* clip.c — see clip.h.  transformers' CLIPTextModel, forward only. */
#include <stdio.h>
#include <string.h>

#include "clip.h"
#include "sgm.h"

static const char *const clip_attn_names[4] = { "q_proj", "k_proj", "v_proj", "out_proj" };

/* Checkpoints carry keys with or without "text_model." (docs/sdxl.md §5.1); the table is
 * declared without it.  position_ids is a stray buffer some exporters keep. */
static int clip_name_map(const char *key, char *buf, size_t n) {
    if (strstr(key, "position_ids")) return 1;
    if (!strncmp(key, "text_model.", 11)) key += 11;
    snprintf(buf, n, "%s", key);
    return 0;
}

static void clip_declare(struct clip *m, int with_projection) {
    const struct clip_config *c = &m->cfg;
    struct weight_table *t = &m->wt;
    char n[WT_NAME_MAX];
    int D = c->hidden;
    wt_add(t, &m->tok_emb, WT_INIT_NORMAL, 0.02f, 2, (int64_t[]){ c->vocab, D }, "embeddings.token_embedding.weight");
    wt_lowp(t, &m->tok_emb_dt);   /* the largest table after the GEMM weights: kept 16-bit too */
    wt_add(t, &m->pos_emb, WT_INIT_NORMAL, 0.01f, 2, (int64_t[]){ c->max_pos, D }, "embeddings.position_embedding.weight");
    for (int i = 0; i < c->layers; i++) {
        struct clip_layer *l = &m->layers[i];
        snprintf(n, sizeof n, "encoder.layers.%d.layer_norm1", i); norm_declare(t, &l->ln1, D, n);
        snprintf(n, sizeof n, "encoder.layers.%d.self_attn", i);
        attention_declare(t, &l->attn, D, D, c->heads, 1, n, clip_attn_names);
        snprintf(n, sizeof n, "encoder.layers.%d.layer_norm2", i); norm_declare(t, &l->ln2, D, n);
        snprintf(n, sizeof n, "encoder.layers.%d.mlp.fc1", i); linear_declare(t, &l->fc1, D, c->intermediate, 1, n);
        snprintf(n, sizeof n, "encoder.layers.%d.mlp.fc2", i); linear_declare(t, &l->fc2, c->intermediate, D, 1, n);
    }
    norm_declare(t, &m->final_ln, D, "final_layer_norm");
    memset(&m->proj, 0, sizeof m->proj);
    if (with_projection) linear_declare(t, &m->proj, D, c->projection_dim, 0, "text_projection");
}

sd_status clip_create(struct clip *m, struct backend *be, const struct clip_config *cfg, int with_projection) {
    memset(m, 0, sizeof *m);
    wt_init(&m->wt);
    m->cfg = *cfg;
    m->wt.wdt = cfg->wdt;
    m->layers = sd_calloc(m->cfg.layers, sizeof *m->layers);
    if (!m->layers) return SD_ERR_NOMEM;
    clip_declare(m, with_projection);
    sd_status st = wt_alloc(&m->wt, &m->params, be);
    if (st) clip_free(m);
    return st;
}

sd_status clip_bind(struct clip *m, struct backend *be, const struct wfiles *w, const char *prefix, const char *what) {
    enum sgm_part part = m->proj.w ? SGM_CLIP_G : SGM_CLIP_L;
    SD_TRY(sgm_bind(&m->wt, be, w, part, NULL, prefix, clip_name_map, what));
    return prefix ? SD_OK : wfiles_check_used(w);
}

sd_status clip_load(struct clip *m, struct backend *be, const char *dir, int with_projection, sd_dtype wdt) {
    struct clip_config cfg;
    char *p = sd_path_join(dir, "config.json");
    if (!p) return SD_ERR_NOMEM;
    sd_status st = clip_config_load(&cfg, p);
    sd_free(p);
    if (st) return st;
    struct wfiles w;
    SD_TRY(wfiles_open_dir(&w, dir, "model", "pytorch_model"));
    cfg.wdt = wfiles_dtype(&w, wdt);
    if (!(st = clip_create(m, be, &cfg, with_projection))) {
        st = clip_bind(m, be, &w, NULL, dir);
        if (st) clip_free(m);
    }
    wfiles_close(&w);
    return st;
}

void clip_free(struct clip *m) {
    arena_free(&m->params);
    wt_free(&m->wt);
    sd_free(m->layers);
    m->layers = NULL;
}

void clip_forward(struct fwd *f, const struct clip *m, const int *ids, int N, int L,
                  float *penult, float *last, float *pooled) {
    struct backend *be = f->be;
    const struct clip_config *c = &m->cfg;
    int D = c->hidden;
    size_t R = (size_t)N * L;
    if (L > c->max_pos) { backend_set_error(be, SD_ERR_INVALID, "token sequence longer than max_position_embeddings"); return; }
    for (size_t i = 0; i < R; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab) { backend_set_error(be, SD_ERR_INVALID, "token id out of vocabulary"); return; }
    uint64_t mk = arena_mark(f->ar);
    float *x = fwd_alloc(f, R * D), *h = fwd_alloc(f, R * D), *ff = fwd_alloc(f, R * c->intermediate);
    be->ops->embedding(be, x, m->tok_emb, m->tok_emb_dt, ids, (int)R, D);
    for (int n = 0; n < N; n++)   /* + position embedding rows 0..L-1 */
        be->ops->axpby(be, x + (size_t)n * L * D, 1.0f, x + (size_t)n * L * D, 1.0f, m->pos_emb, (long long)L * D);
    for (int i = 0; i < c->layers; i++) {
        const struct clip_layer *l = &m->layers[i];
        be->ops->layer_norm(be, h, x, l->ln1.w, l->ln1.b, (int)R, D, c->ln_eps);
        attention_forward_add(f, x, h, h, &l->attn, N, L, L, 1);
        be->ops->layer_norm(be, h, x, l->ln2.w, l->ln2.b, (int)R, D, c->ln_eps);
        linear_forward(f, ff, h, &l->fc1, (int)R, L);
        be->ops->act(be, ff, ff, (long long)R * c->intermediate, (enum act_kind)c->act);
        linear_forward(f, h, ff, &l->fc2, (int)R, L);
        be->ops->axpby(be, x, 1.0f, x, 1.0f, h, (long long)R * D);
        if (i == c->layers - 2 && penult) be->ops->copy(be, penult, x, R * D * sizeof(float));
    }
    be->ops->layer_norm(be, h, x, m->final_ln.w, m->final_ln.b, (int)R, D, c->ln_eps);
    if (last) be->ops->copy(be, last, h, R * D * sizeof(float));
    if (pooled && m->proj.w) {
        float *rows = fwd_alloc(f, (size_t)N * D);
        for (int n = 0; n < N; n++) {
            /* transformers: with the legacy eos_token_id 2 (real SDXL configs) the EOS is
             * the argmax of the ids (its first occurrence), else the first eos_token_id */
            const int *row = ids + (size_t)n * L;
            int pos = 0;
            if (c->eos_id == 2) {
                for (int j = 1; j < L; j++)
                    if (row[j] > row[pos]) pos = j;
            } else {
                pos = L - 1;
                for (int j = 0; j < L; j++)
                    if (row[j] == c->eos_id) { pos = j; break; }
            }
            be->ops->copy(be, rows + (size_t)n * D, h + ((size_t)n * L + pos) * D, D * sizeof(float));
        }
        linear_forward(f, pooled, rows, &m->proj, N, 1);
    }
    arena_reset(f->ar, mk);
}
