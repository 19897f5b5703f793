/* api_models.c — models by name over HTTP (docs/api.md, Models): GET /v1/models, POST
 * /v1/models/load {"model": NAME}, and the `model` a generation names.
 *
 * The catalog and the rules are models.h's; the switch itself is the worker's
 * (worker_models.c).  Here a name is resolved and checked before anything is queued, so
 * a client learns at once that a name is unknown (404 on the load route, 400 naming the
 * field on a generation), names a LoRA or a UNet rather than a whole model, or is a
 * model too big for the memory budget; what can only fail while loading (a tensor that
 * does not bind) fails the load with the loader's message, and the old model serves on.
 *
 * The load goes through the load queue and the request waits parked until the worker
 * acted, as a generator swap does.  The daemon's default model (what a generation that
 * names none runs on) becomes the new one when the load is accepted, so generations
 * queued after it wait for it, and those queued before it run first on the model they were
 * queued for; a failed load puts the default back (worker_models.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "models.h"

enum MHD_Result api_models(struct req *r) {
    char err[512];
    int truncated;
    json_t *data = models_list_json(r->d, err, sizeof err, &truncated);
    if (!data) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    pthread_mutex_lock(&r->d->info_lock);
    int loaded = r->d->have_info;
    char def[MODEL_NAME_MAX];
    models_name_of(r->d, r->d->model_default, def, sizeof def);
    pthread_mutex_unlock(&r->d->info_lock);
    json_t *o = json_pack("{s:s, s:o, s:s, s:s?, s:b}", "object", "list", "data", data, "status",
                          loaded ? "loaded" : "loading", "default", loaded ? def : NULL, "truncated", truncated);
    if (o && r->d->cfg.models_dir[0] && err[0]) json_object_set_new(o, "models_dir_error", json_string(err));
    return reply_json(r, 200, o);
}

int api_model_field(struct sdxld *d, json_t *v, const char *field, struct gen_request *g, struct api_error *e) {
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return api_fail(e, field, "%s: expected a model name (GET /v1/models), got %s", field, sd_json_kind(v));
    struct model_ref ref;
    char err[512];
    int free_first;
    if (models_resolve(d, json_string_value(v), field, &ref, err, sizeof err) ||
        models_check_memory(d, ref.name, ref.resident_bytes, 0, &free_first, err, sizeof err))
        return api_fail(e, field, "%s", err);
    if (!(g->model = strdup(ref.path))) return api_fail(e, field, "%s: out of memory", field);
    g->model_named = 1;
    return 0;
}

void api_model_stamp(struct sdxld *d, struct gen_request *g) {
    if (g->model) return;
    pthread_mutex_lock(&d->info_lock);
    g->model = d->model_default[0] ? strdup(d->model_default) : NULL;   /* NULL: any model */
    pthread_mutex_unlock(&d->info_lock);
}

static enum MHD_Result on_model_loaded(struct req *r) {
    struct sdxld *d = r->d;
    enum MHD_Result ret;
    if (api_load_failed(r, &ret)) return ret;
    char name[MODEL_NAME_MAX];
    pthread_mutex_lock(&d->info_lock);
    models_name_of(d, d->model_served, name, sizeof name);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I}", "status", "loaded", "model", name,
                          "id", d->info.model_name, "path", d->model_served,
                          "freed_first", r->job->load_freed_first, "param_bytes",
                          (json_int_t)d->info.param_bytes);
    pthread_mutex_unlock(&d->info_lock);
    return reply_json(r, 200, o);
}

enum MHD_Result api_model_load_submit(struct req *r, json_t *v, const char *field,
                                      enum MHD_Result (*on_done)(struct req *r)) {
    struct sdxld *d = r->d;
    if (!json_is_string(v))
        return reply_error(r, 400, "invalid_argument", field, "%s: expected a model name (GET /v1/models), "
                           "got %s", field, sd_json_kind(v));
    struct model_ref ref;
    char err[512], prev[sizeof r->d->model_default];
    int code = models_resolve(d, json_string_value(v), field, &ref, err, sizeof err), free_first;
    if (code) return reply_error(r, (unsigned)code, code == 404 ? "not_found" : "invalid_argument", field, "%s", err);
    pthread_mutex_lock(&d->info_lock);
    uint64_t old = strcmp(ref.path, d->model_served) ? d->info.param_bytes : 0;
    pthread_mutex_unlock(&d->info_lock);
    if (models_check_memory(d, ref.name, ref.resident_bytes, old, &free_first, err, sizeof err))
        return reply_error(r, 400, "invalid_argument", field, "%s", err);
    struct job *j = job_new_load(d->jobs, NULL, NULL, 1.0f, ref.name);
    if (j && !(j->load_model = strdup(ref.path))) {
        jobs_unref(d->jobs, j);
        j = NULL;
    }
    if (!j) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    pthread_mutex_lock(&d->info_lock);
    snprintf(prev, sizeof prev, "%s", d->model_default);
    snprintf(d->model_default, sizeof d->model_default, "%s", ref.path);
    pthread_mutex_unlock(&d->info_lock);
    int pos;
    enum submit_result sr = jobs_submit(d->jobs, j, &pos, NULL);
    if (sr != SUBMIT_OK) {
        pthread_mutex_lock(&d->info_lock);
        if (!strcmp(d->model_default, ref.path)) snprintf(d->model_default, sizeof d->model_default, "%s", prev);
        pthread_mutex_unlock(&d->info_lock);
        jobs_unref(d->jobs, j);
        if (sr == SUBMIT_DRAINING) return api_reply_draining(r);
        req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
        return reply_error(r, 429, "queue_full", NULL, "too many model loads are waiting");
    }
    LOG_I("model load %s queued: %s%s", j->id, ref.name, free_first ? " (the budget holds it only "
          "instead of the served model: that one is freed first)" : "");
    return req_wait_job(r, j, 0, on_done ? on_done : on_model_loaded);
}
