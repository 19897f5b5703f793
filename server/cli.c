/* cli.c — the conformance subcommands (docs/conformance.md) and `sdxld init`.
 * Each reads safetensors/JSON inputs, runs one stage through the engine facade and
 * writes safetensors outputs named as in the golden file, so a golden file is a valid
 * input and outputs compare tensor by tensor. */
#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "cli.h"
#include "cli_util.h"

int cli_fail(const char *what) {
    fprintf(stderr, "sdxld: %s: %s\n", what, sd_last_error());
    return 1;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "sdxld: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* v as a whole decimal integer in 0..INT_MAX, or -1 with the message printed. */
static int opt_int(const char *a, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 0 || x > INT_MAX) {
        fprintf(stderr, "sdxld: option %s: '%s' is not a whole number 0..%d\n", a, v, INT_MAX);
        return -1;
    }
    *out = (int)x;
    return 1;
}

int cli_engine_opt(struct engine_config *ec, const char *a, const char *v) {
    const char **slot = !strcmp(a, "--model") ? &ec->model_dir : !strcmp(a, "--unet") ? &ec->unet_path
                      : !strcmp(a, "--lora") ? &ec->lora_path : !strcmp(a, "--config") ? &ec->config_dir
                      : !strcmp(a, "--tokenizers") ? &ec->tokenizer_dir : !strcmp(a, "--backend") ? &ec->backend
                      : !strcmp(a, "--weights-dtype") ? &ec->weights_dtype : NULL;
    if (slot) *slot = v;
    else if (!strcmp(a, "--threads")) return opt_int(a, v, &ec->threads);
    else if (!strcmp(a, "--vae-tile")) return opt_int(a, v, &ec->vae_tile);
    else if (!strcmp(a, "--lora-scale")) {
        char *end;
        double x = strtod(v, &end);
        if (!*v || *end || !isfinite(x) || fabs(x) > FLT_MAX) {   /* a float's range */
            fprintf(stderr, "sdxld: option %s: '%s' is not a finite number\n", a, v);
            return -1;
        }
        ec->lora_scale = (float)x;
    } else return 0;
    return 1;
}

float *cli_tensor(const struct st_file *f, const char *name, int ndim, int64_t *shape, int required) {
    const struct st_tensor *t = st_find(f, name);
    if (!t) {
        if (required) sd_fail(SD_ERR_NOTFOUND, "%s: no tensor '%s'", f->path, name);
        else sd_clear_error();
        return NULL;
    }
    if (t->ndim != ndim) {
        sd_fail(SD_ERR_SHAPE, "%s: tensor '%s' has %d dims, expected %d", f->path, name, t->ndim, ndim);
        return NULL;
    }
    memcpy(shape, t->shape, sizeof(int64_t) * ndim);
    float *d = sd_malloc(sizeof(float) * (size_t)(st_numel(t) ? st_numel(t) : 1));
    if (d) st_read_f32(t, d);
    return d;
}

int cli_read_prompts(const char *path, char ***prompts, int *n) {
    char *text;
    size_t len;
    if (sd_read_file(path, 16u << 20, &text, &len)) return -1;
    json_error_t e;
    json_t *a = json_loadb(text, len, 0, &e);
    sd_free(text);
    if (!json_is_array(a) || json_array_size(a) == 0) {
        json_decref(a);
        sd_fail(SD_ERR_FORMAT, "%s: expected a non-empty JSON array of strings", path);
        return -1;
    }
    *n = (int)json_array_size(a);
    *prompts = sd_calloc(*n, sizeof(char *));
    for (int i = 0; *prompts && i < *n; i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s)) {
            sd_fail(SD_ERR_FORMAT, "%s: element %d is not a string", path, i);
            cli_free_prompts(*prompts, i);
            json_decref(a);
            return -1;
        }
        (*prompts)[i] = sd_strdup(json_string_value(s));
    }
    json_decref(a);
    return *prompts ? 0 : -1;
}

void cli_free_prompts(char **p, int n) {
    if (!p) return;
    for (int i = 0; i < n; i++) sd_free(p[i]);
    sd_free(p);
}

/* Common options: --model DIR|FILE [--config DIR --tokenizers DIR] --unet FILE --lora FILE
 * --lora-scale X --backend B --threads N. */
struct common { struct engine_config ec; const char *in, *out; };

static int common_opt(struct common *c, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    struct engine_config probe = { 0 };
    const char **slot = !strcmp(a, "--in") ? &c->in : !strcmp(a, "--out") ? &c->out : NULL;
    if (!slot && !cli_engine_opt(&probe, a, "0")) return 0;
    if (!(v = cli_value(argc, argv, i))) return -1;
    if (slot) *slot = v;
    else if (cli_engine_opt(&c->ec, a, v) < 0) return -1;
    return 1;
}

static int usage_err(const char *cmd, const char *arg) {
    fprintf(stderr, "sdxld %s: unknown or incomplete option '%s' (see sdxld %s --help)\n", cmd, arg, cmd);
    return 2;
}

/* ---- encode ---- */

int cli_encode(int argc, char **argv) {
    struct common c = { 0 };
    const char *prompts_path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = common_opt(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--prompts") && (prompts_path = cli_value(argc, argv, &i))) continue;
        if (!strcmp(argv[i], "--help")) {
            printf("sdxld encode --model DIR --prompts PROMPTS.json --out OUT.safetensors\n");
            return 0;
        }
        return usage_err("encode", argv[i]);
    }
    if (!c.ec.model_dir) c.ec.model_dir = cli_default_model();
    if (!prompts_path || !c.out) return usage_err("encode", "--prompts/--out");
    char **prompts;
    int n;
    if (cli_read_prompts(prompts_path, &prompts, &n)) return cli_fail("prompts");
    struct engine *e;
    if (cli_model_defaults(&c.ec) || engine_load(&e, &c.ec)) { cli_free_prompts(prompts, n); return cli_fail("loading model"); }
    struct engine_dims d;
    engine_dims(e, &d);
    size_t R = (size_t)n * d.L;
    struct engine_text t = {
        .ids1 = sd_malloc(R * 8), .ids2 = sd_malloc(R * 8), .te1_penult = sd_malloc(R * d.D1 * 4),
        .te1_last = sd_malloc(R * d.D1 * 4), .te2_penult = sd_malloc(R * d.D2 * 4),
        .pooled = sd_malloc((size_t)n * d.P * 4), .context = sd_malloc(R * d.cross * 4),
    };
    int rc = 1;
    if (!t.ids1 || !t.ids2 || !t.te1_penult || !t.te1_last || !t.te2_penult || !t.pooled || !t.context) {
        cli_fail("encode");
        goto out;
    }
    if (engine_encode(e, (const char *const *)prompts, n, &t)) { cli_fail("encode"); goto out; }
    struct st_writer w;
    st_writer_init(&w);
    int64_t s_ids[2] = { n, d.L }, s1[3] = { n, d.L, d.D1 }, s2[3] = { n, d.L, d.D2 }, sx[3] = { n, d.L, d.cross };
    int64_t sp[2] = { n, d.P };
    sd_status st;
    if ((st = st_writer_add(&w, "tok1_ids", DT_I64, 2, s_ids, t.ids1)) ||
        (st = st_writer_add(&w, "tok2_ids", DT_I64, 2, s_ids, t.ids2)) ||
        (st = st_writer_add(&w, "te1_penultimate", DT_F32, 3, s1, t.te1_penult)) ||
        (st = st_writer_add(&w, "te1_last", DT_F32, 3, s1, t.te1_last)) ||
        (st = st_writer_add(&w, "te2_penultimate", DT_F32, 3, s2, t.te2_penult)) ||
        (st = st_writer_add(&w, "te2_text_embeds", DT_F32, 2, sp, t.pooled)) ||
        (st = st_writer_add(&w, "prompt_embeds", DT_F32, 3, sx, t.context)) ||
        (st = st_writer_add(&w, "pooled_embeds", DT_F32, 2, sp, t.pooled)) ||
        (st = st_writer_write(&w, c.out)))
        cli_fail(c.out);
    else rc = 0;
    st_writer_free(&w);
out:
    sd_free(t.ids1); sd_free(t.ids2); sd_free(t.te1_penult); sd_free(t.te1_last);
    sd_free(t.te2_penult); sd_free(t.pooled); sd_free(t.context);
    cli_free_prompts(prompts, n);
    engine_free(e);
    return rc;
}

/* ---- unet ---- */

struct grad_sink { struct st_writer *w; sd_status st; };

static void add_grad(void *ud, const char *name, int ndim, const int64_t *shape, const float *grad) {
    struct grad_sink *s = ud;
    char key[256];
    snprintf(key, sizeof key, "unet_grad.%s", name);
    if (!s->st) s->st = st_writer_add(s->w, key, DT_F32, ndim, shape, grad);
}

int cli_unet(int argc, char **argv) {
    struct common c = { 0 };
    int backward = 0, recompute = 0;
    for (int i = 1; i < argc; i++) {
        int r = common_opt(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--backward")) { backward = 1; continue; }
        if (!strcmp(argv[i], "--recompute")) { recompute = 1; continue; }
        if (!strcmp(argv[i], "--help")) {
            printf("sdxld unet --model DIR [--unet FILE] --in IN.safetensors --out OUT.safetensors [--backward [--recompute]]\n"
                   "  reads unet_x [B,C,h,w], unet_t [B], prompt_embeds, pooled_embeds (first B rows),\n"
                   "  time_ids [B,6]; writes unet_out.  --backward also reads unet_R and writes the\n"
                   "  gradients of sum(unet_out * unet_R): unet_dx, unet_dehs, unet_dtext, unet_grad.<name>\n");
            return 0;
        }
        return usage_err("unet", argv[i]);
    }
    if (!c.ec.model_dir || !c.in || !c.out) return usage_err("unet", "--model/--in/--out");
    if (backward && !c.ec.weights_dtype) c.ec.weights_dtype = "f32";   /* the backward ops are fp32 */
    struct st_file f;
    if (st_open(&f, c.in)) return cli_fail("input");
    struct engine *e = NULL;
    float *x = NULL, *t = NULL, *ctx = NULL, *pooled = NULL, *tid = NULL, *out = NULL, *R = NULL;
    int64_t sx[4], st_[1], sc[3], sp[2], stid[2];
    int rc = 1;
    if (!(x = cli_tensor(&f, "unet_x", 4, sx, 1)) || !(t = cli_tensor(&f, "unet_t", 1, st_, 1)) ||
        !(ctx = cli_tensor(&f, "prompt_embeds", 3, sc, 1)) || !(pooled = cli_tensor(&f, "pooled_embeds", 2, sp, 1)) ||
        !(tid = cli_tensor(&f, "time_ids", 2, stid, 1))) {
        cli_fail("input");
        goto out;
    }
    if (cli_model_defaults(&c.ec) || engine_load(&e, &c.ec)) { cli_fail("loading model"); goto out; }
    struct engine_dims d;
    engine_dims(e, &d);
    int64_t B = sx[0];
    if (sx[1] != d.unet_in || st_[0] != B || sc[0] < B || sc[1] != d.L || sc[2] != d.cross || sp[0] < B ||
        sp[1] != d.P || stid[0] < B || stid[1] != 6) {
        sd_fail(SD_ERR_SHAPE, "%s: inputs do not fit the model: need unet_x [B,%d,h,w], unet_t [B], prompt_embeds [>=B,%d,%d], pooled_embeds [>=B,%d], time_ids [>=B,6]",
                c.in, d.unet_in, d.L, d.cross, d.P);
        cli_fail("input");
        goto out;
    }
    if (!(out = sd_malloc(sizeof(float) * B * sx[1] * sx[2] * sx[3]))) { cli_fail("unet"); goto out; }
    struct st_writer w;
    st_writer_init(&w);
    if (!backward) {
        if (engine_unet(e, x, t, ctx, pooled, tid, (int)B, (int)sx[2], (int)sx[3], out)) { cli_fail("unet"); st_writer_free(&w); goto out; }
        if (st_writer_add(&w, "unet_out", DT_F32, 4, sx, out) || st_writer_write(&w, c.out)) cli_fail(c.out);
        else rc = 0;
    } else {
        int64_t sr[4];
        int64_t sh_c[3] = { B, d.L, d.cross }, sh_p[2] = { B, d.P };
        if (!(R = cli_tensor(&f, "unet_R", 4, sr, 1)) || memcmp(sr, sx, sizeof sr)) {
            if (R) sd_fail(SD_ERR_SHAPE, "%s: unet_R must have unet_x's shape", c.in);
            cli_fail("input");
            st_writer_free(&w);
            goto out;
        }
        float *dx = sd_malloc(sizeof(float) * sd_numel(4, sx)), *dc = sd_malloc(sizeof(float) * sd_numel(3, sh_c));
        float *dp = sd_malloc(sizeof(float) * sd_numel(2, sh_p));
        struct grad_sink sink = { &w, SD_OK };
        sd_status st = dx && dc && dp ? SD_OK : SD_ERR_NOMEM;
        if (!st) st = engine_unet_backward(e, x, t, ctx, pooled, tid, (int)B, (int)sx[2], (int)sx[3], R, out,
                                           dx, dc, dp, recompute, add_grad, &sink);
        if (!st) st = sink.st;
        if (!st) st = st_writer_add(&w, "unet_out", DT_F32, 4, sx, out);
        if (!st) st = st_writer_add(&w, "unet_dx", DT_F32, 4, sx, dx);
        if (!st) st = st_writer_add(&w, "unet_dehs", DT_F32, 3, sh_c, dc);
        if (!st) st = st_writer_add(&w, "unet_dtext", DT_F32, 2, sh_p, dp);
        if (!st) st = st_writer_write(&w, c.out);
        if (st) cli_fail("unet --backward");
        else rc = 0;
        sd_free(dx); sd_free(dc); sd_free(dp);
    }
    st_writer_free(&w);
out:
    sd_free(x); sd_free(t); sd_free(ctx); sd_free(pooled); sd_free(tid); sd_free(out); sd_free(R);
    st_close(&f);
    engine_free(e);
    return rc;
}

/* ---- vae ---- */

int cli_vae(int argc, char **argv) {
    struct common c = { 0 };
    for (int i = 1; i < argc; i++) {
        int r = common_opt(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--help")) {
            printf("sdxld vae --model DIR --in IN.safetensors --out OUT.safetensors\n"
                   "  vae_enc_in [N,3,H,W] -> vae_enc_mean; vae_dec_in [N,C,h,w] -> vae_dec_out\n");
            return 0;
        }
        return usage_err("vae", argv[i]);
    }
    if (!c.ec.model_dir || !c.in || !c.out) return usage_err("vae", "--model/--in/--out");
    struct st_file f;
    if (st_open(&f, c.in)) return cli_fail("input");
    struct engine *e = NULL;
    int64_t se[4], sd[4];
    float *ein = cli_tensor(&f, "vae_enc_in", 4, se, 0), *din = cli_tensor(&f, "vae_dec_in", 4, sd, 0);
    float *mean = NULL, *img = NULL;
    int rc = 1;
    struct st_writer w;
    st_writer_init(&w);
    if (!ein && !din) { sd_fail(SD_ERR_NOTFOUND, "%s: neither vae_enc_in nor vae_dec_in present", c.in); cli_fail("input"); goto out; }
    if (cli_model_defaults(&c.ec) || engine_load(&e, &c.ec)) { cli_fail("loading model"); goto out; }
    int s = engine_info(e)->vae_scale;
    struct engine_dims d;
    engine_dims(e, &d);
    if (ein) {
        if (se[1] != 3 || se[2] % s || se[3] % s) { sd_fail(SD_ERR_SHAPE, "vae_enc_in must be [N,3,H,W] with H, W multiples of %d", s); cli_fail("input"); goto out; }
        int64_t sm[4] = { se[0], d.latent_ch, se[2] / s, se[3] / s };
        if (!(mean = sd_malloc(sizeof(float) * sd_numel(4, sm))) ||
            engine_vae_encode(e, ein, (int)se[0], (int)se[2], (int)se[3], mean) ||
            st_writer_add(&w, "vae_enc_mean", DT_F32, 4, sm, mean)) { cli_fail("vae encode"); goto out; }
    }
    if (din) {
        if (sd[1] != d.latent_ch) { sd_fail(SD_ERR_SHAPE, "vae_dec_in must have %d channels", d.latent_ch); cli_fail("input"); goto out; }
        int64_t so[4] = { sd[0], 3, sd[2] * s, sd[3] * s };
        if (!(img = sd_malloc(sizeof(float) * sd_numel(4, so))) ||
            engine_vae_decode(e, din, (int)sd[0], (int)sd[2], (int)sd[3], img) ||
            st_writer_add(&w, "vae_dec_out", DT_F32, 4, so, img)) { cli_fail("vae decode"); goto out; }
    }
    if (st_writer_write(&w, c.out)) cli_fail(c.out);
    else rc = 0;
out:
    st_writer_free(&w);
    sd_free(ein); sd_free(din); sd_free(mean); sd_free(img);
    st_close(&f);
    engine_free(e);
    return rc;
}

/* A folder shipped with sdxld (REL = "models/shapes-small", "conf/models/sdxl-base"),
 * the first that exists of:
 *   1. SDXLD_SOURCE_DIR/REL when this binary is the one in its build folder
 *      (SDXLD_BUILD_EXE_DIR), wherever that folder is: an uninstalled build;
 *   2. the install's data folder relative to this binary (SDXLD_EXE_TO_DATADIR: bindir ->
 *      datadir/sdxld), so a prefix moved as a whole (DESTDIR, dpkg --root) still works;
 *   3. SDXLD_DATADIR/REL, the data folder of the configured prefix.
 * None: the last, so the error names where an installed sdxld looks.  The path comes
 * back resolved (logs and /v1/models show /usr/share/..., not /usr/bin/../share/...). */
static const char *shipped(const char *rel, char *buf, size_t n) {
    char exe[4096], build[4096];
    char cand[3][4096] = { "", "", "" };
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        if (realpath(SDXLD_BUILD_EXE_DIR, build) && !strcmp(build, exe) &&
            snprintf(cand[0], sizeof cand[0], "%s/%s", SDXLD_SOURCE_DIR, rel) >= (int)sizeof cand[0])
            cand[0][0] = 0;   /* too long: not a candidate */
        if (*SDXLD_EXE_TO_DATADIR &&
            snprintf(cand[1], sizeof cand[1], "%s/%s/%s", exe, SDXLD_EXE_TO_DATADIR, rel) >= (int)sizeof cand[1])
            cand[1][0] = 0;
    }
    snprintf(cand[2], sizeof cand[2], "%s/%s", SDXLD_DATADIR, rel);
    struct stat sb;
    int i = 0;
    while (i < 2 && (!*cand[i] || stat(cand[i], &sb) || !S_ISDIR(sb.st_mode))) i++;
    char *real = realpath(cand[i], NULL);   /* "/usr/share/...", not "/usr/bin/../share/..." */
    if (snprintf(buf, n, "%s", real ? real : cand[i]) >= (int)n)
        LOG_W("%s: path cut to %zu bytes", cand[i], n - 1);   /* callers pass > PATH_MAX */
    free(real);
    return buf;
}

/* The built-in model: $SDXLD_MODEL, else the shipped models/shapes-small. */
const char *cli_default_model(void) {
    static char buf[4200];
    const char *env = getenv("SDXLD_MODEL");
    if (env && *env) return env;
    return shipped("models/shapes-small", buf, sizeof buf);
}

int cli_model_defaults(struct engine_config *ec) {
    static char conf[4200];
    struct stat sb;
    if (!ec->model_dir || stat(ec->model_dir, &sb) || !S_ISREG(sb.st_mode)) return 0;
    if (!ec->config_dir) {
        int base = engine_file_is_sdxl_base(ec->model_dir);
        if (base < 0) return -1;
        if (!base) {
            sd_fail(SD_ERR_INVALID, "%s: a single file whose shapes are not SDXL base's: give its configs with --config DIR "
                    "(unet/, vae/, text_encoder/, text_encoder_2/ config.json)", ec->model_dir);
            return -1;
        }
        ec->config_dir = shipped("conf/models/sdxl-base", conf, sizeof conf);
        LOG_I("%s: SDXL base shapes: configs from %s", ec->model_dir, ec->config_dir);
    }
    char probe[8300];
    snprintf(probe, sizeof probe, "%s/tokenizer/vocab.json", ec->tokenizer_dir ? ec->tokenizer_dir : ec->config_dir);
    if (!ec->tokenizer_dir && stat(probe, &sb)) ec->tokenizer_dir = cli_default_model();
    return 0;
}
