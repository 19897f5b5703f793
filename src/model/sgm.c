/* sgm.c — see sgm.h.  One function per component rewrites a diffusers row name into its
 * original-layout key; the map is those keys sorted, looked up by binary search when a
 * file is bound and walked in row order when one is written. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/tensor.h"
#include "sgm.h"

/* s starts with "p." (or is p): the rest after the dot. */
static const char *after(const char *s, const char *p) {
    size_t n = strlen(p);
    if (strncmp(s, p, n) || (s[n] != '.' && s[n])) return NULL;
    return s[n] ? s + n + 1 : s + n;
}

static int put(struct sgm_entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct sgm_entry *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->key, sizeof e->key, fmt, ap);
    va_end(ap);
    return n >= 0 && n < (int)sizeof e->key ? 0 : -1;
}

/* A resnet's parameter name (norm1.weight ...) in ldm's UNet spelling. */
static int unet_resnet(struct sgm_entry *e, const char *pre, const char *rest) {
    static const char *const map[][2] = { { "norm1", "in_layers.0" }, { "conv1", "in_layers.2" },
                                          { "time_emb_proj", "emb_layers.1" }, { "norm2", "out_layers.0" },
                                          { "conv2", "out_layers.3" }, { "conv_shortcut", "skip_connection" } };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        const char *r = after(rest, map[k][0]);
        if (r) return put(e, "%s%s.%s", pre, map[k][1], r);
    }
    return -1;
}

static int unet_key(struct sgm_entry *e, const struct unet_config *c, const char *name) {
    static const char *const fixed[][2] = { { "conv_in", "input_blocks.0.0" }, { "time_embedding.linear_1", "time_embed.0" },
                                            { "time_embedding.linear_2", "time_embed.2" },
                                            { "add_embedding.linear_1", "label_emb.0.0" },
                                            { "add_embedding.linear_2", "label_emb.0.2" },
                                            { "conv_norm_out", "out.0" }, { "conv_out", "out.2" } };
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        const char *r = after(name, fixed[k][0]);
        if (r) return put(e, "%s.%s", fixed[k][1], r);
    }
    int L = c->layers_per_block, i, j, off = 0;
    char kind[32], pre[64];
    if (sscanf(name, "down_blocks.%d.%31[a-z].%d.%n", &i, kind, &j, &off) == 3 && off) {
        const char *rest = name + off;
        if (!strcmp(kind, "downsamplers")) {
            const char *r = after(rest, "conv");
            return r ? put(e, "input_blocks.%d.0.op.%s", (i + 1) * (L + 1), r) : -1;
        }
        snprintf(pre, sizeof pre, "input_blocks.%d.", 1 + i * (L + 1) + j);
        if (!strcmp(kind, "resnets")) return unet_resnet(e, strcat(pre, "0."), rest);
        return strcmp(kind, "attentions") ? -1 : put(e, "%s1.%s", pre, rest);
    }
    if (sscanf(name, "mid_block.%31[a-z].%d.%n", kind, &j, &off) == 2 && off) {
        if (!strcmp(kind, "resnets")) {
            snprintf(pre, sizeof pre, "middle_block.%d.", 2 * j);
            return unet_resnet(e, pre, name + off);
        }
        return strcmp(kind, "attentions") ? -1 : put(e, "middle_block.1.%s", name + off);
    }
    if (sscanf(name, "up_blocks.%d.%31[a-z].%d.%n", &i, kind, &j, &off) == 3 && off && i >= 0 && i < c->nlevels) {
        const char *rest = name + off;
        if (!strcmp(kind, "upsamplers"))
            return put(e, "output_blocks.%d.%d.%s", i * (L + 1) + L, 1 + c->up_attn[i], rest);
        snprintf(pre, sizeof pre, "output_blocks.%d.", i * (L + 1) + j);
        if (!strcmp(kind, "resnets")) return unet_resnet(e, strcat(pre, "0."), rest);
        return strcmp(kind, "attentions") ? -1 : put(e, "%s1.%s", pre, rest);
    }
    return -1;
}

/* VAE resnets keep their names except the shortcut. */
static int vae_resnet(struct sgm_entry *e, const char *pre, const char *rest) {
    const char *r = after(rest, "conv_shortcut");
    return r ? put(e, "%snin_shortcut.%s", pre, r) : put(e, "%s%s", pre, rest);
}

static int vae_key(struct sgm_entry *e, const struct vae_config *c, const char *name, int ndim) {
    static const char *const attn[][2] = { { "group_norm", "norm" }, { "to_q", "q" }, { "to_k", "k" },
                                           { "to_v", "v" }, { "to_out.0", "proj_out" } };
    int i, j, off = 0;
    char half[8], pre[64];
    if (sscanf(name, "%7[a-z].%n", half, &off) != 1 || !off || (strcmp(half, "encoder") && strcmp(half, "decoder")))
        return put(e, "%s", name);   /* quant_conv, post_quant_conv */
    const char *rest = name + off, *r;
    if ((r = after(rest, "conv_norm_out"))) return put(e, "%s.norm_out.%s", half, r);
    off = 0;
    if (sscanf(rest, "down_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off) {
        snprintf(pre, sizeof pre, "%s.down.%d.block.%d.", half, i, j);
        return vae_resnet(e, pre, rest + off);
    }
    if (sscanf(rest, "down_blocks.%d.downsamplers.0.%n", &i, &off) == 1 && off)
        return put(e, "%s.down.%d.downsample.%s", half, i, rest + off);
    if (sscanf(rest, "up_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off) {
        snprintf(pre, sizeof pre, "%s.up.%d.block.%d.", half, c->nlevels - 1 - i, j);
        return vae_resnet(e, pre, rest + off);
    }
    if (sscanf(rest, "up_blocks.%d.upsamplers.0.%n", &i, &off) == 1 && off)
        return put(e, "%s.up.%d.upsample.%s", half, c->nlevels - 1 - i, rest + off);
    if (sscanf(rest, "mid_block.resnets.%d.%n", &j, &off) == 1 && off) {
        snprintf(pre, sizeof pre, "%s.mid.block_%d.", half, j + 1);
        return vae_resnet(e, pre, rest + off);
    }
    if ((r = after(rest, "mid_block.attentions.0"))) {
        for (size_t k = 0; k < sizeof attn / sizeof attn[0]; k++) {
            const char *q = after(r, attn[k][0]);
            if (!q) continue;
            e->conv1x1 = k > 0 && ndim == 2;   /* ldm's q, k, v, proj_out are 1×1 convs */
            return put(e, "%s.mid.attn_1.%s.%s", half, attn[k][1], q);
        }
        return -1;
    }
    return put(e, "%s", name);   /* conv_in, conv_out */
}

/* OpenCLIP's names for the bigG text encoder. */
static int clip_g_key(struct sgm_entry *e, const char *name) {
    static const char *const map[][2] = { { "layer_norm1", "ln_1" }, { "layer_norm2", "ln_2" },
                                          { "self_attn.out_proj", "attn.out_proj" }, { "mlp.fc1", "mlp.c_fc" },
                                          { "mlp.fc2", "mlp.c_proj" } };
    const char *r;
    int i, off = 0;
    if (!strcmp(name, "embeddings.token_embedding.weight")) return put(e, "token_embedding.weight");
    if (!strcmp(name, "embeddings.position_embedding.weight")) return put(e, "positional_embedding");
    if (!strcmp(name, "text_projection.weight")) { e->transpose = 1; return put(e, "text_projection"); }
    if ((r = after(name, "final_layer_norm"))) return put(e, "ln_final.%s", r);
    if (sscanf(name, "encoder.layers.%d.%n", &i, &off) != 1 || !off) return -1;
    const char *rest = name + off;
    static const char qkv[3] = { 'q', 'k', 'v' };
    for (int p = 0; p < 3; p++) {
        char nm[32];
        snprintf(nm, sizeof nm, "self_attn.%c_proj", qkv[p]);
        if ((r = after(rest, nm))) {
            e->part = p;
            e->nparts = 3;
            return put(e, "transformer.resblocks.%d.attn.in_proj_%s", i, r);
        }
    }
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if ((r = after(rest, map[k][0]))) return put(e, "transformer.resblocks.%d.%s.%s", i, map[k][1], r);
    return -1;
}

static int entry_cmp(const void *a, const void *b) {
    const struct sgm_entry *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : x->part - y->part;
}

void sgm_map_free(struct sgm_map *m) {
    sd_free(m->e);
    sd_free(m->of_row);
    memset(m, 0, sizeof *m);
}

sd_status sgm_map_build(struct sgm_map *m, const struct weight_table *t, enum sgm_part part, const void *cfg,
                        const char *prefix) {
    memset(m, 0, sizeof *m);
    m->part = part;
    m->prefix = prefix;
    m->t = t;
    m->e = sd_calloc((size_t)t->n + 1, sizeof *m->e);
    m->of_row = sd_calloc((size_t)t->n + 1, sizeof *m->of_row);
    if (!m->e || !m->of_row) { sgm_map_free(m); return SD_ERR_NOMEM; }
    for (int i = 0; i < t->n; i++) {
        struct sgm_entry *e = &m->e[i];
        const struct weight_row *r = &t->rows[i];
        e->row = i;
        e->nparts = 1;
        int bad = part == SGM_UNET ? unet_key(e, cfg, r->name)
                : part == SGM_VAE ? vae_key(e, cfg, r->name, r->ndim)
                : part == SGM_CLIP_L ? put(e, "text_model.%s", r->name)
                : clip_g_key(e, r->name);
        if (bad) { sgm_map_free(m); return sd_fail(SD_ERR_INVALID, "no original-layout name for %s", r->name); }
    }
    m->n = t->n;
    qsort(m->e, (size_t)m->n, sizeof *m->e, entry_cmp);
    for (int i = 0; i < m->n; i++) m->of_row[m->e[i].row] = i;
    return SD_OK;
}

static int key_cmp(const void *k, const void *e) { return strcmp(k, ((const struct sgm_entry *)e)->key); }

/* The first entry of key (its part 0), or -1. */
static int find_first(const struct sgm_map *m, const char *key) {
    const struct sgm_entry *e = bsearch(key, m->e, (size_t)m->n, sizeof *m->e, key_cmp);
    if (!e) return -1;
    int i = (int)(e - m->e);
    while (i > 0 && !strcmp(m->e[i - 1].key, key)) i--;
    return i;
}

enum wt_resolution sgm_resolve(void *ud, const char *key, struct wt_bind *b) {
    const struct sgm_map *m = ud;
    size_t pl = strlen(m->prefix);
    if (strncmp(key, m->prefix, pl)) return WT_FOREIGN;
    const char *k = key + pl;
    size_t kl = strlen(k);
    if ((kl >= 12 && !strcmp(k + kl - 12, "position_ids")) || !strcmp(k, "logit_scale")) return WT_SKIP;
    int i = find_first(m, k);
    if (i < 0) { snprintf(b->name[0], WT_NAME_MAX, "%s", key); return WT_BIND; }   /* unexpected */
    const struct sgm_entry *e = &m->e[i];
    b->n = e->nparts;
    b->transpose = e->transpose;
    for (int p = 0; p < e->nparts; p++)   /* the parts' rows, in order */
        snprintf(b->name[p], WT_NAME_MAX, "%s", m->t->rows[m->e[i + p].row].name);
    return WT_BIND;
}

int sgm_is_unet_file(const struct st_file *f, const char **prefix) {
    *prefix = NULL;
    for (int i = 0; i < f->ntensors; i++) {
        const char *k = f->tensors[i].name;
        if (!strncmp(k, SGM_UNET_PREFIX, strlen(SGM_UNET_PREFIX))) { *prefix = SGM_UNET_PREFIX; return 1; }
        if (!strncmp(k, "input_blocks.", 13) || !strncmp(k, "middle_block.", 13)) { *prefix = ""; return 1; }
    }
    return 0;
}

static const struct st_tensor *shape_of(const struct st_file *f, const char *key, int ndim) {
    const struct st_tensor *t = st_find(f, key);
    return t && t->ndim == ndim ? t : NULL;
}

int sgm_is_checkpoint(const struct st_file *f) {
    const char *p;
    int vae = 0, te = 0;
    for (int i = 0; i < f->ntensors; i++) {
        vae |= !strncmp(f->tensors[i].name, SGM_VAE_PREFIX, strlen(SGM_VAE_PREFIX));
        te |= !strncmp(f->tensors[i].name, "conditioner.embedders.", 22);
    }
    return sgm_is_unet_file(f, &p) && p && *p && vae && te;
}

int sgm_is_sdxl_base(const struct st_file *f) {
    const struct st_tensor *in = shape_of(f, SGM_UNET_PREFIX "input_blocks.0.0.weight", 4);
    const struct st_tensor *add = shape_of(f, SGM_UNET_PREFIX "label_emb.0.0.weight", 2);
    const struct st_tensor *k = shape_of(f, SGM_UNET_PREFIX "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", 2);
    return in && add && k && in->shape[0] == 320 && in->shape[1] == 4 && add->shape[1] == 2816 && k->shape[1] == 2048;
}

sd_status sgm_check_leftovers(const struct wfiles *w, int other_parts) {
    for (int i = 0; i < w->n; i++)
        for (int j = 0; j < w->f[i].ntensors; j++) {
            const char *k = w->f[i].tensors[j].name;
            if (w->used[i][j] || !strchr(k, '.') || !strncmp(k, "model_ema.", 10)) continue;
            if (other_parts && (!strncmp(k, SGM_VAE_PREFIX, strlen(SGM_VAE_PREFIX)) || !strncmp(k, "conditioner.", 12)))
                continue;
            return sd_fail(SD_ERR_FORMAT, "%s: unexpected tensor '%s'", w->f[i].path, k);
        }
    return SD_OK;
}

/* One file tensor from its entry i (its part 0): the rows concatenated, transposed or
 * widened to 1×1 as the entry says. */
static sd_status write_entry(struct st_writer *w, const struct weight_table *t, struct backend *be, sd_dtype dt,
                             const struct sgm_map *m, int i, const char *prefix, float *a, float *b) {
    const struct sgm_entry *e = &m->e[i];
    const struct weight_row *r = &t->rows[e->row];
    size_t n = (size_t)sd_numel(r->ndim, r->shape);
    int64_t shape[SD_MAX_DIMS];
    int ndim = r->ndim;
    memcpy(shape, r->shape, sizeof(int64_t) * ndim);
    for (int p = 0; p < e->nparts; p++) wt_row_read(be, &t->rows[m->e[i + p].row], a + n * p);
    shape[0] *= e->nparts;
    const float *src = a;
    if (e->transpose) {   /* row [C, R] -> file [R, C] */
        int64_t C = r->shape[0], R = r->shape[1];
        for (int64_t x = 0; x < C; x++)
            for (int64_t y = 0; y < R; y++) b[y * C + x] = a[x * R + y];
        shape[0] = R; shape[1] = C;
        src = b;
    }
    if (e->conv1x1) { shape[ndim++] = 1; shape[ndim++] = 1; }
    char key[2 * WT_NAME_MAX];
    snprintf(key, sizeof key, "%s%s", prefix, e->key);
    return st_writer_add_f32(w, key, dt, ndim, shape, src);
}

sd_status sgm_write_table(struct st_writer *w, const struct weight_table *t, struct backend *be, sd_dtype dt,
                          const struct sgm_map *m, const char *prefix, const char *keep_bare) {
    size_t maxn = 1;
    for (int i = 0; i < t->n; i++) {
        size_t n = (size_t)sd_numel(t->rows[i].ndim, t->rows[i].shape) * WT_MAX_PARTS;
        if (n > maxn) maxn = n;
    }
    float *a = sd_malloc(maxn * sizeof(float) + 4), *b = sd_malloc(maxn * sizeof(float) + 4);
    sd_status st = a && b ? SD_OK : SD_ERR_NOMEM;
    for (int i = 0; i < t->n && !st; i++) {
        const struct weight_row *r = &t->rows[i];
        if (m) {
            int k = m->of_row[i];
            if (m->e[k].part == 0) st = write_entry(w, t, be, dt, m, k, prefix, a, b);
            continue;
        }
        char key[2 * WT_NAME_MAX];
        snprintf(key, sizeof key, "%s%s", keep_bare && !strcmp(keep_bare, r->name) ? "" : prefix, r->name);
        wt_row_read(be, r, a);
        st = st_writer_add_f32(w, key, dt, r->ndim, r->shape, a);
    }
    sd_free(a);
    sd_free(b);
    return st;
}

sd_status sgm_bind(struct weight_table *t, struct backend *be, const struct wfiles *w, enum sgm_part part,
                   const void *cfg, const char *prefix, wt_name_map map, const char *what) {
    struct sgm_map m;
    if (prefix) SD_TRY(sgm_map_build(&m, t, part, cfg, prefix));
    wt_begin(t);
    sd_status st = SD_OK;
    for (int i = 0; i < w->n && !st; i++)
        st = prefix ? wt_bind_file(t, be, &w->f[i], sgm_resolve, &m, w->used[i])
                    : wt_bind_file(t, be, &w->f[i], wt_map_resolve, &map, w->used[i]);
    if (!st) st = wt_check_complete(t, w->n == 1 ? w->f[0].path : what);
    for (int i = 0; st == SD_ERR_NOTFOUND && prefix && i < t->n; i++)   /* name the file's key too */
        if (!t->rows[i].loaded) {
            st = sd_fail(SD_ERR_NOTFOUND, "%s: missing tensor '%s%s' (%s)", w->n == 1 ? w->f[0].path : what, prefix,
                         m.e[m.of_row[i]].key, t->rows[i].name);
            break;
        }
    if (prefix) sgm_map_free(&m);
    return st;
}
