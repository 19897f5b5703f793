/* lora.c — see lora.h. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../io/safetensors.h"
#include "lora.h"

static const char *const targets[] = {
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj" };

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

int lora_is_target(const char *name) {
    size_t n = strlen(name);
    if (!ends_with(name, n, ".weight")) return 0;
    n -= 7;
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        size_t k = strlen(targets[i]);
        if (ends_with(name, n, targets[i]) && (n == k || name[n - k - 1] == '.')) return 1;
    }
    return 0;
}

void lora_kohya_name(const char *weight_name, char *out, size_t n) {
    size_t len = strlen(weight_name);
    if (ends_with(weight_name, len, ".weight")) len -= 7;
    int k = snprintf(out, n, "lora_unet_%.*s", (int)len, weight_name);
    for (int i = 10; i < k && (size_t)i < n; i++)
        if (out[i] == '.') out[i] = '_';
}

/* ---- reading adapter files ---- */

static int suffix_kind(const char *key, size_t *stem) {
    static const char *const suf[5] = { ".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha" };
    size_t n = strlen(key);
    for (int i = 0; i < 5; i++)
        if (ends_with(key, n, suf[i])) { *stem = n - strlen(suf[i]); return i; }
    return -1;
}

int lora_key_is_adapter(const char *key) {
    size_t stem;
    return suffix_kind(key, &stem) >= 0;
}

/* The table row a file stem names, or -1.  kohya stems are matched against the rows'
 * kohya names (the '_' of a path is ambiguous, so the mapping is built from the table). */
static int stem_row(const struct weight_table *wt, char (*kohya)[LORA_NAME_MAX], const char *key, size_t stem) {
    char name[LORA_NAME_MAX + 8];
    if (stem >= LORA_NAME_MAX) return -1;
    if (stem > 10 && memcmp(key, "lora_unet_", 10) == 0) {
        for (int i = 0; i < wt->n; i++)
            if (kohya[i][0] && strlen(kohya[i]) == stem && memcmp(kohya[i], key, stem) == 0) return i;
        return -1;
    }
    const char *k = key;
    if (stem > 5 && memcmp(k, "unet.", 5) == 0) { k += 5; stem -= 5; }
    snprintf(name, sizeof name, "%.*s.weight", (int)stem, k);
    const struct weight_row *r = wt_find(wt, name);
    return r ? (int)(r - wt->rows) : -1;
}

static sd_status check_adapter(const struct weight_table *wt, const char *path, const char *stem, struct lora_file_adapter *ad) {
    const struct weight_row *r = &wt->rows[ad->row];
    if (!ad->a || !ad->b)
        return sd_fail(SD_ERR_FORMAT, "%s: adapter %s has no %s", path, stem, ad->a ? "up/B matrix" : "down/A matrix");
    ad->cout = (int)r->shape[0];
    ad->K = sd_numel(r->ndim, r->shape) / r->shape[0];
    ad->rank = (int)ad->a->shape[0];
    const struct st_tensor *a = ad->a, *b = ad->b;
    int ok = ad->rank > 0 && a->ndim == r->ndim && b->ndim == r->ndim && b->shape[0] == ad->cout && b->shape[1] == ad->rank;
    if (ok && r->ndim == 4)   /* conv: A [r, cin, kh, kw], B [cout, r, 1, 1] */
        ok = a->shape[1] == r->shape[1] && a->shape[2] == r->shape[2] && a->shape[3] == r->shape[3] &&
             b->shape[2] == 1 && b->shape[3] == 1;
    else if (ok)
        ok = r->ndim == 2 && a->shape[1] == r->shape[1];
    if (!ok) {
        char s0[64], s1[64], s2[64];
        return sd_fail(SD_ERR_SHAPE, "%s: adapter %s: A %s and B %s do not fit %s %s", path, stem,
                       sd_shape_str(s1, sizeof s1, a->ndim, a->shape), sd_shape_str(s2, sizeof s2, b->ndim, b->shape),
                       r->name, sd_shape_str(s0, sizeof s0, r->ndim, r->shape));
    }
    if (ad->alpha && st_numel(ad->alpha) != 1)
        return sd_fail(SD_ERR_SHAPE, "%s: %s.alpha is not a scalar", path, stem);
    return SD_OK;
}

/* The largest |x| of the n values, or -1 when one is not finite. */
static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return -1;
        if (fabs(x[i]) > m) m = fabs(x[i]);
    }
    return m;
}

/* Before anything is merged (a refused file leaves the weights untouched): every A, B and
 * alpha finite, and each update scale·(alpha/r)·B·A bounded (|·| <= r·max|B|·max|A| per
 * entry) well below the float range, so no merged weight can overflow.  host: scratch for
 * the largest A or B. */
static sd_status check_values(const char *path, const struct lora_file_adapter *ads, int nad, float scale,
                              float *host) {
    for (int i = 0; i < nad; i++) {
        const struct lora_file_adapter *ad = &ads[i];
        float alpha = (float)ad->rank;
        if (ad->alpha) st_read_f32(ad->alpha, &alpha);
        if (!isfinite(alpha)) return sd_fail(SD_ERR_NUMERIC, "%s: %s: alpha is not finite", path, ad->a->name);
        const struct st_tensor *t[2] = { ad->a, ad->b };
        size_t n[2] = { (size_t)ad->rank * ad->K, (size_t)ad->cout * ad->rank };
        double m[2];
        for (int k = 0; k < 2; k++) {
            st_read_f32(t[k], host);
            if ((m[k] = max_abs(host, n[k])) < 0)
                return sd_fail(SD_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value", path, t[k]->name);
        }
        if (fabs((double)scale * alpha) * m[0] * m[1] > FLT_MAX / 4)
            return sd_fail(SD_ERR_NUMERIC, "%s: adapter %s: scale × alpha × B·A reaches %.3g, beyond what the "
                           "weights can hold", path, ad->a->name, fabs((double)scale * alpha) * m[0] * m[1]);
    }
    return SD_OK;
}

/* Collect and validate every adapter of f against wt: nothing is applied unless all fit. */
static sd_status collect(const struct weight_table *wt, const struct st_file *f, struct lora_file_adapter *ads, int *nad) {
    sd_status st = SD_OK;
    char (*kohya)[LORA_NAME_MAX] = sd_calloc((size_t)wt->n, LORA_NAME_MAX);
    int *slot = sd_malloc(sizeof(int) * (size_t)wt->n);
    if (!kohya || !slot) { sd_free(kohya); sd_free(slot); return SD_ERR_NOMEM; }
    for (int i = 0; i < wt->n; i++) {
        slot[i] = -1;
        if (wt->rows[i].ndim == 2 || wt->rows[i].ndim == 4) lora_kohya_name(wt->rows[i].name, kohya[i], LORA_NAME_MAX);
    }
    *nad = 0;
    for (int t = 0; t < f->ntensors && !st; t++) {
        const struct st_tensor *x = &f->tensors[t];
        size_t stem;
        int kind = suffix_kind(x->name, &stem), row = kind < 0 ? -1 : stem_row(wt, kohya, x->name, stem);
        if (kind < 0 || row < 0 || !(wt->rows[row].ndim == 2 || wt->rows[row].ndim == 4)) {
            st = sd_fail(SD_ERR_FORMAT, "%s: unexpected key '%s' (not an adapter of a UNet weight: text-encoder "
                         "adapters are not supported)", f->path, x->name);
            break;
        }
        if (slot[row] < 0) { slot[row] = (*nad)++; memset(&ads[slot[row]], 0, sizeof *ads); ads[slot[row]].row = row; }
        struct lora_file_adapter *ad = &ads[slot[row]];
        const struct st_tensor **dst = kind == 0 || kind == 2 ? &ad->a : kind == 1 || kind == 3 ? &ad->b : &ad->alpha;
        if (*dst) { st = sd_fail(SD_ERR_FORMAT, "%s: '%s' duplicates another key of the same adapter", f->path, x->name); break; }
        *dst = x;
    }
    for (int i = 0; i < *nad && !st; i++) st = check_adapter(wt, f->path, wt->rows[ads[i].row].name, &ads[i]);
    if (!st && *nad == 0) st = sd_fail(SD_ERR_FORMAT, "%s: no LoRA adapters in the file", f->path);
    sd_free(kohya);
    sd_free(slot);
    return st;
}

sd_status lora_reader_open(struct lora_reader *r, const struct weight_table *wt, const char *path) {
    memset(r, 0, sizeof *r);
    SD_TRY(st_open(&r->f, path));
    r->ad = sd_malloc(sizeof *r->ad * (size_t)(r->f.ntensors > 0 ? r->f.ntensors : 1));
    sd_status st = r->ad ? collect(wt, &r->f, r->ad, &r->n) : SD_ERR_NOMEM;
    if (st) lora_reader_close(r);
    return st;
}

void lora_reader_close(struct lora_reader *r) {
    sd_free(r->ad);
    r->ad = NULL;
    r->n = 0;
    st_close(&r->f);
}

static sd_status read_finite(const struct lora_reader *r, const struct st_tensor *t, float *dst, size_t n) {
    st_read_f32(t, dst);
    if (sd_find_nonfinite(dst, n) >= 0)
        return sd_fail(SD_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value", r->f.path, t->name);
    return SD_OK;
}

sd_status lora_reader_read(const struct lora_reader *r, int i, float *a, float *b, float *alpha) {
    const struct lora_file_adapter *ad = &r->ad[i];
    *alpha = (float)ad->rank;
    if (ad->alpha) st_read_f32(ad->alpha, alpha);
    if (!isfinite(*alpha)) return sd_fail(SD_ERR_NUMERIC, "%s: %s: alpha is not finite", r->f.path, ad->a->name);
    SD_TRY(read_finite(r, ad->a, a, (size_t)ad->rank * ad->K));
    return read_finite(r, ad->b, b, (size_t)ad->cout * ad->rank);
}

sd_status lora_apply_file(struct weight_table *wt, struct backend *be, const char *path, float scale) {
    if (!isfinite(scale)) return sd_fail(SD_ERR_INVALID, "%s: LoRA scale is not finite", path);
    struct lora_reader rd;
    SD_TRY(lora_reader_open(&rd, wt, path));
    sd_status st = SD_OK;
    size_t most = 0, most_ab = 0;
    for (int i = 0; i < rd.n; i++) {
        const struct lora_file_adapter *ad = &rd.ad[i];
        size_t na = (size_t)ad->rank * ad->K, nb = (size_t)ad->cout * ad->rank, nw = (size_t)ad->cout * ad->K;
        if (na + nb + nw > most) most = na + nb + nw;
        if (na + nb > most_ab) most_ab = na + nb;
    }
    if (most_ab > most) most = most_ab;
    struct arena scratch;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&scratch, "lora scratch", &al, 0);
    float *host = NULL;
    if (!(st = arena_reserve(&scratch, 2 * most * sizeof(float) + 512)) && !(host = sd_malloc(most * sizeof(float))))
        st = SD_ERR_NOMEM;
    if (!st) st = check_values(path, rd.ad, rd.n, scale, host);   /* nothing merges unless all are sound */
    for (int i = 0; i < rd.n && !st; i++) {
        const struct lora_file_adapter *ad = &rd.ad[i];
        size_t na = (size_t)ad->rank * ad->K, nb = (size_t)ad->cout * ad->rank, nw = (size_t)ad->cout * ad->K;
        float alpha;
        arena_reset(&scratch, 0);
        float *a = arena_floats(&scratch, na), *b = arena_floats(&scratch, nb), *p = arena_floats(&scratch, nw);
        if ((st = lora_reader_read(&rd, i, host, host + na, &alpha))) break;
        be->ops->upload(be, a, host, na * sizeof(float));
        be->ops->upload(be, b, host + na, nb * sizeof(float));
        be->ops->linear_backward(be, p, NULL, NULL, b, NULL, a, ad->cout, (int)ad->K, ad->rank);   /* p = B·A */
        /* 16-bit weights merge in fp32 and round once */
        const struct weight_row *r = &wt->rows[ad->row];
        float *w = r->dt == DT_F32 ? *r->dst : arena_floats(&scratch, nw);
        if (r->dt != DT_F32) { wt_row_read(be, r, host); be->ops->upload(be, w, host, nw * sizeof(float)); }
        be->ops->axpby(be, w, 1.0f, w, scale * alpha / (float)ad->rank, p, (long long)nw);
        st = backend_status(be);
        if (!st && r->dt != DT_F32) { be->ops->download(be, host, w, nw * sizeof(float)); st = wt_row_write(be, r, host); }
    }
    if (!st) LOG_I("%s: merged %d LoRA adapters (scale %g)", path, rd.n, scale);
    sd_free(host);
    arena_free(&scratch);
    lora_reader_close(&rd);
    return st;
}

/* ---- training ---- */

sd_status lora_create(struct lora *l, struct backend *be, const struct weight_table *unet,
                      const struct weight_table *unet_grads, int rank, float alpha, uint64_t seed) {
    memset(l, 0, sizeof *l);
    wt_init(&l->wt);
    wt_init(&l->gt);
    if (rank < 1 || !(alpha > 0) || !isfinite(alpha))
        return sd_fail(SD_ERR_INVALID, "LoRA: rank must be >= 1 and alpha > 0 (got %d, %g)", rank, alpha);
    l->rank = rank; l->alpha = alpha; l->scale = alpha / (float)rank;
    l->unet = unet; l->unet_grads = unet_grads;
    int n = 0;
    for (int i = 0; i < unet->n; i++) n += lora_is_target(unet->rows[i].name) && (unet->rows[i].ndim == 2 || unet->rows[i].ndim == 4);
    if (n == 0) return sd_fail(SD_ERR_INVALID, "LoRA: the UNet has no target modules");
    if (!(l->m = sd_calloc((size_t)n, sizeof *l->m))) return SD_ERR_NOMEM;
    size_t base = 0;
    char kn[LORA_NAME_MAX];
    for (int i = 0; i < unet->n; i++) {
        const struct weight_row *r = &unet->rows[i];
        if (!lora_is_target(r->name) || !(r->ndim == 2 || r->ndim == 4)) continue;
        struct lora_module *m = &l->m[l->n++];
        m->row = i;
        m->cout = (int)r->shape[0];
        m->K = (int)(sd_numel(r->ndim, r->shape) / r->shape[0]);
        int64_t sa[4] = { rank, r->shape[1], r->ndim == 4 ? r->shape[2] : 0, r->ndim == 4 ? r->shape[3] : 0 };
        int64_t sb[4] = { r->shape[0], rank, 1, 1 };
        lora_kohya_name(r->name, kn, sizeof kn);
        float std = 1.0f / sqrtf(3.0f * (float)m->K);
        wt_add(&l->wt, &m->a, WT_INIT_NORMAL, std, r->ndim, sa, "%s.lora_down.weight", kn);
        wt_add(&l->wt, &m->b, WT_INIT_ZERO, 0, r->ndim, sb, "%s.lora_up.weight", kn);
        wt_add(&l->gt, &m->da, WT_INIT_ZERO, 0, r->ndim, sa, "%s.lora_down.weight", kn);
        wt_add(&l->gt, &m->db, WT_INIT_ZERO, 0, r->ndim, sb, "%s.lora_up.weight", kn);
        base += (size_t)m->cout * m->K;
    }
    sd_status st;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&l->base, "lora base weights", &al, 0);
    if ((st = wt_alloc(&l->wt, &l->params, be)) || (st = wt_alloc(&l->gt, &l->grads, be)) ||
        (st = wt_init_random(&l->wt, be, seed)) || (st = wt_init_random(&l->gt, be, seed)) ||
        (st = arena_reserve(&l->base, base * sizeof(float) + 64 * (size_t)l->n))) {
        lora_free(l);
        return st;
    }
    for (int i = 0; i < l->n; i++) {
        struct lora_module *m = &l->m[i];
        m->w0 = arena_floats(&l->base, (size_t)m->cout * m->K);
        be->ops->copy(be, m->w0, *unet->rows[m->row].dst, (size_t)m->cout * m->K * sizeof(float));
    }
    LOG_I("LoRA rank %d, alpha %g: %d modules, %lld parameters", rank, alpha, l->n, lora_param_count(l));
    return backend_status(be);
}

void lora_free(struct lora *l) {
    arena_free(&l->params);
    arena_free(&l->grads);
    arena_free(&l->base);
    wt_free(&l->wt);
    wt_free(&l->gt);
    sd_free(l->m);
    l->m = NULL;
    l->n = 0;
}

long long lora_param_count(const struct lora *l) {
    long long n = 0;
    for (int i = 0; i < l->n; i++) n += (long long)l->rank * (l->m[i].K + l->m[i].cout);
    return n;
}

void lora_merge(struct lora *l, struct backend *be) {
    for (int i = 0; i < l->n; i++) {
        const struct lora_module *m = &l->m[i];
        float *w = *l->unet->rows[m->row].dst;
        be->ops->linear_backward(be, w, NULL, NULL, m->b, NULL, m->a, m->cout, m->K, l->rank);   /* W = B·A */
        be->ops->axpby(be, w, l->scale, w, 1.0f, m->w0, (long long)m->cout * m->K);
    }
}

void lora_grads(struct lora *l, struct backend *be) {
    SD_ASSERT(l->unet_grads);
    for (int i = 0; i < l->n; i++) {
        const struct lora_module *m = &l->m[i];
        float *dw = *l->unet_grads->rows[m->row].dst;
        be->ops->axpby(be, dw, l->scale, dw, 0.0f, NULL, (long long)m->cout * m->K);
        be->ops->linear(be, m->db, dw, m->a, DT_F32, NULL, m->cout, m->cout, m->K, l->rank);                 /* dB = s·dW·Aᵀ */
        be->ops->zero(be, m->da, (size_t)l->rank * m->K * sizeof(float));
        be->ops->linear_backward(be, NULL, m->da, NULL, m->b, dw, NULL, m->cout, m->K, l->rank);   /* dA = s·Bᵀ·dW */
    }
}

sd_status lora_save(const struct lora *l, struct backend *be, const char *path, sd_dtype dt) {
    struct st_writer w;
    st_writer_init(&w);
    size_t most = 0;
    for (int i = 0; i < l->wt.n; i++) {
        size_t k = (size_t)sd_numel(l->wt.rows[i].ndim, l->wt.rows[i].shape);
        if (k > most) most = k;
    }
    float *host = sd_malloc(most * sizeof(float));
    sd_status st = host ? SD_OK : SD_ERR_NOMEM;
    char name[LORA_NAME_MAX + 16];
    for (int i = 0; i < l->wt.n && !st; i++) {
        const struct weight_row *r = &l->wt.rows[i];
        be->ops->download(be, host, *r->dst, (size_t)sd_numel(r->ndim, r->shape) * sizeof(float));
        st = st_writer_add_f32(&w, r->name, dt, r->ndim, r->shape, host);
        if (!st && i % 2 == 1) {   /* after each up matrix: the module's alpha */
            size_t n = strlen(r->name) - strlen(".lora_up.weight");
            snprintf(name, sizeof name, "%.*s.alpha", (int)n, r->name);
            int64_t scalar[1] = { 1 };   /* unused: a 0-dim tensor */
            st = st_writer_add_f32(&w, name, DT_F32, 0, scalar, &l->alpha);
        }
    }
    if (!st) st = st_writer_write(&w, path);
    st_writer_free(&w);
    sd_free(host);
    return st;
}
