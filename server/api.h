/* api.h — the endpoint handlers (routes.c holds the table that maps paths to them). */
#ifndef SD_SERVER_API_H
#define SD_SERVER_API_H

#include "http.h"

/* A validation failure: HTTP status, error code, the field it names, the message. */
struct api_error {
    unsigned http;
    const char *code;
    char field[64];
    char msg[512];
};

/* api_generate.c: request parsing shared by the handlers.  Each returns 0, or -1 with
 * e filled (400 invalid_argument naming the field). */
int api_fail(struct api_error *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int api_get_int(json_t *v, const char *field, long long lo, long long hi, long long *out,
                struct api_error *e);
/* Unknown keys in body (known: a NULL-terminated list) are an error naming the key. */
int api_check_unknown(json_t *body, const char *const *known, struct api_error *e);
/* 503 shutting_down with Retry-After 30: the daemon is draining. */
enum MHD_Result api_reply_draining(struct req *r);
/* 429: live jobs fill the job table (retained_jobs_max / retained_jobs_mb). */
enum MHD_Result api_reply_table_full(struct sdxld *d, struct req *r);
/* Non-zero (and the 503 answer in *ret) unless the daemon is ready for jobs. */
int api_not_ready(struct req *r, enum MHD_Result *ret);

/* api_generate.c: what the generation routes share. */
#define API_MAX_STEPS 4          /* docs/api.md: steps 1..4 (the DMD2 generator's schedule) */
#define API_SEED_MAX INT64_MAX   /* seeds are 0..2^63-1 */
/* The seed of a request of n images (image i uses seed + i, so seed + n - 1 must fit in
 * 0..2^63-1 too): v, or a random one when v is NULL (or -1 where minus_one_random). */
int api_parse_seed(json_t *v, int n, int minus_one_random, uint64_t *seed, struct api_error *e);
/* A width or height v: a multiple of the model's granularity within size_multiple..max. */
int api_check_size(const struct sdxld *d, const char *field, int v, int max, struct api_error *e);
uint64_t api_random_seed(void);                         /* 0..2^63-1 */
/* No unknown fields (known: NULL-terminated), the prompt, n; the default size. */
int api_parse_base(struct sdxld *d, json_t *body, const char *const *known, struct gen_request *g,
                   struct api_error *e);
/* Queue the job (g's prompt is taken over) and answer 202 (async), or park the request
 * until the job is final and then answer with on_done (r->job is the job). */
enum MHD_Result api_submit(struct req *r, struct gen_request *g, int async,
                           enum MHD_Result (*on_done)(struct req *r));
/* In on_done: a reference on the job's images, with the X-Seed, X-Job-Id (and
 * X-Prompt-Truncated) headers added; keep = 0 releases them from the job (delivered to
 * its synchronous client), keep = 1 leaves them for GET /v1/jobs/{id}/images/{i} until
 * result_ttl_s.  NULL, with the error answer in *ret, when the job ended without images. */
struct job_result *api_take_result(struct req *r, int keep, enum MHD_Result *ret);
/* [{"b64_json", "seed"}, ...] for the images; NULL when out of memory. */
json_t *api_images_b64(const struct job_result *res);
enum MHD_Result api_generate(struct req *r);            /* POST /v1/generate */
/* Base64 (RFC 4648, padded) into a fresh malloc'ed, NUL-terminated string. */
char *b64_encode(const uint8_t *p, size_t n, size_t *out_len);

/* api_lora.c: a request's LoRA adapters into p->lora (docs/api.md, "LoRA per request"):
 * the "lora" field, [{"name", "scale"}] (scale 1 when absent), and A1111's <lora:NAME:SCALE>
 * / <lora:NAME> prompt tags, removed from prompt in place.  Every name must be a LoRA file
 * under models_dir (400 naming "lora" or "prompt" otherwise; bad scales, a name twice and
 * too many adapters likewise). */
int api_parse_lora(struct sdxld *d, json_t *v, struct gen_params *p, struct api_error *e);
int api_prompt_lora(struct sdxld *d, char *prompt, struct gen_params *p, struct api_error *e);

/* api_openai.c */
enum MHD_Result api_images_generations(struct req *r);  /* POST /v1/images/generations */
/* The route table's error_body for the OpenAI routes: {"error": {"message", "type", "param",
 * "code"}}. */
json_t *api_openai_error(unsigned status, const char *code, const char *field, const char *msg);

/* api_a1111.c: the AUTOMATIC1111 API subset (docs/daemon.md). */
enum MHD_Result api_a1111_txt2img(struct req *r);       /* POST /sdapi/v1/txt2img */
enum MHD_Result api_a1111_sd_models(struct req *r);     /* GET /sdapi/v1/sd-models */
enum MHD_Result api_a1111_get_options(struct req *r);   /* GET /sdapi/v1/options */
enum MHD_Result api_a1111_set_options(struct req *r);   /* POST /sdapi/v1/options */
enum MHD_Result api_a1111_progress(struct req *r);      /* GET /sdapi/v1/progress */
enum MHD_Result api_a1111_interrupt(struct req *r);     /* POST /sdapi/v1/interrupt */
/* The route table's error_body for the A1111 routes: {"error", "detail", "body", "errors"}
 * as A1111's middleware answers (422: FastAPI's validation shape). */
json_t *api_a1111_error(unsigned status, const char *code, const char *field, const char *msg);

/* api_train.c */
enum MHD_Result api_train_create(struct req *r);        /* POST /v1/train */
enum MHD_Result api_train_get(struct req *r);           /* GET /v1/train/{id} */
enum MHD_Result api_train_cancel(struct req *r);        /* DELETE /v1/train/{id} */
enum MHD_Result api_train_events(struct req *r);        /* GET /v1/train/{id}/events */
enum MHD_Result api_train_sample(struct req *r);        /* GET /v1/train/{id}/samples/{i} */
enum MHD_Result api_models_load(struct req *r);         /* POST /v1/models/load */
/* Queue a model-load job (the worker swaps the served UNet between batches) and park the
 * request until it is done; on_done answers, with r->job the load job.  generator: a JSON
 * string naming a UNet file under data_root, or NULL for the model folder's own UNet;
 * lora: an adapter file, or NULL.  Path errors name `field` (the request's name for
 * generator).  Does not check auth. */
enum MHD_Result api_load_submit(struct req *r, json_t *generator, const char *field, json_t *lora,
                                float lora_scale, enum MHD_Result (*on_done)(struct req *r));
/* In on_done of api_load_submit: non-zero, with the error answer in *ret, unless the load
 * succeeded. */
int api_load_failed(struct req *r, enum MHD_Result *ret);

/* routes.c: cancel job j (the caller's reference is taken over).  A running training
 * job stops at its next iteration after a final checkpoint: the request waits for that
 * and answers with the final job. */
enum MHD_Result api_cancel_job(struct req *r, struct job *j);
/* 404 for the job id in the route's first '*' (what: "job", "training job"): one that
 * names another replica says which (replica.h), others are unknown or expired. */
enum MHD_Result api_no_job(struct req *r, const char *what);
/* The job's event stream as SSE, resuming after the request's Last-Event-ID. */
enum MHD_Result api_job_sse(struct req *r, struct job *j);

/* api_models.c: models by name (models.h). */
enum MHD_Result api_models(struct req *r);              /* GET /v1/models */
/* A generation's `model` (v may be NULL: none named): resolved into g->model (owned by g)
 * and g->model_named; 400 naming field when it is unknown, not a whole model, or over
 * the memory budget. */
int api_model_field(struct sdxld *d, json_t *v, const char *field, struct gen_request *g, struct api_error *e);
/* A generation that named no model runs on the default one at its queueing (api_submit). */
void api_model_stamp(struct sdxld *d, struct gen_request *g);
/* Queue a whole-model switch to the model named by v (a JSON string; field: the request's
 * name for it) and park the request until the worker acted; on_done (NULL: the
 * POST /v1/models/load answer) answers, r->job the load job.  Does not check auth. */
enum MHD_Result api_model_load_submit(struct req *r, json_t *v, const char *field,
                                      enum MHD_Result (*on_done)(struct req *r));

/* webui.c */
enum MHD_Result api_webui(struct req *r);               /* GET / */

#endif
