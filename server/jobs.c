/* jobs.c — the job table and the job states (contracts in jobs.h, shared internals in
 * jobs_impl.h): creating jobs and their ids, references, the three queues (generations,
 * training jobs, model loads), submission, lookup, cancellation, the move to a final
 * state, the per-job event log that SSE streams replay, retained results with their TTL
 * and memory cap, and the daemon's lifecycle (drain, forced stop) and gauges.
 *
 * Elsewhere: what the worker does next and the progress it reports are jobs_work.c's,
 * the batching and scheduling policy is batching.c's (pure, tested alone), the JSON a
 * client sees is jobs_json.c's.
 *
 * One lock (jobs.h) guards it all; a job is freed when its last reference goes, so the
 * table, a queue, a batch, an encoder and a waiting request never free one another's
 * job.  The event log is bounded (MAX_EVENTS): a long training run forgets its oldest
 * events, and a reconnecting SSE client resumes from the oldest one kept. */
#include "jobs_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "config.h"
#include "metrics.h"

static const char *status_names[] = { "queued", "running", "succeeded", "failed", "cancelled" };

const char *job_status_name(enum job_status s) {
    return (unsigned)s < 5 ? status_names[s] : "unknown";
}

int job_status_parse(const char *s) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, status_names[i])) return i;
    return -1;
}

static const char *const format_names[] = { "png", "jpeg", "webp" };
static const char *const format_mimes[] = { "image/png", "image/jpeg", "image/webp" };

const char *gen_format_name(enum gen_format f) { return (unsigned)f < 3 ? format_names[f] : "png"; }
const char *gen_format_mime(enum gen_format f) { return (unsigned)f < 3 ? format_mimes[f] : "image/png"; }

int gen_format_parse(const char *s) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, format_names[i])) return i;
    return -1;
}

double jobs_unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
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
    free(j->req.ignored);
    free(j->req.model);
    free(j->load_model);
    free(j->req.init);
    free(j->req.mask);
    train_state_free(j->train);
    free(j->load_generator);
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

/* A fresh job of this kind with a random id: [replica-]prefix + 20 hex digits. */
static struct job *job_alloc(struct jobs *js, enum job_kind kind, const char *prefix) {
    struct job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    uint8_t rnd[10];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* getrandom on Linux does not fail for 10 bytes once the pool is seeded; fall
         * back to time and address entropy rather than refuse the request. */
        uint64_t x = (uint64_t)sd_now_ms() ^ (uint64_t)(uintptr_t)j;
        for (int i = 0; i < 10; i++) rnd[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    const char *replica = js->cfg->replica;
    int o = snprintf(j->id, sizeof j->id, "%s%s%s", replica, replica[0] ? "-" : "", prefix);
    for (int i = 0; i < 10; i++) o += snprintf(j->id + o, sizeof j->id - (size_t)o, "%02x", rnd[i]);
    j->kind = kind;
    j->status = JOB_QUEUED;
    j->refs = 1;
    j->created_at = jobs_unix_now();
    return j;
}

struct job *job_new_generate(struct jobs *js, struct gen_request *req) {
    struct job *j = job_alloc(js, JOB_GENERATE, "gen_");
    if (!j) return NULL;
    j->req = *req;
    req->prompt = NULL;
    req->ignored = NULL;
    req->model = NULL;
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

struct job *job_new_train(struct jobs *js, struct train_request *req) {
    struct job *j = job_alloc(js, JOB_TRAIN, "train_");
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

struct job *job_new_load(struct jobs *js, const char *path, const char *lora, float lora_scale,
                         const char *shown) {
    struct job *j = job_alloc(js, JOB_LOAD, "load_");
    if (!j) return NULL;
    j->load_generator = path ? strdup(path) : NULL;
    j->load_lora = lora ? strdup(lora) : NULL;
    j->load_lora_scale = lora_scale;
    j->load_shown = strdup(shown);
    if ((path && !j->load_generator) || (lora && !j->load_lora) || !j->load_shown) {
        free(j->load_generator);
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

int jobs_queue_position_locked(struct jobs *js, struct job *j) {
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

void jobs_unlink_locked(struct jobs *js, struct job *j) {
    struct jqueue *q = queue_of(js, j);
    if (j->q_prev) j->q_prev->q_next = j->q_next; else q->head = j->q_next;
    if (j->q_next) j->q_next->q_prev = j->q_prev; else q->tail = j->q_prev;
    j->q_prev = j->q_next = NULL;
    j->in_queue = 0;
    q->len--;
}

void jobs_queue_remove_locked(struct jobs *js, struct job *j) {
    if (!j->in_queue) return;
    jobs_unlink_locked(js, j);
    if (j->kind == JOB_GENERATE) js->qimages -= j->req.n - j->dispatched;
    jobs_unref_locked(js, j);   /* the queue's reference */
}

/* Append an event (a snapshot of the job, jobs_json.c) and wake the job's waiters. */
static void table_remove_locked(struct jobs *js, struct job *j, enum gone_why why);

/* j holds delta more bytes (less when negative); the table's total follows.  A job that
 * grows (its events) past retained_jobs_mb evicts the oldest finished jobs other than
 * itself, so the bound holds between housekeeping passes too. */
static void account_locked(struct jobs *js, struct job *j, long long delta) {
    j->mem = (size_t)((long long)j->mem + delta);
    if (!j->in_table) return;
    js->jobs_bytes = (size_t)((long long)js->jobs_bytes + delta);
    const size_t cap = (size_t)js->cfg->retained_jobs_mb << 20;
    for (struct job *o = js->all_head, *nx; delta > 0 && o && js->jobs_bytes > cap; o = nx) {
        nx = o->all_next;
        if (o == j || !job_status_final(o->status)) continue;
        table_remove_locked(js, o, GONE_MAX_MB);
        js->evicted++;
    }
}

void jobs_emit_locked(struct jobs *js, struct job *j) {
    char *s = jobs_event_text_locked(js, j, (long)j->events_base + j->nevents + 1);
    if (s) {
        if (j->nevents == MAX_EVENTS) {
            /* Keep the log bounded (long training runs): forget the oldest event. */
            account_locked(js, j, -(long long)(strlen(j->events[0]) + 1));
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
        if (j->nevents < j->cap_events) {
            j->events[j->nevents++] = s;
            account_locked(js, j, (long long)strlen(s) + 1);
        } else {
            free(s);   /* out of memory: the waiters still see the current state */
        }
    }
    for (struct job_waiter *w = j->waiters, *nx; w; w = nx) {
        nx = w->next;
        w->wake(w);
    }
}

void jobs_finish_locked(struct jobs *js, struct job *j, enum job_status st, const char *code,
                        int http, const char *field, const char *msg) {
    jobs_queue_remove_locked(js, j);
    if (j->status == JOB_RUNNING) js->nrunning--;
    if (js->training == j) {
        js->training = NULL;
        js->tg.running = 0;
    }
    j->status = st;
    j->finished_at = jobs_unix_now();
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
    jobs_emit_locked(js, j);
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

/* What a job holds before its first event: the struct, its strings, a training run's
 * state (its loss history and lists grow to bounded sizes: counted at their bound). */
static size_t footprint(const struct job *j) {
    size_t n = sizeof *j + (j->req.prompt ? strlen(j->req.prompt) + 1 : 0) +
               (j->req.ignored ? strlen(j->req.ignored) + 1 : 0);
    size_t npix = (size_t)j->req.params.width * j->req.params.height;
    n += (j->req.init ? 3 * npix : 0) + (j->req.mask ? npix : 0);
    if (j->train) {
        const struct train_request *r = &j->train->req;
        const char *s[] = { r->teacher, r->generator_init, r->out, r->data, r->root, r->echo };
        n += sizeof *j->train + TRAIN_HIST_MAX * 9 * sizeof(double);
        for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) n += s[i] ? strlen(s[i]) + 1 : 0;
    }
    return n;
}

static void table_remove_locked(struct jobs *js, struct job *j, enum gone_why why);

/* Room for one more job of `bytes` in the table: the oldest finished jobs are evicted
 * while it is over retained_jobs_max jobs or retained_jobs_mb bytes.  0 when the live
 * jobs alone fill it. */
static int make_room_locked(struct jobs *js, size_t bytes) {
    const size_t cap = (size_t)js->cfg->retained_jobs_mb << 20;
    const long max = js->cfg->retained_jobs_max;
    for (struct job *j = js->all_head, *nx; j && (js->njobs + 1 > max || js->jobs_bytes + bytes > cap); j = nx) {
        nx = j->all_next;
        if (!job_status_final(j->status)) continue;
        table_remove_locked(js, j, js->njobs + 1 > max ? GONE_MAX_JOBS : GONE_MAX_MB);
        js->evicted++;
    }
    return js->njobs + 1 <= max && js->jobs_bytes + bytes <= cap;
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
    if (j->kind != JOB_LOAD && !make_room_locked(js, footprint(j))) {
        pthread_mutex_unlock(&js->lock);
        return SUBMIT_TABLE_FULL;
    }
    if (j->kind != JOB_LOAD) {
        /* Table: one reference until the TTL expires, or until evicted for room. */
        j->refs++;
        j->mem = footprint(j);
        js->jobs_bytes += j->mem;
        j->in_table = 1;
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
    j->t_submit_ms = sd_now_ms();
    j->seq = ++js->submit_seq;
    j->passes_at_submit = js->train_passes;
    *queue_position = q->len;
    jobs_emit_locked(js, j);
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

void jobs_train_stop_locked(struct jobs *js, struct job *j, const char *code, int http,
                            const char *msg) {
    struct train_state *t = j->train;
    if (!t->stop) {
        t->stop = 1;
        snprintf(t->stop_code, sizeof t->stop_code, "%s", code);
        t->stop_http = http;
        free(t->stop_msg);
        t->stop_msg = strdup(msg ? msg : code);
        jobs_emit_locked(js, j);   /* "stopping": true */
    }
    pthread_cond_signal(&js->work);
}

int jobs_cancel_locked(struct jobs *js, struct job *j, const char *code, int http,
                       const char *msg) {
    if (job_status_final(j->status)) return -1;
    if (j->kind == JOB_TRAIN && j->status == JOB_RUNNING) {
        jobs_train_stop_locked(js, j, code, http, msg);
        return 0;
    }
    /* A running job's slice may still be on the device: the worker sees the final state
     * in its progress callback and stops the batch once no live job is left in it. */
    jobs_finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
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

void jobs_stop_training(struct jobs *js, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    for (struct job *j = js->tq.head, *nx; j; j = nx) {
        nx = j->q_next;
        LOG_W("job %s (queued training) cancelled: %s", j->id, msg);
        jobs_finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
    }
    if (js->training && !job_status_final(js->training->status)) {
        LOG_I("job %s: stopping the training run (final checkpoint): %s", js->training->id, msg);
        jobs_train_stop_locked(js, js->training, code, http, msg);
    }
    pthread_cond_broadcast(&js->work);
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
            jobs_finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
        }
    for (struct job *j = js->cq.head, *nx; j; j = nx) {   /* loads: in no table */
        nx = j->q_next;
        jobs_finish_locked(js, j, JOB_CANCELLED, code, http, NULL, msg);
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

/* j leaves the table (why: the reason its id will answer 404 with). */
static void table_remove_locked(struct jobs *js, struct job *j, enum gone_why why) {
    struct gone_entry *g = &js->gone[js->gone_next];
    js->gone_next = (js->gone_next + 1) % GONE_REMEMBERED;
    memcpy(g->id, j->id, sizeof g->id);
    g->why = (unsigned char)why;
    struct job **pp = &js->buckets[hash_id(j->id)];
    while (*pp && *pp != j) pp = &(*pp)->h_next;
    if (*pp) *pp = j->h_next;
    if (j->all_prev) j->all_prev->all_next = j->all_next; else js->all_head = j->all_next;
    if (j->all_next) j->all_next->all_prev = j->all_prev; else js->all_tail = j->all_prev;
    j->all_prev = j->all_next = NULL;
    js->njobs--;
    js->jobs_bytes -= j->mem;
    j->in_table = 0;
    if (j->result) {
        js->results_bytes -= j->result->bytes;
        job_result_unref(j->result);
        j->result = NULL;
    }
    jobs_unref_locked(js, j);   /* the table's reference */
}

void jobs_gone_why(struct jobs *js, const char *id, char *out, size_t n) {
    const struct sdxld_config *c = js->cfg;
    int why = 0;
    pthread_mutex_lock(&js->lock);
    for (int k = 1; k <= GONE_REMEMBERED && !why; k++) {   /* newest first */
        const struct gone_entry *g = &js->gone[(js->gone_next + GONE_REMEMBERED - k) % GONE_REMEMBERED];
        if (g->why && !strcmp(g->id, id)) why = g->why;
    }
    pthread_mutex_unlock(&js->lock);
    switch (why) {
    case GONE_TTL:
        snprintf(out, n, "it finished more than result_ttl_s (%d s) ago and was dropped", c->result_ttl_s);
        break;
    case GONE_MAX_JOBS:
        snprintf(out, n, "it finished and was evicted before result_ttl_s to keep the job table within "
                 "retained_jobs_max (%d jobs)", c->retained_jobs_max);
        break;
    case GONE_MAX_MB:
        snprintf(out, n, "it finished and was evicted before result_ttl_s to keep the job table within "
                 "retained_jobs_mb (%d MiB)", c->retained_jobs_mb);
        break;
    default:
        snprintf(out, n, "unknown id (never submitted to this daemon since it started, or dropped "
                 "too long ago to say why)");
    }
}

void jobs_housekeep(struct jobs *js) {
    double now = jobs_unix_now();
    size_t cap = (size_t)js->cfg->result_max_mb << 20;
    pthread_mutex_lock(&js->lock);
    for (struct job *j = js->all_head, *nx; j; j = nx) {
        nx = j->all_next;
        if (job_status_final(j->status) && j->finished_at + js->cfg->result_ttl_s < now)
            table_remove_locked(js, j, GONE_TTL);
    }
    /* Event logs grow after submission: back under the table's caps (oldest finished first). */
    make_room_locked(js, 0);
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
    g->retained_jobs_bytes = js->jobs_bytes;
    g->jobs_evicted = js->evicted;
    g->results_bytes = js->results_bytes;
    pthread_mutex_unlock(&js->lock);
}
