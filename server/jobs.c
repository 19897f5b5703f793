/* jobs.c — job table, queues, batching, events and results (contracts in jobs.h).
 *
 * Batching rule: the oldest queued job (the head) always goes into the next batch, so
 * nothing starves; compatible jobs behind it (same size, timesteps and conditioning)
 * join it up to max_batch images, even from behind incompatible ones.  The head waits
 * at most batch_window_ms after its submission for companions — under load the queue
 * is already full and nobody waits; when idle a lone request pays the window once.
 * A job with more images than fit in one batch is taken in slices and stays at the
 * head of the queue until all its images are dispatched.
 *
 * Progress is counted in image-steps (total = n * nsteps), so a job split over several
 * batches still reports one monotonic count.
 *
 * Scheduling between kinds (jobs_next_work): generations always go first — the worker
 * asks for work after every training iteration, and a queued generation (after its
 * batch window) is served before the next iteration — so a training run costs serving
 * at most one iteration of latency.  Training jobs run one at a time in submission
 * order; model loads run between batches. */
#include "jobs.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "config.h"
#include "metrics.h"

#define HASH_BUCKETS 4096
#define MAX_EVENTS 4096
#define LOAD_QUEUE_MAX 16

struct jqueue { struct job *head, *tail; int len; };

/* The last training progress, for /metrics. */
struct train_gauges {
    int seen, running;
    double step, total, gen_steps, it_per_s, loss[4], grad[2];
};

struct jobs {
    pthread_mutex_t lock;
    pthread_cond_t work;             /* worker: queue changed / stopping */
    const struct sdxld_config *cfg;
    struct metrics *metrics;

    struct jqueue q;                 /* generation jobs in submission order */
    int qimages;
    struct jqueue tq;                /* training jobs waiting to start */
    struct jqueue cq;                /* model loads waiting (not in the table) */
    struct job *training;            /* the running training job (the worker holds it) */
    struct train_gauges tg;
    struct job *all_head, *all_tail; /* table in creation order (oldest first) */
    struct job *buckets[HASH_BUCKETS];
    long njobs, nrunning;
    size_t results_bytes;

    int accepting, stopping, stop_now;
    double ewma_batch_s;             /* recent engine time per batch, for Retry-After */
};

static const char *status_names[] = { "queued", "running", "succeeded", "failed", "cancelled" };

const char *job_status_name(enum job_status s) {
    return (unsigned)s < 5 ? status_names[s] : "unknown";
}

int job_status_parse(const char *s) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, status_names[i])) return i;
    return -1;
}

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static unsigned hash_id(const char *id) {
    unsigned h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h % HASH_BUCKETS;
}

void job_result_unref(struct job_result *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (int i = 0; i < r->n; i++) sd_free(r->img[i].png);   /* png_encode's allocator */
    free(r);
}

struct jobs *jobs_new(const struct sdxld_config *cfg, struct metrics *m) {
    struct jobs *js = calloc(1, sizeof *js);
    if (!js) return NULL;
    pthread_mutex_init(&js->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&js->work, &ca);
    pthread_condattr_destroy(&ca);
    js->cfg = cfg;
    js->metrics = m;
    js->accepting = 1;
    return js;
}

static void train_state_free(struct train_state *t) {
    if (!t) return;
    train_request_free(&t->req);
    for (int i = 0; i < t->nsamples; i++) free(t->samples[i]);
    free(t->samples);
    for (int i = 0; i < t->nckpts; i++) free(t->ckpts[i].path);
    free(t->ckpts);
    free(t->generator);
    free(t->stop_msg);
    free(t);
}

static void job_free(struct job *j) {
    free(j->req.prompt);
    train_state_free(j->train);
    free(j->load_path);
    free(j->load_lora);
    free(j->load_shown);
    free(j->err_msg);
    job_result_unref(j->result);
    for (int i = 0; i < j->nevents; i++) free(j->events[i]);
    free(j->events);
    free(j);
}

void jobs_free(struct jobs *js) {
    if (!js) return;
    /* Only the table's and the queues' references remain once every thread has
     * stopped; loads are in no table. */
    for (struct job *j = js->cq.head, *nx; j; j = nx) {
        nx = j->q_next;
        job_free(j);
    }
    for (struct job *j = js->all_head, *nx; j; j = nx) {
        nx = j->all_next;
        job_free(j);
    }
    pthread_cond_destroy(&js->work);
    pthread_mutex_destroy(&js->lock);
    free(js);
}

void jobs_lock(struct jobs *js) { pthread_mutex_lock(&js->lock); }
void jobs_unlock(struct jobs *js) { pthread_mutex_unlock(&js->lock); }

/* A fresh job of this kind with a random id: prefix + 20 hex digits. */
static struct job *job_alloc(enum job_kind kind, const char *prefix) {
    struct job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    uint8_t rnd[10];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* getrandom on Linux does not fail for 10 bytes once the pool is seeded; fall
         * back to time and address entropy rather than refuse the request. */
        uint64_t x = (uint64_t)mono_ms() ^ (uint64_t)(uintptr_t)j;
        for (int i = 0; i < 10; i++) rnd[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    int o = snprintf(j->id, sizeof j->id, "%s", prefix);
    for (int i = 0; i < 10; i++) o += snprintf(j->id + o, sizeof j->id - (size_t)o, "%02x", rnd[i]);
    j->kind = kind;
    j->status = JOB_QUEUED;
    j->refs = 1;
    j->created_at = unix_now();
    return j;
}

struct job *job_new_generate(struct gen_request *req) {
    struct job *j = job_alloc(JOB_GENERATE, "gen_");
    if (!j) return NULL;
    j->req = *req;
    req->prompt = NULL;
    j->total = j->req.n * j->req.params.nsteps;
    return j;
}

void train_request_free(struct train_request *r) {
    free(r->teacher);
    free(r->generator_init);
    free(r->out);
    free(r->data);
    free(r->root);
    free(r->echo);
    memset(r, 0, sizeof *r);
}

struct job *job_new_train(struct train_request *req) {
    struct job *j = job_alloc(JOB_TRAIN, "train_");
    struct train_state *t = j ? calloc(1, sizeof *t) : NULL;
    if (!t) {
        free(j);
        train_request_free(req);
        return NULL;
    }
    t->req = *req;
    memset(req, 0, sizeof *req);
    t->resumed_step = -1;
    j->train = t;
    j->total = t->req.steps;
    return j;
}

struct job *job_new_load(const char *path, const char *lora, float lora_scale, const char *shown) {
    struct job *j = job_alloc(JOB_LOAD, "load_");
    if (!j) return NULL;
    j->load_path = path ? strdup(path) : NULL;
    j->load_lora = lora ? strdup(lora) : NULL;
    j->load_lora_scale = lora_scale;
    j->load_shown = strdup(shown);
    if ((path && !j->load_path) || (lora && !j->load_lora) || !j->load_shown) {
        free(j->load_path);
        free(j->load_lora);
        free(j->load_shown);
        free(j);
        return NULL;
    }
    j->total = 1;
    return j;
}

void jobs_ref_locked(struct job *j) { j->refs++; }

void jobs_unref_locked(struct jobs *js, struct job *j) {
    (void)js;
    if (!j) return;
    if (--j->refs == 0) job_free(j);
}

void jobs_unref(struct jobs *js, struct job *j) {
    if (!j) return;
    pthread_mutex_lock(&js->lock);
    jobs_unref_locked(js, j);
    pthread_mutex_unlock(&js->lock);
}

static struct jqueue *queue_of(struct jobs *js, const struct job *j) {
    return j->kind == JOB_GENERATE ? &js->q : j->kind == JOB_TRAIN ? &js->tq : &js->cq;
}

static int queue_position_locked(struct jobs *js, struct job *j) {
    if (!j->in_queue || j->status != JOB_QUEUED) return 0;
    int pos = 1;
    for (struct job *q = queue_of(js, j)->head; q && q != j; q = q->q_next) pos++;
    return pos;
}

/* Append j to its kind's queue, which takes a reference. */
static void queue_push_locked(struct jobs *js, struct job *j) {
    struct jqueue *q = queue_of(js, j);
    j->refs++;
    j->q_next = NULL;
    j->q_prev = q->tail;
    if (q->tail) q->tail->q_next = j; else q->head = j;
    q->tail = j;
    j->in_queue = 1;
    q->len++;
    if (j->kind == JOB_GENERATE) js->qimages += j->req.n;
}

/* Unlink j from its queue (the queue's reference is the caller's to drop or hand on). */
static void unlink_locked(struct jobs *js, struct job *j) {
    struct jqueue *q = queue_of(js, j);
    if (j->q_prev) j->q_prev->q_next = j->q_next; else q->head = j->q_next;
    if (j->q_next) j->q_next->q_prev = j->q_prev; else q->tail = j->q_prev;
    j->q_prev = j->q_next = NULL;
    j->in_queue = 0;
    q->len--;
}

static void queue_remove_locked(struct jobs *js, struct job *j) {
    if (!j->in_queue) return;
    unlink_locked(js, j);
    if (j->kind == JOB_GENERATE) js->qimages -= j->req.n - j->dispatched;
    jobs_unref_locked(js, j);   /* the queue's reference */
}

static json_t *json_time(double t) { return t > 0 ? json_real(round(t * 1e3) / 1e3) : json_null(); }

/* A number, or null when it is not finite (JSON has no NaN). */
static json_t *json_num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* A path under data_root as the client would write it (relative to data_root). */
static const char *shown_path(const struct train_request *r, const char *abs) {
    size_t n = r->root ? strlen(r->root) : 0;
    if (abs && n > 1 && !strncmp(abs, r->root, n) && abs[n] == '/') return abs + n + 1;
    return abs;
}

static const char *kind_name(enum job_kind k) {
    return k == JOB_GENERATE ? "generate" : k == JOB_TRAIN ? "train" : "load";
}

/* The training fields of GET /v1/train/{id} (spec/api.md), added to the job object. */
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
    json_object_set_new(o, "out", json_string(shown_path(r, r->out)));
    json_object_set_new(o, "generator", t->generator ? json_string(t->generator) : json_null());
    json_object_set_new(o, "resumed_from_step",
                        t->resumed_step >= 0 ? json_integer(t->resumed_step) : json_null());
    json_object_set_new(o, "stopping", json_boolean(t->stop && !job_status_final(j->status)));
    json_object_set_new(o, "estimate", r->est_memory_bytes > 0 ? json_pack("{s:f, s:f}", "memory_bytes",
                        r->est_memory_bytes, "iteration_s", r->est_iteration_s) : json_null());
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
    int pos = queue_position_locked(js, j);
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
        json_object_set_new(o, "request", rq ? rq : json_null());
    }
    if (j->kind == JOB_TRAIN) {
        train_to_json_locked(j, o, detail);
    } else if (j->kind == JOB_GENERATE && j->status == JOB_SUCCEEDED) {
        json_t *imgs = json_array();
        for (int i = 0; i < j->req.n; i++) {
            char url[96];
            snprintf(url, sizeof url, "/v1/jobs/%s/images/%d", j->id, i);
            json_t *im = json_pack("{s:I}", "seed", (json_int_t)(j->req.seed + (uint64_t)i));
            if (j->result) json_object_set_new(im, "url", json_string(url));
            json_array_append_new(imgs, im);
        }
        json_t *res = json_pack("{s:o, s:{s:f, s:f, s:f, s:f}, s:b}", "images", imgs, "timings",
                                "queue_ms", round(j->queue_ms), "text_ms", round(j->tm.text_ms),
                                "unet_ms", round(j->tm.unet_ms), "vae_ms", round(j->tm.vae_ms),
                                "truncated", j->truncated);
        if (j->result_dropped)
            json_object_set_new(res, "images_dropped", json_string(
                j->result_dropped == 1 ? "delivered to the waiting client" :
                                         "expired (result_max_mb)"));
        json_object_set_new(o, "result", res);
    } else {
        json_object_set_new(o, "result", json_null());
    }
    return o;
}

/* Append an event (a snapshot of the job) and wake the job's waiters. */
static void emit_locked(struct jobs *js, struct job *j) {
    json_t *o = job_to_json_locked(js, j, 0);
    json_object_set_new(o, "seq", json_integer(j->events_base + j->nevents + 1));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s) {
        if (j->nevents == MAX_EVENTS) {
            /* Keep the log bounded (long training runs): forget the oldest event. */
            free(j->events[0]);
            memmove(j->events, j->events + 1, (size_t)(j->nevents - 1) * sizeof *j->events);
            j->nevents--;
            j->events_base++;
        }
        if (j->nevents == j->cap_events) {
            int nc = j->cap_events ? j->cap_events * 2 : 8;
            char **ne = realloc(j->events, (size_t)nc * sizeof *ne);
            if (ne) {
                j->events = ne;
                j->cap_events = nc;
            }
        }
        if (j->nevents < j->cap_events) j->events[j->nevents++] = s;
        else free(s);   /* out of memory: the waiters still see the current state */
    }
    for (struct job_waiter *w = j->waiters, *nx; w; w = nx) {
        nx = w->next;
        w->wake(w);
    }
}

/* Move j to a final state.  Lock held; j is not final yet. */
static void finish_locked(struct jobs *js, struct job *j, enum job_status st, const char *code,
                          int http, const char *field, const char *msg) {
    queue_remove_locked(js, j);
    if (j->status == JOB_RUNNING) js->nrunning--;
    if (js->training == j) {
        js->training = NULL;
        js->tg.running = 0;
    }
    j->status = st;
    j->finished_at = unix_now();
    if (code) {
        snprintf(j->err_code, sizeof j->err_code, "%s", code);
        snprintf(j->err_field, sizeof j->err_field, "%s", field ? field : "");
        free(j->err_msg);
        j->err_msg = strdup(msg ? msg : code);
        j->err_http = http;
    }
    if (st == JOB_SUCCEEDED) {
        j->step = j->total;
    } else if (j->result) {
        js->results_bytes -= j->result->bytes;
        job_result_unref(j->result);
        j->result = NULL;
    }
    if (j->kind != JOB_LOAD) metrics_job_done(js->metrics, st, st == JOB_SUCCEEDED ? j->req.n : 0);
    /* Every job's end is in the log: sync ones also through their access-log line, so
     * those are at debug level; cancellations are logged where they are decided. */
    if (j->kind == JOB_TRAIN && st == JOB_SUCCEEDED)
        LOG_I("job %s succeeded (training, %d steps)", j->id, j->train->step);
    else if (j->kind == JOB_LOAD && st == JOB_SUCCEEDED)
        LOG_D("job %s succeeded (model load)", j->id);
    else if (st == JOB_SUCCEEDED && j->req.sync)
        LOG_D("job %s succeeded (%d image(s))", j->id, j->req.n);
    else if (st == JOB_SUCCEEDED)
        LOG_I("job %s succeeded (%d image(s), queued %.0f ms)", j->id, j->req.n, j->queue_ms);
    else if (st == JOB_FAILED)
        LOG_W("job %s failed: %s: %s", j->id, j->err_code, j->err_msg ? j->err_msg : "");
    emit_locked(js, j);
}

/* A queued or running training job writing to the run directory out, or NULL. */
static struct job *train_conflict_locked(struct jobs *js, const char *out) {
    if (js->training && !job_status_final(js->training->status) &&
        !strcmp(js->training->train->req.out, out))
        return js->training;
    for (struct job *q = js->tq.head; q; q = q->q_next)
        if (!strcmp(q->train->req.out, out)) return q;
    return NULL;
}

enum submit_result jobs_submit(struct jobs *js, struct job *j, int *queue_position,
                               char *conflict_id) {
    pthread_mutex_lock(&js->lock);
    if (!js->accepting) {
        pthread_mutex_unlock(&js->lock);
        return SUBMIT_DRAINING;
    }
    struct jqueue *q = queue_of(js, j);
    if (q->len >= (j->kind == JOB_LOAD ? LOAD_QUEUE_MAX : js->cfg->queue_max)) {
        pthread_mutex_unlock(&js->lock);
        return SUBMIT_FULL;
    }
    struct job *other = j->kind == JOB_TRAIN ? train_conflict_locked(js, j->train->req.out) : NULL;
    if (other) {
        if (conflict_id) memcpy(conflict_id, other->id, sizeof other->id);
        pthread_mutex_unlock(&js->lock);
        return SUBMIT_CONFLICT;
    }
    if (j->kind != JOB_LOAD) {
        /* Table: one reference until the TTL expires. */
        j->refs++;
        unsigned h = hash_id(j->id);
        j->h_next = js->buckets[h];
        js->buckets[h] = j;
        j->all_prev = js->all_tail;
        if (js->all_tail) js->all_tail->all_next = j; else js->all_head = j;
        js->all_tail = j;
        js->njobs++;
    }
    /* Queue: one reference until fully dispatched, started or cancelled. */
    queue_push_locked(js, j);
    j->t_submit_ms = mono_ms();
    *queue_position = q->len;
    emit_locked(js, j);
    pthread_cond_signal(&js->work);
    pthread_mutex_unlock(&js->lock);
    return SUBMIT_OK;
}

int jobs_retry_after_s(struct jobs *js) {
    pthread_mutex_lock(&js->lock);
    double per_batch = js->ewma_batch_s > 0 ? js->ewma_batch_s : 1.0;
    double batches = ceil((double)js->qimages / js->cfg->max_batch);
    pthread_mutex_unlock(&js->lock);
    double s = ceil(batches * per_batch / 2);   /* half the queue drained is worth a retry */
    return s < 1 ? 1 : s > 120 ? 120 : (int)s;
}

struct job *jobs_find(struct jobs *js, const char *id) {
    pthread_mutex_lock(&js->lock);
    struct job *j = js->buckets[hash_id(id)];
    while (j && strcmp(j->id, id)) j = j->h_next;
    if (j) j->refs++;
    pthread_mutex_unlock(&js->lock);
    return j;
}

/* Ask the running training job j to stop (the worker checkpoints and ends it). */
static void train_stop_locked(struct jobs *js, struct job *j, const char *code, int http,
                              const char *msg) {
    struct train_state *t = j->train;
    if (!t->stop) {
        t->stop = 1;
        snprintf(t->stop_code, sizeof t->stop_code, "%s", code);
        t->stop_http = http;
        free(t->stop_msg);
        t->stop_msg = strdup(msg ? msg : code);
        emit_locked(js, j);   /* "stopping": true */
    }
    pthread_cond_signal(&js->work);
}

int jobs_cancel_locked(struct jobs *js, struct job *j, const char *code, int http,
                       const char *msg) {
    if (job_status_final(j->status)) return -1;
    if (j->kind == JOB_TRAIN && j->status == JOB_RUNNING) {
        train_stop_locked(js, j, code, http, msg);
        return 0;
    }
    /* A running job's slice may still be on the device: the worker sees the final state
     * in its progress callback and stops the batch once no live job is left in it. */
    finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
    pthread_cond_signal(&js->work);
    return 0;
}

int jobs_cancel(struct jobs *js, struct job *j, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    int rc = jobs_cancel_locked(js, j, code, http, msg);
    pthread_mutex_unlock(&js->lock);
    return rc;
}

void jobs_watch_locked(struct job *j, struct job_waiter *w) {
    w->prev = NULL;
    w->next = j->waiters;
    if (j->waiters) j->waiters->prev = w;
    j->waiters = w;
}

void jobs_unwatch_locked(struct job *j, struct job_waiter *w) {
    if (w->prev) w->prev->next = w->next;
    else if (j->waiters == w) j->waiters = w->next;
    else return;   /* not registered */
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

struct job_result *jobs_result_ref_locked(struct job *j) {
    if (!j->result || j->status != JOB_SUCCEEDED) return NULL;
    atomic_fetch_add(&j->result->refs, 1);
    return j->result;
}

void jobs_result_delivered_locked(struct jobs *js, struct job *j) {
    if (!j->result) return;
    js->results_bytes -= j->result->bytes;
    job_result_unref(j->result);
    j->result = NULL;
    j->result_dropped = 1;
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

/* Jobs can share an engine call when everything but prompt and seed is equal.  The
 * whole struct is compared, so a field added to gen_params later (a sampler, guidance)
 * separates batches without a change here; requests build their params from a zeroed
 * struct, so unused entries compare equal. */
static int compatible(const struct gen_params *a, const struct gen_params *b) {
    return !memcmp(a, b, sizeof *a);
}

static int compatible_images_locked(struct jobs *js, const struct job *head, int cap) {
    int n = 0;
    for (const struct job *q = js->q.head; q && n < cap; q = q->q_next)
        if (compatible(&q->req.params, &head->req.params)) n += q->req.n - q->dispatched;
    return n;
}

/* Take queued job j off its queue and make it running (its queue reference becomes
 * the worker's). */
static void start_locked(struct jobs *js, struct job *j) {
    unlink_locked(js, j);
    j->status = JOB_RUNNING;
    js->nrunning++;
    j->started_at = unix_now();
    j->queue_ms = mono_ms() - j->t_submit_ms;
    emit_locked(js, j);
}

/* Fill b from the generation queue (the head and compatible jobs behind it). */
static void take_batch_locked(struct jobs *js, struct batch *b) {
    const int max_batch = js->cfg->max_batch;
    struct job *head = js->q.head;
    memset(b, 0, sizeof *b);
    b->params = head->req.params;
    double now_ms = mono_ms(), now = unix_now();
    for (struct job *q = js->q.head, *nx; q && b->images < max_batch; q = nx) {
        nx = q->q_next;
        if (!compatible(&q->req.params, &b->params)) continue;
        int take = q->req.n - q->dispatched;
        if (take > max_batch - b->images) take = max_batch - b->images;
        struct batch_slice *s = &b->s[b->nslices++];
        s->job = q;
        s->first = q->dispatched;
        s->count = take;
        q->refs++;   /* the batch's reference */
        q->dispatched += take;
        js->qimages -= take;
        b->images += take;
        if (q->status == JOB_QUEUED) {
            q->status = JOB_RUNNING;
            js->nrunning++;
            q->started_at = now;
            q->queue_ms = now_ms - q->t_submit_ms;
            metrics_queue_wait(js->metrics, q->queue_ms / 1e3);
            emit_locked(js, q);
        }
        if (q->dispatched == q->req.n) queue_remove_locked(js, q);   /* nothing left to take */
    }
}

enum work_kind jobs_next_work(struct jobs *js, struct batch *b, struct job *training,
                              struct job **job) {
    const int max_batch = js->cfg->max_batch;
    enum work_kind w;
    *job = NULL;
    pthread_mutex_lock(&js->lock);
    for (;;) {
        if (js->stop_now) { w = WORK_STOP; break; }
        /* A load goes between batches, but not between the slices of one job: its
         * images must all come from one generator. */
        if (js->cq.head && !(js->q.head && js->q.head->dispatched > 0)) {
            *job = js->cq.head;
            start_locked(js, *job);
            w = WORK_LOAD;
            break;
        }
        if (training && (job_status_final(training->status) || training->train->stop ||
                         (js->stopping && !js->q.head))) {
            w = WORK_TRAIN_STOP;
            break;
        }
        if (js->q.head) {
            double deadline = js->q.head->t_submit_ms + js->cfg->batch_window_ms;
            if (!js->stopping && mono_ms() < deadline &&
                compatible_images_locked(js, js->q.head, max_batch) < max_batch) {
                struct timespec ts;
                ts.tv_sec = (time_t)(deadline / 1e3);
                ts.tv_nsec = (long)((deadline - ts.tv_sec * 1e3) * 1e6);
                if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
                pthread_cond_timedwait(&js->work, &js->lock, &ts);
                continue;   /* re-check: the head may have been cancelled meanwhile */
            }
            take_batch_locked(js, b);
            w = WORK_BATCH;
            break;
        }
        if (training) { w = WORK_TRAIN_STEP; break; }
        if (js->stopping) { w = WORK_STOP; break; }
        if (js->tq.head) {
            *job = js->tq.head;
            start_locked(js, *job);
            js->training = *job;
            js->tg = (struct train_gauges){ .seen = 1, .running = 1,
                                            .total = (*job)->train->req.steps };
            for (int i = 0; i < 4; i++) js->tg.loss[i] = NAN;
            js->tg.grad[0] = js->tg.grad[1] = NAN;
            LOG_I("job %s: training started (queued %.0f ms)", (*job)->id, (*job)->queue_ms);
            w = WORK_TRAIN_START;
            break;
        }
        pthread_cond_wait(&js->work, &js->lock);
    }
    pthread_mutex_unlock(&js->lock);
    return w;
}

void jobs_train_update(struct jobs *js, struct job *j, const struct train_update *u) {
    pthread_mutex_lock(&js->lock);
    if (job_status_final(j->status)) {   /* forced stop: its log already ended */
        pthread_mutex_unlock(&js->lock);
        return;
    }
    struct train_state *t = j->train;
    const char *shown;
    t->step = u->step;
    j->step = u->step;
    if (u->has_losses) {
        t->generator_steps = u->generator_steps;
        t->have_losses = 1;
        t->dm = u->dm;
        t->gan_g = u->gan_g;
        t->fake = u->fake;
        t->gan_d = u->gan_d;
        t->grad_generator = u->grad_generator;
        t->grad_fake = u->grad_fake;
        t->it_per_s = u->it_per_s;
        t->eta_s = u->eta_s;
        if (u->emit && ++t->hist_skip >= (t->hist_stride > 0 ? t->hist_stride : 1)) {
            t->hist_skip = 0;
            if (t->nhist == TRAIN_HIST_MAX) {   /* halve the resolution */
                for (int i = 0; i < TRAIN_HIST_MAX / 2; i++) t->hist[i] = t->hist[2 * i + 1];
                t->nhist = TRAIN_HIST_MAX / 2;
                t->hist_stride = 2 * (t->hist_stride > 0 ? t->hist_stride : 1);
            }
            t->hist[t->nhist++] = (struct train_point){ u->step, (float)u->dm, (float)u->gan_g, (float)u->fake,
                                                        (float)u->gan_d };
        }
    }
    if (u->sample && t->nsamples < 100000) {
        if (t->nsamples == t->cap_samples) {
            int nc = t->cap_samples ? 2 * t->cap_samples : 16;
            char **ns = realloc(t->samples, (size_t)nc * sizeof *ns);
            if (ns) { t->samples = ns; t->cap_samples = nc; }
        }
        shown = shown_path(&t->req, u->sample);
        if (t->nsamples < t->cap_samples && (t->samples[t->nsamples] = strdup(shown)))
            t->nsamples++;
    }
    if (u->checkpoint) {
        if (t->nckpts == t->cap_ckpts) {
            int nc = t->cap_ckpts ? 2 * t->cap_ckpts : 16;
            struct train_ckpt *nk = realloc(t->ckpts, (size_t)nc * sizeof *nk);
            if (nk) { t->ckpts = nk; t->cap_ckpts = nc; }
        }
        shown = shown_path(&t->req, u->checkpoint);
        if (t->nckpts < t->cap_ckpts && (t->ckpts[t->nckpts].path = strdup(shown)))
            t->ckpts[t->nckpts++].step = u->step;
        /* every checkpoint also rewrites OUT/generator.safetensors */
        if (!t->generator) {
            char p[4200];
            snprintf(p, sizeof p, "%s/generator.safetensors", shown_path(&t->req, t->req.out));
            t->generator = strdup(p);
        }
    }
    if (js->training == j && u->has_losses) {
        js->tg.step = u->step;
        js->tg.gen_steps = u->generator_steps;
        js->tg.it_per_s = u->it_per_s;
        js->tg.loss[0] = u->dm;
        js->tg.loss[1] = u->gan_g;
        js->tg.loss[2] = u->fake;
        js->tg.loss[3] = u->gan_d;
        js->tg.grad[0] = u->grad_generator;
        js->tg.grad[1] = u->grad_fake;
    }
    if (u->emit || u->sample || u->checkpoint) emit_locked(js, j);
    pthread_mutex_unlock(&js->lock);
}

void jobs_train_finish(struct jobs *js, struct job *j, enum job_status st, const char *code,
                       int http, const char *field, const char *msg) {
    pthread_mutex_lock(&js->lock);
    if (!job_status_final(j->status)) {
        struct train_state *t = j->train;
        if (st == JOB_CANCELLED) {
            char m[1024];
            snprintf(m, sizeof m, "%s%s%s", t->stop_msg ? t->stop_msg : "stopped",
                     msg ? "; " : "", msg ? msg : "");
            LOG_I("job %s: training stopped at step %d: %s", j->id, t->step, m);
            finish_locked(js, j, JOB_CANCELLED, t->stop_code[0] ? t->stop_code : "cancelled",
                          t->stop_http ? t->stop_http : 409, NULL, m);
        } else {
            finish_locked(js, j, st, code, http, field, msg);
        }
    }
    pthread_mutex_unlock(&js->lock);
}

void jobs_load_finish(struct jobs *js, struct job *j, sd_status st, const char *code, int http,
                      const char *msg) {
    pthread_mutex_lock(&js->lock);
    if (!job_status_final(j->status))
        finish_locked(js, j, st == SD_OK ? JOB_SUCCEEDED : JOB_FAILED, st == SD_OK ? NULL : code,
                      http, st == SD_OK ? NULL : "generator", msg);
    pthread_mutex_unlock(&js->lock);
}

void jobs_stop_training(struct jobs *js, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    for (struct job *j = js->tq.head, *nx; j; j = nx) {
        nx = j->q_next;
        LOG_W("job %s (queued training) cancelled: %s", j->id, msg);
        finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
    }
    if (js->training && !job_status_final(js->training->status)) {
        LOG_I("job %s: stopping the training run (final checkpoint): %s", js->training->id, msg);
        train_stop_locked(js, js->training, code, http, msg);
    }
    pthread_cond_broadcast(&js->work);
    pthread_mutex_unlock(&js->lock);
}

int jobs_batch_progress(struct jobs *js, struct batch *b, int step, int total) {
    (void)total;
    pthread_mutex_lock(&js->lock);
    int live = 0;
    for (int i = 0; i < b->nslices; i++) {
        struct job *j = b->s[i].job;
        if (job_status_final(j->status)) continue;
        live++;
        j->step = j->steps_base + step * b->s[i].count;
        emit_locked(js, j);
    }
    int stop = live == 0 || js->stop_now;
    pthread_mutex_unlock(&js->lock);
    return stop;
}

void jobs_batch_done(struct jobs *js, struct batch *b, sd_status st, const char *msg,
                     const struct gen_timings *tm, const int *truncated, double gen_ms) {
    pthread_mutex_lock(&js->lock);
    if (st == SD_OK)
        js->ewma_batch_s = js->ewma_batch_s > 0 ? 0.8 * js->ewma_batch_s + 0.2 * gen_ms / 1e3
                                                : gen_ms / 1e3;
    int k = 0;
    for (int i = 0; i < b->nslices; i++) {
        struct batch_slice *s = &b->s[i];
        struct job *j = s->job;
        if (!job_status_final(j->status)) {
            if (st == SD_OK) {
                j->steps_base += s->count * b->params.nsteps;
                j->step = j->steps_base;
                j->tm.text_ms += tm->text_ms;
                j->tm.unet_ms += tm->unet_ms;
                j->tm.vae_ms += tm->vae_ms;
                for (int t = 0; t < s->count; t++) j->truncated |= truncated[k + t];
            } else if (st == SD_ERR_CANCELLED) {
                finish_locked(js, j, JOB_CANCELLED, "shutting_down", 503, NULL,
                              "the daemon is shutting down; the job was cancelled");
            } else if (st == SD_ERR_INVALID) {
                finish_locked(js, j, JOB_FAILED, "invalid_argument", 400, NULL, msg);
            } else if (st == SD_ERR_NOMEM) {
                finish_locked(js, j, JOB_FAILED, "resource_exhausted", 503, NULL, msg);
            } else {
                finish_locked(js, j, JOB_FAILED, "generation_failed", 500, NULL, msg);
            }
        }
        k += s->count;
    }
    pthread_mutex_unlock(&js->lock);
}

void jobs_store_images(struct jobs *js, struct job *j, int first, int count,
                       struct job_image *imgs) {
    pthread_mutex_lock(&js->lock);
    if (job_status_final(j->status)) {
        pthread_mutex_unlock(&js->lock);
        for (int i = 0; i < count; i++) sd_free(imgs[i].png);
        return;
    }
    if (!j->result) {
        j->result = calloc(1, sizeof *j->result + (size_t)j->req.n * sizeof(struct job_image));
        if (!j->result) {
            finish_locked(js, j, JOB_FAILED, "resource_exhausted", 503, NULL,
                          "out of memory storing the images");
            pthread_mutex_unlock(&js->lock);
            for (int i = 0; i < count; i++) sd_free(imgs[i].png);
            return;
        }
        atomic_init(&j->result->refs, 1);
        j->result->n = j->req.n;
    }
    for (int i = 0; i < count; i++) {
        j->result->img[first + i] = imgs[i];
        j->result->bytes += imgs[i].len;
        js->results_bytes += imgs[i].len;
    }
    j->encoded += count;
    if (j->encoded == j->req.n) finish_locked(js, j, JOB_SUCCEEDED, NULL, 0, NULL, NULL);
    pthread_mutex_unlock(&js->lock);
}

void jobs_fail(struct jobs *js, struct job *j, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    if (!job_status_final(j->status)) finish_locked(js, j, JOB_FAILED, code, http, NULL, msg);
    pthread_mutex_unlock(&js->lock);
}

void jobs_batch_release(struct jobs *js, struct batch *b) {
    pthread_mutex_lock(&js->lock);
    for (int i = 0; i < b->nslices; i++) jobs_unref_locked(js, b->s[i].job);
    b->nslices = 0;
    pthread_mutex_unlock(&js->lock);
}

void jobs_set_accepting(struct jobs *js, int accepting) {
    pthread_mutex_lock(&js->lock);
    js->accepting = accepting;
    pthread_mutex_unlock(&js->lock);
}

int jobs_busy(struct jobs *js) {
    pthread_mutex_lock(&js->lock);
    int busy = js->q.len > 0 || js->tq.len > 0 || js->cq.len > 0 || js->nrunning > 0;
    pthread_mutex_unlock(&js->lock);
    return busy;
}

void jobs_cancel_all(struct jobs *js, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    for (struct job *j = js->all_head; j; j = j->all_next)
        if (!job_status_final(j->status)) {
            LOG_W("job %s (%s) cancelled: %s", j->id, job_status_name(j->status), msg);
            finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
        }
    for (struct job *j = js->cq.head, *nx; j; j = nx) {   /* loads: in no table */
        nx = j->q_next;
        finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
    }
    js->stop_now = 1;
    pthread_cond_broadcast(&js->work);
    pthread_mutex_unlock(&js->lock);
}

void jobs_stop(struct jobs *js) {
    pthread_mutex_lock(&js->lock);
    js->stopping = 1;
    pthread_cond_broadcast(&js->work);
    pthread_mutex_unlock(&js->lock);
}

static void table_remove_locked(struct jobs *js, struct job *j) {
    struct job **pp = &js->buckets[hash_id(j->id)];
    while (*pp && *pp != j) pp = &(*pp)->h_next;
    if (*pp) *pp = j->h_next;
    if (j->all_prev) j->all_prev->all_next = j->all_next; else js->all_head = j->all_next;
    if (j->all_next) j->all_next->all_prev = j->all_prev; else js->all_tail = j->all_prev;
    j->all_prev = j->all_next = NULL;
    js->njobs--;
    if (j->result) {
        js->results_bytes -= j->result->bytes;
        job_result_unref(j->result);
        j->result = NULL;
    }
    jobs_unref_locked(js, j);   /* the table's reference */
}

void jobs_housekeep(struct jobs *js) {
    double now = unix_now();
    size_t cap = (size_t)js->cfg->result_max_mb << 20;
    pthread_mutex_lock(&js->lock);
    for (struct job *j = js->all_head, *nx; j; j = nx) {
        nx = j->all_next;
        if (job_status_final(j->status) && j->finished_at + js->cfg->result_ttl_s < now)
            table_remove_locked(js, j);
    }
    /* Over the memory cap: drop the images of the oldest finished jobs (their metadata
     * stays until the TTL, so a client learns why the images are gone). */
    for (struct job *j = js->all_head; j && js->results_bytes > cap; j = j->all_next)
        if (j->status == JOB_SUCCEEDED && j->result) {
            js->results_bytes -= j->result->bytes;
            job_result_unref(j->result);
            j->result = NULL;
            j->result_dropped = 2;
        }
    pthread_mutex_unlock(&js->lock);
}

void jobs_gauges(struct jobs *js, struct metrics_gauges *g) {
    pthread_mutex_lock(&js->lock);
    g->queue_jobs = js->q.len + js->tq.len;
    g->train_seen = js->tg.seen;
    g->train_running = js->tg.running;
    g->train_step = js->tg.step;
    g->train_total_steps = js->tg.total;
    g->train_generator_steps = js->tg.gen_steps;
    g->train_it_per_s = js->tg.it_per_s;
    for (int i = 0; i < 4; i++) g->train_loss[i] = js->tg.loss[i];
    g->train_grad[0] = js->tg.grad[0];
    g->train_grad[1] = js->tg.grad[1];
    g->queue_images = js->qimages;
    g->running_jobs = js->nrunning;
    g->retained_jobs = js->njobs;
    g->results_bytes = js->results_bytes;
    pthread_mutex_unlock(&js->lock);
}
