/* http.c — libmicrohttpd event loop, request lifecycle, reply helpers, parked requests.
 *
 * Threading model: MHD's internal epoll loop on a small thread pool (http_threads),
 * not thread-per-connection.  Every handler only parses, validates and queues — model
 * work happens on the worker — so a few event-loop threads serve any number of
 * clients.  A client waiting for its image is *suspended* (MHD_suspend_connection):
 * it holds no thread and no stack while it waits, so a thousand queued sync requests
 * and SSE watchers cost a thousand sockets, not a thousand threads.  (Suspend/resume
 * is also not available in thread-per-connection mode.)
 *
 * Parked requests.  A request waiting on a job registers a waiter on the job and is
 * suspended; the job's wake callback (run by whoever changed the job, under the jobs
 * lock) resumes it, and MHD calls the access handler again, which answers.  Suspending
 * and resuming both happen under the jobs lock, so a wake can never slip in between
 * "nothing to send yet" and "suspend".
 *
 * Disconnects.  MHD does not watch a suspended socket, so a watcher thread peeks at
 * every parked socket every 200 ms: on EOF the request is resumed and closed, and a
 * sync job nobody else waits for is cancelled — a client that goes away does not keep
 * the device busy nor leak its job (the job stays visible as cancelled until its TTL).
 * The same thread sends SSE keep-alive comments and runs the job table's TTL sweep.
 *
 * Bodies.  The route's max_body is checked against Content-Length before anything is
 * read and again while chunked data arrives.  A body somewhat over the limit is read and
 * dropped before the 413 goes out (so the answer is not lost to a TCP reset); one far
 * over it gets the 413 at once and the connection is closed. */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cors.h"
#include "edge.h"
#include "metrics.h"
#include "ratelog.h"

#define WATCH_INTERVAL_MS 200
#define SSE_PING_MS 15000
#define HOUSEKEEP_MS 1000
#define DISCARD_MAX (4u << 20)   /* body bytes read and dropped to answer 413 cleanly */

struct http {
    struct sdxld *d;
    struct MHD_Daemon *mhd;
    struct edge *edge;           /* accepts and checks connections (server/edge.h) */
    struct ratelog *rl;          /* repeated refusals: one log line per interval */
    struct cors cors;            /* cfg.cors_origins */
    char address[128];
    int port;
    pthread_t watcher;
    int watcher_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    int stop_watcher;
    atomic_int closing;
    struct req *parked;          /* guarded by the jobs lock */
    int nparked;
    atomic_int active;           /* requests between creation and completion */
};

int http_closing(struct http *h) { return atomic_load(&h->closing); }

/* " (+N similar lines suppressed)" for a rate-limited line, or "".  Not reentrant: a
 * thread-local buffer, used within one log call. */
static const char *suppressed_text(long n) {
    static _Thread_local char buf[64];
    if (!n) return "";
    snprintf(buf, sizeof buf, " (+%ld similar lines suppressed)", n);
    return buf;
}

/* ratelog_flush callback: lines of a kind were left out and none followed. */
static void log_suppressed(void *cls, const char *key, long n, double seconds) {
    (void)cls;
    LOG_W("%ld similar lines suppressed in the last %.0f s: %s", n, seconds, key);
}

/* ---- parking (jobs lock held) ---- */

static void park_locked(struct http *h, struct req *r) {
    r->parked = 1;
    r->park_prev = NULL;
    r->park_next = h->parked;
    if (h->parked) h->parked->park_prev = r;
    h->parked = r;
    h->nparked++;
    MHD_suspend_connection(r->conn);
}

static void unpark_locked(struct http *h, struct req *r) {
    if (!r->parked) return;
    r->parked = 0;
    if (r->park_prev) r->park_prev->park_next = r->park_next; else h->parked = r->park_next;
    if (r->park_next) r->park_next->park_prev = r->park_prev;
    r->park_prev = r->park_next = NULL;
    h->nparked--;
    MHD_resume_connection(r->conn);
}

static void on_job_change(struct job_waiter *w) {
    struct req *r = (struct req *)((char *)w - offsetof(struct req, waiter));
    /* Sync waiters only care about the final state; SSE streams about every event. */
    if (r->sse || job_status_final(r->job->status)) unpark_locked(r->d->http, r);
}

/* ---- replies ---- */

void req_add_header(struct req *r, const char *name, const char *value) {
    if (r->nhdrs == REQ_MAX_HEADERS) return;
    snprintf(r->hdr_name[r->nhdrs], sizeof r->hdr_name[0], "%s", name);
    snprintf(r->hdr_value[r->nhdrs], sizeof r->hdr_value[0], "%s", value);
    r->nhdrs++;
}

static enum MHD_Result queue(struct req *r, unsigned status, struct MHD_Response *resp,
                             const char *ctype) {
    if (!resp) {
        LOG_E("%s %s: cannot create a response (out of memory)", r->method, r->path);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* One request per connection, so the edge checks every request head (edge.h). */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    for (int i = 0; i < r->nhdrs; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
    http_cors_headers(r, &r->d->http->cors, resp);
    r->status = status;
    metrics_request(r->d->metrics, r->route_idx, status);
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result reply_buffer(struct req *r, unsigned status, const char *content_type,
                             const void *data, size_t len, void (*free_fn)(void *),
                             void *free_cls) {
    struct MHD_Response *resp;
    if (free_fn)
        resp = MHD_create_response_from_buffer_with_free_callback_cls(len, (void *)data, free_fn,
                                                                      free_cls);
    else
        resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (!resp && free_fn) free_fn(free_cls);
    return queue(r, status, resp, content_type);
}

enum MHD_Result reply_json(struct req *r, unsigned status, json_t *body) {
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        return reply_buffer(r, 500, "application/json", oom, sizeof oom - 1, NULL, NULL);
    }
    size_t n = strlen(s);
    s[n] = '\n';   /* json_dumps leaves room for the NUL: reuse it as a final newline */
    return reply_buffer(r, status, "application/json", s, n + 1, free, s);
}

static int utf8_ok(const char *s) {
    json_t *v = json_string(s);   /* NULL when s is not UTF-8 */
    json_decref(v);
    return v != NULL;
}

enum MHD_Result reply_error(struct req *r, unsigned status, const char *code,
                            const char *field, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!utf8_ok(msg)) snprintf(msg, sizeof msg, "(message not valid UTF-8)");
    if (field && !utf8_ok(field)) field = "?";
    json_t *body;
    if (r->error_body) {
        body = r->error_body(status, code, field, msg);
    } else {
        json_t *e = json_pack("{s:s, s:s}", "code", code, "message", msg);
        if (field) json_object_set_new(e, "field", json_string(field));
        body = json_pack("{s:o}", "error", e);
    }
    if (status == 401) req_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"sdxld\"");
    if (status >= 500) {
        /* A 503 refuses work (draining, not ready): a client retrying without backoff
         * repeats it thousands of times, so it is logged once per interval per kind. */
        char kind[RATELOG_KEY_MAX];
        long suppressed = 0;
        snprintf(kind, sizeof kind, "%s %s %u %s", r->method,
                 r->route ? r->route->pattern : "(unmatched)", status, code);
        if (status != 503 || ratelog_allow(r->d->http->rl, kind, sd_now_ms(), &suppressed))
            LOG_W("%s %s: %u %s: %s%s", r->method, r->path, status, code, msg,
                  suppressed_text(suppressed));
    }
    return reply_json(r, status, body);
}

const char *req_header(struct req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

long req_param_index(const struct req *r, int k, long max) {
    const char *s = r->params[k];
    size_t n = strlen(s);
    if (n == 0 || n > 18 || strspn(s, "0123456789") != n || (s[0] == '0' && n > 1)) return -1;
    long v = strtol(s, NULL, 10);
    return v <= max ? v : -1;
}

const char *req_query(struct req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

struct query_check { const char *const *allowed; const char *unknown; };

static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
    (void)kind; (void)value;
    struct query_check *q = cls;
    for (const char *const *a = q->allowed; *a; a++)
        if (!strcmp(*a, key)) return MHD_YES;
    q->unknown = key;
    return MHD_NO;
}

int req_check_query(struct req *r, const char *const *allowed, const char **unknown) {
    struct query_check q = { allowed, NULL };
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_iter, &q);
    *unknown = q.unknown;
    return q.unknown ? -1 : 0;
}

/* ---- waiting on a job ---- */

enum MHD_Result req_wait_job(struct req *r, struct job *job, int owns_job,
                             enum MHD_Result (*on_wake)(struct req *r)) {
    struct http *h = r->d->http;
    r->job = job;
    r->owns_job = owns_job;
    r->on_wake = on_wake;
    r->waiter.wake = on_job_change;
    jobs_lock(r->d->jobs);
    jobs_watch_locked(job, &r->waiter);
    if (job_status_final(job->status) || http_closing(h)) {
        jobs_unlock(r->d->jobs);
        r->on_wake = NULL;
        return on_wake(r);
    }
    park_locked(h, r);
    jobs_unlock(r->d->jobs);
    return MHD_YES;
}

/* Format the next pending event (or a keep-alive) into r->sse_buf; 1 if there is one. */
static int sse_next_locked(struct req *r) {
    struct job *j = r->job;
    long first = j->events_base + 1;                  /* oldest seq still in the log */
    if (r->sse_next_seq < first) r->sse_next_seq = first;
    long idx = r->sse_next_seq - first;
    free(r->sse_buf);
    r->sse_buf = NULL;
    r->sse_len = r->sse_off = 0;
    if (idx < j->nevents) {
        const char *ev = j->events[idx];
        size_t n = strlen(ev) + 64;
        r->sse_buf = malloc(n);
        if (!r->sse_buf) return 0;
        r->sse_len = (size_t)snprintf(r->sse_buf, n, "id: %ld\ndata: %s\n\n", r->sse_next_seq, ev);
        r->sse_next_seq++;
        return 1;
    }
    if (r->sse_ping) {
        r->sse_ping = 0;
        r->sse_buf = strdup(": keep-alive\n\n");
        if (!r->sse_buf) return 0;
        r->sse_len = strlen(r->sse_buf);
        return 1;
    }
    return 0;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct req *r = cls;
    struct http *h = r->d->http;
    jobs_lock(r->d->jobs);
    if (r->sse_off == r->sse_len) {
        if (r->client_gone) {
            jobs_unlock(r->d->jobs);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!sse_next_locked(r)) {
            long last = r->job->events_base + r->job->nevents;
            if ((job_status_final(r->job->status) && r->sse_next_seq > last) || http_closing(h)) {
                jobs_unlock(r->d->jobs);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            park_locked(h, r);   /* resumed by the next event, a ping or a disconnect */
            jobs_unlock(r->d->jobs);
            return 0;
        }
    }
    size_t n = r->sse_len - r->sse_off;
    if (n > max) n = max;
    memcpy(buf, r->sse_buf + r->sse_off, n);
    r->sse_off += n;
    r->sse_last_ms = sd_now_ms();
    jobs_unlock(r->d->jobs);
    return (ssize_t)n;
}

enum MHD_Result req_sse(struct req *r, struct job *job, long last_event_id) {
    r->job = job;
    r->sse = 1;
    r->sse_next_seq = last_event_id + 1;
    r->sse_last_ms = sd_now_ms();
    r->waiter.wake = on_job_change;
    jobs_lock(r->d->jobs);
    long last = job->events_base + job->nevents;
    int done = job_status_final(job->status) && last_event_id >= last;
    if (!done) jobs_watch_locked(job, &r->waiter);
    jobs_unlock(r->d->jobs);
    if (done) {
        /* EventSource reconnecting after the final event: 204 tells it to stop. */
        return reply_buffer(r, 204, "text/event-stream", "", 0, NULL, NULL);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
                                                                  sse_reader, r, NULL);
    if (resp) MHD_add_response_header(resp, "X-Accel-Buffering", "no");   /* nginx */
    return queue(r, 200, resp, "text/event-stream");
}

/* ---- request lifecycle ---- */

/* The route for method and url (its '*' segments into r->params), or -1; *path_matched: the
 * first route whose pattern matches url whatever its method, or -1. */
static int match_route(struct req *r, const char *url, const char *method, int *path_matched) {
    const char *m = !strcmp(method, "HEAD") ? "GET" : method;
    *path_matched = -1;
    for (int i = 0; i < sdxld_nroutes; i++) {
        const char *p = sdxld_routes[i].pattern, *u = url;
        int np = 0, ok = 1;
        char caps[REQ_MAX_PARAMS][80];
        while (*p && ok) {
            if (*p == '*') {
                const char *e = strchr(u, '/');
                size_t len = e ? (size_t)(e - u) : strlen(u);
                if (len == 0 || len >= sizeof caps[0] || np == REQ_MAX_PARAMS) ok = 0;
                else {
                    memcpy(caps[np], u, len);
                    caps[np++][len] = 0;
                    u += len;
                    p++;
                }
            } else if (*p == *u) {
                p++;
                u++;
            } else {
                ok = 0;
            }
        }
        if (!ok || *u) continue;
        if (*path_matched < 0) *path_matched = i;
        if (strcmp(sdxld_routes[i].method, m)) continue;
        for (int k = 0; k < np; k++) memcpy(r->params[k], caps[k], sizeof caps[k]);
        return i;
    }
    return -1;
}

static int content_type_is(const char *ct, const char *type) {
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n)) return 0;
    return ct[n] == 0 || ct[n] == ';' || ct[n] == ' ';
}

/* Checks that need only the headers; answers early (without reading the body). */
static enum MHD_Result on_headers(struct req *r, int path_matched) {
    if (!r->route) {
        if (path_matched >= 0) {
            char allow[64] = "";
            for (int i = 0; i < sdxld_nroutes; i++) {
                int dummy;
                struct req probe;
                memset(&probe, 0, sizeof probe);
                if (match_route(&probe, r->path, sdxld_routes[i].method, &dummy) == i) {
                    size_t o = strlen(allow);
                    snprintf(allow + o, sizeof allow - o, "%s, ", sdxld_routes[i].method);
                }
            }
            snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "OPTIONS");
            req_add_header(r, MHD_HTTP_HEADER_ALLOW, allow);
            if (!strcmp(r->method, "OPTIONS"))   /* before auth: a preflight carries no token */
                return http_preflight(r, &r->d->http->cors, allow);
            return reply_error(r, 405, "method_not_allowed", NULL, "%s is not allowed on %s (allowed: %s)",
                               r->method, r->path, allow);
        }
        return reply_error(r, 404, "not_found", NULL, "no such endpoint: %s", r->path);
    }
    if (auth_check(r->d->auth, r->route->auth, req_header(r, MHD_HTTP_HEADER_AUTHORIZATION)))
        return reply_error(r, 401, "unauthorized", NULL, "%s",
                           r->route->auth == AUTH_ADMIN ? "a valid admin bearer token is required"
                                                        : "a valid bearer token is required");
    if (r->route->max_body) {
        const char *ct = req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        const char *want = r->route->multipart ? MHD_HTTP_POST_ENCODING_MULTIPART_FORMDATA : "application/json";
        if (!content_type_is(ct, want))
            return reply_error(r, 415, "unsupported_media_type", NULL, "send the body as Content-Type: %s (got %s)",
                               want, ct ? ct : "none");
        const char *cl = req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > r->route->max_body + DISCARD_MAX)
                return reply_error(r, 413, "payload_too_large", NULL,
                                   "the body may be at most %zu bytes", r->route->max_body);
            /* Moderately over the limit: read and drop the body, then answer 413.  An
             * early answer would close a socket with unread data, and the resulting TCP
             * reset can destroy the 413 before a proxy reads it. */
            if (n > r->route->max_body) r->body_too_large = 1;
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_body_complete(struct req *r) {
    if (r->body_too_large)
        return reply_error(r, 413, "payload_too_large", NULL, "the body may be at most %zu bytes",
                           r->route->max_body);
    struct api_error e = { 0 };
    if (r->route->max_body && !r->route->multipart &&   /* a form is the handler's to read */
        api_parse_body(r->body, r->body_len, &r->json, &e))
        return reply_error(r, e.http, e.code, e.field[0] ? e.field : NULL, "%s", e.msg);
    return r->route->fn(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    struct http *h = cls;
    struct req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        atomic_fetch_add(&h->active, 1);
        r->d = h->d;
        r->conn = conn;
        r->t_start_ms = sd_now_ms();
        r->sse_next_seq = 1;
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = ci ? ci->connect_fd : -1;
        int path_matched;
        int idx = strlen(url) < sizeof r->path ? match_route(r, url, method, &path_matched) : -1;
        if (strlen(url) >= sizeof r->path) path_matched = -1;
        r->route_idx = idx >= 0 ? idx : sdxld_nroutes;
        r->route = idx >= 0 ? &sdxld_routes[idx] : NULL;
        /* errors in the path's shape, also for a method it does not take (405, OPTIONS) */
        r->error_body = path_matched >= 0 ? sdxld_routes[path_matched].error_body : NULL;
        return on_headers(r, path_matched);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->status) return MHD_YES;                  /* answered early; MHD discards */
        size_t limit = r->route->max_body;
        if (limit == 0) {
            /* A body on a route that takes none (a GET, POST .../cancel): ignore it. */
            r->body_discarded += n;
            return r->body_discarded > (1 << 20) ? MHD_NO : MHD_YES;
        }
        if (r->body_too_large || r->body_len + n > limit) {
            /* Chunked body over the limit: keep reading (to answer 413 cleanly) up to a
             * point, then drop the connection. */
            r->body_too_large = 1;
            r->body_discarded += n;
            return r->body_discarded > DISCARD_MAX + limit ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + n) cap *= 2;
            if (cap > limit) cap = limit;
            char *nb = realloc(r->body, cap);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (!r->body_done) {   /* the call after the last body bytes: no more body deadline */
        r->body_done = 1;
        edge_body_done(h->edge, conn);
    }
    if (r->on_wake) {
        enum MHD_Result (*fn)(struct req *) = r->on_wake;
        r->on_wake = NULL;
        if (r->client_gone) return MHD_NO;   /* nobody to answer: close */
        return fn(r);
    }
    if (r->status) return MHD_YES;
    return on_body_complete(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    struct http *h = cls;
    struct req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    char job_id[JOB_ID_LEN + 1] = "";
    if (r->job) {
        memcpy(job_id, r->job->id, sizeof job_id);
        jobs_lock(h->d->jobs);
        jobs_unwatch_locked(r->job, &r->waiter);
        if (r->parked) {   /* only at daemon stop */
            r->parked = 0;
            if (r->park_prev) r->park_prev->park_next = r->park_next; else h->parked = r->park_next;
            if (r->park_next) r->park_next->park_prev = r->park_prev;
            h->nparked--;
        }
        if (r->owns_job && !job_status_final(r->job->status) &&
            toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
            LOG_I("job %s cancelled: its client disconnected", r->job->id);
            jobs_cancel_locked(h->d->jobs, r->job, "client_gone", 499, "the client disconnected");
        }
        jobs_unref_locked(h->d->jobs, r->job);
        jobs_unlock(h->d->jobs);
    }
    unsigned status = r->status;
    double ms = sd_now_ms() - r->t_start_ms;
    if (!status) {
        /* The connection died before an answer was queued (client gone, bad request
         * line): count it so the metrics see every request. */
        metrics_request(h->d->metrics, r->route_idx, 499);
    }
    char kind[RATELOG_KEY_MAX];
    long suppressed = 0;
    snprintf(kind, sizeof kind, "%s %s %u (access log)", r->method,
             r->route ? r->route->pattern : "(unmatched)", status);
    if (r->route && r->route->quiet && status < 400)
        LOG_D("%s %s %u %.1f ms", r->method, r->path, status, ms);
    else if ((status != 429 && status != 503) || ratelog_allow(h->rl, kind, sd_now_ms(), &suppressed))
        LOG_I("%s %s %u %.1f ms%s%s%s%s", r->method, r->path, status ? status : 499, ms,
              job_id[0] ? " job=" : "", job_id,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)",
              suppressed_text(suppressed));
    json_decref(r->json);
    free(r->body);
    free(r->sse_buf);
    free(r);
    atomic_fetch_sub(&h->active, 1);
}

/* ---- watcher: disconnects, SSE keep-alives, TTL sweep ---- */

/* Has the client closed its side (FIN or reset)?  Asked of the socket's state, not of its
 * next byte: bytes the client sent after its request (a stray CRLF, a pipelined request
 * that Connection: close will never serve) sit unread while the request is parked, and a
 * peek would see them instead of the end of the stream — and never notice the close. */
static int peer_closed(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void watch_parked(struct http *h) {
    struct req *gone[256];
    int ngone = 0;
    double now = sd_now_ms();
    jobs_lock(h->d->jobs);
    for (struct req *r = h->parked; r && ngone < (int)(sizeof gone / sizeof gone[0]); r = r->park_next) {
        if (peer_closed(r->fd)) {
            r->client_gone = 1;
            gone[ngone++] = r;
        } else if (r->sse && now - r->sse_last_ms > SSE_PING_MS) {
            r->sse_ping = 1;
            gone[ngone++] = r;   /* resume to send the keep-alive */
        }
    }
    for (int i = 0; i < ngone; i++) {
        struct req *r = gone[i];
        if (r->client_gone) {
            metrics_client_gone(h->d->metrics);
            if (r->owns_job && !job_status_final(r->job->status)) {
                LOG_I("job %s cancelled: its client disconnected", r->job->id);
                /* wakes (and so resumes) r through its waiter */
                jobs_cancel_locked(h->d->jobs, r->job, "client_gone", 499, "the client disconnected");
            }
        }
        unpark_locked(h, r);   /* no-op if the cancel already resumed it */
    }
    jobs_unlock(h->d->jobs);
}

static void *watcher_main(void *arg) {
    struct http *h = arg;
    double last_sweep = 0;
    pthread_mutex_lock(&h->stop_lock);
    while (!h->stop_watcher) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += WATCH_INTERVAL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&h->stop_cond, &h->stop_lock, &ts);
        if (h->stop_watcher) break;
        pthread_mutex_unlock(&h->stop_lock);
        watch_parked(h);
        edge_watch(h->edge, sd_now_ms());
        ratelog_flush(h->rl, sd_now_ms(), 0, log_suppressed, NULL);
        if (sd_now_ms() - last_sweep > HOUSEKEEP_MS) {
            jobs_housekeep(h->d->jobs);
            last_sweep = sd_now_ms();
        }
        pthread_mutex_lock(&h->stop_lock);
    }
    pthread_mutex_unlock(&h->stop_lock);
    return NULL;
}

/* ---- start / stop ---- */

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    LOG_W("libmicrohttpd: %s", msg);
}

struct http *http_start(struct sdxld *d, int *config_error, char *err, size_t errlen) {
    *config_error = 0;
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->d = d;
    d->http = h;
    pthread_mutex_init(&h->stop_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->stop_cond, &ca);
    pthread_condattr_destroy(&ca);
    const struct sdxld_config *cfg = &d->cfg;
    int lfd = edge_listen(cfg->listen, h->address, sizeof h->address, &h->port, config_error,
                          err, errlen);
    if (lfd < 0) goto fail;
    if (cors_parse(&h->cors, cfg->cors_origins, err, errlen)) {   /* config_check passed it */
        *config_error = 1;
        close(lfd);
        goto fail;
    }
    h->rl = ratelog_new(cfg->log_repeat_interval_s * 1e3);
    struct edge_limits lim = { cfg->max_connections, cfg->max_connections_per_address,
                               cfg->http_head_timeout_s, cfg->http_body_timeout_s };
    h->edge = h->rl ? edge_new(lfd, &lim, d->metrics, h->rl) : NULL;
    if (!h->edge) {
        close(lfd);
        snprintf(err, errlen, "cannot set up the HTTP edge (out of memory or epoll)");
        goto fail;
    }
    /* The edge accepts and checks connections and enforces max_connections; the limit
     * here is only a backstop, loose because libmicrohttpd counts a connection a little
     * longer than the edge does (until its cleanup, after the CLOSED notification). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections * 2 + 64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, edge_notify_connection, h->edge,
        MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "cannot start the HTTP server (libmicrohttpd) on %s", h->address);
        goto fail;
    }
    if (edge_start(h->edge, h->mhd)) {
        snprintf(err, errlen, "cannot start the HTTP accept thread");
        goto fail;
    }
    if (pthread_create(&h->watcher, NULL, watcher_main, h)) {
        snprintf(err, errlen, "cannot start the connection watcher thread");
        goto fail;
    }
    h->watcher_started = 1;
    return h;
fail:
    edge_stop(h->edge);
    if (h->mhd) MHD_stop_daemon(h->mhd);
    edge_free(h->edge);
    ratelog_free(h->rl);
    pthread_cond_destroy(&h->stop_cond);
    pthread_mutex_destroy(&h->stop_lock);
    free(h);
    d->http = NULL;
    return NULL;
}

const char *http_address(struct http *h) { return h->address; }
int http_port(struct http *h) { return h->port; }

void http_stop(struct http *h, int grace_ms) {
    if (!h) return;
    atomic_store(&h->closing, 1);
    /* No new connections (the listening socket closes, heads still arriving are
     * dropped); the requests handed to libmicrohttpd finish. */
    edge_stop(h->edge);
    /* Wake every parked request: sync waiters answer from the final job state (or 503),
     * SSE streams send what is left and end. */
    jobs_lock(h->d->jobs);
    while (h->parked) unpark_locked(h, h->parked);
    jobs_unlock(h->d->jobs);
    double deadline = sd_now_ms() + grace_ms;
    /* Requests in progress get the grace period (every connection carries one request,
     * so a connection still open is a request not yet fully answered). */
    while ((atomic_load(&h->active) > 0 || edge_in_mhd(h->edge) > 0) && sd_now_ms() < deadline) {
        jobs_lock(h->d->jobs);
        while (h->parked) unpark_locked(h, h->parked);   /* an SSE stream parked again */
        jobs_unlock(h->d->jobs);
        usleep(10000);
    }
    pthread_mutex_lock(&h->stop_lock);
    h->stop_watcher = 1;
    pthread_cond_signal(&h->stop_cond);
    pthread_mutex_unlock(&h->stop_lock);
    if (h->watcher_started) pthread_join(h->watcher, NULL);
    jobs_lock(h->d->jobs);
    while (h->parked) unpark_locked(h, h->parked);
    jobs_unlock(h->d->jobs);
    MHD_stop_daemon(h->mhd);
    edge_free(h->edge);
    ratelog_flush(h->rl, sd_now_ms(), 1, log_suppressed, NULL);
    ratelog_free(h->rl);
    pthread_cond_destroy(&h->stop_cond);
    pthread_mutex_destroy(&h->stop_lock);
    h->d->http = NULL;
    free(h);
}
