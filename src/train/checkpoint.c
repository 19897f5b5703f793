/* checkpoint.c — see checkpoint.h. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fs.h"
#include "../io/safetensors.h"
#include "checkpoint.h"

static sd_status rm_tree_shallow(const char *dir) {
    /* a checkpoint directory holds only our three files */
    static const char *const files[] = { "weights.safetensors", "optim.safetensors", "state.json" };
    char p[4400];
    for (int i = 0; i < 3; i++) { snprintf(p, sizeof p, "%s/%s", dir, files[i]); sd_unlink(p); }
    return sd_rmdir(dir) && errno != ENOENT ? sd_fail(SD_ERR_IO, "%s: %s", dir, sd_fs_strerror(errno)) : SD_OK;
}

/* ---- space and retention ---- */

#define CKPT_MARGIN_MIN (16ull << 20)

static uint64_t test_extra_bytes;
void ckpt_test_set_extra_bytes(uint64_t extra_bytes) { test_extra_bytes = extra_bytes; }

sd_status ckpt_space_check(const char *dir, uint64_t need, uint64_t free_bytes) {
    uint64_t margin = need / 20 > CKPT_MARGIN_MIN ? need / 20 : CKPT_MARGIN_MIN;
    if (free_bytes >= need && free_bytes - need >= margin) return SD_OK;
    return sd_fail(SD_ERR_IO, "%s: not enough disk space for a checkpoint: it needs %.1f MiB "
                   "(+ %.1f MiB margin), the file system has %.1f MiB free; the previous "
                   "checkpoint is kept", dir, need / 1048576.0, margin / 1048576.0, free_bytes / 1048576.0);
}

/* Bytes of the checkpoint's tensor files (weights, Adam moments, EMA). */
static uint64_t ckpt_bytes(const struct ckpt_part *parts, int np) {
    uint64_t n = 0;
    for (int i = 0; i < np; i++) {
        const struct optimizer *o = parts[i].o;
        n += (uint64_t)parts[i].wt->total * 4 * (1 + (o ? 2 + (o->ep != NULL) : 0));
    }
    return n + 65536;   /* headers and state.json */
}

/* The step of a name "checkpoint-NNNNNNN" (exactly 7 digits), else -1. */
static int ckpt_name_step(const char *name) {
    static const char pre[] = "checkpoint-";
    if (strncmp(name, pre, sizeof pre - 1) || strlen(name) != sizeof pre - 1 + 7) return -1;
    int step = 0;
    for (const char *c = name + sizeof pre - 1; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        step = step * 10 + (*c - '0');
    }
    return step;
}

static int cmp_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

sd_status ckpt_prune(const char *run_dir, int keep, int protect) {
    if (keep <= 0) return SD_OK;
    DIR *dir = sd_opendir(run_dir);
    if (!dir) return sd_fail(SD_ERR_IO, "%s: %s", run_dir, sd_fs_strerror(errno));
    int *steps = NULL, n = 0, cap = 0;
    struct dirent *e;
    sd_status st = SD_OK;
    while ((e = readdir(dir))) {
        int s = ckpt_name_step(e->d_name);
        if (s < 0) continue;
        if (n == cap) {
            int *g = sd_realloc(steps, sizeof *steps * (size_t)(cap = cap ? 2 * cap : 16));
            if (!g) { st = SD_ERR_NOMEM; break; }
            steps = g;
        }
        steps[n++] = s;
    }
    closedir(dir);
    if (!st) qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
    for (int i = keep; !st && i < n; i++) {
        if (steps[i] == protect) continue;
        char p[4200];
        snprintf(p, sizeof p, "%s/checkpoint-%07d", run_dir, steps[i]);
        if (rm_tree_shallow(p) != SD_OK) {   /* something else lives there: not ours to delete */
            LOG_W("checkpoint retention: %s", sd_last_error());
            sd_clear_error();
        }
    }
    sd_free(steps);
    return st;
}

static sd_status write_text_atomic(const char *path, const char *text) {
    return sd_write_file_atomic(path, text, strlen(text));
}

static sd_status add_arena_rows(struct st_writer *w, struct backend *be, const struct weight_table *t,
                                float **ptrs, const char *prefix, float *host) {
    char name[WT_NAME_MAX + 16];
    for (int i = 0; i < t->n; i++) {
        const struct weight_row *r = &t->rows[i];
        size_t n = (size_t)sd_numel(r->ndim, r->shape);
        be->ops->download(be, host, ptrs ? ptrs[i] : *r->dst, n * sizeof(float));
        snprintf(name, sizeof name, "%s%s", prefix, r->name);
        SD_TRY(st_writer_add_f32(w, name, DT_F32, r->ndim, r->shape, host));
    }
    return SD_OK;
}

static size_t max_row(const struct weight_table *t) {
    size_t m = 1;
    for (int i = 0; i < t->n; i++) {
        size_t n = (size_t)sd_numel(t->rows[i].ndim, t->rows[i].shape);
        if (n > m) m = n;
    }
    return m;
}

sd_status ckpt_save_parts(const char *run_dir, struct backend *be, const struct ckpt_part *parts, int np,
                          const struct ckpt_state *s, char *path_out, size_t n) {
    char dir[4096], tmp[4200], p[4300];
    snprintf(dir, sizeof dir, "%s/checkpoint-%07d", run_dir, s->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    rm_tree_shallow(tmp);
    if (sd_mkdir(run_dir, 0755) && errno != EEXIST)
        return sd_fail(SD_ERR_IO, "%s: %s", run_dir, sd_fs_strerror(errno));
    uint64_t free_bytes;
    if (sd_free_bytes(run_dir, &free_bytes))
        return sd_fail(SD_ERR_IO, "%s: %s", run_dir, sd_fs_strerror(errno));
    SD_TRY(ckpt_space_check(dir, ckpt_bytes(parts, np) + test_extra_bytes, free_bytes));
    if (sd_mkdir(tmp, 0755)) return sd_fail(SD_ERR_IO, "%s: %s", tmp, sd_fs_strerror(errno));
    size_t mr = 1;
    for (int i = 0; i < np; i++) if (max_row(parts[i].wt) > mr) mr = max_row(parts[i].wt);
    float *host = sd_malloc(mr * sizeof(float));
    if (!host) return SD_ERR_NOMEM;
    struct st_writer w;
    sd_status st = SD_OK;
    char pre[128];
    st_writer_init(&w);
    snprintf(p, sizeof p, "%s/weights.safetensors", tmp);
    for (int i = 0; i < np && !st; i++) st = add_arena_rows(&w, be, parts[i].wt, NULL, parts[i].prefix, host);
    if (!st) st = st_writer_write(&w, p);
    st_writer_free(&w);
    int any_o = 0;
    for (int i = 0; i < np; i++) any_o |= parts[i].o != NULL;
    if (!st && any_o) {
        st_writer_init(&w);
        snprintf(p, sizeof p, "%s/optim.safetensors", tmp);
        for (int i = 0; i < np && !st; i++) {
            const struct optimizer *o = parts[i].o;
            if (!o) continue;
            snprintf(pre, sizeof pre, "adam_m.%s", parts[i].prefix);
            if ((st = add_arena_rows(&w, be, parts[i].wt, o->mp, pre, host))) break;
            snprintf(pre, sizeof pre, "adam_v.%s", parts[i].prefix);
            if ((st = add_arena_rows(&w, be, parts[i].wt, o->vp, pre, host))) break;
            snprintf(pre, sizeof pre, "ema.%s", parts[i].prefix);
            if (o->ep) st = add_arena_rows(&w, be, parts[i].wt, o->ep, pre, host);
        }
        if (!st) st = st_writer_write(&w, p);
        st_writer_free(&w);
    }
    sd_free(host);
    if (!st) {
        json_t *cfg = s->config_json ? json_loads(s->config_json, 0, NULL) : json_object();
        json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:I, s:o}", "format", "sdxld-train-state", "version", 1,
                              "step", s->step, "optimizer_step", np && parts[0].o ? parts[0].o->step : 0,
                              "rng_seed", "", "rng_offset", "", "data_cursor", (json_int_t)s->data_cursor,
                              "config", cfg ? cfg : json_object());
        /* 64-bit RNG values as decimal strings: JSON numbers lose precision above 2^53 */
        char num[32];
        snprintf(num, sizeof num, "%" PRIu64, s->rng_seed);
        json_object_set_new(j, "rng_seed", json_string(num));
        snprintf(num, sizeof num, "%" PRIu64, s->rng_offset);
        json_object_set_new(j, "rng_offset", json_string(num));
        json_t *steps = json_object();   /* each network's optimiser step count */
        for (int i = 0; i < np; i++)
            if (parts[i].o) json_object_set_new(steps, parts[i].prefix, json_integer(parts[i].o->step));
        json_object_set_new(j, "optimizer_steps", steps);
        char *text = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        json_decref(j);
        snprintf(p, sizeof p, "%s/state.json", tmp);
        st = text ? write_text_atomic(p, text) : SD_ERR_NOMEM;
        free(text);
    }
    if (!st) {
        rm_tree_shallow(dir);
        if (sd_rename(tmp, dir)) st = sd_fail(SD_ERR_IO, "%s: %s", dir, sd_fs_strerror(errno));
    }
    if (!st) {
        snprintf(p, sizeof p, "%s/latest", run_dir);
        char line[4200];
        snprintf(line, sizeof line, "checkpoint-%07d\n", s->step);
        st = write_text_atomic(p, line);
    }
    if (st) { rm_tree_shallow(tmp); return st; }
    if (path_out) snprintf(path_out, n, "%s", dir);
    return ckpt_prune(run_dir, s->keep, s->step);
}

sd_status ckpt_latest(const char *run_dir, char *out, size_t n) {
    char p[4200], *text;
    snprintf(p, sizeof p, "%s/latest", run_dir);
    SD_TRY(sd_read_file(p, 4096, &text, NULL));
    text[strcspn(text, "\r\n")] = 0;
    if (!text[0] || strchr(text, '/') || strstr(text, "..")) {
        sd_free(text);
        return sd_fail(SD_ERR_FORMAT, "%s: not a checkpoint name", p);
    }
    snprintf(out, n, "%s/%s", run_dir, text);
    sd_free(text);
    return SD_OK;
}

sd_status ckpt_latest_config(const char *run_dir, char **config_json) {
    char dir[4096], p[4300], *text;
    *config_json = NULL;
    SD_TRY(ckpt_latest(run_dir, dir, sizeof dir));
    snprintf(p, sizeof p, "%s/state.json", dir);
    SD_TRY(sd_read_file(p, 1 << 20, &text, NULL));
    json_t *j = json_loads(text, 0, NULL), *cfg = json_object_get(j, "config");
    sd_free(text);
    char *c = json_is_object(cfg) ? json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!c) return sd_fail(SD_ERR_FORMAT, "%s: not an sdxld training state", p);
    *config_json = sd_strdup(c);
    free(c);
    return *config_json ? SD_OK : SD_ERR_NOMEM;
}

static sd_status load_rows(const struct st_file *f, struct backend *be, const struct weight_table *t,
                           float **ptrs, const char *prefix) {
    char name[WT_NAME_MAX + 16], s1[64], s2[64];
    float *host = sd_malloc(max_row(t) * sizeof(float));
    if (!host) return SD_ERR_NOMEM;
    sd_status st = SD_OK;
    for (int i = 0; i < t->n && !st; i++) {
        const struct weight_row *r = &t->rows[i];
        snprintf(name, sizeof name, "%s%s", prefix, r->name);
        const struct st_tensor *x = st_find(f, name);
        if (!x) { st = sd_fail(SD_ERR_NOTFOUND, "%s: missing '%s'", f->path, name); break; }
        if (x->ndim != r->ndim || memcmp(x->shape, r->shape, sizeof(int64_t) * r->ndim)) {
            st = sd_fail(SD_ERR_SHAPE, "%s: %s: expected %s, file has %s", f->path, name,
                         sd_shape_str(s1, sizeof s1, r->ndim, r->shape), sd_shape_str(s2, sizeof s2, x->ndim, x->shape));
            break;
        }
        st_read_f32(x, host);
        be->ops->upload(be, ptrs ? ptrs[i] : *r->dst, host, (size_t)st_numel(x) * sizeof(float));
    }
    sd_free(host);
    return st;
}

sd_status ckpt_load_parts(const char *dir, struct backend *be, const struct ckpt_part *parts, int np,
                          struct ckpt_state *s) {
    char p[4300], *text;
    memset(s, 0, sizeof *s);
    snprintf(p, sizeof p, "%s/state.json", dir);
    SD_TRY(sd_read_file(p, 1 << 20, &text, NULL));
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    sd_free(text);
    json_t *fmt = json_object_get(j, "format");
    if (!j || !json_is_string(fmt) || strcmp(json_string_value(fmt), "sdxld-train-state") ||
        json_integer_value(json_object_get(j, "version")) != 1) {
        json_decref(j);
        return sd_fail(SD_ERR_FORMAT, "%s: not an sdxld training state (version 1)", p);
    }
    s->step = (int)json_integer_value(json_object_get(j, "step"));
    s->data_cursor = json_integer_value(json_object_get(j, "data_cursor"));
    const char *seed = json_string_value(json_object_get(j, "rng_seed"));
    const char *off = json_string_value(json_object_get(j, "rng_offset"));
    s->rng_seed = seed ? strtoull(seed, NULL, 10) : 0;
    s->rng_offset = off ? strtoull(off, NULL, 10) : 0;
    int ostep = (int)json_integer_value(json_object_get(j, "optimizer_step")), osteps[16];
    json_t *os = json_object_get(j, "optimizer_steps");
    for (int i = 0; i < np && i < 16; i++) {
        json_t *v = json_object_get(os, parts[i].prefix);
        osteps[i] = v ? (int)json_integer_value(v) : ostep;
    }
    char *cfg = json_dumps(json_object_get(j, "config"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    s->config_json = cfg ? sd_strdup(cfg) : NULL;
    free(cfg);
    json_decref(j);
    struct st_file f;
    char pre[128];
    snprintf(p, sizeof p, "%s/weights.safetensors", dir);
    sd_status st = st_open(&f, p);
    if (!st) {
        for (int i = 0; i < np && !st; i++) st = load_rows(&f, be, parts[i].wt, NULL, parts[i].prefix);
        st_close(&f);
    }
    int any_o = 0;
    for (int i = 0; i < np; i++) any_o |= parts[i].o != NULL;
    if (!st && any_o) {
        snprintf(p, sizeof p, "%s/optim.safetensors", dir);
        if (!(st = st_open(&f, p))) {
            for (int i = 0; i < np && !st; i++) {
                struct optimizer *o = parts[i].o;
                if (!o) continue;
                snprintf(pre, sizeof pre, "adam_m.%s", parts[i].prefix);
                if ((st = load_rows(&f, be, parts[i].wt, o->mp, pre))) break;
                snprintf(pre, sizeof pre, "adam_v.%s", parts[i].prefix);
                if ((st = load_rows(&f, be, parts[i].wt, o->vp, pre))) break;
                snprintf(pre, sizeof pre, "ema.%s", parts[i].prefix);
                if (o->ep && parts[i].wt->n > 0) {
                    char first[WT_NAME_MAX + 160];
                    snprintf(first, sizeof first, "%s%s", pre, parts[i].wt->rows[0].name);
                    if (st_find(&f, first)) {
                        st = load_rows(&f, be, parts[i].wt, o->ep, pre);
                    } else {   /* a run that turns EMA on at resume: start it from the weights */
                        LOG_W("%s: no EMA in the checkpoint; the EMA starts from the resumed weights", dir);
                        for (int r = 0; r < parts[i].wt->n; r++)
                            be->ops->copy(be, o->ep[r], *parts[i].wt->rows[r].dst,
                                          (size_t)sd_numel(parts[i].wt->rows[r].ndim, parts[i].wt->rows[r].shape) * 4);
                    }
                }
                o->step = i < 16 ? osteps[i] : ostep;
            }
            st_close(&f);
        }
    }
    if (st) { sd_free(s->config_json); s->config_json = NULL; }
    return st;
}

sd_status ckpt_save(const char *run_dir, struct backend *be, const struct weight_table *model,
                    const struct optimizer *o, const struct ckpt_state *s, char *path_out, size_t n) {
    struct ckpt_part part = { "", model, (struct optimizer *)o };
    return ckpt_save_parts(run_dir, be, &part, 1, s, path_out, n);
}

sd_status ckpt_load(const char *dir, struct backend *be, struct weight_table *model, struct optimizer *o,
                    struct ckpt_state *s) {
    struct ckpt_part part = { "", model, o };
    return ckpt_load_parts(dir, be, &part, 1, s);
}
