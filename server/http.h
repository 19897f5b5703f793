/* http.h — the HTTP layer: libmicrohttpd setup, per-request state, the reply helpers
 * handlers use, and parking a request on a job (sync responses, SSE).
 *
 * A handler gets a `struct req` whose body (for routes with max_body > 0) is already
 * size-checked, content-type-checked and parsed into r->json; it must answer with
 * exactly one reply_* call, or park the request with req_wait_job / req_sse.  All
 * per-request memory hangs off the req and is freed in one place, the
 * MHD_OPTION_NOTIFY_COMPLETED callback.
 *
 * Threading: handlers run on libmicrohttpd's event-loop threads and must not block. */
#ifndef SD_SERVER_HTTP_H
#define SD_SERVER_HTTP_H

#include <microhttpd.h>
#include <jansson.h>
#include <stddef.h>

#include "auth.h"
#include "daemon.h"
#include "jobs.h"

struct req;
typedef enum MHD_Result (*handler_fn)(struct req *r);
/* A route's own error shape: the whole JSON body of an error answer, from its status,
 * code, field (NULL if none) and message. */
typedef json_t *(*error_body_fn)(unsigned status, const char *code, const char *field,
                                 const char *msg);

struct route {
    const char *method;        /* GET routes also answer HEAD */
    const char *pattern;       /* '*' matches one non-empty path segment */
    handler_fn fn;
    size_t max_body;           /* > 0: a JSON object body of at most this many bytes */
    enum auth_level auth;
    int quiet;                 /* probes and scrapes: access-logged at debug level */
    error_body_fn error_body;  /* NULL: the daemon's {"error": {"code", "message", "field"}};
                                  the OpenAI routes answer in OpenAI's shape (api_openai_error),
                                  the A1111 routes in A1111's (api_a1111_error) */
    int multipart;             /* the body is multipart/form-data (max_body bytes at most),
                                  left raw in r->body for the handler (server/form.c) */
};

/* routes.c */
extern const struct route sdxld_routes[];
extern const int sdxld_nroutes;

#define REQ_MAX_PARAMS 2
#define REQ_MAX_HEADERS 8

struct req {
    struct sdxld *d;
    struct MHD_Connection *conn;
    const struct route *route;
    int route_idx;             /* index in sdxld_routes, or sdxld_nroutes (unmatched) */
    char method[16];
    char path[160];
    char params[REQ_MAX_PARAMS][80];   /* the '*' segments of the route */
    error_body_fn error_body;  /* the error shape of the path's routes (NULL: the daemon's) */
    int fd;
    double t_start_ms;

    char *body;
    size_t body_len, body_cap, body_discarded;
    int body_too_large;
    int body_done;             /* the whole body has arrived (edge_body_done called) */
    json_t *json;

    int handler_data;          /* for the handler, e.g. which answer a parked request wants */
    unsigned status;           /* 0 until a reply is queued */
    int nhdrs;
    char hdr_name[REQ_MAX_HEADERS][32], hdr_value[REQ_MAX_HEADERS][160];

    /* parked on a job (sync wait or SSE); guarded by the jobs lock */
    struct job *job;           /* one reference, dropped when the request completes */
    struct job_waiter waiter;
    enum MHD_Result (*on_wake)(struct req *r);
    int parked, client_gone, owns_job;
    struct req *park_prev, *park_next;

    /* SSE stream state */
    int sse, sse_ping;
    long sse_next_seq;         /* next event seq to send */
    char *sse_buf;
    size_t sse_len, sse_off;
    double sse_last_ms;
};

struct http;

/* Bind cfg.listen, start the event loop and the watcher thread.  NULL + err on failure;
 * *config_error is set when the address itself is invalid. */
struct http *http_start(struct sdxld *d, int *config_error, char *err, size_t errlen);
/* The bound address ("127.0.0.1:8080"), port included (useful with port 0). */
const char *http_address(struct http *h);
int http_port(struct http *h);
/* Stop: wake every parked request (they answer from the final job state or with 503),
 * give in-flight responses up to grace_ms to go out, then stop the event loop. */
void http_stop(struct http *h, int grace_ms);

/* Reply helpers: each queues exactly one response and returns MHD's result. */
void req_add_header(struct req *r, const char *name, const char *value);
enum MHD_Result reply_json(struct req *r, unsigned status, json_t *body /* stolen */);
enum MHD_Result reply_error(struct req *r, unsigned status, const char *code,
                            const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* data is released with free_fn(free_cls) once sent (free_fn may be NULL for static). */
enum MHD_Result reply_buffer(struct req *r, unsigned status, const char *content_type,
                             const void *data, size_t len, void (*free_fn)(void *),
                             void *free_cls);

/* The k-th '*' segment of the route as an index 0..max, or -1: canonical decimal only
 * (digits; no sign, space or leading zero, "0" itself aside), so each index has one
 * spelling ("+0", "00" are not 0) and a huge one is out of range, never clamped.  (The
 * edge refuses "%30" for "0": server/edge_head.h.) */
long req_param_index(const struct req *r, int k, long max);
const char *req_header(struct req *r, const char *name);
const char *req_query(struct req *r, const char *key);
/* 400 unless every query key is in the NULL-terminated list; returns 0 if all known. */
int req_check_query(struct req *r, const char *const *allowed, const char **unknown);

/* Park the request until job is final, then call on_wake (on an HTTP thread) to
 * answer.  Takes over the caller's reference on job.  owns_job: the request's client
 * is the only one waiting for this job, so the job is cancelled if it disconnects. */
enum MHD_Result req_wait_job(struct req *r, struct job *job, int owns_job,
                             enum MHD_Result (*on_wake)(struct req *r));
/* Answer with a text/event-stream of the job's events (replayed from after
 * last_event_id), ending with its final state.  Takes over the reference on job. */
enum MHD_Result req_sse(struct req *r, struct job *job, long last_event_id);

/* Is the daemon stopping (parked requests must answer now)? */
int http_closing(struct http *h);

/* http_cors.c: CORS (server/cors.h).  The Vary and Access-Control-Allow-Origin/-Expose-
 * Headers headers of every answer (queue() in http.c adds them); the answer to OPTIONS on
 * a known path, whose methods are `allow`: 204 (with the preflight headers for an allowed
 * origin), or 403 for a preflight from an origin not in cors_origins. */
struct cors;
void http_cors_headers(struct req *r, const struct cors *c, struct MHD_Response *resp);
enum MHD_Result http_preflight(struct req *r, const struct cors *c, const char *allow);

#endif
