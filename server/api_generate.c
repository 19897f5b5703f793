/* api_generate.c — POST /v1/generate, and what it shares with POST /v1/images/generations
 * (api_openai.c).
 *
 * Both parse and validate their JSON into one struct gen_request (strictly: every field
 * typed and bounded, unknown fields rejected, each error naming its field), submit a
 * job, and then either answer 202 (async) or park the connection until the job is
 * final and answer with the image or the JSON images.
 *
 * The engine's own checks (engine_check_params) run on the worker, which owns the
 * engine; everything the HTTP contract bounds is checked here, before queueing, so a
 * bad request never costs a queue slot. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "advice.h"
#include "api.h"


enum fmt { FMT_DEFAULT, FMT_PNG, FMT_B64 };

int api_fail(struct api_error *e, const char *field, const char *fmt, ...) {
    e->http = 400;
    e->code = "invalid_argument";
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}


int api_get_int(json_t *v, const char *field, long long lo, long long hi, long long *out,
                   struct api_error *e) {
    if (!json_is_integer(v))
        return api_fail(e, field, "%s: expected an integer, got %s", field, sd_json_kind(v));
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return api_fail(e, field, "%s: %lld is out of range %lld..%lld", field, x, lo, hi);
    *out = x;
    return 0;
}

int api_check_unknown(json_t *body, const char *const *known, struct api_error *e) {
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (!strcmp(*k, key)) { ok = 1; break; }
        if (!ok) return api_fail(e, key, "unknown field '%s'", key);
    }
    return 0;
}

int api_check_size(const struct sdxld *d, const char *field, int v, int max,
                      struct api_error *e) {
    int m = d->size_multiple > 0 ? d->size_multiple : 8;
    if (v < m || v > max)
        return api_fail(e, field, "%s: %d is out of range %d..%d", field, v, m, max);
    if (v % m)
        return api_fail(e, field, "%s: %d is not a multiple of %d", field, v, m);
    return 0;
}

uint64_t api_random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)ts.tv_sec;
    }
    return s & (uint64_t)API_SEED_MAX;
}

int api_parse_seed(json_t *v, int n, int minus_one_random, uint64_t *seed, struct api_error *e) {
    const uint64_t last = (uint64_t)API_SEED_MAX - (uint64_t)(n - 1);   /* the largest that fits */
    long long x = -1;
    if (v && api_get_int(v, "seed", minus_one_random ? -1 : 0, API_SEED_MAX, &x, e)) return -1;
    if (x == -1) {
        *seed = api_random_seed();
        if (*seed > last) *seed -= (uint64_t)(n - 1);
        return 0;
    }
    if ((uint64_t)x > last)
        return api_fail(e, "seed", "seed: seed + %d (image i uses seed + i) must not exceed 2^63-1", n - 1);
    *seed = (uint64_t)x;
    return 0;
}

static int parse_prompt(json_t *body, struct gen_request *g, struct api_error *e) {
    json_t *v = json_object_get(body, "prompt");
    if (!v) return api_fail(e, "prompt", "prompt: required");
    if (!json_is_string(v))
        return api_fail(e, "prompt", "prompt: expected a string, got %s", sd_json_kind(v));
    g->prompt = strdup(json_string_value(v));
    if (!g->prompt) return api_fail(e, "prompt", "prompt: out of memory");
    return 0;
}

int api_parse_base(struct sdxld *d, json_t *body, const char *const *known, struct gen_request *g,
                      struct api_error *e) {
    long long x = 0;
    json_t *v;
    if (api_check_unknown(body, known, e)) return -1;
    if (parse_prompt(body, g, e)) return -1;
    g->n = 1;
    if ((v = json_object_get(body, "n"))) {
        if (api_get_int(v, "n", 1, d->cfg.max_n, &x, e)) return -1;
        g->n = (int)x;
    }
    g->params.width = d->default_width;
    g->params.height = d->default_height;
    return 0;
}

/* POST /v1/generate body → g, *fmt, *async. */
static int parse_generate(struct sdxld *d, json_t *body, struct gen_request *g, enum fmt *fmt,
                          int *async, struct api_error *e) {
    static const char *const known[] = { "prompt", "n", "width", "height", "seed", "steps",
                                         "timesteps", "response_format", "async", "model", "lora", "init_image",
                                         "strength", "mask", NULL };
    static const struct api_img2img_fields img2img = { "init_image", "mask", "strength", API_MASK_WHITE };
    const struct sdxld_config *c = &d->cfg;
    if (api_parse_base(d, body, known, g, e)) return -1;
    long long x = 0;
    json_t *v;
    if ((v = json_object_get(body, "width"))) {
        if (api_get_int(v, "width", 0, 1 << 30, &x, e) ||
            api_check_size(d, "width", (int)x, c->max_width, e)) return -1;
        g->params.width = (int)x;
    }
    if ((v = json_object_get(body, "height"))) {
        if (api_get_int(v, "height", 0, 1 << 30, &x, e) ||
            api_check_size(d, "height", (int)x, c->max_height, e)) return -1;
        g->params.height = (int)x;
    }
    if (api_parse_seed(json_object_get(body, "seed"), g->n, 0, &g->seed, e)) return -1;
    if ((v = json_object_get(body, "lora")) && api_parse_lora(d, v, &g->params, e)) return -1;
    int steps = 0;
    if ((v = json_object_get(body, "steps"))) {
        if (api_get_int(v, "steps", 1, API_MAX_STEPS, &x, e)) return -1;
        steps = (int)x;
    }
    if ((v = json_object_get(body, "timesteps"))) {
        char why[160];
        int n = timesteps_from_json(v, g->params.timesteps, API_MAX_STEPS, 1000, "timesteps", why, sizeof why);
        if (n < 0) return api_fail(e, "timesteps", "%s", why);
        if (steps && steps != n)
            return api_fail(e, "timesteps", "timesteps: %d entries but steps is %d", n, steps);
        g->params.nsteps = n;
    } else {
        g->params.nsteps = steps ? steps : c->default_steps;
        engine_default_timesteps(g->params.nsteps, g->params.timesteps);
    }
    if (api_model_field(d, json_object_get(body, "model"), "model", g, e)) return -1;
    *fmt = FMT_DEFAULT;
    if ((v = json_object_get(body, "response_format"))) {
        const char *s = json_string_value(v);
        if (!s) return api_fail(e, "response_format", "response_format: expected \"png\" or "
                            "\"b64_json\", got %s", sd_json_kind(v));
        if (!strcmp(s, "png")) *fmt = FMT_PNG;
        else if (!strcmp(s, "b64_json")) *fmt = FMT_B64;
        else return api_fail(e, "response_format", "response_format: '%s' is not \"png\" or \"b64_json\"", s);
    }
    *async = 0;
    if ((v = json_object_get(body, "async"))) {
        if (!json_is_boolean(v))
            return api_fail(e, "async", "async: expected a boolean, got %s", sd_json_kind(v));
        *async = json_is_true(v);
    }
    if (*fmt == FMT_PNG && g->n > 1 && !*async)
        return api_fail(e, "response_format", "response_format: \"png\" returns one image; use "
                    "\"b64_json\" for n > 1 (or async and GET /v1/jobs/{id}/images/{i})");
    int sized = json_object_get(body, "width") || json_object_get(body, "height");
    return api_parse_img2img(d, json_object_get(body, "init_image"), json_object_get(body, "mask"),
                             json_object_get(body, "strength"), &img2img, sized, g, e);
}

int api_parse_generate_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e) {
    enum fmt fmt;
    int async;
    return parse_generate(d, body, g, &fmt, &async, e);
}

char *b64_encode(const uint8_t *p, size_t n, size_t *out_len) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = 4 * ((n + 2) / 3);
    char *out = malloc(len + 1), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    if (out_len) *out_len = len;
    return out;
}

/* ---- answering a finished job ---- */

static void result_free_cb(void *cls) { job_result_unref(cls); }

/* Which response a waiting POST /v1/generate wants (r->handler_data). */
enum answer_kind { ANSWER_JSON, ANSWER_PNG };

/* The job ended without images: answer with its error.  Jobs lock held. */
static enum MHD_Result answer_failure(struct req *r, struct job *j) {
    if (!job_status_final(j->status))   /* the daemon is stopping under us */
        return reply_error(r, 503, "shutting_down", NULL,
                           "the daemon is shutting down; job %s was not finished", j->id);
    unsigned http = j->err_http ? (unsigned)j->err_http : 500;
    if (http == 499) http = 409;   /* cancelled because of a disconnect nobody will read */
    if (j->status == JOB_CANCELLED && http < 500 && strcmp(j->err_code, "shutting_down"))
        http = 409;
    return reply_error(r, http, j->err_code[0] ? j->err_code : "internal",
                       j->err_field[0] ? j->err_field : NULL, "job %s %s: %s", j->id,
                       job_status_name(j->status), j->err_msg ? j->err_msg : "no details");
}

struct job_result *api_take_result(struct req *r, int keep, enum MHD_Result *ret) {
    struct sdxld *d = r->d;
    struct job *j = r->job;
    jobs_lock(d->jobs);
    struct job_result *res = jobs_result_ref_locked(j);
    int truncated = j->truncated;
    if (res && !keep) jobs_result_delivered_locked(d->jobs, j);
    if (!res) *ret = answer_failure(r, j);
    jobs_unlock(d->jobs);
    if (!res) return NULL;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)res->img[0].seed);
    req_add_header(r, "X-Seed", seed);
    req_add_header(r, "X-Job-Id", j->id);
    if (truncated) req_add_header(r, "X-Prompt-Truncated", "true");
    if (j->req.warning[0]) req_add_header(r, "X-Warning", j->req.warning);   /* immutable once queued */
    return res;
}

json_t *api_images_b64(const struct job_result *res) {
    json_t *imgs = json_array();
    for (int i = 0; imgs && i < res->n; i++) {
        size_t bl;
        char *b = b64_encode(res->img[i].png, res->img[i].len, &bl);
        json_t *s = b ? json_stringn_nocheck(b, bl) : NULL;
        free(b);
        json_t *o = s ? json_pack("{s:o, s:I}", "b64_json", s, "seed", (json_int_t)res->img[i].seed) : NULL;
        if (!o || json_array_append_new(imgs, o)) {
            json_decref(imgs);
            return NULL;
        }
    }
    return imgs;
}

static enum MHD_Result on_generation_done(struct req *r) {
    struct job *j = r->job;
    enum MHD_Result ret;
    struct job_result *res = api_take_result(r, 0, &ret);
    if (!res) return ret;
    if ((enum answer_kind)r->handler_data == ANSWER_PNG)
        return reply_buffer(r, 200, "image/png", res->img[0].png, res->img[0].len,
                            result_free_cb, res);
    json_t *imgs = api_images_b64(res);
    job_result_unref(res);
    if (!imgs) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory encoding the response");
    jobs_lock(r->d->jobs);
    int truncated = j->truncated;
    double tq = j->queue_ms, tt = j->tm.text_ms, tu = j->tm.unet_ms, tv = j->tm.vae_ms;
    jobs_unlock(r->d->jobs);
    return reply_json(r, 200, json_pack("{s:s, s:I, s:o, s:{s:f, s:f, s:f, s:f}, s:b, s:o}",
        "id", j->id, "created", (json_int_t)time(NULL), "images", imgs, "timings",
        "queue_ms", (double)(long long)(tq + 0.5), "text_ms", (double)(long long)(tt + 0.5),
        "unet_ms", (double)(long long)(tu + 0.5), "vae_ms", (double)(long long)(tv + 0.5),
        "truncated", truncated, "warnings", gen_warnings_json(&j->req)));
}

enum MHD_Result api_reply_table_full(struct sdxld *d, struct req *r) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", jobs_retry_after_s(d->jobs));
    req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    return reply_error(r, 429, "too_many_jobs", NULL, "live jobs fill the job table (retained_jobs_max "
                       "%d, retained_jobs_mb %d); retry later", d->cfg.retained_jobs_max, d->cfg.retained_jobs_mb);
}

/* Generation needs the model: before READY the defaults and size granularity are not
 * known yet (the worker resolves them at load), after it the daemon is draining. */
enum MHD_Result api_reply_draining(struct req *r) {
    req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "30");
    return reply_error(r, 503, "shutting_down", NULL, "the daemon is shutting down");
}

int api_not_ready(struct req *r, enum MHD_Result *ret) {
    int phase = atomic_load(&r->d->phase);
    if (phase == PHASE_READY) return 0;
    if (phase == PHASE_DRAINING || phase == PHASE_STOPPED) {
        *ret = api_reply_draining(r);
    } else {
        req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
        *ret = reply_error(r, 503, "not_ready", NULL, "the model is still loading");
    }
    return 1;
}

enum MHD_Result api_submit(struct req *r, struct gen_request *g, int async,
                           enum MHD_Result (*on_done)(struct req *r)) {
    struct sdxld *d = r->d;
    g->sync = !async;
    advice_size(g->params.width, g->params.height, d->native_width, d->native_height,
                g->warning, sizeof g->warning);
    api_model_stamp(d, g);
    struct job *j = job_new_generate(d->jobs, g);
    if (!j) {
        api_request_free(g);
        return reply_error(r, 503, "resource_exhausted", NULL, "out of memory");
    }
    int pos = 0;
    switch (jobs_submit(d->jobs, j, &pos, NULL)) {
    case SUBMIT_OK:
    case SUBMIT_CONFLICT:   /* training jobs only */
        break;
    case SUBMIT_FULL: {
        jobs_unref(d->jobs, j);
        char ra[16];
        snprintf(ra, sizeof ra, "%d", jobs_retry_after_s(d->jobs));
        req_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        return reply_error(r, 429, "queue_full", NULL, "the queue is full (%d jobs); retry later",
                           d->cfg.queue_max);
    }
    case SUBMIT_TABLE_FULL:
        jobs_unref(d->jobs, j);
        return api_reply_table_full(d, r);
    case SUBMIT_DRAINING:
        jobs_unref(d->jobs, j);
        return api_reply_draining(r);
    }
    if (j->req.warning[0]) LOG_W("job %s: %s", j->id, j->req.warning);
    if (async) {
        char loc[96];
        snprintf(loc, sizeof loc, "/v1/jobs/%s", j->id);
        req_add_header(r, MHD_HTTP_HEADER_LOCATION, loc);
        json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:o}", "id", j->id, "status", "queued",
                              "queue_position", pos, "seed", (json_int_t)j->req.seed,
                              "warnings", gen_warnings_json(&j->req));
        jobs_unref(d->jobs, j);
        return reply_json(r, 202, o);
    }
    return req_wait_job(r, j, 1, on_done);
}

static int wants_png(struct req *r) {
    const char *accept = req_header(r, MHD_HTTP_HEADER_ACCEPT);
    return accept && strstr(accept, "image/png") != NULL;
}

enum MHD_Result api_generate(struct req *r) {
    struct gen_request g = { 0 };
    struct api_error e = { 0 };
    enum fmt fmt = FMT_DEFAULT;
    int async = 0;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    if (parse_generate(r->d, r->json, &g, &fmt, &async, &e)) {
        api_request_free(&g);
        return reply_error(r, e.http, e.code, e.field[0] ? e.field : NULL, "%s", e.msg);
    }
    int png = fmt == FMT_PNG || (fmt == FMT_DEFAULT && g.n == 1 && wants_png(r));
    r->handler_data = png ? ANSWER_PNG : ANSWER_JSON;
    return api_submit(r, &g, async, on_generation_done);
}
