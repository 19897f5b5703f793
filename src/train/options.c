/* options.c — the training option table and everything derived from it (see options.h;
 * the daemon's server/config.c is the model).
 *
 * Each row: name, type, the run kinds it applies to, flags, the field, bounds, the
 * default as text (parsed by the same code as a user's value, bounds aside: 0 may mean
 * "the model decides"), the default as the docs show it, and the help.  Defaults are the
 * DMD2 paper's SDXL 4-step run (docs/dmd2.md §3) where the model does not decide, and
 * the small built-in model's recipe (scripts/train-builtin.sh) for the VAE and teacher. */
#include "options.h"
#include "../core/core.h"
#include "../core/json.h"
#include "../sample/timesteps.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum topt_type { T_INT, T_I64, T_U64, T_FLOAT, T_BOOL, T_STR, T_PATH, T_TS };

#define SAFE      1u    /* may change at resume (bookkeeping, memory layout, not the run) */
#define CLI_ONLY  2u    /* not a /v1/train field (the daemon decides) */
#define API_ONLY  4u    /* not a flag */
#define NOSTORE   8u    /* not part of the stored configuration */
#define LO_OPEN  16u    /* the lower bound is excluded */

struct topt_row {
    const char *name;
    enum topt_type type;
    unsigned kinds, flags;
    size_t off, size;
    double lo, hi;
    const char *dflt;       /* as it would be written on the command line */
    const char *shown;      /* the default as docs and --help say it; NULL = dflt */
    const char *alias;      /* older flag names, "a|b", or NULL */
    const char *help;
};

#define V TRAIN_VAE
#define T TRAIN_TEACHER
#define D TRAIN_DMD2
#define ALL (V | T | D)
#define F(f) offsetof(struct train_options, f), sizeof(((struct train_options *)0)->f)
#define ROW(n, ty, k, fl, f, lo, hi, d, sh, h) { n, ty, k, fl, F(f), lo, hi, d, sh, NULL, h }
#define E8 100000000

static const struct topt_row rows[] = {
    /* name           type     kinds flags        field           lo  hi        default */
    ROW("model",      T_PATH,  V|T, 0,           model,           0, 0, "", "required",
        "model folder (diffusers layout) whose VAE / UNet is trained"),
    ROW("teacher",    T_PATH,  D, 0,              teacher,         0, 0, "", "the served `model` folder (its own UNet, not `unet`); required on the command line",
        "model folder (diffusers layout) under `data_root`: the frozen real score; the generator and the fake score start from it (from its `teacher/` UNet when it carries one, whose `dmd2_defaults.json` then sets the options not given: docs/training.md)"),
    ROW("generator_init", T_PATH, D, 0,           generator_init,  0, 0, "teacher", "`\"teacher\"`",
        "or a UNet safetensors file under `data_root` to start the generator from"),
    ROW("out",        T_PATH,  ALL, NOSTORE,      out,             0, 0, "", "required",
        "run directory under `data_root` (created, parents included); must not already hold a run unless resuming"),
    { "real_data",    T_PATH,  ALL, 0,            F(real_data),    0, 0, "shapes", "`\"shapes\"`", "data|dataset",
        "image folder under `data_root` (PNG files + `captions.txt`, `src/train/data.h`), or `\"shapes\"`, the built-in procedural dataset (a folder literally named `shapes`: write `./shapes`)" },
    ROW("prompts",    T_PATH,  D, API_ONLY | NOSTORE, prompts,     0, 0, "", "—",
        "may be omitted, or name the same source as `real_data` (`\"shapes\"`, the folder or its `captions.txt`); a separate prompt list is a 400 (see below)"),
    ROW("resume",     T_BOOL,  ALL, NOSTORE,      resume,          0, 1, "false", "—",
        "continue the run in `out` from its latest checkpoint, with its stored configuration (API: the run directory under `data_root`, or `true` with `out`)"),
    ROW("backend",    T_STR,   ALL, CLI_ONLY | SAFE, backend,      0, 0, "", "cpu", "compute backend: cpu or cuda"),
    ROW("shards",     T_INT,   ALL, CLI_ONLY | SAFE, shards,       0, 16, "0", "one per core",
        "CPU: each UNet pass over the batch in N row ranges, one thread each"),
    ROW("dataset_size", T_I64, ALL, CLI_ONLY,     dataset_size,    1, 4e18, "1073741824", NULL,
        "items of the shapes dataset (they are generated on demand)"),
    ROW("steps",      T_INT,   V|T, SAFE,         steps,           1, E8, "1000", NULL, "total iterations (a resumed run continues up to this count)"),
    ROW("steps",      T_INT,   D, SAFE,           steps,           1, E8, "20000", NULL, "total iterations (a resumed run continues up to this count)"),
    ROW("batch",      T_INT,   V|T, 0,            batch,           1, 256, "8", NULL, "images per iteration"),
    ROW("batch",      T_INT,   D, 0,              batch,           1, 256, "2", NULL, "images per iteration"),
    ROW("resolution", T_INT,   ALL, 0,            resolution,      8, 4096, "0", "the teacher's native size (64 for the built-in model, 1024 for SDXL)",
        "training resolution in pixels, a multiple of 8 (of the model's granularity when the teacher is the served model)"),
    ROW("lr",         T_FLOAT, V, LO_OPEN,        lr,              0, 1, "1e-3", NULL, "AdamW learning rate"),
    ROW("lr",         T_FLOAT, T, LO_OPEN,        lr,              0, 1, "2e-4", NULL, "AdamW learning rate"),
    ROW("lr_generator", T_FLOAT, D, LO_OPEN,      lr_generator,    0, 1, "5e-7", NULL, "the generator's AdamW learning rate"),
    ROW("lr_fake",    T_FLOAT, D, LO_OPEN,        lr_fake,         0, 1, "5e-7", NULL, "the fake score's (and GAN head's) AdamW learning rate"),
    ROW("warmup",     T_INT,   V|T, 0,            warmup,          0, E8, "100", NULL, "linear LR warm-up iterations"),
    ROW("warmup",     T_INT,   D, 0,              warmup,          0, E8, "500", NULL, "linear LR warm-up iterations"),
    ROW("clip",       T_FLOAT, V|T, 0,            clip,            0, 1e6, "1", NULL, "gradient-norm clip (0 = none)"),
    ROW("clip",       T_FLOAT, D, 0,              clip,            0, 1e6, "10", NULL, "gradient-norm clip (0 = none)"),
    ROW("weight_decay", T_FLOAT, V|T, 0,          weight_decay,    0, 1, "1e-2", NULL, "AdamW weight decay"),
    ROW("ema",        T_FLOAT, V|T, SAFE,         ema,             0, 0.999999, "0", NULL,
        "EMA decay of the exported weights (0 = none; turned on at resume it starts from the weights)"),
    ROW("ttur",       T_INT,   D, 0,              ttur,            1, 100000, "5", NULL, "the generator steps every `ttur`-th iteration, the fake score every iteration"),
    ROW("guidance",   T_FLOAT, T, SAFE,           guidance,        0, 100, "4", NULL, "CFG scale of the sample grids"),
    ROW("guidance",   T_FLOAT, D, 0,              guidance,        0, 100, "8", NULL, "real-score CFG scale (≤ 1: none)"),
    ROW("gan_weight_g", T_FLOAT, D, 0,            gan_weight_g,    0, 1000, "5e-3", NULL, "GAN loss weight of the generator"),
    ROW("gan_weight_d", T_FLOAT, D, 0,            gan_weight_d,    0, 1000, "1e-2", NULL, "GAN loss weight of the discriminator (fake score + head)"),
    ROW("gan",        T_BOOL,  D, 0,              gan,             0, 1, "true", NULL, "false: the ablation without the GAN loss and head"),
    ROW("timesteps",  T_TS,    D, 0,              nsteps,          0, 999, "999,749,499,249", "[999, 749, 499, 249]",
        "the generator's 1..4 timesteps, strictly decreasing"),
    ROW("backward_simulation", T_BOOL, D, 0,      backward_simulation, 0, 1, "true", NULL, "false: the ablation that noises real latents instead"),
    ROW("lora_rank",  T_INT,   D, 0,              lora_rank,       0, 4096, "0", NULL,
        "> 0 trains rank-r LoRA adapters on the generator instead of all its weights (docs/dmd2.md §9.6 targets; `src/model/lora.h`): the fake score stays fully trainable, the generator's base weights stay frozen, checkpoints hold only the adapters, and the run also writes `OUT/generator_lora.safetensors` (kohya-style, DMD2's export format) next to the merged `OUT/generator.safetensors`"),
    ROW("lora_alpha", T_FLOAT, D, LO_OPEN,        lora_alpha,      0, 1e6, "8", NULL, "LoRA scale = `lora_alpha / lora_rank` (DMD2: rank 64, alpha 8)"),
    ROW("cfg_dropout", T_FLOAT, T, 0,             cfg_dropout,     0, 1, "0.1", NULL, "probability of training with the null condition"),
    ROW("p2_gamma",   T_FLOAT, T, 0,              p2_gamma,        0, 4, "0", NULL, "loss weight (1+SNR)^-G: the coarse, high-noise steps count more"),
    ROW("sample_steps", T_INT, T, SAFE,           sample_steps,    1, 1000, "50", NULL, "DDIM steps of the sample grids"),
    ROW("kl_weight",  T_FLOAT, V, 0,              kl_weight,       0, 1000, "1e-4", NULL, "weight of the KL term"),
    ROW("l2",         T_BOOL,  V, 0,              l2,              0, 1, "false", NULL, "L2 reconstruction loss (else L1)"),
    ROW("recompute",  T_BOOL,  T|D, SAFE,         recompute,       0, 1, "false", NULL,
        "true: backward recomputes each UNet block's activations from its input (about one extra forward per step, much less activation memory); false keeps them all"),
    ROW("cache_size", T_I64,   T, 0,              cache_size,      0, 1 << 20, "4096", NULL, "dataset items whose latents and text embeddings are cached (0 = all)"),
    ROW("cache_size", T_I64,   D, 0,              cache_size,      1, 1 << 20, "0", "4096, fewer when the latents would take over 1/8 of the memory",
        "dataset items whose latents and text embeddings are cached at the start (a cache bigger than the machine's memory is a 400)"),
    ROW("checkpoint_every", T_INT, ALL, SAFE,     checkpoint_every, 0, E8, "500", NULL,
        "iterations between checkpoints (0 = only at the end); a checkpoint is always written at the last step"),
    ROW("keep_checkpoints", T_INT, ALL, SAFE,     keep_checkpoints, 0, 1000000, "3", NULL,
        "checkpoint folders kept: older ones are removed after a new one is written (0 = keep all; the latest and the final one are always kept)"),
    ROW("sample_every", T_INT, ALL, SAFE,         sample_every,    0, E8, "250", NULL, "iterations between sample grids (0 = never)"),
    ROW("log_every",  T_INT,   V|T, SAFE,         log_every,       1, 1000000, "10", NULL, "iterations between progress lines"),
    ROW("log_every",  T_INT,   D, SAFE,           log_every,       1, 1000000, "1", NULL, "iterations between progress lines and events (SSE)"),
    ROW("seed",       T_U64,   ALL, 0,            seed,            0, 9223372036854775807.0, "0", NULL, "0..2^63−1: data order, noise, initialisation"),
};

#define NROWS ((int)(sizeof rows / sizeof rows[0]))
_Static_assert(sizeof rows / sizeof rows[0] <= TOPT_MAX_ROWS, "TOPT_MAX_ROWS is too small for the table");
_Static_assert(offsetof(struct train_options, timesteps) == offsetof(struct train_options, nsteps) + sizeof(int),
               "timesteps must follow nsteps");

static int row_for(const struct topt_row *r, enum train_kind kind, unsigned surface) {
    if (!(r->kinds & kind)) return 0;
    if (surface == TOPT_CLI && (r->flags & API_ONLY)) return 0;
    if (surface == TOPT_API && (r->flags & CLI_ONLY)) return 0;
    return 1;
}

static int alias_is(const char *alias, const char *name, size_t n) {
    for (const char *p = alias; p && *p;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* The row named name (n bytes; '-' matches '_' when dashes), or -1. */
static int find_row(const char *name, size_t n, enum train_kind kind, unsigned surface, int dashes) {
    for (int i = 0; i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        if (!row_for(r, kind, surface)) continue;
        size_t l = strlen(r->name);
        int same = l == n;
        for (size_t k = 0; same && k < n; k++)
            same = r->name[k] == name[k] || (dashes && r->name[k] == '_' && name[k] == '-');
        if (same || alias_is(r->alias, name, n)) return i;
    }
    return -1;
}

int topt_is_api_field(const char *name) {
    return find_row(name, strlen(name), TRAIN_DMD2, TOPT_API, 0) >= 0;
}

/* ---- one value ---- */

const char *topt_flag(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "--%s", name);
    for (char *c = buf; *c; c++) if (*c == '_') *c = '-';
    return buf;
}

/* "--lora-rank" for a flag, "lora_rank" for a field. */
static const char *label(const struct topt_row *r, int flag, char *buf, size_t n) {
    return flag ? topt_flag(r->name, buf, n) : r->name;
}

static int bounds(const struct topt_row *r, const char *lb, double x, char *err, size_t errlen) {
    int lo_ok = (r->flags & LO_OPEN) ? x > r->lo : x >= r->lo;
    if (isfinite(x) && lo_ok && x <= r->hi) return 0;
    if (r->type == T_FLOAT && (r->flags & LO_OPEN))
        snprintf(err, errlen, "%s: %g must be above %g and at most %g", lb, x, r->lo, r->hi);
    else if (r->type == T_FLOAT)
        snprintf(err, errlen, "%s: %g is out of range %g..%g", lb, x, r->lo, r->hi);
    else
        snprintf(err, errlen, "%s: %.0f is out of range %.0f..%.0f", lb, x, r->lo, r->hi);
    return -1;
}

static void store_num(struct train_options *o, const struct topt_row *r, long long i, double f) {
    char *p = (char *)o + r->off;
    switch (r->type) {
    case T_INT: case T_BOOL: *(int *)p = (int)i; break;
    case T_I64: *(long long *)p = i; break;
    case T_U64: *(uint64_t *)p = (uint64_t)i; break;
    case T_FLOAT: *(float *)p = (float)f; break;
    default: break;
    }
}

static int store_str(struct train_options *o, const struct topt_row *r, const char *lb, const char *s,
                     char *err, size_t errlen) {
    if (strlen(s) >= r->size) {
        snprintf(err, errlen, "%s: longer than %zu bytes", lb, r->size - 1);
        return -1;
    }
    memcpy((char *)o + r->off, s, strlen(s) + 1);
    return 0;
}

static int store_ts(struct train_options *o, const struct topt_row *r, const int *t, int n) {
    int *p = (int *)((char *)o + r->off);
    p[0] = n;
    for (int i = 0; i < 4; i++) p[1 + i] = i < n ? t[i] : 0;
    return 0;
}


/* Set row r from text v; check: apply the bounds (defaults skip them). */
static int set_text(struct train_options *o, const struct topt_row *r, const char *v, int check,
                    char *err, size_t errlen) {
    char lbuf[80], *end;
    const char *lb = label(r, 1, lbuf, sizeof lbuf);
    errno = 0;
    switch (r->type) {
    case T_INT: case T_I64: case T_U64: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno) { snprintf(err, errlen, "%s: '%s' is not an integer", lb, v); return -1; }
        if (check && bounds(r, lb, (double)x, err, errlen)) return -1;
        if (r->type == T_INT && (x < -2147483647LL || x > 2147483647LL)) return bounds(r, lb, (double)x, err, errlen);
        store_num(o, r, x, 0);
        return 0;
    }
    case T_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno) { snprintf(err, errlen, "%s: '%s' is not a number", lb, v); return -1; }
        if (check && bounds(r, lb, x, err, errlen)) return -1;
        store_num(o, r, 0, x);
        return 0;
    }
    case T_BOOL: {
        int b;
        if (sd_parse_bool(v, &b)) { snprintf(err, errlen, "%s: '%s' is not a boolean", lb, v); return -1; }
        store_num(o, r, b, 0);
        return 0;
    }
    case T_STR: case T_PATH:
        return store_str(o, r, lb, v, err, errlen);
    case T_TS: {
        int t[4], n = timesteps_parse(v, t, 4, 1000, lb, err, errlen);
        return n < 0 ? -1 : store_ts(o, r, t, n);
    }
    }
    return -1;
}


/* Set row r from a JSON value (bounds checked). */
static int set_json(struct train_options *o, const struct topt_row *r, json_t *v, char *err, size_t errlen) {
    const char *lb = r->name;
    switch (r->type) {
    case T_INT: case T_I64: case T_U64:
        if (!json_is_integer(v)) { snprintf(err, errlen, "%s: expected an integer, got %s", lb, sd_json_kind(v)); return -1; }
        if (bounds(r, lb, (double)json_integer_value(v), err, errlen)) return -1;
        store_num(o, r, json_integer_value(v), 0);
        return 0;
    case T_FLOAT:
        if (!json_is_number(v)) { snprintf(err, errlen, "%s: expected a number, got %s", lb, sd_json_kind(v)); return -1; }
        if (bounds(r, lb, json_number_value(v), err, errlen)) return -1;
        store_num(o, r, 0, json_number_value(v));
        return 0;
    case T_BOOL:
        if (!json_is_boolean(v)) { snprintf(err, errlen, "%s: expected a boolean, got %s", lb, sd_json_kind(v)); return -1; }
        store_num(o, r, json_is_true(v), 0);
        return 0;
    case T_STR: case T_PATH:
        if (!json_is_string(v)) { snprintf(err, errlen, "%s: expected a path (a string), got %s", lb, sd_json_kind(v)); return -1; }
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            snprintf(err, errlen, "%s: the path contains a NUL byte", lb);
            return -1;
        }
        return store_str(o, r, lb, json_string_value(v), err, errlen);
    case T_TS: {
        int t[4], n = timesteps_from_json(v, t, 4, 1000, lb, err, errlen);
        return n < 0 ? -1 : store_ts(o, r, t, n);
    }
    }
    return -1;
}

static json_t *get_json(const struct train_options *o, const struct topt_row *r) {
    const char *p = (const char *)o + r->off;
    switch (r->type) {
    case T_INT: return json_integer(*(const int *)p);
    case T_I64: return json_integer(*(const long long *)p);
    case T_U64: return json_integer((json_int_t)*(const uint64_t *)p);
    case T_FLOAT: return json_real(*(const float *)p);
    case T_BOOL: return json_boolean(*(const int *)p);
    case T_STR: case T_PATH: return json_string(p);
    case T_TS: {
        const int *t = (const int *)p;
        json_t *a = json_array();
        for (int i = 0; i < t[0] && i < 4; i++) json_array_append_new(a, json_integer(t[1 + i]));
        return a;
    }
    }
    return NULL;
}

static int field_equal(const struct train_options *a, const struct train_options *b, const struct topt_row *r) {
    const char *x = (const char *)a + r->off, *y = (const char *)b + r->off;
    if (r->type == T_STR || r->type == T_PATH) return !strcmp(x, y);
    if (r->type == T_TS) return !memcmp(x, y, 5 * sizeof(int));
    return !memcmp(x, y, r->size);
}

/* ---- whole structs ---- */

void topt_defaults(struct train_options *o, enum train_kind kind) {
    char err[256];
    memset(o, 0, sizeof *o);
    for (int i = 0; i < NROWS; i++)
        if ((rows[i].kinds & kind) && set_text(o, &rows[i], rows[i].dflt, 0, err, sizeof err)) {
            fprintf(stderr, "sdxld: bad default in the training option table: %s\n", err);
            abort();   /* a bug in the table */
        }
}

int topt_parse_args(struct train_options *o, struct topt_given *given, enum train_kind kind,
                    int argc, char **argv, int first, char *err, size_t errlen) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) return 1;
        if (strncmp(a, "--", 2) || !a[2]) {
            snprintf(err, errlen, "unexpected argument '%s' (options are --name VALUE)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_row(name, n, kind, TOPT_CLI, 1), neg = 0;
        if (k < 0 && n > 3 && !strncmp(name, "no-", 3) && !eq) {
            k = find_row(name + 3, n - 3, kind, TOPT_CLI, 1);
            neg = 1;
            if (k >= 0 && rows[k].type != T_BOOL) k = -1;
        }
        if (k < 0) {
            snprintf(err, errlen, "unknown option '%.*s' (--help lists them)", (int)(n + 2), a);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v && rows[k].type == T_BOOL) v = neg ? "false" : "true";
        if (!v && i + 1 >= argc) {
            snprintf(err, errlen, "%s needs a value", a);
            return -1;
        }
        if (!v) v = argv[++i];
        if (set_text(o, &rows[k], v, 1, err, errlen)) return -1;
        given->row[k] = 1;
    }
    return 0;
}

int topt_from_body(struct train_options *o, struct topt_given *given, enum train_kind kind,
                   json_t *body, char *field, char *err, size_t errlen) {
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        int k = find_row(key, strlen(key), kind, TOPT_API, 0);
        snprintf(field, 64, "%s", key);
        if (k < 0) {
            snprintf(err, errlen, "unknown field '%s'", key);
            return -1;
        }
        const struct topt_row *r = &rows[k];
        if (!strcmp(r->name, "resume") && json_is_string(v)) {   /* the caller resolves the run directory */
            o->resume = 1;
        } else if (!strcmp(r->name, "resume") && !json_is_boolean(v)) {
            snprintf(err, errlen, "resume: expected a run directory (a string) or a boolean, got %s", sd_json_kind(v));
            return -1;
        } else if (!strcmp(r->name, "prompts") && json_is_null(v)) {
            continue;
        } else if (set_json(o, r, v, err, errlen)) {
            return -1;
        }
        given->row[k] = 1;
    }
    return 0;
}

json_t *topt_to_json(const struct train_options *o, enum train_kind kind) {
    json_t *j = json_object();
    for (int i = 0; j && i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        if (!(r->kinds & kind) || (r->flags & NOSTORE)) continue;
        json_t *v = get_json(o, r);
        if (!v || json_object_set_new(j, r->name, v)) { json_decref(j); return NULL; }
    }
    return j;
}

int topt_from_json(struct train_options *o, struct topt_given *present, enum train_kind kind,
                   json_t *cfg, char *err, size_t errlen) {
    for (int i = 0; i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        json_t *v = (r->kinds & kind) && !(r->flags & NOSTORE) ? json_object_get(cfg, r->name) : NULL;
        if (v && set_json(o, r, v, err, errlen)) return -1;
        if (present) present->row[i] = v != NULL;
    }
    return 0;
}

const char *topt_resume_merge(struct train_options *stored, const struct topt_given *present,
                              const struct train_options *o, const struct topt_given *given,
                              enum train_kind kind) {
    for (int i = 0; i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        if (!(r->kinds & kind) || !given->row[i] || field_equal(stored, o, r)) continue;
        if (present->row[i] && !(r->flags & (SAFE | NOSTORE))) return r->name;
        memcpy((char *)stored + r->off, (const char *)o + r->off, r->type == T_TS ? 5 * sizeof(int) : r->size);
    }
    return NULL;
}

int topt_apply_defaults(struct train_options *o, const struct topt_given *given, enum train_kind kind,
                        json_t *defaults, char *field, char *err, size_t errlen) {
    const char *key;
    json_t *v;
    if (!json_is_object(defaults)) {
        snprintf(err, errlen, "expected a JSON object, got %s", sd_json_kind(defaults));
        return -1;
    }
    json_object_foreach(defaults, key, v) {
        int k = find_row(key, strlen(key), kind, TOPT_API, 0);
        snprintf(field, 64, "%s", key);
        if (k < 0 || (rows[k].flags & NOSTORE) || rows[k].type == T_PATH) {
            snprintf(err, errlen, "'%s' is not an option a model may set", key);
            return -1;
        }
        if (!given->row[k] && set_json(o, &rows[k], v, err, errlen)) return -1;
    }
    return 0;
}

/* ---- help and docs ---- */

static const char *type_text(const struct topt_row *r, char *buf, size_t n) {
    const char *lo = (r->flags & LO_OPEN) ? "(" : "[";
    switch (r->type) {
    case T_INT: case T_I64: case T_U64: snprintf(buf, n, "%.0f..%.0f", r->lo, r->hi); return buf;
    case T_FLOAT: snprintf(buf, n, "%s%g, %g]", lo, r->lo, r->hi); return buf;
    case T_BOOL: return "true|false";
    case T_STR: return "text";
    case T_PATH: return "path";
    case T_TS: return "list 999..0, decreasing";
    }
    return "?";
}

void topt_print_help(FILE *f, enum train_kind kind, const char *usage) {
    char buf[64], lb[80];
    fprintf(f, "%s\n\nOptions (defaults in brackets; a boolean is --name or --no-name):\n", usage);
    for (int i = 0; i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        if (!row_for(r, kind, TOPT_CLI)) continue;
        fprintf(f, "  %-24s %s\n", label(r, 1, lb, sizeof lb), r->help);
        fprintf(f, "  %-24s (%s; default: %s%s)\n", "", type_text(r, buf, sizeof buf),
                r->shown ? r->shown : r->dflt[0] ? r->dflt : "\"\"", r->flags & SAFE ? "; may change at resume" : "");
    }
    fprintf(f, "\nWith --resume the run's stored options (state.json) apply; an option given then that\n"
               "may not change at resume must repeat the stored value.\n");
}

void topt_print_api_table(FILE *f) {
    char buf[64];
    fprintf(f, "| field | default | meaning | bounds | at resume |\n|---|---|---|---|---|\n");
    for (int i = 0; i < NROWS; i++) {
        const struct topt_row *r = &rows[i];
        if (!row_for(r, TRAIN_DMD2, TOPT_API)) continue;
        const char *b = r->type == T_PATH || r->type == T_STR ? "" : type_text(r, buf, sizeof buf);
        fprintf(f, "| `%s` | %s | %s | %s | %s |\n", r->name, r->shown ? r->shown : r->dflt, r->help, b,
                r->flags & NOSTORE ? "—" : r->flags & SAFE ? "may change" : "kept");
    }
}
