/* api_train.c — distillation over HTTP: POST /v1/train, GET and DELETE /v1/train/{id},
 * GET /v1/train/{id}/events, and POST /v1/models/load (spec/api.md, Distillation).
 *
 * A training request is validated as strictly as a generation: unknown fields, wrong
 * types, out-of-range values and impossible sizes are 400s naming the field, and so is
 * every path that does not resolve under the configured data_root.  Paths are checked
 * with realpath (the path itself when it exists, else its deepest existing ancestor),
 * so '..', absolute paths elsewhere and symlinks pointing out of data_root are all
 * refused; '..' is refused outright, so a request never depends on the tree's shape.
 * Cheap checks that a client can act on are done here too (a teacher folder without
 * unet/, a dataset folder without captions.txt, a run directory that already holds a
 * run); the rest (weights that do not load, a broken PNG) fails the job with the
 * trainer's message.
 *
 * spec/api.md's `prompts` + `real_data` map onto our dataset: the generator's prompts
 * are the captions that come with the images (as in DMD2's 4-step SDXL run, spec/dmd2.md
 * §9.3).  `real_data` is an image folder (PNG files + captions.txt, src/train/data.h) or
 * "shapes", the built-in procedural dataset; `prompts` may be omitted, or name the same
 * source (which changes nothing); a separate prompt list is refused, not ignored.
 *
 * Handlers only validate and queue: the worker opens and steps the run (worker_train.c);
 * DELETE and model loads park the request until the worker has acted. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"

#define PATH_FIELD_MAX 1024

/* ---- paths under data_root ---- */

enum path_kind { PATH_DIR, PATH_FILE, PATH_ANY, PATH_NEW_DIR /* may not exist yet */ };

/* Is p (a real path) inside root (a real path)?  or_equal: root itself counts. */
static int is_under(const char *root, const char *p, int or_equal) {
    size_t n = strlen(root);
    if (!strcmp(root, "/")) return p[0] == '/' && (or_equal || p[1]);
    if (strncmp(p, root, n)) return 0;
    return p[n] == '/' || (or_equal && p[n] == 0);
}

/* The real path of data_root, or -1 (400 naming field: the request cannot be served). */
static int real_root(const struct sdxld *d, const char *field, char *root, struct api_error *e) {
    if (realpath(d->cfg.data_root, root)) return 0;
    return api_fail(e, field, "%s: data_root '%s' is not accessible (%s); request paths are "
                    "resolved under it", field, d->cfg.data_root, strerror(errno));
}

/* Resolve the path in v under root into out (PATH_MAX bytes, absolute and real).
 * PATH_NEW_DIR: the path may not exist; its deepest existing ancestor must be a
 * directory under (or equal to) root, and the rest plain new names. */
static int resolve_path(const char *root, const char *field, json_t *v, enum path_kind kind,
                        char *out, struct api_error *e) {
    if (!json_is_string(v))
        return api_fail(e, field, "%s: expected a path (a string), got %s", field, api_json_type(v));
    const char *p = json_string_value(v);
    size_t len = json_string_length(v);
    if (!len) return api_fail(e, field, "%s: empty path", field);
    if (strlen(p) != len) return api_fail(e, field, "%s: the path contains a NUL byte", field);
    if (len > PATH_FIELD_MAX)
        return api_fail(e, field, "%s: path longer than %d bytes", field, PATH_FIELD_MAX);
    for (const char *c = p;;) {
        const char *s = strchr(c, '/');
        size_t l = s ? (size_t)(s - c) : strlen(c);
        if (l == 2 && c[0] == '.' && c[1] == '.')
            return api_fail(e, field, "%s: '%s': '..' is not allowed (paths are resolved under "
                            "data_root)", field, p);
        if (!s) break;
        c = s + 1;
    }
    char full[PATH_MAX], real[PATH_MAX];
    int n = p[0] == '/' ? snprintf(full, sizeof full, "%s", p)
                        : snprintf(full, sizeof full, "%s/%s", root, p);
    if (n < 0 || n >= (int)sizeof full) return api_fail(e, field, "%s: path too long", field);
    struct stat st;
    if (realpath(full, real)) {
        if (!is_under(root, real, 0))
            return api_fail(e, field, "%s: '%s' is outside data_root (%s)", field, p, root);
        if (stat(real, &st))
            return api_fail(e, field, "%s: '%s': %s", field, p, strerror(errno));
        if ((kind == PATH_DIR || kind == PATH_NEW_DIR) && !S_ISDIR(st.st_mode))
            return api_fail(e, field, "%s: '%s' is not a directory", field, p);
        if (kind == PATH_FILE && !S_ISREG(st.st_mode))
            return api_fail(e, field, "%s: '%s' is not a regular file", field, p);
        memcpy(out, real, strlen(real) + 1);
        return 0;
    }
    if (errno != ENOENT)
        return api_fail(e, field, "%s: '%s': %s", field, p, strerror(errno));
    if (kind != PATH_NEW_DIR)
        return api_fail(e, field, "%s: '%s' does not exist (under data_root %s)", field, p, root);
    /* A new directory: find its deepest existing ancestor. */
    char anc[PATH_MAX];
    memcpy(anc, full, (size_t)n + 1);
    for (;;) {
        char *slash = strrchr(anc, '/');
        if (!slash) return api_fail(e, field, "%s: '%s' does not resolve", field, p);
        slash[slash == anc] = 0;   /* keep "/" itself */
        if (realpath(anc, real)) break;
        if (errno != ENOENT || slash == anc)
            return api_fail(e, field, "%s: '%s': %s", field, p, strerror(errno));
    }
    if (!is_under(root, real, 1))
        return api_fail(e, field, "%s: '%s' is outside data_root (%s)", field, p, root);
    if (stat(real, &st) || !S_ISDIR(st.st_mode))
        return api_fail(e, field, "%s: '%s': a parent is not a directory", field, p);
    size_t o = strlen(real);
    memcpy(out, real, o + 1);
    if (o == 1) o = 0;   /* "/": the first name brings its own slash */
    for (const char *c = full + strlen(anc);;) {
        while (*c == '/') c++;
        if (!*c) break;
        const char *s = strchr(c, '/');
        size_t l = s ? (size_t)(s - c) : strlen(c);
        if (!(l == 1 && c[0] == '.')) {
            if (o + 1 + l >= PATH_MAX) return api_fail(e, field, "%s: path too long", field);
            out[o++] = '/';
            memcpy(out + o, c, l);
            out[o += l] = 0;
            /* A name that exists without resolving is a dangling symlink: it could
             * point anywhere once its target appears. */
            if (!lstat(out, &st))
                return api_fail(e, field, "%s: '%s' is a dangling symbolic link", field, p);
        }
        c += l;
    }
    return 0;
}

/* abs as a client under data_root writes it. */
static const char *shown(const char *root, const char *abs) {
    size_t n = strlen(root);
    if (!strcmp(root, "/")) return abs;
    return !strncmp(abs, root, n) && abs[n] == '/' ? abs + n + 1 : abs;
}

static int file_exists(const char *dir, const char *name, int want_dir) {
    char p[PATH_MAX + 64];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return !stat(p, &st) && (want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
}

/* ---- numbers ---- */

static int get_num(json_t *v, const char *field, double lo, double hi, int lo_open, float *out,
                   struct api_error *e) {
    if (!json_is_number(v))
        return api_fail(e, field, "%s: expected a number, got %s", field, api_json_type(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
        return lo_open ? api_fail(e, field, "%s: %g must be above %g and at most %g", field, x, lo, hi)
                       : api_fail(e, field, "%s: %g is out of range %g..%g", field, x, lo, hi);
    *out = (float)x;
    return 0;
}

static int get_bool(json_t *v, const char *field, int *out, struct api_error *e) {
    if (!json_is_boolean(v))
        return api_fail(e, field, "%s: expected a boolean, got %s", field, api_json_type(v));
    *out = json_is_true(v);
    return 0;
}

struct int_field { const char *name; long long lo, hi; int *dst; };

/* ---- POST /v1/train ---- */

/* Parse and validate the body into t (strings malloc'ed; the caller frees t on error). */
static int parse_train(struct sdxld *d, json_t *body, struct train_request *t,
                       struct api_error *e) {
    static const char *const known[] = {
        "teacher", "generator_init", "out", "prompts", "real_data", "steps", "batch",
        "lr_generator", "lr_fake", "ttur", "guidance", "gan_weight_g", "gan_weight_d",
        "timesteps", "backward_simulation", "resolution", "lora_rank", "lora_alpha", "checkpoint_every",
        "sample_every", "seed", "resume", "gan", "cache_size", "warmup", "clip", "log_every", "recompute",
        NULL };
    if (api_check_unknown(body, known, e)) return -1;
    /* Defaults: the DMD2 paper's SDXL 4-step run (spec/dmd2.md §3, spec/api.md). */
    *t = (struct train_request){
        .steps = 20000, .batch = 2, .ttur = 5, .resolution = 1024, .warmup = 500,
        .log_every = 1, .checkpoint_every = 500, .sample_every = 250, .cache_size = 4096,
        .lr_generator = 5e-7f, .lr_fake = 5e-7f, .guidance = 8.0f, .gan_weight_g = 5e-3f,
        .gan_weight_d = 1e-2f, .clip = 10.0f, .nsteps = 4, .timesteps = { 999, 749, 499, 249 },
        .backward_simulation = 1, .gan = 1, .seed = 0, .lora_rank = 0, .lora_alpha = 8.0f,
    };
    json_t *v;
    long long x;
    const struct int_field ints[] = {
        { "steps", 1, 100000000, &t->steps }, { "batch", 1, 256, &t->batch },
        { "ttur", 1, 100000, &t->ttur }, { "resolution", 8, 4096, &t->resolution },
        { "warmup", 0, 100000000, &t->warmup }, { "log_every", 1, 1000000, &t->log_every },
        { "checkpoint_every", 0, 100000000, &t->checkpoint_every },
        { "sample_every", 0, 100000000, &t->sample_every },
        { "lora_rank", 0, 4096, &t->lora_rank },
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((v = json_object_get(body, ints[i].name))) {
            if (api_get_int(v, ints[i].name, ints[i].lo, ints[i].hi, &x, e)) return -1;
            *ints[i].dst = (int)x;
        }
    if ((v = json_object_get(body, "cache_size"))) {
        if (api_get_int(v, "cache_size", 1, 1 << 20, &x, e)) return -1;
        t->cache_size = x;
    }
    if ((v = json_object_get(body, "seed"))) {
        if (api_get_int(v, "seed", 0, INT64_MAX, &x, e)) return -1;
        t->seed = (uint64_t)x;
    }
    if (((v = json_object_get(body, "lr_generator")) &&
         get_num(v, "lr_generator", 0, 1, 1, &t->lr_generator, e)) ||
        ((v = json_object_get(body, "lr_fake")) && get_num(v, "lr_fake", 0, 1, 1, &t->lr_fake, e)) ||
        ((v = json_object_get(body, "guidance")) && get_num(v, "guidance", 0, 100, 0, &t->guidance, e)) ||
        ((v = json_object_get(body, "gan_weight_g")) &&
         get_num(v, "gan_weight_g", 0, 1000, 0, &t->gan_weight_g, e)) ||
        ((v = json_object_get(body, "gan_weight_d")) &&
         get_num(v, "gan_weight_d", 0, 1000, 0, &t->gan_weight_d, e)) ||
        ((v = json_object_get(body, "clip")) && get_num(v, "clip", 0, 1e6, 0, &t->clip, e)) ||
        ((v = json_object_get(body, "lora_alpha")) && get_num(v, "lora_alpha", 0, 1e6, 1, &t->lora_alpha, e)) ||
        ((v = json_object_get(body, "backward_simulation")) &&
         get_bool(v, "backward_simulation", &t->backward_simulation, e)) ||
        ((v = json_object_get(body, "gan")) && get_bool(v, "gan", &t->gan, e)) ||
        ((v = json_object_get(body, "recompute")) && get_bool(v, "recompute", &t->recompute, e)))
        return -1;
    if ((v = json_object_get(body, "timesteps"))) {
        if (!json_is_array(v))
            return api_fail(e, "timesteps", "timesteps: expected an array of integers, got %s",
                            api_json_type(v));
        size_t n = json_array_size(v);
        if (n < 1 || n > 4)
            return api_fail(e, "timesteps", "timesteps: needs 1..4 entries, got %zu", n);
        for (size_t i = 0; i < n; i++) {
            if (api_get_int(json_array_get(v, i), "timesteps", 0, 999, &x, e)) return -1;
            if (i && x >= t->timesteps[i - 1])
                return api_fail(e, "timesteps", "timesteps: must be strictly decreasing (%lld "
                                "after %d)", x, t->timesteps[i - 1]);
            t->timesteps[i] = (int)x;
        }
        t->nsteps = (int)n;
    }

    /* Paths. */
    char root[PATH_MAX], p[PATH_MAX];
    if (real_root(d, "out", root, e) || !(t->root = strdup(root))) return -1;
    json_t *jr = json_object_get(body, "resume"), *jo = json_object_get(body, "out");
    if (jr && json_is_string(jr)) {
        if (resolve_path(root, "resume", jr, PATH_DIR, p, e)) return -1;
        t->resume = 1;
        if (!(t->out = strdup(p))) return api_fail(e, "resume", "out of memory");
    } else if (jr) {
        if (get_bool(jr, "resume", &t->resume, e)) {
            snprintf(e->msg, sizeof e->msg, "resume: expected a run directory (a string) or "
                     "a boolean, got %s", api_json_type(jr));
            return -1;
        }
    }
    if (jo) {
        if (resolve_path(root, "out", jo, PATH_NEW_DIR, p, e)) return -1;
        if (t->out && strcmp(t->out, p))
            return api_fail(e, "out", "out: '%s' is not the run directory named by resume",
                            json_string_value(jo));
        if (!t->out && !(t->out = strdup(p))) return api_fail(e, "out", "out of memory");
    }
    if (!t->out)
        return api_fail(e, "out", "out: required (the run directory, under data_root), or "
                        "resume (a run directory to continue)");
    int has_run = file_exists(t->out, "latest", 0);
    if (t->resume && !has_run)
        return api_fail(e, jr && json_is_string(jr) ? "resume" : "out", "%s: '%s' holds no "
                        "checkpoint to resume from (no 'latest' file)",
                        jr && json_is_string(jr) ? "resume" : "out", shown(root, t->out));
    if (!t->resume && has_run)
        return api_fail(e, "out", "out: '%s' already holds a training run; continue it with "
                        "\"resume\" or choose another directory", shown(root, t->out));

    if ((v = json_object_get(body, "teacher"))) {
        if (resolve_path(root, "teacher", v, PATH_DIR, p, e)) return -1;
        if (!file_exists(p, "unet", 1))
            return api_fail(e, "teacher", "teacher: '%s' is not a model folder (no unet/)",
                            json_string_value(v));
        t->teacher = strdup(p);
    } else {
        /* the served model, configured by the operator (its real path: the worker trusts
         * that folder, links included, and nothing else outside data_root) */
        t->teacher = realpath(d->cfg.model, p) ? strdup(p) : strdup(d->cfg.model);
    }
    if (!t->teacher) return api_fail(e, "teacher", "out of memory");
    if ((v = json_object_get(body, "generator_init")) &&
        !(json_is_string(v) && !strcmp(json_string_value(v), "teacher"))) {
        if (resolve_path(root, "generator_init", v, PATH_FILE, p, e)) return -1;
        if (!(t->generator_init = strdup(p))) return api_fail(e, "generator_init", "out of memory");
    }
    if ((v = json_object_get(body, "real_data")) &&
        !(json_is_string(v) && !strcmp(json_string_value(v), "shapes"))) {
        if (resolve_path(root, "real_data", v, PATH_DIR, p, e)) return -1;
        if (!file_exists(p, "captions.txt", 0))
            return api_fail(e, "real_data", "real_data: '%s' is not a dataset folder (PNG files "
                            "and captions.txt), nor \"shapes\"", json_string_value(v));
        if (!(t->data = strdup(p))) return api_fail(e, "real_data", "out of memory");
    }
    if ((v = json_object_get(body, "prompts")) && !json_is_null(v)) {
        int same;
        if (!json_is_string(v))
            return api_fail(e, "prompts", "prompts: expected a path (a string), got %s",
                            api_json_type(v));
        if (!t->data) {
            same = !strcmp(json_string_value(v), "shapes");
        } else {
            char cap[PATH_MAX + 16];
            if (resolve_path(root, "prompts", v, PATH_ANY, p, e)) return -1;
            snprintf(cap, sizeof cap, "%s/captions.txt", t->data);
            same = !strcmp(p, t->data) || !strcmp(p, cap);
        }
        if (!same)
            return api_fail(e, "prompts", "prompts: a separate prompt list is not supported: the "
                            "generator's prompts are the captions of real_data (DMD2's 4-step "
                            "setting); omit prompts, or name the real_data source");
    }

    /* Sizes the model can take, and memory the machine has. */
    char served[PATH_MAX];
    int teacher_served = !json_object_get(body, "teacher") ||
                         (realpath(d->cfg.model, served) && !strcmp(served, t->teacher));
    int m = teacher_served && d->size_multiple > 8 ? d->size_multiple : 8;
    if (t->resolution % m)
        return api_fail(e, "resolution", "resolution: %d is not a multiple of %d%s", t->resolution,
                        m, m > 8 ? " (what the teacher's VAE and UNet need)" : "");
    int ch = 4, vs = 8;
    pthread_mutex_lock(&d->info_lock);
    if (teacher_served && d->have_info) {
        ch = d->info.latent_channels;
        vs = d->info.vae_scale > 0 ? d->info.vae_scale : 8;
    }
    pthread_mutex_unlock(&d->info_lock);
    double cache = (double)t->cache_size * ch * (t->resolution / vs) * (t->resolution / vs) * 4;
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (ram > 0 && cache > ram)
        return api_fail(e, "cache_size", "cache_size: %lld latents at %dx%d need %.1f GiB, more "
                        "than this machine's %.1f GiB", t->cache_size, t->resolution, t->resolution,
                        cache / 1073741824.0, ram / 1073741824.0);

    /* The effective request, paths as the client writes them. */
    json_t *ts = json_array();
    for (int i = 0; i < t->nsteps; i++) json_array_append_new(ts, json_integer(t->timesteps[i]));
    json_t *echo = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:i, s:f, s:f, s:f, s:o, s:b, s:i, s:i, s:f, s:i, "
        "s:i, s:I, s:b, s:b, s:I, s:i, s:f, s:i, s:b}",
        "teacher", teacher_served ? d->cfg.model : shown(root, t->teacher),
        "generator_init", t->generator_init ? shown(root, t->generator_init) : "teacher",
        "out", shown(root, t->out), "real_data", t->data ? shown(root, t->data) : "shapes",
        "steps", t->steps, "batch", t->batch, "lr_generator", (double)t->lr_generator,
        "lr_fake", (double)t->lr_fake, "ttur", t->ttur, "guidance", (double)t->guidance,
        "gan_weight_g", (double)t->gan_weight_g, "gan_weight_d", (double)t->gan_weight_d,
        "timesteps", ts, "backward_simulation", t->backward_simulation,
        "resolution", t->resolution, "lora_rank", t->lora_rank, "lora_alpha", (double)t->lora_alpha,
        "checkpoint_every", t->checkpoint_every,
        "sample_every", t->sample_every, "seed", (json_int_t)t->seed, "resume", t->resume,
        "gan", t->gan, "cache_size", (json_int_t)t->cache_size, "warmup", t->warmup,
        "clip", (double)t->clip, "log_every", t->log_every, "recompute", t->recompute);
    t->echo = echo ? json_dumps(echo, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(echo);
    return 0;
}

static enum MHD_Result reply_api_error(struct req *r, const struct api_error *e) {
    return reply_error(r, e->http ? e->http : 400, e->code ? e->code : "invalid_argument",
                       e->field[0] ? e->field : NULL, "%s", e->msg);
}

enum MHD_Result api_train_create(struct req *r) {
    struct sdxld *d = r->d;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    struct train_request t = { 0 };
    struct api_error e = { 0 };
    if (parse_train(d, r->json, &t, &e)) {
        train_request_free(&t);
        return reply_api_error(r, &e);
    }
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s", shown(t.root, t.out));
    int resume = t.resume, steps = t.steps;
    struct job *j = job_new_train(&t);   /* takes the strings */
    if (!j) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    int pos = 0;
    char other[JOB_ID_LEN + 1] = "";
    switch (jobs_submit(d->jobs, j, &pos, other)) {
    case SUBMIT_OK:
        break;
    case SUBMIT_TABLE_FULL:
        jobs_unref(d->jobs, j);
        return api_reply_table_full(d, r);
    case SUBMIT_FULL:
        jobs_unref(d->jobs, j);
        req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "60");
        return reply_error(r, 429, "queue_full", NULL, "too many training jobs are queued (%d)",
                           d->cfg.queue_max);
    case SUBMIT_DRAINING:
        jobs_unref(d->jobs, j);
        return api_reply_draining(r);
    case SUBMIT_CONFLICT:
        jobs_unref(d->jobs, j);
        return reply_error(r, 409, "conflict", "out", "job %s is already training into '%s'",
                           other, out);
    }
    LOG_I("job %s: training queued (%s %s, %d steps, position %d)", j->id,
          resume ? "resuming" : "into", out, steps, pos);
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/train/%s", j->id);
    req_add_header(r, MHD_HTTP_HEADER_LOCATION, loc);
    json_t *o = json_pack("{s:s, s:s, s:i}", "id", j->id, "status", "queued", "queue_position", pos);
    jobs_unref(d->jobs, j);
    return reply_json(r, 202, o);
}

/* ---- GET / DELETE /v1/train/{id}, events ---- */

static struct job *find_train(struct req *r) {
    struct job *j = jobs_find(r->d->jobs, r->params[0]);
    if (j && j->kind != JOB_TRAIN) {   /* kind is immutable: no lock needed */
        jobs_unref(r->d->jobs, j);
        j = NULL;
    }
    return j;
}

static enum MHD_Result no_train(struct req *r) {
    return reply_error(r, 404, "not_found", NULL, "no training job '%s' (unknown, or finished "
                       "more than result_ttl_s ago)", r->params[0]);
}

enum MHD_Result api_train_get(struct req *r) {
    static const char *const allowed[] = { NULL };
    const char *unknown;
    if (req_check_query(r, allowed, &unknown))
        return reply_error(r, 400, "invalid_argument", unknown, "unknown query parameter '%s'", unknown);
    struct job *j = find_train(r);
    if (!j) return no_train(r);
    jobs_lock(r->d->jobs);
    json_t *o = job_to_json_locked(r->d->jobs, j, 1);
    jobs_unlock(r->d->jobs);
    jobs_unref(r->d->jobs, j);
    return reply_json(r, 200, o);
}

enum MHD_Result api_train_cancel(struct req *r) {
    struct job *j = find_train(r);
    if (!j) return no_train(r);
    return api_cancel_job(r, j);
}

enum MHD_Result api_train_events(struct req *r) {
    struct job *j = find_train(r);
    if (!j) return no_train(r);
    return api_job_sse(r, j);
}

/* ---- POST /v1/models/load ---- */

static enum MHD_Result on_load_done(struct req *r) {
    struct sdxld *d = r->d;
    struct job *j = r->job;
    jobs_lock(d->jobs);
    enum job_status st = j->status;
    unsigned http = j->err_http ? (unsigned)j->err_http : 500;
    char code[32], field[32], msg[1024];
    snprintf(code, sizeof code, "%s", j->err_code[0] ? j->err_code : "internal");
    snprintf(field, sizeof field, "%s", j->err_field);
    snprintf(msg, sizeof msg, "%s", j->err_msg ? j->err_msg : "no details");
    jobs_unlock(d->jobs);
    if (!job_status_final(st) || st == JOB_CANCELLED)
        return reply_error(r, 503, "shutting_down", NULL, "the daemon is shutting down; the "
                           "generator was not loaded");
    if (st != JOB_SUCCEEDED) return reply_error(r, http, code, field[0] ? field : NULL, "%s", msg);
    pthread_mutex_lock(&d->info_lock);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "status", "loaded", "id", d->info.model_name,
                          "model", d->cfg.model, "generator", d->generator);
    pthread_mutex_unlock(&d->info_lock);
    return reply_json(r, 200, o);
}

enum MHD_Result api_models_load(struct req *r) {
    struct sdxld *d = r->d;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    static const char *const known[] = { "generator", "lora", "lora_scale", NULL };
    struct api_error e = { 0 };
    char root[PATH_MAX], p[PATH_MAX], pl[PATH_MAX], what[2 * PATH_MAX + 64];
    json_t *v = json_object_get(r->json, "generator"), *vl = json_object_get(r->json, "lora");
    json_t *vs = json_object_get(r->json, "lora_scale");
    float scale = 1.0f;
    if (api_check_unknown(r->json, known, &e)) return reply_api_error(r, &e);
    if (!v && !vl) return reply_error(r, 400, "invalid_argument", "generator", "generator: required (a "
                                      "UNet safetensors file under data_root), or lora (an adapter file)");
    if (vs && (!vl || get_num(vs, "lora_scale", 0, 10, 1, &scale, &e)))
        return vl ? reply_api_error(r, &e)
                  : reply_error(r, 400, "invalid_argument", "lora_scale", "lora_scale: given without lora");
    if (real_root(d, "generator", root, &e) ||
        (v && resolve_path(root, "generator", v, PATH_FILE, p, &e)) ||
        (vl && resolve_path(root, "lora", vl, PATH_FILE, pl, &e)))
        return reply_api_error(r, &e);
    int k = snprintf(what, sizeof what, "%s", v ? shown(root, p) : "(the model's own UNet)");
    if (vl) snprintf(what + k, sizeof what - (size_t)k, " + LoRA %s × %g", shown(root, pl), (double)scale);
    struct job *j = job_new_load(v ? p : NULL, vl ? pl : NULL, scale, what);
    if (!j) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    int pos;
    switch (jobs_submit(d->jobs, j, &pos, NULL)) {
    case SUBMIT_OK:
    case SUBMIT_CONFLICT:   /* training jobs only */
        break;
    case SUBMIT_FULL:
    case SUBMIT_TABLE_FULL:   /* loads are not kept in the table: never */
        jobs_unref(d->jobs, j);
        req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
        return reply_error(r, 429, "queue_full", NULL, "too many model loads are waiting");
    case SUBMIT_DRAINING:
        jobs_unref(d->jobs, j);
        return api_reply_draining(r);
    }
    /* The worker swaps the UNet between batches; the request waits parked (no thread). */
    return req_wait_job(r, j, 0, on_load_done);
}
