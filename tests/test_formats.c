/* test_formats.c — model files as released (tests/data/formats from
 * tests/ref/make_format_fixtures.py): diffusers' own single-file conversion of the tiny
 * golden model, its fp16-variant folder and sharded text encoders all bind to the same
 * tensors as tests/data/tiny-sdxl-a, bit for bit (everything is fp16, read as fp32);
 * sdxld's own single-file writer reproduces diffusers' file byte for byte and round-trips;
 * the golden stages pass through a single-file model; hostile files (a missing tensor, an
 * unknown one, shard indexes naming a missing shard, a shard outside the folder, a
 * tensor in two shards) fail naming the key or file. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "engine.h"
#include "core/fs.h"
#include "io/wfiles.h"
#include "model/clip.h"
#include "model/sgm.h"
#include "model/unet.h"
#include "model/vae.h"

static char data[600], tmp[128];
static struct backend *be;

static const char *path(const char *fmt, const char *a) {
    static char buf[8][1400];
    static int k;
    char *b = buf[k++ % 8];
    char rel[600];
    snprintf(rel, sizeof rel, fmt, a);
    snprintf(b, 1400, "%s/%s", data, rel);
    return b;
}

/* Every row of a equals b's row of the same name, bit for bit (rows of a may be cut to
 * the first `cut` rows of b's token embedding). */
static int same_tables(const struct weight_table *a, const struct weight_table *b) {
    int bad = 0;
    for (int i = 0; i < a->n; i++) {
        const struct weight_row *r = &a->rows[i], *s = wt_find(b, r->name);
        size_t n = (size_t)sd_numel(r->ndim, r->shape);
        if (!s || (size_t)sd_numel(s->ndim, s->shape) < n || memcmp(*r->dst, *s->dst, n * sizeof(float))) {
            if (!bad++) diag("differs: %s", r->name);
        }
    }
    return a->n > 0 && !bad;
}

static void copy(const char *from, const char *to);

/* The fp16-variant folder as diffusers wrote it: its configs from the fixture, its
 * weights and vocabularies tiny-sdxl-a's own files under the variant names (the fixture
 * records their sha256: byte-identical, so not committed twice). */
static char fp16_dir[200], sgm_unet[600], sgm_vae_te[600];
static const char *fp16_path(const char *sub) {
    static char buf[4][800];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 800, "%s/%s", fp16_dir, sub);
    return b;
}

static void build_fp16_folder(void) {
    static const char *const small[] = { "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
        "vae/config.json", "text_encoder/config.json", "text_encoder_2/config.json", "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json", "tokenizer_2/tokenizer_config.json", "tokenizer_2/special_tokens_map.json" };
    static const char *const same[][2] = {
        { "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors" },
        { "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors" },
        { "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors" },
        { "text_encoder_2/model.safetensors", "text_encoder_2/model.fp16.safetensors" },
        { "tokenizer/vocab.json", "tokenizer/vocab.json" }, { "tokenizer/merges.txt", "tokenizer/merges.txt" },
        { "tokenizer_2/vocab.json", "tokenizer_2/vocab.json" }, { "tokenizer_2/merges.txt", "tokenizer_2/merges.txt" } };
    char cmd[1800];
    snprintf(fp16_dir, sizeof fp16_dir, "%s/fp16", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/scheduler %s/unet %s/vae %s/text_encoder %s/text_encoder_2 %s/tokenizer "
             "%s/tokenizer_2", fp16_dir, fp16_dir, fp16_dir, fp16_dir, fp16_dir, fp16_dir, fp16_dir);
    if (system(cmd)) diag("mkdir failed");
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) copy(path("formats/fp16/%s", small[i]), fp16_path(small[i]));
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) copy(path("tiny-sdxl-a/%s", same[i][0]), fp16_path(same[i][1]));
}

static void test_unet(void) {
    struct unet ref, u;
    ok(unet_load(&ref, be, path("tiny-sdxl-a/%s", "unet"), NULL, DT_F32) == SD_OK, "tiny unet folder");
    ok(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), sgm_unet, DT_F32) == SD_OK,
       "the original-layout UNet file (diffusers' bytes, by its digest) loads as --unet: %s", sd_last_error());
    ok(same_tables(&u.wt, &ref.wt) && u.wt.n == ref.wt.n, "  every UNet tensor identical (%d)", u.wt.n);
    unet_free(&u);
    ok(unet_load(&u, be, fp16_path("unet"), NULL, DT_F32) == SD_OK, "fp16-variant unet folder: %s", sd_last_error());
    ok(same_tables(&u.wt, &ref.wt), "  identical");
    unet_free(&u);
    unet_free(&ref);
}

static sd_status bind_vae_te(const char *file, const char *te_dir, struct vae *v, struct clip *c1, struct clip *c2) {
    struct vae_config vc;
    struct clip_config k1, k2;
    struct wfiles w;
    SD_TRY(vae_config_load(&vc, path("tiny-sdxl-a/%s/config.json", "vae")));
    char cp[1500];
    snprintf(cp, sizeof cp, "%s/text_encoder/config.json", te_dir);
    SD_TRY(clip_config_load(&k1, cp));
    snprintf(cp, sizeof cp, "%s/text_encoder_2/config.json", te_dir);
    SD_TRY(clip_config_load(&k2, cp));
    SD_TRY(vae_create(v, be, &vc));
    SD_TRY(clip_create(c1, be, &k1, 0));
    SD_TRY(clip_create(c2, be, &k2, 1));
    SD_TRY(wfiles_open_file(&w, file));
    sd_status st = vae_bind(v, be, &w, SGM_VAE_PREFIX, file);
    if (!st) st = clip_bind(c1, be, &w, SGM_CLIP_L_PREFIX, file);
    if (!st) st = clip_bind(c2, be, &w, SGM_CLIP_G_PREFIX, file);
    for (int j = 0; j < w.f[0].ntensors; j++)   /* a whole file's UNet: bound elsewhere */
        if (!strncmp(w.f[0].tensors[j].name, SGM_UNET_PREFIX, strlen(SGM_UNET_PREFIX))) w.used[0][j] = 1;
    if (!st) st = sgm_check_leftovers(&w, 0);
    wfiles_close(&w);
    return st;
}

static void test_vae_te(void) {
    struct vae v, rv;
    struct clip c1, c2, r1, r2, s1, s2;
    ok(bind_vae_te(sgm_vae_te, path("formats/%s", "te-small"), &v, &c1, &c2) == SD_OK,
       "diffusers' SGM conversion: VAE (1x1 attention convs), CLIP-L, bigG (fused in_proj, transposed projection): %s", sd_last_error());
    ok(vae_load(&rv, be, path("tiny-sdxl-a/%s", "vae"), DT_F32) == SD_OK, "tiny vae folder");
    ok(same_tables(&v.wt, &rv.wt), "  every VAE tensor identical (%d)", v.wt.n);
    ok(clip_load(&r1, be, path("tiny-sdxl-a/%s", "text_encoder"), 0, DT_F32) == SD_OK &&
       clip_load(&r2, be, path("tiny-sdxl-a/%s", "text_encoder_2"), 1, DT_F32) == SD_OK, "tiny text encoders");
    ok(same_tables(&c1.wt, &r1.wt) && same_tables(&c2.wt, &r2.wt),
       "  every text-encoder tensor identical (token embeddings: their first rows)");
    ok(clip_load(&s1, be, path("formats/sharded/%s", "text_encoder"), 0, DT_F32) == SD_OK &&
       clip_load(&s2, be, path("formats/sharded/%s", "text_encoder_2"), 1, DT_F32) == SD_OK,
       "sharded text encoders (model.safetensors.index.json): %s", sd_last_error());
    ok(same_tables(&s1.wt, &c1.wt) && same_tables(&s2.wt, &c2.wt), "  identical");
    clip_free(&s1); clip_free(&s2);
    vae_free(&v); clip_free(&c1); clip_free(&c2);
    ok(vae_load(&v, be, fp16_path("vae"), DT_F32) == SD_OK && same_tables(&v.wt, &rv.wt), "fp16-variant vae identical");
    ok(clip_load(&c1, be, fp16_path("text_encoder"), 0, DT_F32) == SD_OK && same_tables(&c1.wt, &r1.wt) &&
       clip_load(&c2, be, fp16_path("text_encoder_2"), 1, DT_F32) == SD_OK && same_tables(&c2.wt, &r2.wt),
       "fp16-variant text encoders identical");
    vae_free(&v); vae_free(&rv); clip_free(&c1); clip_free(&c2); clip_free(&r1); clip_free(&r2);
}


/* sdxld's writer: the tiny folder as one original-layout file (as `convert` does). */
static sd_status write_single(const char *out) {
    struct unet u;
    struct vae v;
    struct clip c1, c2;
    struct st_writer w;
    struct sgm_map m[4];
    st_writer_init(&w);
    SD_TRY(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), NULL, DT_F32));
    SD_TRY(vae_load(&v, be, path("tiny-sdxl-a/%s", "vae"), DT_F32));
    SD_TRY(clip_load(&c1, be, path("tiny-sdxl-a/%s", "text_encoder"), 0, DT_F32));
    SD_TRY(clip_load(&c2, be, path("tiny-sdxl-a/%s", "text_encoder_2"), 1, DT_F32));
    const struct weight_table *t[4] = { &u.wt, &v.wt, &c1.wt, &c2.wt };
    const void *cfg[4] = { &u.cfg, &v.cfg, NULL, NULL };
    const char *pre[4] = { SGM_UNET_PREFIX, SGM_VAE_PREFIX, SGM_CLIP_L_PREFIX, SGM_CLIP_G_PREFIX };
    sd_status st = SD_OK;
    for (int k = 0; k < 4 && !st; k++)
        if (!(st = sgm_map_build(&m[k], t[k], (enum sgm_part)k, cfg[k], pre[k]))) {
            st = sgm_write_table(&w, t[k], be, DT_F16, &m[k], pre[k], NULL);
            sgm_map_free(&m[k]);
        }
    if (!st) st = st_writer_write(&w, out);
    st_writer_free(&w);
    unet_free(&u); vae_free(&v); clip_free(&c1); clip_free(&c2);
    return st;
}

/* Every tensor of `want` is in `got` with its dtype, shape and bytes (token embeddings
 * of a cut file: their first rows). */
/* FNV-1a 64 over the tensors whose names start with prefix, in name order: each name,
 * dtype, shape and data bytes.  A fingerprint of a fixture not committed twice. */
static const struct st_file *digest_file;
static int by_name(const void *a, const void *b) {
    return strcmp(digest_file->tensors[*(const int *)a].name, digest_file->tensors[*(const int *)b].name);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t tensors_digest(const struct st_file *f, const char *prefix, int *count) {
    int *ix = malloc(sizeof(int) * (size_t)(f->ntensors + 1)), n = 0;
    for (int i = 0; ix && i < f->ntensors; i++)
        if (!strncmp(f->tensors[i].name, prefix, strlen(prefix))) ix[n++] = i;
    digest_file = f;
    if (ix) qsort(ix, (size_t)n, sizeof *ix, by_name);
    uint64_t h = 14695981039346656037ull;
    for (int k = 0; ix && k < n; k++) {
        const struct st_tensor *x = &f->tensors[ix[k]];
        h = fnv(h, x->name, strlen(x->name) + 1);
        h = fnv(h, &x->dtype, sizeof x->dtype);
        h = fnv(h, x->shape, sizeof(int64_t) * (size_t)x->ndim);
        h = fnv(h, x->data, (size_t)(x->end - x->begin));
    }
    free(ix);
    *count = n;
    return h;
}

/* Is (digest, n) what tests/data/formats/sgm.digest records for key? */
static int digest_recorded(const char *key, uint64_t digest, int n) {
    char *text = NULL, pat[64];
    if (sd_read_file(path("formats/%s", "sgm.digest"), 4096, &text, NULL)) return 0;
    snprintf(pat, sizeof pat, "\n%s digest ", key);
    const char *at = strstr(text, pat);
    unsigned long long d = 0;
    int dn = -1;
    int ok_ = at && sscanf(at + strlen(pat), "%llx tensors %d", &d, &dn) == 2 && d == digest && dn == n;
    sd_free(text);
    return ok_;
}

/* tmp/sgm-unet.safetensors: the UNet of sdxld's own single-file export, which must carry
 * the digest of diffusers' conversion (tests/data/formats/sgm.digest: that 10.6 MB
 * file is not committed; its tensors are these, byte for byte). */
static void make_sgm_unet(void) {
    char single[600];
    snprintf(single, sizeof single, "%s/tiny.safetensors", tmp);
    snprintf(sgm_unet, sizeof sgm_unet, "%s/sgm-unet.safetensors", tmp);
    struct st_file f;
    if (!ok(write_single(single) == SD_OK && st_open(&f, single) == SD_OK, "our single-file export: %s", sd_last_error()))
        return;
    int n = 0;
    uint64_t got = tensors_digest(&f, SGM_UNET_PREFIX, &n);
    struct st_writer w;
    st_writer_init(&w);
    for (int i = 0; i < f.ntensors; i++) {
        const struct st_tensor *x = &f.tensors[i];
        if (!strncmp(x->name, SGM_UNET_PREFIX, strlen(SGM_UNET_PREFIX)))
            st_writer_add(&w, x->name, x->dtype, x->ndim, x->shape, x->data);
    }
    ok(st_writer_write(&w, sgm_unet) == SD_OK, "its UNet as a UNet-only original-layout file");
    st_writer_free(&w);
    /* the VAE and text encoders, token embeddings cut to their first 1000 rows as the
     * fixture's configs (formats/te-small) expect */
    snprintf(sgm_vae_te, sizeof sgm_vae_te, "%s/sgm-vae-te.safetensors", tmp);
    st_writer_init(&w);
    for (int i = 0; i < f.ntensors; i++) {
        const struct st_tensor *x = &f.tensors[i];
        if (!strncmp(x->name, SGM_UNET_PREFIX, strlen(SGM_UNET_PREFIX))) continue;
        int64_t shape[SD_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        if (strstr(x->name, "token_embedding") && shape[0] > 1000) shape[0] = 1000;
        st_writer_add(&w, x->name, x->dtype, x->ndim, shape, x->data);
    }
    ok(st_writer_write(&w, sgm_vae_te) == SD_OK, "its VAE and text encoders (vocabulary cut to 1000) as one file");
    st_writer_free(&w);
    st_close(&f);
    int n2 = 0;
    uint64_t got2 = 0;
    if (!st_open(&f, sgm_vae_te)) { got2 = tensors_digest(&f, "", &n2); st_close(&f); }
    ok(digest_recorded("vae-te", got2, n2), "... its %d VAE and text-encoder tensors carry the digest of diffusers' "
       "conversion (%016llx)", n2, (unsigned long long)got2);
    ok(digest_recorded("unet", got, n), "... its %d UNet tensors carry the digest of diffusers' conversion (%016llx)",
       n, (unsigned long long)got);
}

static int same_bytes(const char *want_path, const char *got_path) {
    struct st_file a, b;
    if (st_open(&a, want_path) || st_open(&b, got_path)) return 0;
    int bad = 0;
    for (int i = 0; i < a.ntensors; i++) {
        const struct st_tensor *x = &a.tensors[i], *y = st_find(&b, x->name);
        size_t n = (size_t)(x->end - x->begin);
        if (!y || y->dtype != x->dtype || y->ndim != x->ndim || (y->end - y->begin) < n ||
            memcmp(x->data, y->data, n) || (!strstr(x->name, "token_embedding") && memcmp(x->shape, y->shape, sizeof x->shape)))
            if (!bad++) diag("differs: %s", x->name);
    }
    st_close(&a);
    st_close(&b);
    return !bad;
}

static void check_rows(const char *name, const float *got, size_t n, double tol) {
    struct st_file g;
    if (st_open(&g, path("tiny-sdxl-a/%s", "golden.safetensors"))) { ok(0, "golden file"); return; }
    const struct st_tensor *t = st_find(&g, name);
    float *want = malloc(sizeof(float) * (size_t)st_numel(t));
    st_read_f32(t, want);
    double e = rel_err(got, want, n);
    ok(e < tol, "  %s through the single file: rel err %.3g", name, e);
    free(want);
    st_close(&g);
}

static float *golden(const char *name, int64_t *shape) {
    struct st_file g;
    if (st_open(&g, path("tiny-sdxl-a/%s", "golden.safetensors"))) return NULL;
    const struct st_tensor *t = st_find(&g, name);
    float *d = malloc(sizeof(float) * (size_t)st_numel(t));
    st_read_f32(t, d);
    if (shape) memcpy(shape, t->shape, sizeof(int64_t) * 4);
    st_close(&g);
    return d;
}

static void test_golden_single(const char *file) {
    struct engine *e;
    struct engine_config ec = { .model_dir = file, .config_dir = path("%s", "tiny-sdxl-a"), .threads = 2 };
    ok(engine_load(&e, &ec) == SD_OK, "engine loads the single file (--model FILE --config DIR): %s", sd_last_error());
    struct engine_dims d;
    engine_dims(e, &d);
    const char *prompts[1] = { "a photograph of an astronaut riding a horse" };
    float *ctx = malloc(sizeof(float) * d.L * d.cross), *pooled = malloc(sizeof(float) * d.P);
    struct engine_text t = { .context = ctx, .pooled = pooled };
    ok(engine_encode(e, prompts, 1, &t) == SD_OK, "encode");
    check_rows("prompt_embeds", ctx, (size_t)d.L * d.cross, 1e-4);
    check_rows("pooled_embeds", pooled, (size_t)d.P, 1e-4);
    int64_t sx[4], sd[4], se[4];
    float *x = golden("unet_x", sx), *ts = golden("unet_t", NULL), *pe = golden("prompt_embeds", NULL);
    float *pp = golden("pooled_embeds", NULL), *tid = golden("time_ids", NULL), *out = malloc(sizeof(float) * sd_numel(4, sx));
    ok(engine_unet(e, x, ts, pe, pp, tid, (int)sx[0], (int)sx[2], (int)sx[3], out) == SD_OK, "unet");
    check_rows("unet_out", out, (size_t)sd_numel(4, sx), 1e-4);
    float *din = golden("vae_dec_in", sd), *ein = golden("vae_enc_in", se);
    int s = engine_info(e)->vae_scale;
    float *img = malloc(sizeof(float) * sd[0] * 3 * sd[2] * s * sd[3] * s), *mean = malloc(sizeof(float) * se[0] * d.latent_ch * se[2] / s * se[3] / s);
    ok(engine_vae_decode(e, din, (int)sd[0], (int)sd[2], (int)sd[3], img) == SD_OK &&
       engine_vae_encode(e, ein, (int)se[0], (int)se[2], (int)se[3], mean) == SD_OK, "vae");
    check_rows("vae_dec_out", img, (size_t)(sd[0] * 3 * sd[2] * s * sd[3] * s), 1e-4);
    check_rows("vae_enc_mean", mean, (size_t)(se[0] * d.latent_ch * se[2] / s * se[3] / s), 1e-4);
    ok(engine_load_unet(e, sgm_unet, NULL, 0, NULL) == SD_OK &&
       engine_unet(e, x, ts, pe, pp, tid, (int)sx[0], (int)sx[2], (int)sx[3], out) == SD_OK,
       "engine_load_unet takes diffusers' SGM UNet file: %s", sd_last_error());
    check_rows("unet_out", out, (size_t)sd_numel(4, sx), 1e-4);
    engine_free(e);
    free(ctx); free(pooled); free(x); free(ts); free(pe); free(pp); free(tid); free(out);
    free(din); free(ein); free(img); free(mean);
}

static void test_writer(void) {
    char out[512];
    snprintf(out, sizeof out, "%s/tiny.safetensors", tmp);
    ok(write_single(out) == SD_OK, "sdxld writes the tiny model as one original-layout file: %s", sd_last_error());
    ok(same_bytes(sgm_vae_te, out), "  the VAE and text encoders of the whole file equal the parts checked by digest above");
    struct unet u, ref;
    struct vae v, rv;
    struct clip c1, c2, r1, r2;
    ok(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), out, DT_F32) == SD_OK && unet_load(&ref, be, path("tiny-sdxl-a/%s", "unet"), NULL, DT_F32) == SD_OK &&
       same_tables(&u.wt, &ref.wt), "round trip: UNet (taken from the whole file as --unet) bit-identical");
    sd_status bst = bind_vae_te(out, path("%s", "tiny-sdxl-a"), &v, &c1, &c2);
    if (bst) diag("bind: %s", sd_last_error());
    ok(!bst && vae_load(&rv, be, path("tiny-sdxl-a/%s", "vae"), DT_F32) == SD_OK &&
       clip_load(&r1, be, path("tiny-sdxl-a/%s", "text_encoder"), 0, DT_F32) == SD_OK && clip_load(&r2, be, path("tiny-sdxl-a/%s", "text_encoder_2"), 1, DT_F32) == SD_OK &&
       same_tables(&v.wt, &rv.wt) && same_tables(&c1.wt, &r1.wt) && same_tables(&c2.wt, &r2.wt) && c1.wt.n == r1.wt.n && c2.wt.n == r2.wt.n,
       "round trip: VAE and text encoders bit-identical: %s", sd_last_error());
    unet_free(&u); unet_free(&ref); vae_free(&v); vae_free(&rv); clip_free(&c1); clip_free(&c2); clip_free(&r1); clip_free(&r2);
    test_golden_single(out);
}

/* ---- hostile files ---- */

/* The UNet fixture without `drop` and with `add` (a copy of its first tensor). */
static void unet_variant(const char *out, const char *drop, const char *add) {
    struct st_file f;
    struct st_writer w;
    st_writer_init(&w);
    if (st_open(&f, sgm_unet)) return;
    for (int i = 0; i < f.ntensors; i++) {
        const struct st_tensor *x = &f.tensors[i];
        if (drop && !strcmp(x->name, drop)) continue;
        st_writer_add(&w, x->name, x->dtype, x->ndim, x->shape, x->data);
        if (add && i == 0) st_writer_add(&w, add, x->dtype, x->ndim, x->shape, x->data);
    }
    st_writer_write(&w, out);
    st_writer_free(&w);
    st_close(&f);
}

static int fails_naming(sd_status st, const char *what, const char *label) {
    int r = st != SD_OK && strstr(sd_last_error(), what) != NULL;
    ok(r, "%s: %s", label, sd_last_error());
    return r;
}

static void copy(const char *from, const char *to) {
    char *d;
    size_t n;
    if (!sd_read_file(from, 64u << 20, &d, &n)) { sd_write_file_atomic(to, d, n); sd_free(d); }
}

/* tmp/sh: the sharded text_encoder with its index text edited (from -> to) and, when
 * dup, shard 3 also holding shard 2's first tensor. */
static void shard_variant(const char *from, const char *to, int dup) {
    char d[600], p[700], q[700];
    static const char *const files[] = { "config.json", "model-00001-of-00003.safetensors",
                                         "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors" };
    snprintf(d, sizeof d, "rm -rf %s/sh && mkdir -p %s/sh", tmp, tmp);
    if (system(d)) return;
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/sh/%s", tmp, files[i]);
        copy(path("formats/sharded/text_encoder/%s", files[i]), p);
    }
    char *text;
    size_t n;
    if (sd_read_file(path("formats/sharded/text_encoder/%s", "model.safetensors.index.json"), 1 << 20, &text, &n)) return;
    char *at = strstr(text, from), *out = malloc(n + strlen(to) + 1);
    if (at) snprintf(out, n + strlen(to) + 1, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    else snprintf(out, n + 1, "%s", text);
    snprintf(p, sizeof p, "%s/sh/model.safetensors.index.json", tmp);
    sd_write_file_atomic(p, out, strlen(out));
    free(out);
    sd_free(text);
    if (dup) {   /* shard 3 += shard 2's first tensor */
        struct st_file a, b;
        struct st_writer w;
        snprintf(p, sizeof p, "%s/sh/%s", tmp, files[2]);
        snprintf(q, sizeof q, "%s/sh/%s", tmp, files[3]);
        if (st_open(&a, p) || st_open(&b, q)) return;
        st_writer_init(&w);
        for (int i = 0; i < b.ntensors; i++)
            st_writer_add(&w, b.tensors[i].name, b.tensors[i].dtype, b.tensors[i].ndim, b.tensors[i].shape, b.tensors[i].data);
        st_writer_add(&w, a.tensors[0].name, a.tensors[0].dtype, a.tensors[0].ndim, a.tensors[0].shape, a.tensors[0].data);
        st_close(&b);
        st_writer_write(&w, q);
        st_writer_free(&w);
        st_close(&a);
    }
}

static void test_hostile(void) {
    char f[512], d[512];
    struct unet u;
    struct clip c;
    snprintf(f, sizeof f, "%s/hostile.safetensors", tmp);
    unet_variant(f, SGM_UNET_PREFIX "input_blocks.4.1.proj_in.weight", NULL);
    fails_naming(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), f, DT_F32), "down_blocks.1.attentions.0.proj_in.weight",
                 "single file missing a tensor");
    unet_variant(f, NULL, SGM_UNET_PREFIX "input_blocks.4.1.extra.weight");
    fails_naming(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), f, DT_F32), "unexpected tensor 'model.diffusion_model.input_blocks.4.1.extra.weight'",
                 "single file with an unknown tensor");
    unet_variant(f, NULL, "cond_stage_model.transformer.x.weight");
    fails_naming(unet_load(&u, be, path("tiny-sdxl-a/%s", "unet"), f, DT_F32), "unexpected tensor 'cond_stage_model.transformer.x.weight'",
                 "single file with an unknown component");
    snprintf(d, sizeof d, "%s/sh", tmp);
    shard_variant("x", "x", 0);
    ok(clip_load(&c, be, d, 0, DT_F32) == SD_OK, "sharded copy loads: %s", sd_last_error());
    clip_free(&c);
    shard_variant("model-00003-of-00003.safetensors", "model-00009-of-00009.safetensors", 0);
    fails_naming(clip_load(&c, be, d, 0, DT_F32), "model-00009-of-00009.safetensors", "index naming a missing shard");
    shard_variant("model-00003-of-00003.safetensors", "../x.safetensors", 0);
    fails_naming(clip_load(&c, be, d, 0, DT_F32), "shard '../x.safetensors' is not a file name inside the folder", "shard outside the folder");
    shard_variant("x", "x", 1);
    fails_naming(clip_load(&c, be, d, 0, DT_F32), "(a tensor in two shards)", "a tensor in two shards");
}

int main(void) {
    const char *env = getenv("SDXLD_TEST_DATA");
    snprintf(data, sizeof data, "%s", env ? env : "tests/data");
    snprintf(tmp, sizeof tmp, "/tmp/sdxld-formats-XXXXXX");
    if (!mkdtemp(tmp) || backend_create(&be, "cpu", 2)) return 1;
    build_fp16_folder();
    make_sgm_unet();
    test_unet();
    test_vae_te();
    test_writer();
    test_hostile();
    backend_destroy(be);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) return 1;
    ok(sd_alloc_live_bytes() == 0, "every sd_malloc freed (%zu bytes live)", sd_alloc_live_bytes());
    return done_testing();
}
