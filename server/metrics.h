/* metrics.h — counters and histograms for GET /metrics (Prometheus text format 0.0.4).
 *
 * Label sets are bounded by construction: requests are counted per route-table entry
 * (its pattern, not the raw path) and status code, so a scanner cannot blow up the
 * series count.  Gauges that belong to other modules (queue depth, memory) are passed
 * in at render time.
 *
 * Threading: every function may be called from any thread (one mutex). */
#ifndef SD_SERVER_METRICS_H
#define SD_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics;

/* Values sampled by the caller when /metrics is scraped. */
struct metrics_gauges {
    long queue_jobs, queue_images, running_jobs, retained_jobs;
    size_t results_bytes;
    size_t retained_jobs_bytes;       /* the job table's memory (retained_jobs_mb caps it) */
    long long jobs_evicted;           /* finished jobs evicted early to make room */
    int ready, draining;
    size_t param_bytes, scratch_bytes;  /* from the engine */
    size_t lora_bytes;                  /* run-time LoRA adapters cached (engine_info) */
    int lora_cached;
    long long lora_loads, lora_hits, lora_evictions;
    size_t rss_bytes;                   /* this process */
    double start_time;                  /* unix seconds */
    const char *version, *model, *backend;
    const char *replica;                /* "" or NULL: none; else a label on every series */
    /* the running training job, else the last one (train_seen 0: none yet) */
    int train_seen, train_running;
    double train_step, train_total_steps, train_generator_steps, train_it_per_s;
    double train_loss[4];               /* dm, gan_g, fake, gan_d (NaN before the first step) */
    double train_grad[2];               /* generator, fake */
};

/* route_labels[i] = "METHOD PATTERN" strings for routes 0..nroutes-1; they must outlive
 * the metrics object.  Route index nroutes is "unmatched". */
struct metrics *metrics_new(int nroutes, const char *const *route_methods,
                            const char *const *route_patterns);
void metrics_free(struct metrics *m);

void metrics_request(struct metrics *m, int route, unsigned status);
void metrics_queue_wait(struct metrics *m, double seconds);
void metrics_batch(struct metrics *m, int images, double gen_seconds);
void metrics_job_done(struct metrics *m, int status_index /* enum job_status */, int images);
/* An engine call stopped early (SD_ERR_CANCELLED): nobody wanted its images any more. */
void metrics_batch_stopped(struct metrics *m);
void metrics_client_gone(struct metrics *m);

/* The whole exposition as a malloc'ed string. */
char *metrics_render(struct metrics *m, const struct metrics_gauges *g, size_t *len);

#endif
