/* api_a1111.c — the subset of the AUTOMATIC1111 web UI API that its clients call (the
 * `webuiapi` library, image plugins of chat front ends, Krita and Photoshop plugins, bots),
 * mapped onto the daemon's generation jobs, job table and model loads:
 *
 *   POST /sdapi/v1/txt2img     a generation job; base64 PNGs, the request echoed as
 *                              `parameters`, `info` (a JSON string) with the infotexts
 *   GET  /sdapi/v1/sd-models   the served model as A1111's checkpoint list
 *   GET  /sdapi/v1/options     sd_model_checkpoint (the served model)
 *   POST /sdapi/v1/options     sd_model_checkpoint names a model of models_dir (the whole
 *                              model switches, models.h), or switches the served UNet through the
 *                              model-load job of POST /v1/models/load (admin); other keys
 *                              are accepted and ignored
 *   GET  /sdapi/v1/progress    the oldest running generation job, from the job table
 *   POST /sdapi/v1/interrupt   cancels the running generation jobs (the cancel path of
 *                              DELETE /v1/jobs/{id})
 *
 * A txt2img field either drives the job (prompt, seed, width, height, steps, batch_size,
 * n_iter, send_images, override_settings), or changes nothing with the DMD2 generator and
 * is recorded in the job's request as "ignored" (negative_prompt, sampler_name, cfg_scale,
 * ...), or names a feature sdxld does not have and is accepted only switched off
 * (enable_hr, restore_faces, scripts, ...).  One table says which (txt2img_fields); a
 * field it does not list is a 422, as is any value of the wrong type.  Errors are in
 * A1111's shape (api_a1111_error).  docs/daemon.md has the contract. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "models.h"

enum a1111_answer { SEND_IMAGES = 1 };   /* r->handler_data: a flag */

/* ---- errors ---- */

/* A1111 answers every error through its middleware (modules/api/api.py, api_middleware →
 * handle_exception):
 *     {"error": type(e).__name__, "detail": e.detail, "body": e.body, "errors": str(e)}
 * with the exception's status_code.  For an HTTPException detail is the message, body is
 * "" and str(e) is "STATUS: detail" (starlette).  A request body that fails validation
 * is a 422 RequestValidationError, whose detail is FastAPI's list
 * [{"loc": ["body", FIELD], "msg", "type"}] and whose body is the request body (the
 * txt2img handler fills that in: this function does not see the request). */
json_t *api_a1111_error(unsigned status, const char *code, const char *field, const char *msg) {
    char errors[1100];
    if (status == 422) {
        json_t *loc = field ? json_pack("[s, s]", "body", field) : json_pack("[s]", "body");
        return json_pack("{s:s, s:[{s:o, s:s, s:s}], s:s, s:s}", "error", "RequestValidationError",
                         "detail", "loc", loc, "msg", msg, "type", code, "body", "", "errors", msg);
    }
    snprintf(errors, sizeof errors, "%u: %s", status, msg);
    return json_pack("{s:s, s:s, s:s, s:s}", "error", "HTTPException", "detail", msg, "body", "",
                     "errors", errors);
}

/* A validation failure of the request body: 422 in FastAPI's shape, the body included. */
static enum MHD_Result reply_invalid(struct req *r, const struct api_error *e) {
    json_t *o = api_a1111_error(422, e->code ? e->code : "invalid_argument",
                                e->field[0] ? e->field : NULL, e->msg);
    if (o && r->json) json_object_set(o, "body", r->json);
    return reply_json(r, 422, o);
}

/* ---- the served model ---- */

/* The served model's title (the engine's model name: the folder's name, ":generator"
 * when a separate UNet is served, "+lora" with a merged adapter) and the title of the
 * model folder's own UNet (the name up to the first ':' or '+').  Nonzero if loaded. */
static int model_titles(struct sdxld *d, char *served, char *own, size_t n) {
    pthread_mutex_lock(&d->info_lock);
    int have = d->have_info;
    snprintf(served, n, "%s", have ? d->info.model_name : "");
    pthread_mutex_unlock(&d->info_lock);
    snprintf(own, n, "%.*s", (int)strcspn(served, ":+"), served);
    return have;
}

static json_t *model_item(const char *title, const char *filename) {
    return json_pack("{s:s, s:s, s:n, s:n, s:s, s:n}", "title", title, "model_name", title, "hash",
                     "sha256", "filename", filename, "config");
}

/* GET /sdapi/v1/sd-models: the served model, then (while another UNet is served) the model
 * folder's own, which POST /sdapi/v1/options can switch back to, then the whole models of
 * models_dir (models.h) by name. */
enum MHD_Result api_a1111_sd_models(struct req *r) {
    struct sdxld *d = r->d;
    char served[256], own[256], gen[CFG_STR_MAX];
    json_t *list = json_array();
    if (model_titles(d, served, own, sizeof served)) {
        pthread_mutex_lock(&d->info_lock);
        snprintf(gen, sizeof gen, "%s", d->generator);
        pthread_mutex_unlock(&d->info_lock);
        int other = strcmp(served, own) != 0;
        json_array_append_new(list, model_item(served, other && gen[0] ? gen : d->cfg.model));
        if (other) json_array_append_new(list, model_item(own, d->cfg.model));
    }
    struct model_entry *m = NULL;
    int n = 0, truncated;
    char err[256];
    if (d->cfg.models_dir[0]) models_scan(d, &m, &n, &truncated, err, sizeof err);
    for (int i = 0; i < n; i++)   /* the whole models of models_dir, by their catalog names */
        if ((m[i].p.kind == ENGINE_MODEL_DIFFUSERS || m[i].p.kind == ENGINE_MODEL_CHECKPOINT) &&
            strcmp(m[i].name, served) && strcmp(m[i].name, own))
            json_array_append_new(list, model_item(m[i].name, m[i].path));
    free(m);
    return reply_json(r, 200, list);
}

/* GET /sdapi/v1/options: the options that mean something here. */
enum MHD_Result api_a1111_get_options(struct req *r) {
    char served[256], own[256];
    int have = model_titles(r->d, served, own, sizeof served);
    return reply_json(r, 200, json_pack("{s:s?, s:n, s:s}", "sd_model_checkpoint", have ? served : NULL,
                                        "sd_checkpoint_hash", "samples_format", "png"));
}

static enum MHD_Result on_switch_done(struct req *r) {
    enum MHD_Result ret;
    if (api_load_failed(r, &ret)) return ret;
    char served[256], own[256];
    model_titles(r->d, served, own, sizeof served);
    return reply_json(r, 200, json_pack("{s:s}", "sd_model_checkpoint", served));
}

int api_parse_a1111_options(struct sdxld *d, json_t *body, json_t **target, int *to_own,
                            struct api_error *e) {
    char served[256], own[256];
    json_t *v = json_object_get(body, "sd_model_checkpoint");
    *target = NULL;
    *to_own = 0;
    model_titles(d, served, own, sizeof served);
    if (!v || json_is_null(v) || (json_is_string(v) && !strcmp(json_string_value(v), served)))
        return 0;
    if (!json_is_string(v))
        return api_fail(e, "sd_model_checkpoint", "sd_model_checkpoint: expected a string, got %s",
                        sd_json_kind(v));
    *target = v;
    *to_own = !strcmp(json_string_value(v), own);
    return 0;
}

/* POST /sdapi/v1/options: sd_model_checkpoint names the served model (nothing to do), the
 * model folder's own UNet, or a UNet file under data_root (as POST /v1/models/load's
 * "generator"); a switch needs an admin token.  Other keys are A1111 settings sdxld does not
 * have: accepted, logged and ignored. */
enum MHD_Result api_a1111_set_options(struct req *r) {
    struct sdxld *d = r->d;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    char served[256], own[256], keys[512] = "";
    const char *key;
    json_t *val, *v;
    json_object_foreach(r->json, key, val)
        if (strcmp(key, "sd_model_checkpoint") && !key[strcspn(key, "\r\n")] &&   /* one log line */
            strlen(keys) + strlen(key) + 3 < sizeof keys)
            snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", keys[0] ? ", " : "", key);
    if (keys[0]) LOG_I("POST /sdapi/v1/options: ignored (no such setting in sdxld): %s", keys);
    struct api_error e = { 0 };
    int to_own;
    if (api_parse_a1111_options(d, r->json, &v, &to_own, &e)) return reply_invalid(r, &e);
    model_titles(d, served, own, sizeof served);
    if (!v) return reply_json(r, 200, json_pack("{s:s}", "sd_model_checkpoint", served));
    if (auth_check(d->auth, AUTH_ADMIN, req_header(r, MHD_HTTP_HEADER_AUTHORIZATION)))
        return reply_error(r, 401, "unauthorized", NULL, "switching the model (sd_model_checkpoint) "
                           "needs a valid admin bearer token");
    struct model_ref ref;
    char err[512];
    int whole = d->cfg.models_dir[0] && !models_resolve(d, json_string_value(v), "sd_model_checkpoint", &ref,
                                                        err, sizeof err);
    pthread_mutex_lock(&d->info_lock);
    whole = whole && strcmp(ref.path, d->model_served);
    pthread_mutex_unlock(&d->info_lock);
    if (whole) {   /* a model of models_dir: the whole model switches (api_models.c) */
        LOG_I("POST /sdapi/v1/options: switching to model %s", ref.name);
        return api_model_load_submit(r, v, "sd_model_checkpoint", on_switch_done);
    }
    LOG_I("POST /sdapi/v1/options: switching to %s", to_own ? "the model folder's own UNet" : json_string_value(v));
    return api_load_submit(r, to_own ? NULL : v, "sd_model_checkpoint", NULL, 1.0f, on_switch_done);
}

/* ---- progress, interrupt ---- */

/* The running generation jobs as job objects (jobs_list_json's), oldest first. */
static json_t *running_generations(struct sdxld *d) {
    json_t *l = jobs_list_json(d->jobs, JOB_RUNNING, 1000), *all = json_object_get(l, "jobs");
    json_t *out = json_array();
    for (size_t i = json_array_size(all); i-- > 0;) {
        json_t *o = json_array_get(all, i);
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (kind && !strcmp(kind, "generate")) json_array_append(out, o);
    }
    json_decref(l);
    return out;
}

/* A1111's job_timestamp: the local time as YYYYmmddHHMMSS. */
static void job_timestamp(double unix_s, char *out, size_t n) {
    time_t t = (time_t)unix_s;
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(out, n, "%Y%m%d%H%M%S", &tm)) snprintf(out, n, "0");
}

/* GET /sdapi/v1/progress: A1111's ProgressResponse for the oldest running generation job
 * (the one its clients wait for).  job_count is that job's images, job_no the images
 * done, sampling_step(s) the sampler steps of the image under way, so progress = (job_no +
 * sampling_step / sampling_steps) / job_count as in A1111.  eta_relative is A1111's
 * estimate: the time so far scaled by the part left.  No previews: current_image is null,
 * and the query (skip_current_image) is ignored, as FastAPI ignores unknown ones. */
enum MHD_Result api_a1111_progress(struct req *r) {
    json_t *run = running_generations(r->d), *cur = json_array_get(run, 0);
    int step = 0, total = 0, n = 0, nsteps = 1;
    double started = 0, created = 0;
    const char *id = cur ? json_string_value(json_object_get(cur, "id")) : NULL;
    struct job *j = id ? jobs_find(r->d->jobs, id) : NULL;
    if (j) {
        jobs_lock(r->d->jobs);
        step = j->step;
        total = j->total;
        started = j->started_at;
        created = j->created_at;
        jobs_unlock(r->d->jobs);
        n = j->req.n;   /* the request is immutable once submitted */
        nsteps = j->req.params.nsteps > 0 ? j->req.params.nsteps : 1;
        jobs_unref(r->d->jobs, j);
    }
    double progress = total > 0 ? (double)step / total : 0, eta = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double elapsed = started > 0 ? now.tv_sec + now.tv_nsec * 1e-9 - started : 0;
    if (n > 0 && elapsed > 0) eta = elapsed / (progress > 0.01 ? progress : 0.01) - elapsed;
    char ts[32] = "0";
    if (n > 0) job_timestamp(created, ts, sizeof ts);
    json_t *o = json_pack("{s:f, s:f, s:{s:b, s:b, s:b, s:s, s:i, s:s, s:i, s:i, s:i}, s:n, s:n}",
        "progress", progress, "eta_relative", eta, "state", "skipped", 0, "interrupted", 0,
        "stopping_generation", 0, "job", n > 0 ? id : "", "job_count", n, "job_timestamp", ts,
        "job_no", n > 0 ? step / nsteps : 0, "sampling_step", n > 0 ? step % nsteps : 0,
        "sampling_steps", n > 0 ? nsteps : 0, "current_image", "textinfo");
    json_decref(run);
    return reply_json(r, 200, o);
}

/* POST /sdapi/v1/interrupt: cancel every running generation job (a synchronous client of
 * one gets 409 cancelled); queued jobs and training runs go on, as in A1111. */
enum MHD_Result api_a1111_interrupt(struct req *r) {
    json_t *run = running_generations(r->d), *done = json_array(), *o;
    size_t i;
    json_array_foreach(run, i, o) {
        const char *id = json_string_value(json_object_get(o, "id"));
        struct job *j = id ? jobs_find(r->d->jobs, id) : NULL;
        if (!j) continue;
        if (jobs_cancel(r->d->jobs, j, "cancelled", 409, "interrupted by POST /sdapi/v1/interrupt") == 0) {
            LOG_I("job %s cancelled by POST /sdapi/v1/interrupt", id);
            json_array_append_new(done, json_string(id));
        }
        jobs_unref(r->d->jobs, j);
    }
    json_decref(run);
    return reply_json(r, 200, json_pack("{s:o}", "interrupted", done));
}

/* ---- txt2img: the request ---- */

enum rule {
    USED,      /* read by parse_txt2img */
    IGNORED,   /* changes nothing with the DMD2 generator: recorded in the job as "ignored" */
    OFF,       /* a feature sdxld does not have: accepted only switched off (null, false, a
                  number <= 0, "", [], {}) */
};
enum type { T_ANY, T_STR, T_NUM, T_INT, T_BOOL, T_LIST, T_OBJ };
struct field { const char *name; enum rule rule; enum type type; const char *what; };

/* Every field of A1111's StableDiffusionTxt2ImgProcessingAPI (modules/processing.py and
 * modules/api/models.py) that clients send.  null is "absent" for every one. */
static const struct field txt2img_fields[] = {
    { "prompt", USED, T_STR, NULL },           { "seed", USED, T_INT, NULL },
    { "width", USED, T_INT, NULL },            { "height", USED, T_INT, NULL },
    { "steps", USED, T_INT, NULL },            { "batch_size", USED, T_INT, NULL },
    { "n_iter", USED, T_INT, NULL },           { "send_images", USED, T_BOOL, NULL },
    { "override_settings", USED, T_OBJ, NULL }, { "lora", USED, T_LIST, NULL },   /* sdxld's own (api_lora.c) */
    /* the DMD2 sampler: no unconditional branch (so no negative prompt, no CFG), one
     * sampler and one schedule, no sampler noise settings */
    { "negative_prompt", IGNORED, T_STR, NULL }, { "sampler_name", IGNORED, T_STR, NULL },
    { "sampler_index", IGNORED, T_ANY, NULL },   { "scheduler", IGNORED, T_STR, NULL },
    { "cfg_scale", IGNORED, T_NUM, NULL },       { "eta", IGNORED, T_NUM, NULL },
    { "s_churn", IGNORED, T_NUM, NULL },         { "s_tmax", IGNORED, T_NUM, NULL },
    { "s_tmin", IGNORED, T_NUM, NULL },          { "s_noise", IGNORED, T_NUM, NULL },
    { "s_min_uncond", IGNORED, T_NUM, NULL },
    /* used only with subseed_strength > 0 or enable_hr, both refused below */
    { "subseed", IGNORED, T_INT, NULL },         { "denoising_strength", IGNORED, T_NUM, NULL },
    { "firstphase_width", IGNORED, T_INT, NULL }, { "firstphase_height", IGNORED, T_INT, NULL },
    { "hr_scale", IGNORED, T_NUM, NULL },        { "hr_upscaler", IGNORED, T_STR, NULL },
    { "hr_second_pass_steps", IGNORED, T_INT, NULL }, { "hr_resize_x", IGNORED, T_INT, NULL },
    { "hr_resize_y", IGNORED, T_INT, NULL },     { "hr_checkpoint_name", IGNORED, T_STR, NULL },
    { "hr_sampler_name", IGNORED, T_STR, NULL }, { "hr_scheduler", IGNORED, T_STR, NULL },
    { "hr_prompt", IGNORED, T_STR, NULL },       { "hr_negative_prompt", IGNORED, T_STR, NULL },
    { "refiner_switch_at", IGNORED, T_NUM, NULL },
    /* saving to disk and bookkeeping: sdxld saves nothing */
    { "do_not_save_samples", IGNORED, T_BOOL, NULL }, { "do_not_save_grid", IGNORED, T_BOOL, NULL },
    { "save_images", IGNORED, T_BOOL, NULL },
    { "override_settings_restore_afterwards", IGNORED, T_BOOL, NULL },
    { "disable_extra_networks", IGNORED, T_BOOL, NULL }, { "seed_enable_extras", IGNORED, T_BOOL, NULL },
    { "comments", IGNORED, T_ANY, NULL },        { "force_task_id", IGNORED, T_STR, NULL },
    /* features sdxld does not have */
    { "enable_hr", OFF, T_BOOL, "the hires fix" },
    { "restore_faces", OFF, T_BOOL, "face restoration" },
    { "tiling", OFF, T_BOOL, "tiling" },
    { "subseed_strength", OFF, T_NUM, "variation seeds" },
    { "seed_resize_from_h", OFF, T_INT, "seed resizing" },
    { "seed_resize_from_w", OFF, T_INT, "seed resizing" },
    { "styles", OFF, T_LIST, "prompt styles" },
    { "script_name", OFF, T_STR, "scripts" },
    { "script_args", OFF, T_LIST, "scripts" },
    { "alwayson_scripts", OFF, T_OBJ, "always-on scripts (ControlNet, ADetailer, ...)" },
    { "refiner_checkpoint", OFF, T_STR, "the refiner" },
    { "infotext", OFF, T_STR, "infotext overrides" },
    { "firstpass_image", OFF, T_STR, "a first-pass image" },
};
#define NFIELDS (sizeof txt2img_fields / sizeof txt2img_fields[0])

/* img2img's own fields (StableDiffusionImg2ImgProcessingAPI), looked up before the txt2img
 * ones (denoising_strength drives img2img).  One init image per request; the mask and the
 * init image have the request's size (sdxld does not resize: resize_mode changes nothing);
 * the mask is used as sent (no blur, no "only masked" crop: inpaint_full_res is recorded,
 * not used). */
static const struct field img2img_fields[] = {
    { "init_images", USED, T_LIST, NULL },        { "denoising_strength", USED, T_NUM, NULL },
    { "mask", USED, T_STR, NULL },                { "inpainting_mask_invert", USED, T_INT, NULL },
    { "include_init_images", USED, T_BOOL, NULL },
    { "resize_mode", IGNORED, T_INT, NULL },      { "image_cfg_scale", IGNORED, T_NUM, NULL },
    { "mask_blur", IGNORED, T_INT, NULL },        { "mask_blur_x", IGNORED, T_INT, NULL },
    { "mask_blur_y", IGNORED, T_INT, NULL },      { "inpainting_fill", IGNORED, T_INT, NULL },
    { "inpaint_full_res", IGNORED, T_ANY, NULL }, { "inpaint_full_res_padding", IGNORED, T_INT, NULL },
    { "initial_noise_multiplier", IGNORED, T_NUM, NULL }, { "mask_round", IGNORED, T_BOOL, NULL },
    { "latent_mask", OFF, T_STR, "a separate latent mask" },
};
#define NIMG2IMG (sizeof img2img_fields / sizeof img2img_fields[0])

/* The rule for key: img2img's table first (when img2img), then txt2img's; NULL if unknown. */
static const struct field *find_field(const char *key, int img2img) {
    for (size_t i = 0; img2img && i < NIMG2IMG; i++)
        if (!strcmp(img2img_fields[i].name, key)) return &img2img_fields[i];
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(txt2img_fields[i].name, key)) return &txt2img_fields[i];
    return NULL;
}

static int type_ok(const json_t *v, enum type t) {
    switch (t) {
    case T_STR: return json_is_string(v);
    case T_NUM: return json_is_number(v);
    case T_INT: return json_is_integer(v);
    case T_BOOL: return json_is_boolean(v);
    case T_LIST: return json_is_array(v);
    case T_OBJ: return json_is_object(v);
    case T_ANY: break;
    }
    return 1;
}

static int switched_off(const json_t *v) {
    return json_is_false(v) || (json_is_number(v) && json_number_value(v) <= 0) ||
           (json_is_string(v) && !json_string_length(v)) || (json_is_array(v) && !json_array_size(v)) ||
           (json_is_object(v) && !json_object_size(v));
}

/* Every field known, of its type, OFF ones switched off; the IGNORED ones present go to
 * *ignored (a new object). */
static int check_fields(json_t *body, int img2img, json_t **ignored, struct api_error *e) {
    static const char *const tn[] = { "any value", "a string", "a number", "an integer",
                                      "a boolean", "a list", "an object" };
    const char *key;
    json_t *v;
    *ignored = json_object();
    json_object_foreach(body, key, v) {
        const struct field *f = find_field(key, img2img);
        if (!f) return api_fail(e, key, "unknown field '%s' (sdxld takes the %s fields listed "
                                "in docs/daemon.md)", key, img2img ? "img2img" : "txt2img");
        if (json_is_null(v)) continue;
        if (!type_ok(v, f->type))
            return api_fail(e, key, "%s: expected %s, got %s", key, tn[f->type], sd_json_kind(v));
        if (f->rule == OFF && !switched_off(v))
            return api_fail(e, key, "%s: %s is not supported by sdxld (it serves the 4-step DMD2 "
                            "generator only); leave it out or switch it off", key, f->what);
        if (f->rule == IGNORED) json_object_set(*ignored, key, v);
    }
    return 0;
}

/* A USED field: NULL when absent or null. */
static json_t *used(json_t *body, const char *key) {
    json_t *v = json_object_get(body, key);
    return json_is_null(v) ? NULL : v;
}

/* An integer field within lo..hi, or def when absent. */
static int get_int_or(json_t *body, const char *key, long long lo, long long hi, long long def,
                      long long *out, struct api_error *e) {
    json_t *v = used(body, key);
    *out = def;
    return v ? api_get_int(v, key, lo, hi, out, e) : 0;
}

/* override_settings: sd_model_checkpoint names the served model, or a model of models_dir
 * that this request runs on (as /v1/generate's "model"; the daemon's default stays); other
 * keys are A1111 settings sdxld does not have. */
static int check_overrides(struct sdxld *d, json_t *body, json_t *ignored, struct gen_request *g,
                           struct api_error *e) {
    json_t *o = used(body, "override_settings");
    if (!o || !json_object_size(o)) return 0;
    json_t *ck = json_object_get(o, "sd_model_checkpoint");
    char served[256], own[256];
    model_titles(d, served, own, sizeof served);
    if (ck && !json_is_null(ck) && (!json_is_string(ck) || strcmp(json_string_value(ck), served))) {
        if (d->cfg.models_dir[0] && json_is_string(ck))
            return api_model_field(d, ck, "override_settings", g, e);
        return api_fail(e, "override_settings", "override_settings.sd_model_checkpoint: the served model "
                        "is '%s'; switch models with POST /sdapi/v1/options", served);
    }
    json_object_set(ignored, "override_settings", o);
    return 0;
}

/* img2img: init_images (one base64 image), mask (white = repaint; black with
 * inpainting_mask_invert 1), denoising_strength (default 0.75 as in A1111; 1 with a mask);
 * without width and height the request's size is the image's. */
static int parse_init(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e) {
    json_t *list = used(body, "init_images"), *inv = used(body, "inpainting_mask_invert");
    if (!list || json_array_size(list) != 1)
        return api_fail(e, "init_images", "init_images: expected a list of one base64 image (sdxld takes one per "
                        "request), got %zu", list ? json_array_size(list) : 0);
    long long x = 0;
    if (inv && api_get_int(inv, "inpainting_mask_invert", 0, 1, &x, e)) return -1;
    const struct api_img2img_fields f = { "init_images", "mask", "denoising_strength",
                                          x ? API_MASK_BLACK : API_MASK_WHITE };
    json_t *ds = used(body, "denoising_strength"), *dflt = ds ? NULL : json_real(API_DEFAULT_STRENGTH);
    int rc = api_parse_img2img(d, json_array_get(list, 0), used(body, "mask"), ds ? ds : dflt, &f,
                               used(body, "width") || used(body, "height"), g, e);
    json_decref(dflt);
    return rc;
}

/* POST /sdapi/v1/txt2img body → g and *send.  A1111 clients ask for 20 to 50 sampler
 * steps; the DMD2 generator has at most API_MAX_STEPS: 1..4 run as asked, more run the
 * full schedule (engine_default_timesteps), absent is default_steps.  batch_size × n_iter
 * images make one job (at most max_n), image i with seed + i as in A1111's all_seeds. */
static int parse_txt2img(struct sdxld *d, json_t *body, int img2img, struct gen_request *g, int *send,
                         struct api_error *e) {
    const struct sdxld_config *c = &d->cfg;
    json_t *ignored = NULL, *v;
    long long bs, ni, w, h, steps;
    int rc = check_fields(body, img2img, &ignored, e) || check_overrides(d, body, ignored, g, e);
    if (!rc && json_object_size(ignored)) g->ignored = json_dumps(ignored, JSON_COMPACT);
    json_decref(ignored);
    if (rc) return -1;
    v = used(body, "prompt");
    if (!(g->prompt = strdup(v ? json_string_value(v) : ""))) return api_fail(e, "prompt", "prompt: out of memory");
    if (api_prompt_lora(d, g->prompt, &g->params, e) ||
        ((v = used(body, "lora")) && api_parse_lora(d, v, &g->params, e)))
        return -1;
    if (get_int_or(body, "batch_size", 1, c->max_n, 1, &bs, e) ||
        get_int_or(body, "n_iter", 1, c->max_n, 1, &ni, e))
        return -1;
    if (bs * ni > c->max_n)
        return api_fail(e, "n_iter", "n_iter: batch_size %lld × n_iter %lld is %lld images; at most %d "
                        "(max_n) per request", bs, ni, bs * ni, c->max_n);
    g->n = (int)(bs * ni);
    if (get_int_or(body, "width", 0, 1 << 30, d->default_width, &w, e) ||
        api_check_size(d, "width", (int)w, c->max_width, e) ||
        get_int_or(body, "height", 0, 1 << 30, d->default_height, &h, e) ||
        api_check_size(d, "height", (int)h, c->max_height, e))
        return -1;
    g->params.width = (int)w;
    g->params.height = (int)h;
    if (api_parse_seed(used(body, "seed"), g->n, 1, &g->seed, e) ||
        get_int_or(body, "steps", 1, INT_MAX, c->default_steps, &steps, e))
        return -1;
    g->params.nsteps = steps < API_MAX_STEPS ? (int)steps : API_MAX_STEPS;
    engine_default_timesteps(g->params.nsteps, g->params.timesteps);
    v = used(body, "send_images");
    *send = !v || json_is_true(v);
    return img2img ? parse_init(d, body, g, e) : 0;
}

int api_parse_txt2img_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e) {
    int send;
    return parse_txt2img(d, body, 0, g, &send, e);
}

/* ---- txt2img: the answer ---- */

/* The model an infotext names ("..., Model: NAME, ..."): what made the images, which is
 * not the served one when the request named another (override_settings, models.h). */
static void infotext_model(json_t *infotexts, char *out, size_t n) {
    const char *s = json_string_value(json_array_get(infotexts, 0));
    const char *m = s ? strstr(s, ", Model: ") : NULL;
    if (m) snprintf(out, n, "%.*s", (int)strcspn(m + 9, ","), m + 9);
}

/* A1111's Processed.js() for the job: what made the images (sampler_name "DMD2",
 * cfg_scale 1, the steps run, no negative prompt: the same as each infotext), and
 * "ignored", the request's fields that changed nothing.  Steals infotexts. */
static json_t *info_json(struct req *r, json_t *infotexts) {
    const struct gen_request *g = &r->job->req;   /* immutable once submitted */
    char served[256], own[256], ts[32];
    model_titles(r->d, served, own, sizeof served);
    infotext_model(infotexts, served, sizeof served);
    job_timestamp(r->job->created_at, ts, sizeof ts);
    json_t *v = used(r->json, "batch_size");
    json_int_t batch = v ? json_integer_value(v) : 1;
    json_t *prompts = json_array(), *negs = json_array(), *seeds = json_array(), *names = json_array();
    for (int i = 0; i < g->n; i++) {
        json_array_append_new(prompts, json_string(g->prompt));
        json_array_append_new(negs, json_string(""));
        json_array_append_new(seeds, json_integer((json_int_t)engine_image_seed(g->seed, i)));
    }
    json_t *ig = g->ignored ? json_loads(g->ignored, 0, NULL) : NULL, *x;
    const char *k;
    json_object_foreach(ig, k, x) json_array_append_new(names, json_string(k));
    json_decref(ig);
    return json_pack("{s:s, s:o, s:s, s:o, s:I, s:o, s:i, s:i, s:s, s:f, s:i, s:I, s:b, s:s, s:n, s:o, "
                     "s:i, s:o, s:o, s:s, s:b, s:s, s:o, s:o}",
        "prompt", g->prompt, "all_prompts", prompts, "negative_prompt", "", "all_negative_prompts", negs,
        "seed", (json_int_t)g->seed, "all_seeds", seeds, "width", g->params.width,
        "height", g->params.height, "sampler_name", "DMD2", "cfg_scale", 1.0, "steps", g->params.nsteps,
        "batch_size", batch, "restore_faces", 0, "sd_model_name", served, "sd_model_hash",
        "extra_generation_params", json_object(), "index_of_first_image", 0, "infotexts", infotexts,
        "styles", json_array(), "job_timestamp", ts, "is_using_inpainting_conditioning", 0,
        "version", "sdxld " SDXLD_VERSION, "ignored", names, "denoising_strength",
        g->init ? json_real(nearbyint(g->params.strength * 1e4) / 1e4) : json_null());
}

/* The images (base64 PNG, unless send_images was false) and each PNG's "parameters" text,
 * the infotext engine_parameters_text wrote into it. */
static int images_and_texts(struct req *r, const struct job_result *res, json_t *images, json_t *texts) {
    for (int i = 0; i < res->n; i++) {
        char *t = NULL;
        if (png_text_get(res->img[i].png, res->img[i].len, "parameters", &t) != SD_OK) t = NULL;
        int bad = json_array_append_new(texts, json_string(t ? t : ""));
        sd_free(t);
        if (bad) return -1;
        if (!(r->handler_data & SEND_IMAGES)) continue;
        size_t bl;
        char *b = b64_encode(res->img[i].png, res->img[i].len, &bl);
        bad = !b || json_array_append_new(images, json_stringn_nocheck(b, bl));
        free(b);
        if (bad) return -1;
    }
    return 0;
}

static enum MHD_Result on_txt2img_done(struct req *r) {
    enum MHD_Result ret;
    struct job_result *res = api_take_result(r, 0, &ret);
    if (!res) return ret;
    json_t *images = json_array(), *texts = json_array();
    int bad = !images || !texts || images_and_texts(r, res, images, texts);
    job_result_unref(res);
    json_t *info = bad ? NULL : info_json(r, texts);   /* takes texts */
    if (bad) json_decref(texts);
    char *info_s = info ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);
    json_t *o = info_s ? json_object() : NULL;
    if (!o) {
        json_decref(images);
    } else if (json_object_set_new(o, "images", images) || json_object_set(o, "parameters", r->json) ||
               json_object_set_new(o, "info", json_string(info_s))) {
        json_decref(o);
        o = NULL;
    }
    free(info_s);
    if (!o) return reply_error(r, 503, "resource_exhausted", NULL, "out of memory encoding the response");
    return reply_json(r, 200, o);
}

enum MHD_Result api_a1111_txt2img(struct req *r) {
    struct gen_request g = { 0 };
    struct api_error e = { 0 };
    int send = 1;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    if (parse_txt2img(r->d, r->json, 0, &g, &send, &e)) {
        free(g.prompt);
        free(g.ignored);
        free(g.model);
        return reply_invalid(r, &e);
    }
    r->handler_data = send ? SEND_IMAGES : 0;
    return api_submit(r, &g, 0, on_txt2img_done);
}

/* POST /sdapi/v1/img2img: txt2img's request and answer with an init image (parse_init);
 * the answer's parameters leave the images out (null) unless include_init_images, as
 * A1111 does. */
enum MHD_Result api_a1111_img2img(struct req *r) {
    struct gen_request g = { 0 };
    struct api_error e = { 0 };
    int send = 1;
    enum MHD_Result ret;
    if (api_not_ready(r, &ret)) return ret;
    if (parse_txt2img(r->d, r->json, 1, &g, &send, &e)) {
        api_request_free(&g);
        return reply_invalid(r, &e);
    }
    if (!json_is_true(json_object_get(r->json, "include_init_images"))) {
        json_object_set_new(r->json, "init_images", json_null());
        if (json_object_get(r->json, "mask")) json_object_set_new(r->json, "mask", json_null());
    }
    r->handler_data = send ? SEND_IMAGES : 0;
    return api_submit(r, &g, 0, on_txt2img_done);
}
