/* jobs_json.c — the API's JSON view of jobs: GET /v1/jobs/{id} and /v1/train/{id}, the
 * job list, and the snapshots that make the SSE event log (contracts in jobs.h and
 * jobs_impl.h; the shapes are docs/api.md's).
 *
 * Only reads jobs, with the jobs lock held: a view never changes the table.  Image bytes
 * are never in here (images appear as seed + url; GET /v1/jobs/{id} adds base64 outside
 * the lock), so building a snapshot stays cheap enough to do on every event.  Paths are
 * shown as clients write them, relative to data_root. */
#include "jobs_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *json_time(double t) { return t > 0 ? json_real(round(t * 1e3) / 1e3) : json_null(); }

/* A number, or null when it is not finite (JSON has no NaN). */
static json_t *json_num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* A path under data_root as the client would write it (relative to data_root). */
const char *jobs_shown_path(const struct train_request *r, const char *abs) {
    size_t n = r->root ? strlen(r->root) : 0;
    if (abs && n > 1 && !strncmp(abs, r->root, n) && abs[n] == '/') return abs + n + 1;
    return abs;
}

json_t *gen_warnings_json(const struct gen_request *r) {
    json_t *a = json_array();
    if (r->warning[0]) json_array_append_new(a, json_string(r->warning));
    return a;
}

static const char *kind_name(enum job_kind k) {
    return k == JOB_GENERATE ? "generate" : k == JOB_TRAIN ? "train" : "load";
}

/* The training fields of GET /v1/train/{id} (docs/api.md), added to the job object. */
static void train_to_json_locked(struct job *j, json_t *o, int detail) {
    const struct train_state *t = j->train;
    const struct train_request *r = &t->req;
    json_object_set_new(o, "step", json_integer(t->step));
    json_object_set_new(o, "total_steps", json_integer(r->steps));
    json_object_set_new(o, "generator_steps", json_integer(t->generator_steps));
    if (t->have_losses) {
        json_t *l = json_object(), *g = json_object();
        json_object_set_new(l, "dm", json_num(t->dm));
        json_object_set_new(l, "gan_g", json_num(t->gan_g));
        json_object_set_new(l, "fake", json_num(t->fake));
        json_object_set_new(l, "gan_d", json_num(t->gan_d));
        json_object_set_new(g, "generator", json_num(t->grad_generator));
        json_object_set_new(g, "fake", json_num(t->grad_fake));
        json_object_set_new(o, "losses", l);
        json_object_set_new(o, "grad_norm", g);
        json_object_set_new(o, "it_per_s", json_num(round(t->it_per_s * 1e3) / 1e3));
        json_object_set_new(o, "eta_s", json_num(round(t->eta_s * 10) / 10));
    } else {
        json_object_set_new(o, "losses", json_null());
        json_object_set_new(o, "grad_norm", json_null());
        json_object_set_new(o, "it_per_s", json_null());
        json_object_set_new(o, "eta_s", json_null());
    }
    json_t *sm = json_array(), *ck = json_array();
    for (int i = 0; i < t->nsamples; i++) json_array_append_new(sm, json_string(t->samples[i]));
    for (int i = 0; i < t->nckpts; i++)
        json_array_append_new(ck, json_pack("{s:i, s:s?}", "step", t->ckpts[i].step,
                                            "path", t->ckpts[i].path));
    json_object_set_new(o, "samples", sm);
    json_object_set_new(o, "checkpoints", ck);
    json_object_set_new(o, "out", json_string(jobs_shown_path(r, r->out)));
    json_object_set_new(o, "generator", t->generator ? json_string(t->generator) : json_null());
    json_object_set_new(o, "resumed_from_step",
                        t->resumed_step >= 0 ? json_integer(t->resumed_step) : json_null());
    json_object_set_new(o, "stopping", json_boolean(t->stop && !job_status_final(j->status)));
    json_object_set_new(o, "estimate", train_estimate_json(r->est_memory_bytes, r->est_iteration_s));
    if (detail) {
        json_t *rq = r->echo ? json_loads(r->echo, 0, NULL) : NULL;
        json_object_set_new(o, "request", rq ? rq : json_null());
        /* the loss history, column-wise: {"step": [...], "dm": [...], ...} */
        json_t *h = json_object(), *col[5];
        static const char *const names[5] = { "step", "dm", "gan_g", "fake", "gan_d" };
        for (int c = 0; c < 5; c++) col[c] = json_array();
        for (int i = 0; i < t->nhist; i++) {
            const struct train_point *p = &t->hist[i];
            json_array_append_new(col[0], json_integer(p->step));
            json_array_append_new(col[1], json_num(p->dm));
            json_array_append_new(col[2], json_num(p->gan_g));
            json_array_append_new(col[3], json_num(p->fake));
            json_array_append_new(col[4], json_num(p->gan_d));
        }
        for (int c = 0; c < 5; c++) json_object_set_new(h, names[c], col[c]);
        json_object_set_new(o, "history", h);
    }
    json_object_set_new(o, "result", j->status == JOB_SUCCEEDED && t->generator
                        ? json_pack("{s:s, s:i}", "generator", t->generator, "step", t->step)
                        : json_null());
}

json_t *job_to_json_locked(struct jobs *js, struct job *j, int detail) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "kind", json_string(kind_name(j->kind)));
    json_object_set_new(o, "status", json_string(job_status_name(j->status)));
    int pos = jobs_queue_position_locked(js, j);
    json_object_set_new(o, "queue_position", pos ? json_integer(pos) : json_null());
    json_object_set_new(o, "progress", json_pack("{s:i, s:i}", "step", j->step, "total", j->total));
    json_object_set_new(o, "created_at", json_time(j->created_at));
    json_object_set_new(o, "started_at", json_time(j->started_at));
    json_object_set_new(o, "finished_at", json_time(j->finished_at));
    if (j->err_msg) {
        json_t *e = json_pack("{s:s, s:s}", "code", j->err_code, "message", j->err_msg);
        if (!e) e = json_pack("{s:s, s:s}", "code", j->err_code, "message", "(not UTF-8)");
        if (j->err_field[0]) json_object_set_new(e, "field", json_string(j->err_field));
        json_object_set_new(o, "error", e);
    } else {
        json_object_set_new(o, "error", json_null());
    }
    if (detail && j->kind == JOB_GENERATE) {
        const struct gen_request *r = &j->req;
        json_t *ts = json_array();
        for (int i = 0; i < r->params.nsteps; i++)
            json_array_append_new(ts, json_integer(r->params.timesteps[i]));
        json_t *rq = json_pack("{s:s?, s:i, s:i, s:i, s:I, s:i, s:o, s:b}",
                               "prompt", r->prompt, "n", r->n, "width", r->params.width,
                               "height", r->params.height, "seed", (json_int_t)r->seed,
                               "steps", r->params.nsteps, "timesteps", ts, "async", !r->sync);
        if (rq) {
            json_object_set_new(rq, "output_format", json_string(gen_format_name(r->format)));
            if (r->format != GEN_FORMAT_PNG)
                json_object_set_new(rq, "output_compression", json_integer(r->quality));
            if (r->quality_hint[0]) json_object_set_new(rq, "quality", json_string(r->quality_hint));
            if (r->style[0]) json_object_set_new(rq, "style", json_string(r->style));
            json_t *lo = r->params.lora[0].name[0] ? json_array() : NULL;
            for (int i = 0; lo && i < ENGINE_LORA_MAX && r->params.lora[i].name[0]; i++) {
                char sc[32];   /* the float's shortest decimal, as the client wrote it */
                snprintf(sc, sizeof sc, "%.7g", (double)r->params.lora[i].scale);
                json_array_append_new(lo, json_pack("{s:s, s:f}", "name", r->params.lora[i].name,
                                                    "scale", strtod(sc, NULL)));
            }
            if (lo) json_object_set_new(rq, "lora", lo);
            if (r->model) {   /* the model's folder or file name (models.h) */
                const char *b = strrchr(r->model, '/');
                json_object_set_new(rq, "model", json_string(b && b[1] ? b + 1 : r->model));
            }
            if (r->init) {   /* the images themselves are not echoed */
                json_object_set_new(rq, "strength", json_real(nearbyint(r->params.strength * 1e4) / 1e4));
                json_object_set_new(rq, "init_image", json_true());
                json_object_set_new(rq, "mask", json_boolean(r->mask != NULL));
            }
            json_t *ig = r->ignored ? json_loads(r->ignored, 0, NULL) : NULL;
            if (ig) json_object_set_new(rq, "ignored", ig);
        }
        json_object_set_new(o, "request", rq ? rq : json_null());
    }
    if (j->kind == JOB_GENERATE) json_object_set_new(o, "warnings", gen_warnings_json(&j->req));
    if (j->kind == JOB_TRAIN) {
        train_to_json_locked(j, o, detail);
    } else if (j->kind == JOB_GENERATE && j->status == JOB_SUCCEEDED) {
        json_t *imgs = json_array();
        for (int i = 0; i < j->req.n; i++) {
            char url[96];
            snprintf(url, sizeof url, "/v1/jobs/%s/images/%d", j->id, i);
            json_t *im = json_pack("{s:I}", "seed", (json_int_t)engine_image_seed(j->req.seed, i));
            if (j->result) json_object_set_new(im, "url", json_string(url));
            json_array_append_new(imgs, im);
        }
        json_t *res = json_pack("{s:o, s:{s:f, s:f, s:f, s:f}, s:b}", "images", imgs, "timings",
                                "queue_ms", round(j->queue_ms), "text_ms", round(j->tm.text_ms),
                                "unet_ms", round(j->tm.unet_ms), "vae_ms", round(j->tm.vae_ms),
                                "truncated", j->truncated);
        json_object_set_new(res, "training_passes_waited", json_integer(j->passes_waited));
        if (j->result_dropped)
            json_object_set_new(res, "images_dropped", json_string(
                j->result_dropped == 1 ? "delivered to the waiting client" :
                                         "dropped to keep the kept images within result_max_mb"));
        json_object_set_new(o, "result", res);
    } else {
        json_object_set_new(o, "result", json_null());
    }
    return o;
}

char *jobs_event_text_locked(struct jobs *js, struct job *j, long seq) {
    json_t *o = job_to_json_locked(js, j, 0);
    json_object_set_new(o, "seq", json_integer(seq));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

json_t *jobs_list_json(struct jobs *js, int status_filter, int limit) {
    json_t *arr = json_array();
    pthread_mutex_lock(&js->lock);
    int n = 0;
    for (struct job *j = js->all_tail; j && n < limit; j = j->all_prev) {
        if (status_filter >= 0 && (int)j->status != status_filter) continue;
        json_t *o = job_to_json_locked(js, j, 0);
        json_object_del(o, "result");   /* the images are at /v1/jobs/{id} */
        json_array_append_new(arr, o);
        n++;
    }
    long total = js->njobs;
    pthread_mutex_unlock(&js->lock);
    return json_pack("{s:o, s:I}", "jobs", arr, "total", (json_int_t)total);
}

json_t *train_estimate_json(double memory_bytes, double iteration_s) {
    if (!(memory_bytes > 0)) return json_null();
    return json_pack("{s:I, s:f}", "memory_bytes", (json_int_t)llround(memory_bytes), "iteration_s", iteration_s);
}
