/* torchfile.c — PyTorch checkpoints (.bin, .pt, .pth, .ckpt) read as a struct st_file.
 *
 * st_open sends a file starting with a ZIP local header here, so every consumer of
 * safetensors.h (wt_load, LoRA merging, the CLI) reads torch.save files unchanged.  The
 * archive (zipfile.c) holds ARCHIVE/data.pkl, the object tree as a pickle, and one entry
 * ARCHIVE/data/KEY per storage.  The pickle is interpreted, never executed (pickle.c);
 * what it yields is checked here:
 *   - the root must be a dict.  If it holds tensors it is the state dict; otherwise
 *     the first of "state_dict" (Lightning, SGM .ckpt), "model", "module" (DeepSpeed)
 *     that is a dict holding tensors is.  Values that are not tensors (global_step,
 *     epoch, nested dicts, lists) are ignored; a state dict with no tensors is an error
 *     listing the top-level keys.
 *   - a name with the DataParallel prefix "module." loses it; names must be non-empty,
 *     without NUL, and unique after that (duplicates are an error, not a silent pick).
 *   - each tensor is _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
 *     hooks[, metadata]): at most SD_MAX_DIMS dims, a row-major contiguous view (torch's
 *     rule: dims of size 1 may have any stride), offset + numel within the storage, the
 *     storage entry exactly numel x dtype size bytes; metadata may only carry false
 *     conj/neg bits.  Errors name the file and the tensor.
 *   - ARCHIVE/byteorder, when present, must say "little" (torch < 1.10 wrote none and
 *     was little-endian only).
 * Tensors point into the mapping (st_tensor.begin/end are file offsets: for these files
 * the "data area" is the whole file); several tensors may share a storage, read-only. */
#include <stdio.h>
#include <string.h>

#include "pickle.h"
#include "st_internal.h"
#include "zipfile.h"

struct torch_ctx {
    struct st_file *f;
    struct zip_archive z;
    struct pickle pk;
    char prefix[ZIP_MAX_NAME + 1];   /* "ARCHIVE/" */
};

/* The one entry named ARCHIVE/data.pkl (ARCHIVE without '/'); sets c->prefix. */
static sd_status find_pickle(struct torch_ctx *c, const struct zip_entry **out) {
    const char *path = c->f->path;
    *out = NULL;
    for (uint32_t i = 0; i < c->z.n; i++) {
        const char *name = c->z.e[i].name, *slash = strchr(name, '/');
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0) continue;
        if (*out)
            return sd_fail(SD_ERR_FORMAT, "%s: ZIP archive holds more than one data.pkl", path);
        *out = &c->z.e[i];
        memcpy(c->prefix, name, (size_t)(slash - name) + 1);
        c->prefix[slash - name + 1] = 0;
    }
    if (!*out)
        return sd_fail(SD_ERR_FORMAT, "%s: ZIP archive without ARCHIVE/data.pkl: not a PyTorch "
                       "checkpoint", path);
    return SD_OK;
}

static const struct zip_entry *find_member(const struct torch_ctx *c, const char *rest) {
    char name[2 * ZIP_MAX_NAME + 8];
    snprintf(name, sizeof name, "%s%s", c->prefix, rest);
    return zip_find(&c->z, name);
}

static sd_status check_byteorder(const struct torch_ctx *c) {
    const struct zip_entry *e = find_member(c, "byteorder");
    if (!e) return SD_OK;
    const char *s = (const char *)c->z.base + e->offset;
    if (e->size == 6 && memcmp(s, "little", 6) == 0) return SD_OK;
    if (e->size == 3 && memcmp(s, "big", 3) == 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: big-endian PyTorch checkpoint is not supported",
                       c->f->path);
    return sd_fail(SD_ERR_FORMAT, "%s: %sbyteorder is neither 'little' nor 'big'", c->f->path,
                   c->prefix);
}

/* ---- choosing the state dict ------------------------------------------------------- */

static uint32_t count_tensors(const struct pickle *pk, const struct pk_obj *d) {
    uint32_t n = 0;
    for (uint32_t k = 0; k < d->n; k++) n += pk_get(pk, d->u.items[2 * k + 1])->kind == PK_TENSOR;
    return n;
}

static const struct pk_obj *dict_get(const struct pickle *pk, const struct pk_obj *d,
                                     const char *key) {
    const struct pk_obj *hit = NULL;
    for (uint32_t k = 0; k < d->n; k++)   /* the last one wins, as in Python */
        if (pk_str_is(pk_get(pk, d->u.items[2 * k]), key)) hit = pk_get(pk, d->u.items[2 * k + 1]);
    return hit;
}

static sd_status no_tensors(const struct torch_ctx *c, const struct pk_obj *root) {
    char keys[256], q[64];
    size_t o = 0;
    keys[0] = 0;
    for (uint32_t k = 0; k < root->n && o + 70 < sizeof keys; k++) {
        const struct pk_obj *key = pk_get(&c->pk, root->u.items[2 * k]);
        char raw[48];
        size_t n = key->kind == PK_STR ? (key->n < 47 ? key->n : 47) : 0;
        memcpy(raw, key->kind == PK_STR ? key->u.s : "", n);
        raw[n] = 0;
        o += (size_t)snprintf(keys + o, sizeof keys - o, "%s'%s'", k ? ", " : "",
                              key->kind == PK_STR ? st_safe_str(q, sizeof q, raw) : "(not a str)");
    }
    return sd_fail(SD_ERR_FORMAT, "%s: no tensors at the top level or under 'state_dict', "
                   "'model' or 'module' (top-level keys: %s)", c->f->path,
                   root->n ? keys : "none");
}

static sd_status pick_state_dict(const struct torch_ctx *c, const struct pk_obj **out) {
    const struct pk_obj *root = pk_get(&c->pk, c->pk.root);
    if (root->kind != PK_DICT)
        return sd_fail(SD_ERR_FORMAT, "%s: the checkpoint is not a dict of tensors", c->f->path);
    static const char *const nested[] = { "state_dict", "model", "module" };
    const struct pk_obj *sd = count_tensors(&c->pk, root) ? root : NULL;
    for (size_t i = 0; !sd && i < sizeof nested / sizeof *nested; i++) {
        const struct pk_obj *v = dict_get(&c->pk, root, nested[i]);
        if (v && v->kind == PK_DICT && count_tensors(&c->pk, v)) sd = v;
    }
    if (!sd) return no_tensors(c, root);
    *out = sd;
    return SD_OK;
}

/* ---- one tensor ---------------------------------------------------------------------- */

static int int_tuple(const struct pickle *pk, const struct pk_obj *t, int64_t *v) {
    if (t->kind != PK_TUPLE || t->n > SD_MAX_DIMS) return -1;
    for (uint32_t k = 0; k < t->n; k++) {
        const struct pk_obj *x = pk_get(pk, pk_item(pk, t, k));
        if (x->kind != PK_INT) return -1;
        v[k] = x->u.i;
    }
    return 0;
}

/* torch's is_contiguous: walking from the last dim, each dim of size != 1 must have the
 * stride of the dims after it; a tensor with no elements is contiguous. */
static int contiguous(int ndim, const int64_t *shape, const int64_t *stride) {
    int64_t expect = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] == 0) return 1;
        if (shape[d] != 1 && stride[d] != expect) return 0;
        expect *= shape[d];   /* bounded: shape bytes were checked for overflow */
    }
    return 1;
}

static int metadata_ok(const struct pickle *pk, const struct pk_obj *m) {
    if (m->kind != PK_DICT) return 0;
    for (uint32_t k = 0; k < m->n; k++) {
        const struct pk_obj *v = pk_get(pk, m->u.items[2 * k + 1]);
        if (v->kind != PK_BOOL || v->u.i) return 0;   /* a conj or neg view */
    }
    return 1;
}

/* The storage of tensor x (named qn in messages): its ZIP entry, sized to match. */
static sd_status storage_entry(const struct torch_ctx *c, const char *qn, const struct pk_obj *s,
                               const struct zip_entry **out) {
    *out = NULL;
    const struct pk_obj *key = pk_get(&c->pk, s->ref);
    char rest[80], kq[80];
    snprintf(rest, sizeof rest, "data/%.*s", (int)key->n, key->u.s);   /* key->n <= 64 */
    const struct zip_entry *e = memchr(key->u.s, 0, key->n) ? NULL : find_member(c, rest);
    if (!e)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': its storage has no entry %s%s",
                       c->f->path, qn, c->prefix, st_safe_str(kq, sizeof kq, rest));
    uint64_t es = sd_dtype_size((sd_dtype)s->dtype);
    if ((uint64_t)s->u.i > e->size / es || (uint64_t)s->u.i * es != e->size)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': storage of %lld %s elements does not "
                       "match its %llu-byte entry", c->f->path, qn, (long long)s->u.i,
                       sd_dtype_name((sd_dtype)s->dtype), (unsigned long long)e->size);
    *out = e;
    return SD_OK;
}

/* Check the rebuild arguments of tensor x and fill t (its name already set). */
static sd_status bind_tensor(const struct torch_ctx *c, const struct pk_obj *x,
                             struct st_tensor *t) {
    const struct pickle *pk = &c->pk;
    const char *path = c->f->path;
    char qn[256], sb[192], tb[192];
    st_safe_str(qn, sizeof qn, t->name);
    const struct pk_obj *a = pk_get(pk, x->ref);
    if (a->n != 6 && a->n != 7)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': _rebuild_tensor_v2 takes 6 or 7 "
                       "arguments, not %u", path, qn, a->n);
    const struct pk_obj *s = pk_get(pk, pk_item(pk, a, 0)), *off = pk_get(pk, pk_item(pk, a, 1));
    const struct pk_obj *size = pk_get(pk, pk_item(pk, a, 2));
    const struct pk_obj *stride = pk_get(pk, pk_item(pk, a, 3));
    const struct pk_obj *grad = pk_get(pk, pk_item(pk, a, 4));
    const struct pk_obj *hooks = pk_get(pk, pk_item(pk, a, 5));
    int64_t strides[SD_MAX_DIMS];
    if (s->kind != PK_STORAGE || off->kind != PK_INT || off->u.i < 0 ||
        int_tuple(pk, size, t->shape) || int_tuple(pk, stride, strides) ||
        size->n != stride->n || grad->kind != PK_BOOL || hooks->kind != PK_DICT)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': _rebuild_tensor_v2 arguments are not "
                       "(storage, offset, size, stride, requires_grad, hooks) with at most %d "
                       "dims", path, qn, SD_MAX_DIMS);
    if (a->n == 7 && !metadata_ok(pk, pk_get(pk, pk_item(pk, a, 6))))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: tensor '%s': conjugate or negative views are "
                       "not supported", path, qn);
    t->dtype = (sd_dtype)s->dtype;
    t->ndim = (int)size->n;
    uint64_t bytes, es = sd_dtype_size(t->dtype);
    if (st_shape_bytes(t->ndim, t->shape, es, &bytes) != 0)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': shape %s is invalid", path, qn,
                       sd_shape_str(sb, sizeof sb, t->ndim, t->shape));
    if (!contiguous(t->ndim, t->shape, strides))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: tensor '%s': shape %s with stride %s is not a "
                       "contiguous view; save it with .contiguous()", path, qn,
                       sd_shape_str(sb, sizeof sb, t->ndim, t->shape),
                       sd_shape_str(tb, sizeof tb, t->ndim, strides));
    const struct zip_entry *e;
    SD_TRY(storage_entry(c, qn, s, &e));
    uint64_t numel = bytes / es, have = (uint64_t)s->u.i, at = (uint64_t)off->u.i;
    if (at > have || numel > have - at)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': offset %llu + %llu elements run past "
                       "its storage of %llu", path, qn, (unsigned long long)at,
                       (unsigned long long)numel, (unsigned long long)have);
    t->begin = e->offset + at * es;
    t->end = t->begin + bytes;
    t->data = c->z.base + t->begin;
    return SD_OK;
}

/* ---- the state dict into f->tensors ------------------------------------------------- */

static const char *strip_module(const struct pk_obj *key, uint32_t *len) {
    static const char pfx[] = "module.";
    size_t n = sizeof pfx - 1;
    if (key->n > n && memcmp(key->u.s, pfx, n) == 0) {
        *len = key->n - (uint32_t)n;
        return key->u.s + n;
    }
    *len = key->n;
    return key->u.s;
}

static sd_status fill_tensors(struct torch_ctx *c, const struct pk_obj *sd) {
    struct st_file *f = c->f;
    size_t n = 0, name_bytes = 0;
    for (uint32_t k = 0; k < sd->n; k++) {
        const struct pk_obj *key = pk_get(&c->pk, sd->u.items[2 * k]);
        if (pk_get(&c->pk, sd->u.items[2 * k + 1])->kind != PK_TENSOR) continue;
        uint32_t len = 0;
        const char *name = key->kind == PK_STR ? strip_module(key, &len) : NULL;
        if (len == 0 || memchr(name, 0, len))
            return sd_fail(SD_ERR_FORMAT, "%s: a tensor has a name that is not a non-empty "
                           "string", f->path);
        n++;
        name_bytes += len + 1u;
    }
    char *names;
    SD_TRY(st_table_alloc(f, n, name_bytes, &names));
    size_t i = 0;
    for (uint32_t k = 0; k < sd->n; k++) {
        const struct pk_obj *x = pk_get(&c->pk, sd->u.items[2 * k + 1]);
        if (x->kind != PK_TENSOR) continue;
        uint32_t len;
        const char *name = strip_module(pk_get(&c->pk, sd->u.items[2 * k]), &len);
        struct st_tensor *t = &f->tensors[i];
        memcpy(names, name, len);
        t->name = names;
        names += len + 1u;
        SD_TRY(bind_tensor(c, x, t));
        if (st_table_index(f, (int)i) != 0) {
            char q[256];
            return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' appears twice (a 'module.' prefix "
                           "is dropped)", f->path, st_safe_str(q, sizeof q, t->name));
        }
        i++;
    }
    return SD_OK;
}

sd_status torch_parse(struct st_file *f) {
    struct torch_ctx c;
    memset(&c, 0, sizeof c);
    c.f = f;
    const struct zip_entry *pkl;
    char *what = NULL;
    sd_status st = zip_open(&c.z, f->path, f->map, f->size);
    if (st == SD_OK) st = find_pickle(&c, &pkl);
    if (st == SD_OK) st = check_byteorder(&c);
    if (st == SD_OK) {
        size_t n = strlen(f->path) + strlen(pkl->name) + 3;
        if (!(what = sd_malloc(n))) st = SD_ERR_NOMEM;
        else snprintf(what, n, "%s: %s", f->path, pkl->name);
    }
    if (st == SD_OK) st = pk_load(&c.pk, what, c.z.base + pkl->offset, (size_t)pkl->size);
    const struct pk_obj *sd = NULL;
    if (st == SD_OK) st = pick_state_dict(&c, &sd);
    if (st == SD_OK) st = fill_tensors(&c, sd);
    sd_free(what);
    pk_free(&c.pk);
    zip_close(&c.z);
    return st;
}
