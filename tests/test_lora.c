/* test_lora.c — LoRA adapters (model/lora.h) on the tiny-sdxl-a UNet: target selection
 * and names, the merge W0 + s·B·A, the adapters' gradients against central finite
 * differences of a loss through the whole UNet, the kohya file round trip, the peft key
 * style, and files that must be refused without touching the weights. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "tap.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/unet.h"

static char dir[1024];
static struct st_file G;

static float *golden(const char *name) {
    const struct st_tensor *t = st_find(&G, name);
    if (!t) { printf("Bail out! golden tensor %s missing\n", name); exit(1); }
    float *d = malloc(sizeof(float) * (size_t)st_numel(t));
    st_read_f32(t, d);
    return d;
}

static size_t numel_row(const struct weight_row *r) { return (size_t)sd_numel(r->ndim, r->shape); }

/* sum over every parameter of |w|·(index+1) mod a prime: any change shows */
static double checksum(const struct weight_table *t) {
    double s = 0;
    for (int i = 0; i < t->n; i++) {
        const float *w = *t->rows[i].dst;
        for (size_t k = 0; k < numel_row(&t->rows[i]); k++) s += w[k] * (double)((k % 97) + 1);
    }
    return s;
}

static int find_module(const struct lora *l, const struct weight_table *wt, const char *suffix) {
    for (int i = 0; i < l->n; i++) {
        const char *n = wt->rows[l->m[i].row].name;
        size_t a = strlen(n), b = strlen(suffix);
        if (a >= b && !strcmp(n + a - b, suffix)) return i;
    }
    return -1;
}

static void test_names(void) {
    ok(lora_is_target("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"), "to_q is a target");
    ok(lora_is_target("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0.weight"), "to_out.0 is a target");
    ok(lora_is_target("mid_block.resnets.0.time_emb_proj.weight"), "time_emb_proj is a target");
    ok(lora_is_target("down_blocks.0.downsamplers.0.conv.weight"), "a downsampler conv is a target");
    ok(lora_is_target("up_blocks.1.resnets.2.conv_shortcut.weight"), "conv_shortcut is a target");
    ok(!lora_is_target("conv_in.weight") && !lora_is_target("conv_out.weight"), "conv_in / conv_out are not");
    ok(!lora_is_target("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.bias"), "biases are not");
    ok(!lora_is_target("time_embedding.linear_1.weight") && !lora_is_target("mid_block.resnets.0.norm1.weight"),
       "time embedding and norms are not");
    ok(!lora_is_target("down_blocks.0.resnets.0.xconv1.weight"), "a suffix must match a whole name part");
    char k[LORA_NAME_MAX];
    lora_kohya_name("down_blocks.1.attentions.0.proj_in.weight", k, sizeof k);
    ok(!strcmp(k, "lora_unet_down_blocks_1_attentions_0_proj_in"), "kohya name: %s", k);
}

/* loss = Σ out·R over the UNet output; tape kept when g is given (then backward too). */
static double loss_of(struct fwd *f, struct unet *u, struct unet *g, const float *x, const float *t, const float *ctx,
                      const float *pool, const float *tid, const float *R, float *out, int h) {
    struct unet_tape tp;
    size_t n = (size_t)4 * h * h;
    unet_down(f, u, &tp, g != NULL, x, t, ctx, pool, tid, 1, h, h, 77);
    unet_up(f, u, &tp, out);
    double L = 0;
    for (size_t i = 0; i < n; i++) L += (double)out[i] * R[i];
    if (g) {
        unet_up_backward(f, u, g, &tp, R, NULL);
        unet_down_backward(f, u, g, &tp, NULL, NULL, NULL, NULL);
    }
    arena_reset(f->ar, 0);
    return L;
}

int main(void) {
    const char *data = getenv("SDXLD_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/tiny-sdxl-a", data ? data : "tests/data");
    char p[1200], unet_dir[1200], tmp[1300];
    snprintf(p, sizeof p, "%s/golden.safetensors", dir);
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", dir);
    if (st_open(&G, p)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    struct backend *be;
    if (backend_create(&be, "cpu", 0)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    struct arena ar;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    struct fwd f = { .be = be, .ar = &ar };
    test_names();

    struct unet u, g, u2;
    ok(unet_load(&u, be, unet_dir, NULL, DT_F32) == SD_OK, "load the tiny UNet: %s", sd_last_error());
    ok(unet_create(&g, be, &u.cfg) == SD_OK, "gradient twin");
    double base_sum = checksum(&u.wt);
    int targets = 0;
    for (int i = 0; i < u.wt.n; i++) targets += lora_is_target(u.wt.rows[i].name);
    struct lora l;
    const int r = 3;
    const float alpha = 6.0f;
    ok(lora_create(&l, be, &u.wt, &g.wt, r, alpha, 11) == SD_OK, "rank-3 adapters: %s", sd_last_error());
    ok(l.n == targets && l.n > 50, "one adapter per target module (%d of %d table rows)", l.n, u.wt.n);
    long long np = 0;
    for (int i = 0; i < l.n; i++) np += (long long)r * (l.m[i].K + l.m[i].cout);
    ok(lora_param_count(&l) == np && l.wt.total == np, "%lld adapter parameters", np);
    lora_merge(&l, be);
    ok(checksum(&u.wt) == base_sum, "B = 0: the merged UNet is exactly the base");

    /* give every B random values so both factors matter */
    struct sd_rng rng;
    sd_rng_init(&rng, 5);
    for (int i = 0; i < l.n; i++) {
        size_t nb = (size_t)l.m[i].cout * r;
        sd_rng_normal(&rng, l.m[i].b, nb);
        for (size_t k = 0; k < nb; k++) l.m[i].b[k] *= 0.05f;
    }
    lora_merge(&l, be);
    int conv = find_module(&l, &u.wt, "resnets.0.conv1.weight"), lin = find_module(&l, &u.wt, "attn2.to_k.weight");
    ok(conv >= 0 && lin >= 0, "found a conv and a linear adapter");
    double worst = 0;
    for (int q = 0; q < 2; q++) {
        const struct lora_module *m = &l.m[q ? lin : conv];
        const float *w = *u.wt.rows[m->row].dst;
        for (int o = 0; o < m->cout; o++)
            for (int k = 0; k < m->K; k++) {
                double want = m->w0[(size_t)o * m->K + k];
                for (int j = 0; j < r; j++) want += (double)l.scale * m->b[o * r + j] * m->a[(size_t)j * m->K + k];
                worst = fmax(worst, fabs(want - w[(size_t)o * m->K + k]));
            }
    }
    ok(worst < 1e-6, "merged W = W0 + (alpha/r)·B·A for a conv and a linear (max diff %.2g)", worst);

    /* gradients: one sample of the golden inputs, loss Σ out·R */
    const struct st_tensor *tx = st_find(&G, "unet_x");
    int h = (int)tx->shape[2];
    size_t nout = (size_t)4 * h * h;
    float *x = golden("unet_x"), *t = golden("unet_t"), *ctx = golden("prompt_embeds"), *pool = golden("pooled_embeds");
    float *tid = golden("time_ids"), *R = malloc(sizeof(float) * nout), *out = malloc(sizeof(float) * nout);
    sd_rng_normal(&rng, R, nout);
    unet_zero(be, &g);
    loss_of(&f, &u, &g, x, t, ctx, pool, tid, R, out, h);
    lora_grads(&l, be);
    ok(backend_status(be) == SD_OK, "backward ran");
    static const char *const probe[] = { "attn2.to_k.weight", "attn1.to_out.0.weight", "resnets.0.conv1.weight",
                                         "downsamplers.0.conv.weight", "proj_in.weight", "ff.net.2.weight" };
    double fd_worst = 0;
    int probes = 0;
    for (size_t q = 0; q < sizeof probe / sizeof *probe; q++) {
        int mi = find_module(&l, &u.wt, probe[q]);
        if (mi < 0) continue;
        struct lora_module *m = &l.m[mi];
        for (int which = 0; which < 2; which++) {   /* the largest-gradient entry of A, then of B */
            float *par = which ? m->b : m->a, *grad = which ? m->db : m->da;
            size_t n = which ? (size_t)m->cout * r : (size_t)r * m->K, best = 0;
            for (size_t k = 1; k < n; k++) if (fabsf(grad[k]) > fabsf(grad[best])) best = k;
            float keep = par[best], hstep = 3e-2f * fmaxf(1.0f, fabsf(keep));
            par[best] = keep + hstep; lora_merge(&l, be);
            double lp = loss_of(&f, &u, NULL, x, t, ctx, pool, tid, R, out, h);
            par[best] = keep - hstep; lora_merge(&l, be);
            double lm = loss_of(&f, &u, NULL, x, t, ctx, pool, tid, R, out, h);
            par[best] = keep; lora_merge(&l, be);
            double fd = (lp - lm) / (2.0 * hstep), e = fabs(fd - grad[best]) / fmax(fmax(fabs(fd), fabs(grad[best])), 1e-3);
            fd_worst = fmax(fd_worst, e);
            probes++;
            diag("%s %s[%zu]: analytic %.6g, finite differences %.6g", probe[q], which ? "B" : "A", best, grad[best], fd);
        }
    }
    ok(probes == 12 && fd_worst < 1e-2, "dL/dA and dL/dB match central finite differences through the UNet "
       "(%d probes, worst rel %.2g)", probes, fd_worst);

    /* kohya round trip: save (F32), apply to a fresh base UNet, same weights */
    snprintf(tmp, sizeof tmp, "/tmp/sdxld-test-lora-%d.safetensors", (int)getpid());
    ok(lora_save(&l, be, tmp, DT_F32) == SD_OK, "save the adapters: %s", sd_last_error());
    struct st_file lf;
    int opened = st_open(&lf, tmp) == SD_OK;
    ok(opened && lf.ntensors == 3 * l.n, "file has down/up/alpha per module (%d tensors)", opened ? lf.ntensors : -1);
    if (!opened) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    const struct st_tensor *al0 = st_find(&lf, "lora_unet_down_blocks_0_resnets_0_conv1.alpha");
    const struct st_tensor *dn0 = st_find(&lf, "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight");
    const struct st_tensor *up0 = st_find(&lf, "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight");
    ok(al0 && al0->ndim == 0 && dn0 && dn0->ndim == 4 && dn0->shape[0] == r && dn0->shape[2] == 3 && up0 &&
       up0->ndim == 4 && up0->shape[1] == r && up0->shape[2] == 1, "conv adapter: down [r, cin, 3, 3], up [cout, r, 1, 1], scalar alpha");
    st_close(&lf);
    ok(unet_load(&u2, be, unet_dir, NULL, DT_F32) == SD_OK, "fresh base UNet");
    ok(lora_apply_file(&u2.wt, be, tmp, 1.0f) == SD_OK, "apply the file: %s", sd_last_error());
    worst = 0;
    for (int i = 0; i < u.wt.n; i++) {
        const float *a = *u.wt.rows[i].dst, *b = *u2.wt.rows[i].dst;
        for (size_t k = 0; k < numel_row(&u.wt.rows[i]); k++) worst = fmax(worst, fabs((double)a[k] - b[k]));
    }
    ok(worst < 1e-6, "applied file = trained merge, every weight (max diff %.2g)", worst);

    /* refusals leave the weights alone */
    double s2 = checksum(&u2.wt);
    struct { const char *key; int ndim; int64_t shape[4]; } bad[] = {
        { "lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight", 2, { 3, 4 } },     /* no such module */
        { "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, { 3, 4 } }, /* text encoder */
        { "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", 4, { 3, 7, 3, 3 } }, /* wrong cin */
        { "lora_unet_conv_in.bogus", 2, { 3, 4 } },                                         /* unknown suffix */
    };
    for (size_t q = 0; q < sizeof bad / sizeof *bad; q++) {
        struct st_writer w;
        st_writer_init(&w);
        float z[2000] = { 0 };
        st_writer_add_f32(&w, bad[q].key, DT_F32, bad[q].ndim, bad[q].shape, z);
        if (q == 2) {
            int64_t us[4] = { 32, 3, 1, 1 };
            st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", DT_F32, 4, us, z);
        }
        st_writer_write(&w, tmp);
        st_writer_free(&w);
        sd_status st = lora_apply_file(&u2.wt, be, tmp, 1.0f);
        ok(st != SD_OK && checksum(&u2.wt) == s2, "refused (%s): %s", bad[q].key, sd_last_error());
    }
    {   /* a down matrix without its up matrix */
        struct st_writer w;
        st_writer_init(&w);
        float z[32 * 3 * 9] = { 0 };
        int64_t ds[4] = { 3, 32, 3, 3 };
        st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", DT_F32, 4, ds, z);
        st_writer_write(&w, tmp);
        st_writer_free(&w);
        ok(lora_apply_file(&u2.wt, be, tmp, 1.0f) != SD_OK && checksum(&u2.wt) == s2, "refused: half an adapter: %s",
           sd_last_error());
    }
    /* values are checked before anything is merged (found by tests/fuzz/fuzz_lora.c: a NaN
     * in a later adapter used to leave the earlier ones merged), and so is an update that
     * would overflow the weights */
    for (int q = 0; q < 2; q++) {
        static float one[32 * 3 * 9], poison[32 * 3 * 9];
        for (size_t k = 0; k < sizeof one / sizeof *one; k++) {
            one[k] = 1.0f;
            poison[k] = q ? 1e20f : (k == 7 ? NAN : 1.0f);
        }
        int64_t ds[4] = { 3, 32, 3, 3 }, us[4] = { 32, 3, 1, 1 };
        struct st_writer w;
        st_writer_init(&w);
        st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", DT_F32, 4, ds, one);
        st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", DT_F32, 4, us, one);
        st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv2.lora_down.weight", DT_F32, 4, ds, poison);
        st_writer_add_f32(&w, "lora_unet_down_blocks_0_resnets_0_conv2.lora_up.weight", DT_F32, 4, us, poison);
        st_writer_write(&w, tmp);
        st_writer_free(&w);
        ok(lora_apply_file(&u2.wt, be, tmp, 1.0f) != SD_OK && checksum(&u2.wt) == s2, "refused, nothing merged: %s "
           "in the second adapter: %s", q ? "an update beyond the float range" : "a NaN", sd_last_error());
    }
    FILE *fp = fopen(tmp, "r+b");
    if (fp) { ftruncate(fileno(fp), 40); fclose(fp); }
    ok(lora_apply_file(&u2.wt, be, tmp, 1.0f) != SD_OK && checksum(&u2.wt) == s2, "refused: a truncated file: %s",
       sd_last_error());

    /* peft / diffusers key style, no alpha (= r: scale 1), and a lora scale of 0.5 */
    {
        int mi = find_module(&l, &u.wt, "attn2.to_k.weight");
        const struct lora_module *m = &l.m[mi];
        const struct weight_row *row = &u2.wt.rows[m->row];
        char ka[300], kb[300];
        size_t stem = strlen(row->name) - strlen(".weight");
        snprintf(ka, sizeof ka, "unet.%.*s.lora_A.weight", (int)stem, row->name);
        snprintf(kb, sizeof kb, "unet.%.*s.lora_B.weight", (int)stem, row->name);
        int64_t sa[2] = { r, m->K }, sb[2] = { m->cout, r };
        struct st_writer w;
        st_writer_init(&w);
        st_writer_add_f32(&w, ka, DT_F32, 2, sa, m->a);
        st_writer_add_f32(&w, kb, DT_F32, 2, sb, m->b);
        st_writer_write(&w, tmp);
        st_writer_free(&w);
        float *before = malloc(sizeof(float) * (size_t)m->cout * m->K);
        memcpy(before, *row->dst, sizeof(float) * (size_t)m->cout * m->K);
        sd_status st = lora_apply_file(&u2.wt, be, tmp, 0.5f);
        ok(st == SD_OK, "peft-style keys apply: %s", st ? sd_last_error() : "ok");
        worst = 0;
        for (int o = 0; o < m->cout; o++)
            for (int k = 0; k < m->K; k++) {
                double want = before[(size_t)o * m->K + k];
                for (int j = 0; j < r; j++) want += 0.5 * m->b[o * r + j] * m->a[(size_t)j * m->K + k];
                worst = fmax(worst, fabs(want - (*row->dst)[(size_t)o * m->K + k]));
            }
        ok(worst < 1e-6, "W += 0.5·B·A (alpha defaults to r) (max diff %.2g)", worst);
        free(before);
    }
    unlink(tmp);

    /* the reference: peft's LoRA layers in diffusers, exported the way DMD2 does
     * (tests/ref/make_lora_fixture.py) */
    {
        struct unet u3;
        struct st_file gl;
        char lp[1300];
        snprintf(lp, sizeof lp, "%s/lora/golden_lora.safetensors", dir);
        int have = st_open(&gl, lp) == SD_OK;
        ok(have, "reference output %s: %s", lp, have ? "ok" : sd_last_error());
        snprintf(lp, sizeof lp, "%s/lora/lora_kohya.safetensors", dir);
        int applied = unet_load(&u3, be, unet_dir, NULL, DT_F32) == SD_OK && lora_apply_file(&u3.wt, be, lp, 1.0f) == SD_OK;
        ok(applied, "the reference's DMD2-format adapter file applies: %s", applied ? "ok" : sd_last_error());
        int N = (int)tx->shape[0];
        float *o = malloc(sizeof(float) * (size_t)N * 4 * h * h), *want = have ? malloc(sizeof(float) * (size_t)N * 4 * h * h) : NULL;
        const struct st_tensor *wt_ = have ? st_find(&gl, "unet_out_lora") : NULL;
        unet_forward(&f, &u3, o, x, t, ctx, pool, tid, N, h, h, 77);
        arena_reset(&ar, 0);
        if (wt_ && st_numel(wt_) == (int64_t)N * 4 * h * h) {
            st_read_f32(wt_, want);
            double e = rel_err(o, want, (size_t)N * 4 * h * h);
            ok(e < 1e-4, "UNet with the LoRA merged = diffusers + peft's LoRA layers (rel err %.3g)", e);
        } else {
            ok(0, "golden_lora.safetensors has unet_out_lora [%d, 4, %d, %d]", N, h, h);
        }
        free(o); free(want);
        if (have) st_close(&gl);
        unet_free(&u3);
    }

    ok(lora_create(&(struct lora){ 0 }, be, &u.wt, &g.wt, 0, 8, 1) == SD_ERR_INVALID, "rank 0 refused: %s", sd_last_error());
    free(x); free(t); free(ctx); free(pool); free(tid); free(R); free(out);
    lora_free(&l);
    unet_free(&u2);
    unet_free(&g);
    unet_free(&u);
    arena_free(&ar);
    backend_destroy(be);
    st_close(&G);
    ok(sd_alloc_live_bytes() == 0, "every sd_malloc freed (%zu bytes live)", sd_alloc_live_bytes());
    return done_testing();
}
