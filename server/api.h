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

/* api_generate.c */
enum MHD_Result api_generate(struct req *r);            /* POST /v1/generate */
enum MHD_Result api_images_generations(struct req *r);  /* POST /v1/images/generations */
/* Base64 (RFC 4648, padded) into a fresh malloc'ed, NUL-terminated string. */
char *b64_encode(const uint8_t *p, size_t n, size_t *out_len);

/* api_train.c */
enum MHD_Result api_train_create(struct req *r);        /* POST /v1/train */
enum MHD_Result api_train_get(struct req *r);           /* GET /v1/train/{id} */
enum MHD_Result api_train_cancel(struct req *r);        /* DELETE /v1/train/{id} */
enum MHD_Result api_train_events(struct req *r);        /* GET /v1/train/{id}/events */
enum MHD_Result api_train_sample(struct req *r);        /* GET /v1/train/{id}/samples/{i} */
enum MHD_Result api_models_load(struct req *r);         /* POST /v1/models/load */

/* routes.c: cancel job j (the caller's reference is taken over).  A running training
 * job stops at its next iteration after a final checkpoint: the request waits for that
 * and answers with the final job. */
enum MHD_Result api_cancel_job(struct req *r, struct job *j);
/* The job's event stream as SSE, resuming after the request's Last-Event-ID. */
enum MHD_Result api_job_sse(struct req *r, struct job *j);

/* webui.c */
enum MHD_Result api_webui(struct req *r);               /* GET / */

#endif
