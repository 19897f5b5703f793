/* api_train.c — distillation over HTTP: POST /v1/train, GET and DELETE /v1/train/{id},
 * GET /v1/train/{id}/events, and POST /v1/models/load (docs/api.md, Distillation).
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
 * docs/api.md's `prompts` + `real_data` map onto our dataset: the generator's prompts
 * are the captions that come with the images (as in DMD2's 4-step SDXL run, docs/dmd2.md
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

#include "training.h"
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
        return api_fail(e, field, "%s: expected a path (a string), got %s", field, sd_json_kind(v));
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
        return api_fail(e, field, "%s: expected a number, got %s", field, sd_json_kind(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
        return lo_open ? api_fail(e, field, "%s: %g must be above %g and at most %g", field, x, lo, hi)
                       : api_fail(e, field, "%s: %g is out of range %g..%g", field, x, lo, hi);
    *out = (float)x;
    return 0;
}

/* ---- POST /v1/train ---- */

/* The served model's folder as the worker opens it (its real path). */
static void served_model(const struct sdxld *d, char *out) {
    if (!realpath(d->cfg.model, out)) snprintf(out, PATH_MAX, "%s", d->cfg.model);
}

/* o's path options, canonical (so a stored and a given value compare): teacher resolved
 * under root ("" or the served model's path: the served model), generator_init and
 * real_data resolved unless "teacher" / "shapes"; each with its cheap checks. */
static int resolve_options(const struct sdxld *d, const char *root, struct train_options *o,
                           struct api_error *e) {
    char served[PATH_MAX], p[PATH_MAX];
    served_model(d, served);
    if (!o->teacher[0] || !strcmp(o->teacher, d->cfg.model) || !strcmp(o->teacher, served)) {
        snprintf(o->teacher, sizeof o->teacher, "%s", served);
    } else {
        json_t *v = json_string(o->teacher);
        int rc = resolve_path(root, "teacher", v, PATH_DIR, p, e);
        json_decref(v);
        if (rc) return -1;
        if (!file_exists(p, "unet", 1))
            return api_fail(e, "teacher", "teacher: '%s' is not a model folder (no unet/)", o->teacher);
        snprintf(o->teacher, sizeof o->teacher, "%s", p);
    }
    if (strcmp(o->generator_init, "teacher")) {
        json_t *v = json_string(o->generator_init);
        int rc = resolve_path(root, "generator_init", v, PATH_FILE, p, e);
        json_decref(v);
        if (rc) return -1;
        snprintf(o->generator_init, sizeof o->generator_init, "%s", p);
    }
    if (strcmp(o->real_data, "shapes")) {
        json_t *v = json_string(o->real_data);
        int rc = resolve_path(root, "real_data", v, PATH_DIR, p, e);
        json_decref(v);
        if (rc) return -1;
        if (!file_exists(p, "captions.txt", 0))
            return api_fail(e, "real_data", "real_data: '%s' is not a dataset folder (PNG files "
                            "and captions.txt), nor \"shapes\"", o->real_data);
        snprintf(o->real_data, sizeof o->real_data, "%s", p);
    }
    return 0;
}

/* The run directory (t->out) from resume / out, and whether it may hold a run. */
static int run_dir(const char *root, json_t *body, struct train_request *t, struct api_error *e) {
    char p[PATH_MAX];
    json_t *jr = json_object_get(body, "resume"), *jo = json_object_get(body, "out");
    if (jr && json_is_string(jr)) {
        if (resolve_path(root, "resume", jr, PATH_DIR, p, e)) return -1;
        if (!(t->out = strdup(p))) return api_fail(e, "resume", "out of memory");
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
    const char *rf = jr && json_is_string(jr) ? "resume" : "out";
    int has_run = file_exists(t->out, "latest", 0);
    if (t->resume && !has_run)
        return api_fail(e, rf, "%s: '%s' holds no checkpoint to resume from (no 'latest' file)",
                        rf, shown(root, t->out));
    if (!t->resume && has_run)
        return api_fail(e, "out", "out: '%s' already holds a training run; continue it with "
                        "\"resume\" or choose another directory", shown(root, t->out));
    return 0;
}

/* Resume: the run's stored options (state.json) with the request's merged in; an option
 * that may not change and differs is a 400 naming it. */
static int resume_merge(const struct sdxld *d, const char *root, const char *out,
                        struct train_options *o, const struct topt_given *given, struct api_error *e) {
    char ck[PATH_MAX], real[PATH_MAX], err[256], *text = NULL;
    const char *rf = "resume";
    struct train_options *stored = malloc(sizeof *stored);
    struct topt_given present;
    json_t *cfg = NULL;
    int rc = -1;
    if (!stored) return api_fail(e, rf, "out of memory");
    topt_defaults(stored, TRAIN_DMD2);
    /* the checkpoint folder must resolve inside data_root: a link there is not followed */
    if (ckpt_latest(out, ck, sizeof ck) || !realpath(ck, real) || !is_under(root, real, 0) ||
        ckpt_latest_config(out, &text) || !(cfg = json_loads(text, 0, NULL))) {
        const char *why = sd_last_error();
        api_fail(e, rf, "resume: '%s': the latest checkpoint's state.json does not read%s%s%s",
                 shown(root, out), why && why[0] ? " (" : "", why && why[0] ? why : "", why && why[0] ? ")" : "");
    } else if (topt_from_json(stored, &present, TRAIN_DMD2, cfg, err, sizeof err)) {
        api_fail(e, rf, "resume: the run's stored options: %s", err);
    } else if (!resolve_options(d, root, stored, e)) {
        const char *bad = topt_resume_merge(stored, &present, o, given, TRAIN_DMD2);
        if (bad) {
            json_t *a = topt_to_json(stored, TRAIN_DMD2), *b = topt_to_json(o, TRAIN_DMD2);
            char *va = json_dumps(json_object_get(a, bad), JSON_ENCODE_ANY);
            char *vb = json_dumps(json_object_get(b, bad), JSON_ENCODE_ANY);
            api_fail(e, bad, "%s: may not change when a run resumes (the run has %s, the request "
                     "asks for %s); only options marked \"may change\" (docs/daemon.md) can",
                     bad, va ? va : "?", vb ? vb : "?");
            free(va); free(vb); json_decref(a); json_decref(b);
        } else {
            *o = *stored;
            rc = 0;
        }
    }
    sd_clear_error();
    sd_free(text);
    json_decref(cfg);
    free(stored);
    return rc;
}

/* prompts: only the real_data source itself (docs/api.md's pair maps onto our dataset). */
static int check_prompts(const char *root, json_t *body, const struct train_options *o,
                         struct api_error *e) {
    json_t *v = json_object_get(body, "prompts");
    char p[PATH_MAX], cap[PATH_MAX + 16];
    int same;
    if (!v || json_is_null(v)) return 0;
    if (!strcmp(o->real_data, "shapes")) {
        same = !strcmp(json_string_value(v), "shapes");
    } else {
        if (resolve_path(root, "prompts", v, PATH_ANY, p, e)) return -1;
        snprintf(cap, sizeof cap, "%s/captions.txt", o->real_data);
        same = !strcmp(p, o->real_data) || !strcmp(p, cap);
    }
    if (!same)
        return api_fail(e, "prompts", "prompts: a separate prompt list is not supported: the "
                        "generator's prompts are the captions of real_data (DMD2's 4-step "
                        "setting); omit prompts, or name the real_data source");
    return 0;
}

/* The model's defaults, sizes it can take, memory the machine has, and admission. */
static int check_sizes(struct sdxld *d, struct train_request *t, struct api_error *e) {
    struct train_options *o = &t->opt;
    struct train_model_info m;
    char served[PATH_MAX];
    served_model(d, served);
    int teacher_served = !strcmp(o->teacher, served), probed = !train_model_probe(o->teacher, &m);
    if (!probed) {   /* the job will fail when it opens, with the loader's message */
        LOG_D("training request: the teacher does not probe (%s); no estimate", sd_last_error());
        sd_clear_error();
        memset(&m, 0, sizeof m);
        m.native_resolution = 1024;
        m.latent_ch = 4;
        m.vae_scale = 8;
    }
    train_options_finish(o, TRAIN_DMD2, &m, train_ram_bytes());
    int mult = teacher_served && d->size_multiple > 8 ? d->size_multiple : 8;
    if (o->resolution % mult)
        return api_fail(e, "resolution", "resolution: %d is not a multiple of %d%s", o->resolution,
                        mult, mult > 8 ? " (what the teacher's VAE and UNet need)" : "");
    double h = (double)o->resolution / m.vae_scale, ram = train_ram_bytes();
    double cache = (double)o->cache_size * m.latent_ch * h * h * 4;
    if (cache > ram)
        return api_fail(e, "cache_size", "cache_size: %lld latents at %dx%d need %.1f GiB, more "
                        "than this machine's %.1f GiB", o->cache_size, o->resolution, o->resolution,
                        cache / 1073741824.0, ram / 1073741824.0);
    if (!probed) return 0;
    struct train_estimate est;
    train_estimate_dmd2(o, &m, d->cfg.threads, &est);
    t->est_memory_bytes = est.memory_bytes;
    t->est_iteration_s = est.iteration_s;
    double budget = d->cfg.train_memory_mb ? d->cfg.train_memory_mb * 1048576.0 : ram * 3 / 4;
    if (est.memory_bytes > budget)
        return api_fail(e, "", "the run would need about %.2f GiB (estimate: weights %.2f, gradients "
                        "%.2f, optimizer %.2f, activations %.2f, latent cache %.2f GiB), over the "
                        "training memory budget of %.2f GiB (train_memory_mb); lower batch, "
                        "resolution or cache_size, or set recompute or lora_rank",
                        est.memory_bytes / 1073741824.0, est.weights_bytes / 1073741824.0,
                        est.gradients_bytes / 1073741824.0, est.optimizer_bytes / 1073741824.0,
                        est.activations_bytes / 1073741824.0, est.cache_bytes / 1073741824.0,
                        budget / 1073741824.0);
    if (est.iteration_s > d->cfg.train_max_iteration_s)
        return api_fail(e, "", "one iteration would take about %.1f s (estimate), over "
                        "train_max_iteration_s %d: a generation waits for up to one iteration; "
                        "lower batch or resolution", est.iteration_s, d->cfg.train_max_iteration_s);
    return 0;
}

/* The effective options as JSON text, paths as the client writes them (the served
 * model as configured); + out and resume for GET's request. */
static int make_echo(const struct sdxld *d, const char *root, struct train_request *t, struct api_error *e) {
    const struct train_options *o = &t->opt;
    char served[PATH_MAX];
    served_model(d, served);
    json_t *j = topt_to_json(o, TRAIN_DMD2);
    if (j) {
        json_object_set_new(j, "teacher", json_string(!strcmp(o->teacher, served) ? d->cfg.model
                                                                                  : shown(root, o->teacher)));
        json_object_set_new(j, "generator_init", json_string(shown(root, o->generator_init)));
        json_object_set_new(j, "real_data", json_string(shown(root, o->real_data)));
        json_object_set_new(j, "out", json_string(shown(root, t->out)));
        json_object_set_new(j, "resume", json_boolean(t->resume));
    }
    t->echo = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return t->echo ? 0 : api_fail(e, "", "out of memory");
}

/* Parse and validate the body into t (strings malloc'ed; the caller frees t on error). */
static int parse_train(struct sdxld *d, json_t *body, struct train_request *t,
                       struct api_error *e) {
    struct train_options *o = &t->opt;
    struct topt_given given = { 0 };
    char root[PATH_MAX], field[64], err[512];
    topt_defaults(o, TRAIN_DMD2);
    if (topt_from_body(o, &given, TRAIN_DMD2, body, field, err, sizeof err))
        return api_fail(e, field, "%s", err);
    t->resume = o->resume;
    if (real_root(d, "out", root, e) || !(t->root = strdup(root))) return -1;
    if (run_dir(root, body, t, e) || resolve_options(d, root, o, e)) return -1;
    if (!t->resume && train_teacher_defaults(o->teacher, o, &given))
        return api_fail(e, "teacher", "teacher: %s", sd_last_error());
    if (t->resume && resume_merge(d, root, t->out, o, &given, e)) return -1;
    o->resume = t->resume;
    t->steps = o->steps;
    if (check_prompts(root, body, o, e) || check_sizes(d, t, e)) return -1;
    if (!(t->teacher = strdup(o->teacher)) ||
        (strcmp(o->generator_init, "teacher") && !(t->generator_init = strdup(o->generator_init))) ||
        (strcmp(o->real_data, "shapes") && !(t->data = strdup(o->real_data))))
        return api_fail(e, "", "out of memory");
    return make_echo(d, root, t, e);
}

int api_parse_train_request(struct sdxld *d, json_t *body, struct train_request *t, struct api_error *e) {
    return parse_train(d, body, t, e);
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
    double est_mem = t.est_memory_bytes, est_it = t.est_iteration_s;
    struct job *j = job_new_train(d->jobs, &t);   /* takes the strings */
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
    json_object_set_new(o, "estimate", train_estimate_json(est_mem, est_it));
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
    struct job *j = jobs_find(r->d->jobs, r->params[0]);
    if (j) {   /* a job of another kind */
        jobs_unref(r->d->jobs, j);
        return reply_error(r, 404, "not_found", NULL, "job '%s' is not a training job (see "
                           "/v1/jobs/%s)", r->params[0], r->params[0]);
    }
    return api_no_job(r, "training job");
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

/* GET /v1/train/{id}/samples/{i}: the run's i-th sample grid (PNG), read beneath data_root
 * with no link followed (this HTTP thread confines itself for the read, as the worker does
 * for the run). */
enum MHD_Result api_train_sample(struct req *r) {
    long i = req_param_index(r, 1, INT_MAX);
    if (i < 0) return reply_error(r, 404, "not_found", NULL, "no sample '%s'", r->params[1]);
    struct job *j = find_train(r);
    if (!j) return no_train(r);
    char path[PATH_MAX + 2048] = "";
    jobs_lock(r->d->jobs);
    const struct train_state *t = j->train;
    if (i < t->nsamples) snprintf(path, sizeof path, "%s/%s", t->req.root, t->samples[i]);
    jobs_unlock(r->d->jobs);
    jobs_unref(r->d->jobs, j);
    if (!path[0]) return reply_error(r, 404, "not_found", NULL, "run %s has no sample %ld (yet)", r->params[0], i);
    struct sd_root root;
    char *png = NULL;
    size_t len = 0;
    sd_status st = sd_root_open(&root, r->d->cfg.data_root, 0);
    if (!st) {
        const struct sd_root *rs[1] = { &root };
        sd_fs_confine(rs, 1);
        st = sd_read_file(path, 64u << 20, &png, &len);
        sd_fs_confine(NULL, 0);
        sd_root_close(&root);
    }
    if (st) return reply_error(r, 404, "not_found", NULL, "sample %ld of run %s cannot be read", i, r->params[0]);
    return reply_buffer(r, 200, "image/png", png, len, sd_free, png);
}

enum MHD_Result api_train_events(struct req *r) {
    struct job *j = find_train(r);
    if (!j) return no_train(r);
    return api_job_sse(r, j);
}

/* ---- POST /v1/models/load ---- */

int api_load_failed(struct req *r, enum MHD_Result *ret) {
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
        *ret = reply_error(r, 503, "shutting_down", NULL, "the daemon is shutting down; the "
                           "generator was not loaded");
    else if (st != JOB_SUCCEEDED)
        *ret = reply_error(r, http, code, field[0] ? field : NULL, "%s", msg);
    return st != JOB_SUCCEEDED;
}

static enum MHD_Result on_load_done(struct req *r) {
    struct sdxld *d = r->d;
    enum MHD_Result ret;
    if (api_load_failed(r, &ret)) return ret;
    pthread_mutex_lock(&d->info_lock);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "status", "loaded", "id", d->info.model_name,
                          "model", d->cfg.model, "generator", d->generator);
    pthread_mutex_unlock(&d->info_lock);
    return reply_json(r, 200, o);
}

int api_load_paths(const struct sdxld *d, json_t *generator, const char *field, json_t *lora,
                   char *root, char *p, char *pl, struct api_error *e) {
    return real_root(d, field, root, e) ||
           (generator && resolve_path(root, field, generator, PATH_FILE, p, e)) ||
           (lora && resolve_path(root, "lora", lora, PATH_FILE, pl, e)) ? -1 : 0;
}

enum MHD_Result api_load_submit(struct req *r, json_t *generator, const char *field, json_t *lora,
                                float lora_scale, enum MHD_Result (*on_done)(struct req *r)) {
    struct sdxld *d = r->d;
    struct api_error e = { 0 };
    char root[PATH_MAX], p[PATH_MAX], pl[PATH_MAX], what[2 * PATH_MAX + 64];
    if (api_load_paths(d, generator, field, lora, root, p, pl, &e)) return reply_api_error(r, &e);
    int k = snprintf(what, sizeof what, "%s", generator ? shown(root, p) : "(the model's own UNet)");
    if (lora) snprintf(what + k, sizeof what - (size_t)k, " + LoRA %s × %g", shown(root, pl), (double)lora_scale);
    struct job *j = job_new_load(d->jobs, generator ? p : NULL, lora ? pl : NULL, lora_scale, what);
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
    return req_wait_job(r, j, 0, on_done);
}

int api_parse_load_request(json_t *body, json_t **generator, json_t **lora, float *scale, json_t **model,
                           struct api_error *e) {
    static const char *const known[] = { "generator", "lora", "lora_scale", "model", NULL };
    json_t *v = json_object_get(body, "generator"), *vl = json_object_get(body, "lora");
    json_t *vs = json_object_get(body, "lora_scale"), *vm = json_object_get(body, "model");
    *generator = v;
    *lora = vl;
    *model = vm;
    *scale = 1.0f;
    if (api_check_unknown(body, known, e)) return -1;
    if (vm && (v || vl || vs))
        return api_fail(e, "model", "model: a whole model loads alone; load its generator or LoRA with a "
                        "second request");
    if (vm) return 0;
    if (!v && !vl) return api_fail(e, "generator", "generator: required (a UNet safetensors file under "
                                   "data_root), or lora (an adapter file), or model (a model's name, GET /v1/models)");
    if (vs && !vl) return api_fail(e, "lora_scale", "lora_scale: given without lora");
    return vs ? get_num(vs, "lora_scale", 0, 10, 1, scale, e) : 0;
}

enum MHD_Result api_models_load(struct req *r) {
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    struct api_error e = { 0 };
    json_t *v, *vl, *vm;
    float scale;
    if (api_parse_load_request(r->json, &v, &vl, &scale, &vm, &e)) return reply_api_error(r, &e);
    if (vm) return api_model_load_submit(r, vm, "model", NULL);
    return api_load_submit(r, v, "generator", vl, scale, on_load_done);
}
