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

/* ---- the request parsers of the JSON routes, apart from the connection and the job
 * table: the handlers call them, and so does tests/fuzz/fuzz_api_body.c.  Each reads only
 * the daemon's configuration and model description in d (and, for paths, the files under
 * data_root); 0, or -1 with e filled.  Strings in the results are malloc'ed (the caller
 * frees them, also on error). ---- */
/* api_body.c: a body as http.c reads it: a JSON object (a new reference in *out). */
int api_parse_body(const char *body, size_t len, json_t **out, struct api_error *e);
/* POST /v1/generate, /v1/images/generations and /sdapi/v1/txt2img bodies → g. */
int api_parse_generate_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e);
int api_parse_openai_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e);
int api_parse_txt2img_request(struct sdxld *d, json_t *body, struct gen_request *g, struct api_error *e);
/* POST /v1/train body → t (train_request_free frees it). */
int api_parse_train_request(struct sdxld *d, json_t *body, struct train_request *t, struct api_error *e);
/* POST /v1/models/load body: the generator, lora and model values (borrowed from body, NULL
 * when absent) and lora_scale; model (a models_dir name) excludes the other three. */
int api_parse_load_request(json_t *body, json_t **generator, json_t **lora, float *scale, json_t **model,
                           struct api_error *e);
/* POST /sdapi/v1/options body: *target the sd_model_checkpoint to switch to (borrowed; NULL
 * when there is nothing to switch: absent, null or the served model), *to_own when it names
 * the model folder's own UNet. */
int api_parse_a1111_options(struct sdxld *d, json_t *body, json_t **target, int *to_own,
                            struct api_error *e);
/* The files of a model load resolved under data_root into p and pl (PATH_MAX bytes each):
 * generator (NULL: the model folder's own UNet; errors name `field`), lora (NULL: none);
 * root gets data_root's real path (PATH_MAX bytes). */
int api_load_paths(const struct sdxld *d, json_t *generator, const char *field, json_t *lora,
                   char *root, char *p, char *pl, struct api_error *e);

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

/* api_image.c: the images of img2img requests (docs/api.md, "img2img").  Each returns 0,
 * or -1 with e naming the field. */
struct api_image { uint8_t *rgba; int w, h; };   /* decoded, RGBA */
enum api_mask_kind {
    API_MASK_WHITE,   /* A1111, /v1/generate: white (mean of R, G, B >= 128) = repaint; a
                         mask with transparency: opaque (alpha > 128) = repaint (A1111) */
    API_MASK_BLACK,   /* A1111's inpainting_mask_invert: black = repaint */
    API_MASK_ALPHA,   /* OpenAI: fully transparent pixels (alpha 0) = edit */
};
#define API_DEFAULT_STRENGTH 0.75   /* without a mask; with one 1 (the masked region from noise) */
void api_image_free(struct api_image *im);
/* Free what a gen_request owns (prompt, ignored, init, mask): a request that is not queued. */
void api_request_free(struct gen_request *g);
/* Base64 (standard or URL alphabet, padding and whitespace optional), or a data: URL
 * (data:image/png;base64,...), into a fresh malloc'ed buffer. */
int api_b64_decode(const char *field, const char *s, size_t n, uint8_t **out, size_t *len, struct api_error *e);
/* PNG, JPEG or WebP bytes (by signature) into im, at most max_pixels. */
int api_image_decode(const char *field, const uint8_t *b, size_t n, size_t max_pixels, struct api_image *im,
                     struct api_error *e);
/* A JSON string holding base64 image bytes into im. */
int api_image_from_json(const char *field, json_t *v, size_t max_pixels, struct api_image *im, struct api_error *e);
/* The strength s (in (0, 1], leaving a step of g's timesteps: set them first) into g. */
int api_set_strength(const char *field, double s, struct gen_request *g, struct api_error *e);
int api_parse_strength(const char *field, json_t *v, struct gen_request *g, struct api_error *e);
/* v (when present and not null) as the strength, else the default: 1 when g has a mask,
 * API_DEFAULT_STRENGTH without (set g->mask first). */
int api_strength_or_default(const char *field, json_t *v, struct gen_request *g, struct api_error *e);
/* The request's size becomes the image's (checked like a width and height). */
int api_size_from_image(struct sdxld *d, const char *field, const struct api_image *im, struct gen_request *g,
                        struct api_error *e);
/* The init image (and mask, or NULL) into g->init / g->mask, both of g's size. */
int api_set_init(struct gen_request *g, const struct api_image *img, const char *field, const struct api_image *mask,
                 const char *mask_field, enum api_mask_kind kind, struct api_error *e);
/* A JSON route's img2img fields, by its names for them. */
struct api_img2img_fields { const char *init, *mask, *strength; enum api_mask_kind kind; };
/* A request's init image, mask and strength (JSON values, NULL or null when absent) into g,
 * after g's size and timesteps are set (size_given 0: the image's size becomes the
 * request's).  Absent init: nothing to do (a mask or strength without it is an error). */
int api_parse_img2img(struct sdxld *d, json_t *vi, json_t *vm, json_t *vs, const struct api_img2img_fields *f,
                      int size_given, struct gen_request *g, struct api_error *e);
/* api_lora.c: a request's LoRA adapters into p->lora (docs/api.md, "LoRA per request"):
 * the "lora" field, [{"name", "scale"}] (scale 1 when absent), and A1111's <lora:NAME:SCALE>
 * / <lora:NAME> prompt tags, removed from prompt in place.  Every name must be a LoRA file
 * under models_dir (400 naming "lora" or "prompt" otherwise; bad scales, a name twice and
 * too many adapters likewise). */
int api_parse_lora(struct sdxld *d, json_t *v, struct gen_params *p, struct api_error *e);
int api_prompt_lora(struct sdxld *d, char *prompt, struct gen_params *p, struct api_error *e);

/* api_openai.c */
enum MHD_Result api_images_generations(struct req *r);  /* POST /v1/images/generations */
enum MHD_Result api_images_edits(struct req *r);        /* POST /v1/images/edits (multipart) */
/* The route table's error_body for the OpenAI routes: {"error": {"message", "type", "param",
 * "code"}}. */
json_t *api_openai_error(unsigned status, const char *code, const char *field, const char *msg);

/* api_a1111.c: the AUTOMATIC1111 API subset (docs/daemon.md). */
enum MHD_Result api_a1111_txt2img(struct req *r);       /* POST /sdapi/v1/txt2img */
enum MHD_Result api_a1111_img2img(struct req *r);       /* POST /sdapi/v1/img2img */
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
