/* metrics.c — Prometheus counters and histograms (see metrics.h).
 *
 * Histograms use fixed buckets chosen for this workload: queue wait and generation time
 * from 5 ms (tiny test model) to 2 minutes (SDXL batches on a CPU), batch sizes in
 * powers of two up to the largest max_batch. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODES_PER_ROUTE 24

static const double time_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
};
static const double batch_buckets[] = { 1, 2, 4, 8, 16, 32, 64 };

#define NTB (sizeof time_buckets / sizeof time_buckets[0])
#define NBB (sizeof batch_buckets / sizeof batch_buckets[0])

struct hist {
    const double *bounds;
    int nb;
    uint64_t counts[16];     /* per bucket (not cumulative); [nb] = +Inf */
    double sum;
    uint64_t count;
};

struct route_counts {
    int n;
    unsigned code[CODES_PER_ROUTE];
    uint64_t count[CODES_PER_ROUTE];
};

static const char *job_status_names[] = { "queued", "running", "succeeded", "failed", "cancelled" };

struct metrics {
    pthread_mutex_t lock;
    int nroutes;
    const char *const *methods, *const *patterns;
    struct route_counts *routes;   /* nroutes + 1 (unmatched) */
    struct hist queue_wait, gen_time, batch_size;
    uint64_t images, batches, batches_stopped, client_gone;
    uint64_t jobs_done[5];
};

static void hist_init(struct hist *h, const double *bounds, int nb) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->nb = nb;
}

static void hist_observe(struct hist *h, double v) {
    int i = 0;
    while (i < h->nb && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

struct metrics *metrics_new(int nroutes, const char *const *route_methods,
                            const char *const *route_patterns) {
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->routes = calloc((size_t)nroutes + 1, sizeof *m->routes);
    if (!m->routes) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->nroutes = nroutes;
    m->methods = route_methods;
    m->patterns = route_patterns;
    hist_init(&m->queue_wait, time_buckets, (int)NTB);
    hist_init(&m->gen_time, time_buckets, (int)NTB);
    hist_init(&m->batch_size, batch_buckets, (int)NBB);
    return m;
}

void metrics_free(struct metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m->routes);
    free(m);
}

void metrics_request(struct metrics *m, int route, unsigned status) {
    if (route < 0 || route > m->nroutes) route = m->nroutes;
    pthread_mutex_lock(&m->lock);
    struct route_counts *rc = &m->routes[route];
    int i;
    for (i = 0; i < rc->n; i++)
        if (rc->code[i] == status) break;
    if (i == rc->n && rc->n < CODES_PER_ROUTE) {
        rc->code[i] = status;
        rc->count[i] = 0;
        rc->n++;
    }
    if (i < rc->n) rc->count[i]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_queue_wait(struct metrics *m, double seconds) {
    pthread_mutex_lock(&m->lock);
    hist_observe(&m->queue_wait, seconds);
    pthread_mutex_unlock(&m->lock);
}

void metrics_batch(struct metrics *m, int images, double gen_seconds) {
    pthread_mutex_lock(&m->lock);
    hist_observe(&m->batch_size, images);
    hist_observe(&m->gen_time, gen_seconds);
    m->batches++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_job_done(struct metrics *m, int status_index, int images) {
    pthread_mutex_lock(&m->lock);
    if (status_index >= 0 && status_index < 5) m->jobs_done[status_index]++;
    m->images += (uint64_t)images;
    pthread_mutex_unlock(&m->lock);
}

void metrics_batch_stopped(struct metrics *m) {
    pthread_mutex_lock(&m->lock);
    m->batches_stopped++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_client_gone(struct metrics *m) {
    pthread_mutex_lock(&m->lock);
    m->client_gone++;
    pthread_mutex_unlock(&m->lock);
}

/* A growable output buffer. */
struct sbuf { char *p; size_t len, cap; int oom; };

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        size_t nc = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
}

/* Label values: escape \ " and newline as the text format requires. */
static void sb_label(struct sbuf *b, const char *s) {
    for (; s && *s; s++) {
        if (*s == '\\') sb_printf(b, "\\\\");
        else if (*s == '"') sb_printf(b, "\\\"");
        else if (*s == '\n') sb_printf(b, "\\n");
        else sb_printf(b, "%c", *s);
    }
}

static void render_hist(struct sbuf *b, const char *name, const char *help, const struct hist *h) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->nb; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->nb];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

static void gauge(struct sbuf *b, const char *name, const char *help, double v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

/* A sample value: the text format spells non-finite values NaN, +Inf, -Inf. */
static void sb_value(struct sbuf *b, double v) {
    if (isnan(v)) sb_printf(b, "NaN\n");
    else if (isinf(v)) sb_printf(b, "%sInf\n", v > 0 ? "+" : "-");
    else sb_printf(b, "%.17g\n", v);
}

/* Training progress: the running training job, else the last one. */
static void render_train(struct sbuf *b, const struct metrics_gauges *g) {
    gauge(b, "sdxld_train_running", "1 while a training job runs.", g->train_running);
    gauge(b, "sdxld_train_step", "Iterations done by the running (else the last) training job.",
          g->train_step);
    gauge(b, "sdxld_train_total_steps", "Iterations the running (else the last) training job asks for.",
          g->train_total_steps);
    gauge(b, "sdxld_train_generator_steps", "Generator updates of the running (else the last) "
          "training job.", g->train_generator_steps);
    gauge(b, "sdxld_train_iterations_per_second", "Training iterations per second (wall clock, "
          "generations in between included).", g->train_it_per_s);
    static const char *losses[] = { "dm", "gan_g", "fake", "gan_d" }, *nets[] = { "generator", "fake" };
    sb_printf(b, "# HELP sdxld_train_loss Last value of each training loss.\n"
                 "# TYPE sdxld_train_loss gauge\n");
    for (int i = 0; i < 4; i++) {
        sb_printf(b, "sdxld_train_loss{loss=\"%s\"} ", losses[i]);
        sb_value(b, g->train_loss[i]);
    }
    sb_printf(b, "# HELP sdxld_train_grad_norm Last gradient norm (before clipping) of each "
                 "trained network.\n# TYPE sdxld_train_grad_norm gauge\n");
    for (int i = 0; i < 2; i++) {
        sb_printf(b, "sdxld_train_grad_norm{net=\"%s\"} ", nets[i]);
        sb_value(b, g->train_grad[i]);
    }
}

/* The exposition in text with label replica="name" added to every sample line (comment
 * lines copied): done once on the whole text, so no series can be left without it. */
static void label_all(struct sbuf *out, const char *text, const char *name) {
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        size_t k = strcspn(line, "{ \n");   /* the metric name */
        if (line[0] == '#' || k == 0 || k >= n) {
            sb_printf(out, "%.*s", (int)n, line);
        } else {
            int braces = line[k] == '{';
            sb_printf(out, "%.*s{replica=\"", (int)k, line);
            sb_label(out, name);
            sb_printf(out, "\"%s%.*s", braces ? "," : "}", (int)(n - k - braces), line + k + braces);
        }
        line += n;
    }
}

/* The per-request LoRA adapters' cache (engine_info): kept, read, found, dropped. */
static void render_lora(struct sbuf *b, const struct metrics_gauges *g) {
    gauge(b, "sdxld_lora_cached", "LoRA adapters kept loaded for requests (lora_cache_mb bounds them).",
          (double)g->lora_cached);
    sb_printf(b, "# HELP sdxld_lora_loads_total LoRA adapter files read for requests (a switch to a cached "
                 "adapter reads none).\n# TYPE sdxld_lora_loads_total counter\nsdxld_lora_loads_total %lld\n"
                 "# HELP sdxld_lora_cache_hits_total Adapters of a generation found loaded.\n"
                 "# TYPE sdxld_lora_cache_hits_total counter\nsdxld_lora_cache_hits_total %lld\n"
                 "# HELP sdxld_lora_evictions_total Adapters dropped to make room (least recently used).\n"
                 "# TYPE sdxld_lora_evictions_total counter\nsdxld_lora_evictions_total %lld\n",
              g->lora_loads, g->lora_hits, g->lora_evictions);
}

char *metrics_render(struct metrics *m, const struct metrics_gauges *g, size_t *len) {
    struct sbuf b = { malloc(8192), 0, 8192, 0 };
    if (!b.p) return NULL;
    b.p[0] = 0;

    sb_printf(&b, "# HELP sdxld_build_info Version, model and backend of this daemon.\n"
                  "# TYPE sdxld_build_info gauge\nsdxld_build_info{version=\"");
    sb_label(&b, g->version);
    sb_printf(&b, "\",model=\"");
    sb_label(&b, g->model);
    sb_printf(&b, "\",backend=\"");
    sb_label(&b, g->backend);
    sb_printf(&b, "\"} 1\n");
    gauge(&b, "sdxld_start_time_seconds", "Unix time the daemon started.", g->start_time);
    gauge(&b, "sdxld_ready", "1 once the model is loaded and warmed up and not draining.",
          g->ready && !g->draining);
    gauge(&b, "sdxld_draining", "1 after SIGTERM while queued work finishes.", g->draining);
    gauge(&b, "sdxld_queue_depth", "Jobs waiting in the queue.", (double)g->queue_jobs);
    gauge(&b, "sdxld_queue_images", "Images waiting in the queue.", (double)g->queue_images);
    gauge(&b, "sdxld_jobs_running", "Jobs being generated or encoded.", (double)g->running_jobs);
    gauge(&b, "sdxld_jobs_retained", "Jobs kept in memory (queued, running, finished within the TTL).",
          (double)g->retained_jobs);
    gauge(&b, "sdxld_results_bytes", "PNG bytes of finished results kept in memory.",
          (double)g->results_bytes);
    gauge(&b, "sdxld_jobs_retained_bytes", "Memory of the jobs kept (prompts and event logs included).",
          (double)g->retained_jobs_bytes);
    sb_printf(&b, "# HELP sdxld_jobs_evicted_total Finished jobs evicted before their TTL to make room.\n"
                  "# TYPE sdxld_jobs_evicted_total counter\nsdxld_jobs_evicted_total %lld\n", g->jobs_evicted);
    sb_printf(&b, "# HELP sdxld_device_memory_bytes Memory held by the engine (weights, activations).\n"
                  "# TYPE sdxld_device_memory_bytes gauge\n"
                  "sdxld_device_memory_bytes{kind=\"params\"} %zu\n"
                  "sdxld_device_memory_bytes{kind=\"scratch\"} %zu\n"
                  "sdxld_device_memory_bytes{kind=\"lora\"} %zu\n",
              g->param_bytes, g->scratch_bytes, g->lora_bytes);
    render_lora(&b, g);
    gauge(&b, "sdxld_process_resident_memory_bytes", "Resident set size of the process.",
          (double)g->rss_bytes);
    if (g->train_seen) render_train(&b, g);

    pthread_mutex_lock(&m->lock);
    sb_printf(&b, "# HELP sdxld_http_requests_total HTTP requests by route and status code.\n"
                  "# TYPE sdxld_http_requests_total counter\n");
    for (int r = 0; r <= m->nroutes; r++) {
        const struct route_counts *rc = &m->routes[r];
        for (int i = 0; i < rc->n; i++) {
            sb_printf(&b, "sdxld_http_requests_total{method=\"");
            sb_label(&b, r < m->nroutes ? m->methods[r] : "");
            sb_printf(&b, "\",route=\"");
            sb_label(&b, r < m->nroutes ? m->patterns[r] : "unmatched");
            sb_printf(&b, "\",code=\"%u\"} %llu\n", rc->code[i], (unsigned long long)rc->count[i]);
        }
    }
    sb_printf(&b, "# HELP sdxld_jobs_finished_total Jobs that reached a final state.\n"
                  "# TYPE sdxld_jobs_finished_total counter\n");
    for (int s = 2; s < 5; s++)
        sb_printf(&b, "sdxld_jobs_finished_total{status=\"%s\"} %llu\n", job_status_names[s],
                  (unsigned long long)m->jobs_done[s]);
    sb_printf(&b, "# HELP sdxld_images_generated_total Images generated and delivered to jobs.\n"
                  "# TYPE sdxld_images_generated_total counter\nsdxld_images_generated_total %llu\n",
              (unsigned long long)m->images);
    sb_printf(&b, "# HELP sdxld_batches_total Engine calls.\n"
                  "# TYPE sdxld_batches_total counter\nsdxld_batches_total %llu\n",
              (unsigned long long)m->batches);
    sb_printf(&b, "# HELP sdxld_batches_stopped_total Engine calls stopped before their end: none "
                  "of their jobs was still wanted (cancelled, or their sync clients went away), or "
                  "a forced stop.\n# TYPE sdxld_batches_stopped_total counter\n"
                  "sdxld_batches_stopped_total %llu\n", (unsigned long long)m->batches_stopped);
    sb_printf(&b, "# HELP sdxld_client_disconnects_total Waiting clients that went away (their "
                  "sync job is cancelled).\n# TYPE sdxld_client_disconnects_total counter\n"
                  "sdxld_client_disconnects_total %llu\n", (unsigned long long)m->client_gone);
    render_hist(&b, "sdxld_queue_wait_seconds", "Time from submission to the start of generation.",
                &m->queue_wait);
    render_hist(&b, "sdxld_generation_seconds", "Engine time per batch (text, UNet steps, VAE).",
                &m->gen_time);
    render_hist(&b, "sdxld_batch_size", "Images per engine call.", &m->batch_size);
    pthread_mutex_unlock(&m->lock);

    if (!b.oom && g->replica && g->replica[0]) {
        struct sbuf l = { malloc(b.len + 8192), 0, b.len + 8192, 0 };
        if (l.p) {
            l.p[0] = 0;
            label_all(&l, b.p, g->replica);
        }
        l.oom |= !l.p;
        free(b.p);
        b = l;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
