/* routes.c — the route table and the handlers for jobs and operations (generation is
 * in api_generate.c and api_openai.c, the A1111 API in api_a1111.c, training and model
 * loading in api_train.c).
 *
 * One static table: method, path pattern, handler, body limit (0 = no body; > 0 = a JSON
 * object of at most that many bytes), auth level.  http.c enforces limits, content
 * type, auth and parsing from it; /metrics labels requests by its patterns. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "metrics.h"
#include "replica.h"

/* A probe's answer names the replica (when there is one), so a checker polling through
 * the balancer, or an operator, sees which daemon answered. */
static json_t *with_replica(struct req *r, json_t *o) {
    if (o && r->d->cfg.replica[0]) json_object_set_new(o, "replica", json_string(r->d->cfg.replica));
    return o;
}

static enum MHD_Result api_healthz(struct req *r) {
    return reply_json(r, 200, with_replica(r, json_pack("{s:s}", "status", "ok")));
}

static const char *phase_name(int p) {
    static const char *n[] = { "starting", "loading", "warming_up", "ready", "draining", "stopped" };
    return p >= 0 && p <= PHASE_STOPPED ? n[p] : "unknown";
}

static enum MHD_Result api_readyz(struct req *r) {
    int p = atomic_load(&r->d->phase);
    if (p == PHASE_READY) return reply_json(r, 200, with_replica(r, json_pack("{s:s}", "status", "ready")));
    json_t *body = json_pack("{s:{s:s, s:s}, s:s}", "error", "code", "not_ready", "message",
                             p == PHASE_DRAINING ? "the daemon is shutting down"
                                                 : "the model is loading or warming up",
                             "status", phase_name(p));
    req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    return reply_json(r, 503, with_replica(r, body));
}

static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static enum MHD_Result api_metrics(struct req *r) {
    struct sdxld *d = r->d;
    struct metrics_gauges g = { 0 };
    jobs_gauges(d->jobs, &g);
    int p = atomic_load(&d->phase);
    g.ready = p == PHASE_READY;
    g.draining = p == PHASE_DRAINING;
    char model[256] = "", backend[16];
    pthread_mutex_lock(&d->info_lock);
    if (d->have_info) {
        g.param_bytes = d->info.param_bytes;
        g.scratch_bytes = d->info.scratch_bytes;
        g.lora_bytes = d->info.lora_bytes;
        g.lora_cached = d->info.lora_cached;
        g.lora_loads = d->info.lora_loads;
        g.lora_hits = d->info.lora_hits;
        g.lora_evictions = d->info.lora_evictions;
        snprintf(model, sizeof model, "%s", d->info.model_name);
    }
    snprintf(backend, sizeof backend, "%s", d->backend[0] ? d->backend : d->cfg.backend);
    pthread_mutex_unlock(&d->info_lock);
    g.rss_bytes = rss_bytes();
    g.start_time = d->start_time;
    g.version = SDXLD_VERSION;
    g.model = model;
    g.backend = backend;
    g.replica = d->cfg.replica;
    size_t len;
    char *text = metrics_render(d->metrics, &g, &len);
    if (!text) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    return reply_buffer(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, free, text);
}

static enum MHD_Result api_config(struct req *r) {
    return reply_json(r, 200, config_to_json(&r->d->cfg));
}

/* ---- jobs ---- */

static struct job *find_job(struct req *r) {
    return jobs_find(r->d->jobs, r->params[0]);
}

enum MHD_Result api_no_job(struct req *r, const char *what) {
    const char *id = r->params[0], *self = r->d->cfg.replica;
    char owner[REPLICA_NAME_MAX + 1];
    if (replica_of_id(id, owner, sizeof owner) && strcmp(owner, self))
        return reply_error(r, 404, "not_found", NULL, "%s '%s' belongs to replica '%s', and this is %s%s%s: "
                           "send it to that replica (a proxy routes ids by their prefix, docs/deploy.md)",
                           what, id, owner, self[0] ? "replica '" : "a daemon without a replica name",
                           self, self[0] ? "'" : "");
    char why[256];
    jobs_gone_why(r->d->jobs, id, why, sizeof why);
    return reply_error(r, 404, "not_found", NULL, "no %s '%s': %s", what, id, why);
}

static enum MHD_Result no_job(struct req *r) {
    return api_no_job(r, "job");
}

static enum MHD_Result api_jobs_list(struct req *r) {
    static const char *const allowed[] = { "status", "limit", NULL };
    const char *unknown;
    if (req_check_query(r, allowed, &unknown))
        return reply_error(r, 400, "invalid_argument", unknown, "unknown query parameter '%s'", unknown);
    int status = -1, limit = 100;
    const char *s = req_query(r, "status");
    if (s && (status = job_status_parse(s)) < 0)
        return reply_error(r, 400, "invalid_argument", "status", "status: '%s' is not one of "
                           "queued, running, succeeded, failed, cancelled", s);
    const char *l = req_query(r, "limit");
    if (l) {
        char *end;
        long x = strtol(l, &end, 10);
        if (!*l || *end || x < 1 || x > 1000)
            return reply_error(r, 400, "invalid_argument", "limit", "limit: expected an integer 1..1000");
        limit = (int)x;
    }
    return reply_json(r, 200, jobs_list_json(r->d->jobs, status, limit));
}

static enum MHD_Result api_job_get(struct req *r) {
    static const char *const allowed[] = { "b64_json", NULL };
    const char *unknown;
    if (req_check_query(r, allowed, &unknown))
        return reply_error(r, 400, "invalid_argument", unknown, "unknown query parameter '%s'", unknown);
    const char *b = req_query(r, "b64_json");
    if (b && strcmp(b, "true") && strcmp(b, "false"))
        return reply_error(r, 400, "invalid_argument", "b64_json", "b64_json: expected true or false");
    int with_b64 = !b || !strcmp(b, "true");
    struct job *j = find_job(r);
    if (!j) return no_job(r);
    jobs_lock(r->d->jobs);
    json_t *o = job_to_json_locked(r->d->jobs, j, 1);
    struct job_result *res = with_b64 ? jobs_result_ref_locked(j) : NULL;
    jobs_unlock(r->d->jobs);
    jobs_unref(r->d->jobs, j);
    if (res) {
        /* Base64 outside the lock: images are immutable once the job succeeded. */
        json_t *imgs = json_object_get(json_object_get(o, "result"), "images");
        for (int i = 0; i < res->n && imgs; i++) {
            size_t bl;
            char *s = b64_encode(res->img[i].png, res->img[i].len, &bl);
            if (s) json_object_set_new(json_array_get(imgs, (size_t)i), "b64_json",
                                       json_stringn_nocheck(s, bl));
            free(s);
        }
        job_result_unref(res);
    }
    return reply_json(r, 200, o);
}

static enum MHD_Result on_cancel_final(struct req *r) {
    jobs_lock(r->d->jobs);
    json_t *o = job_to_json_locked(r->d->jobs, r->job, 0);
    int final = job_status_final(r->job->status);
    jobs_unlock(r->d->jobs);
    if (!final) {   /* the daemon stops under us */
        json_decref(o);
        return reply_error(r, 503, "shutting_down", NULL, "the daemon is shutting down");
    }
    return reply_json(r, 200, o);
}

enum MHD_Result api_cancel_job(struct req *r, struct job *j) {
    jobs_lock(r->d->jobs);
    enum MHD_Result ret;
    if (jobs_cancel_locked(r->d->jobs, j, "cancelled", 409, "cancelled by a client request") == 0) {
        LOG_I("job %s %s by request", j->id, job_status_final(j->status) ? "cancelled" : "stopping");
        if (!job_status_final(j->status)) {
            /* A training run stops at its next iteration, after a final checkpoint:
             * answer with the job once that is done (the request parks, no thread). */
            jobs_unlock(r->d->jobs);
            return req_wait_job(r, j, 0, on_cancel_final);
        }
        json_t *o = job_to_json_locked(r->d->jobs, j, 0);
        jobs_unlock(r->d->jobs);
        ret = reply_json(r, 200, o);
    } else {
        ret = reply_error(r, 409, "conflict", NULL, "job %s already %s", j->id,
                          job_status_name(j->status));
        jobs_unlock(r->d->jobs);
    }
    jobs_unref(r->d->jobs, j);
    return ret;
}

static enum MHD_Result api_job_cancel(struct req *r) {
    struct job *j = find_job(r);
    if (!j) return no_job(r);
    /* Stopping a training run is an admin action, whichever path it comes through. */
    if (j->kind == JOB_TRAIN &&
        auth_check(r->d->auth, AUTH_ADMIN, req_header(r, MHD_HTTP_HEADER_AUTHORIZATION))) {
        jobs_unref(r->d->jobs, j);
        return reply_error(r, 401, "unauthorized", NULL,
                           "a valid admin bearer token is required to stop a training job");
    }
    return api_cancel_job(r, j);
}

enum MHD_Result api_job_sse(struct req *r, struct job *j) {
    long last = 0;   /* a reconnecting client resumes after its Last-Event-ID */
    const char *h = req_header(r, "Last-Event-ID");
    if (h) {
        char *end;
        errno = 0;
        last = strtol(h, &end, 10);
        if (!*h || *end || last < 0) last = 0;
        /* event numbers are ints: anything above has seen them all (and last + 1 must
         * not overflow) */
        if (errno == ERANGE || last > INT_MAX) last = INT_MAX;
    }
    return req_sse(r, j, last);
}

static enum MHD_Result api_job_events(struct req *r) {
    struct job *j = find_job(r);
    if (!j) return no_job(r);
    return api_job_sse(r, j);
}

static void result_free_cb(void *cls) { job_result_unref(cls); }

static enum MHD_Result api_job_image(struct req *r) {
    long i = req_param_index(r, 1, JOB_MAX_IMAGES - 1);
    if (i < 0) return reply_error(r, 404, "not_found", NULL, "no image '%s'", r->params[1]);
    struct job *j = find_job(r);
    if (!j) return no_job(r);
    if (j->kind != JOB_GENERATE) {
        jobs_unref(r->d->jobs, j);
        return reply_error(r, 404, "not_found", NULL, "job %s is a training job: it has no images "
                           "(its samples are files under data_root)", r->params[0]);
    }
    jobs_lock(r->d->jobs);
    struct job_result *res = jobs_result_ref_locked(j);
    enum job_status st = j->status;
    int dropped = j->result_dropped, n = j->req.n;
    jobs_unlock(r->d->jobs);
    enum MHD_Result ret;
    if (!res) {
        if (st != JOB_SUCCEEDED)
            ret = reply_error(r, 409, "conflict", NULL, "job %s is %s; images exist once it succeeded",
                              j->id, job_status_name(st));
        else
            ret = reply_error(r, 404, "not_found", NULL, "the images of job %s are gone (%s)", j->id,
                              dropped == 1 ? "delivered to its synchronous client"
                                           : "dropped to keep the kept images within result_max_mb");
    } else if (i >= n) {
        job_result_unref(res);
        ret = reply_error(r, 404, "not_found", NULL, "job %s has %d image(s)", j->id, n);
    } else {
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)res->img[i].seed);
        req_add_header(r, "X-Seed", seed);
        req_add_header(r, "X-Job-Id", j->id);
        ret = reply_buffer(r, 200, gen_format_mime(j->req.format), res->img[i].png, res->img[i].len,
                           result_free_cb, res);
    }
    jobs_unref(r->d->jobs, j);
    return ret;
}

#define KB(n) ((size_t)(n) << 10)
#define IMAGE_BODY KB(16 << 10)   /* routes that take images (img2img): 16 MiB, docs/api.md */

/* The last field, multipart, is left out (0) but on the form routes. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const struct route sdxld_routes[] = {
    /* method   pattern                      handler                 body     auth      quiet error body */
    { "GET",    "/",                         api_webui,              0,       AUTH_NONE,  0, NULL },
    { "GET",    "/healthz",                  api_healthz,            0,       AUTH_NONE,  1, NULL },
    { "GET",    "/readyz",                   api_readyz,             0,       AUTH_NONE,  1, NULL },
    { "GET",    "/metrics",                  api_metrics,            0,       AUTH_NONE,  1, NULL },
    { "POST",   "/v1/generate",              api_generate,           IMAGE_BODY, AUTH_API, 0, NULL },
    { "POST",   "/v1/images/generations",    api_images_generations, KB(64),  AUTH_API,   0, api_openai_error },
    { "POST",   "/v1/images/edits",          api_images_edits,       IMAGE_BODY, AUTH_API, 0, api_openai_error, 1 },
    { "POST",   "/sdapi/v1/txt2img",         api_a1111_txt2img,      KB(64),  AUTH_API,   0, api_a1111_error },
    { "POST",   "/sdapi/v1/img2img",         api_a1111_img2img,      IMAGE_BODY, AUTH_API, 0, api_a1111_error },
    { "GET",    "/sdapi/v1/sd-models",       api_a1111_sd_models,    0,       AUTH_API,   0, api_a1111_error },
    { "GET",    "/sdapi/v1/options",         api_a1111_get_options,  0,       AUTH_API,   0, api_a1111_error },
    { "POST",   "/sdapi/v1/options",         api_a1111_set_options,  KB(16),  AUTH_API,   0, api_a1111_error },
    { "GET",    "/sdapi/v1/progress",        api_a1111_progress,     0,       AUTH_API,   0, api_a1111_error },
    { "POST",   "/sdapi/v1/interrupt",       api_a1111_interrupt,    0,       AUTH_API,   0, api_a1111_error },
    { "GET",    "/v1/jobs",                  api_jobs_list,          0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/jobs/*",                api_job_get,            0,       AUTH_API,   0, NULL },
    { "DELETE", "/v1/jobs/*",                api_job_cancel,         0,       AUTH_API,   0, NULL },
    { "POST",   "/v1/jobs/*/cancel",         api_job_cancel,         0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/jobs/*/events",         api_job_events,         0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/jobs/*/images/*",       api_job_image,          0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/config",                api_config,             0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/models",                api_models,             0,       AUTH_API,   0, NULL },
    { "POST",   "/v1/models/load",           api_models_load,        KB(16),  AUTH_ADMIN, 0, NULL },
    { "POST",   "/v1/train",                 api_train_create,       KB(64),  AUTH_ADMIN, 0, NULL },
    { "GET",    "/v1/train/*",               api_train_get,          0,       AUTH_API,   0, NULL },
    { "DELETE", "/v1/train/*",               api_train_cancel,       0,       AUTH_ADMIN, 0, NULL },
    { "GET",    "/v1/train/*/events",        api_train_events,       0,       AUTH_API,   0, NULL },
    { "GET",    "/v1/train/*/samples/*",     api_train_sample,       0,       AUTH_API,   0, NULL },
};

const int sdxld_nroutes = (int)(sizeof sdxld_routes / sizeof sdxld_routes[0]);
