/* jobs.h — jobs, the bounded queue, batching and results: the state shared between
 * the HTTP threads, the worker and the image encoders.
 *
 * Implemented by jobs.c (the table, states, events, results), jobs_work.c (the worker's
 * side: next work, batch and training progress), jobs_json.c (the JSON view) and
 * batching.c (the batching and scheduling policy, batching.h: which jobs share a batch,
 * the batch window, generations before training).
 *
 * A job goes QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED and never leaves a final
 * state.  It lives in the table (looked up by id) from submission until result_ttl_s
 * after it finished; everything else that points at it (the queue, a batch in flight,
 * an encoder task, a waiting HTTP request) holds a reference, so a job is freed only
 * when the last of them lets go — a client that disconnects cannot free a job the
 * worker is using, and the worker cannot free one a client is reading.
 *
 * Three kinds of job share this machinery.  Generation jobs wait in the queue and are
 * batched.  Training jobs (JOB_TRAIN) wait in their own queue, one runs at a time, and
 * the worker advances it one iteration at a time whenever no generation is waiting.
 * Model loads (JOB_LOAD) are internal: not in the table, they carry a POST
 * /v1/models/load to the worker, which runs them between batches.
 *
 * Every state or progress change appends one event (a JSON snapshot of the job) to the
 * job's event log and wakes the job's waiters; SSE streams replay the log, sync
 * requests wait for the final state.
 *
 * Locking: one mutex (jobs_lock) guards all job fields, the queue and the table.
 * Functions named *_locked expect it held; the others take it.  Waiter callbacks run
 * with it held and must not block.  Result blobs (struct job_result) are immutable once
 * complete and reference-counted atomically, so responses can be built and sent
 * outside the lock. */
#ifndef SD_SERVER_JOBS_H
#define SD_SERVER_JOBS_H

#include "training.h"
#include <stdatomic.h>
#include <stdint.h>
#include <jansson.h>

#include "engine.h"
#include "replica.h"

struct sdxld_config;
struct metrics;
struct metrics_gauges;

enum job_status { JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED };
enum job_kind { JOB_GENERATE, JOB_TRAIN, JOB_LOAD };

/* "gen_" / "train_" / "load_" + 20 hex digits, after "REPLICA-" when the daemon has a
 * replica name (replica.h) */
#define JOB_ID_LEN (REPLICA_NAME_MAX + 1 + 26)
#define JOB_MAX_IMAGES 64

static inline int job_status_final(enum job_status s) { return s >= JOB_SUCCEEDED; }
const char *job_status_name(enum job_status s);
int job_status_parse(const char *s);   /* -1 if unknown */

struct job_waiter {
    struct job_waiter *prev, *next;
    void (*wake)(struct job_waiter *w);   /* jobs lock held; must not block */
};

struct job_image { uint8_t *png; size_t len; uint64_t seed; };   /* png: the encoded bytes,
                                                                    in the job's req.format */

/* The images of a finished generation.  Shared by the job and responses in flight. */
struct job_result {
    atomic_int refs;
    int n;
    size_t bytes;
    struct job_image img[];
};
void job_result_unref(struct job_result *r);

/* How a job's images are encoded (PNG unless an OpenAI request asks otherwise). */
enum gen_format { GEN_FORMAT_PNG, GEN_FORMAT_JPEG, GEN_FORMAT_WEBP };
const char *gen_format_name(enum gen_format f);   /* "png", "jpeg", "webp" */
const char *gen_format_mime(enum gen_format f);   /* "image/png", ... */
int gen_format_parse(const char *s);              /* -1 if not one of the names */

/* What a generation job asks for (validated by the HTTP layer). */
struct gen_request {
    char *prompt;              /* owned by the job */
    int n;
    uint64_t seed;             /* image i uses seed + i */
    struct gen_params params;
    int sync;                  /* a client waits on its connection */
    enum gen_format format;
    int quality;               /* JPEG/WebP encoder quality 0..100 (OpenAI output_compression) */
    /* OpenAI "quality" and "style" as the client sent them ("" = absent): recorded in the
     * job's request and otherwise ignored (docs/daemon.md: they never change the image) */
    char quality_hint[16], style[16];
    /* Fields the client sent that do not change the image (A1111's negative_prompt,
     * sampler_name, cfg_scale, ...), as JSON object text, or NULL: owned by the job,
     * shown in its request as "ignored" (docs/daemon.md: recorded, never used) */
    char *ignored;
    char *model;               /* the real path of the model it runs on (models.h), owned by
                                  the job; NULL until api_submit stamps it */
    int model_named;           /* the request named it (else: the default when queued) */
    char warning[256];         /* advice_size's line when the size is far above the model's
                                  native one, else "" (the job's `warnings`) */
    /* img2img (api_image.c; strength in params): the init image, width × height × 3 RGB, and
     * the mask, width × height, >= 128 = repaint; NULL when absent; owned by the job */
    uint8_t *init, *mask;
};

/* What a training job asks for (validated and resolved by api_train.c; immutable once
 * submitted, so the worker reads it without the lock).  Paths are absolute, resolved
 * under `root` (the real path of data_root); reports show them relative to it. */
struct train_request {
    char *teacher;             /* model folder */
    char *generator_init;      /* UNet file, NULL = the teacher's UNet */
    char *out;                 /* run directory (created by the worker if missing) */
    char *data;                /* image folder, NULL = the built-in shapes dataset */
    char *root;
    int resume;                /* continue OUT from its latest checkpoint */
    int steps;                 /* = opt.steps */
    struct train_options opt;  /* every option, effective: defaults, the stored ones at
                                  resume, the model's; paths as given (the ones above are
                                  resolved) */
    double est_memory_bytes, est_iteration_s;   /* admission estimate (0: none) */
    char *echo;                /* the effective options as JSON text (paths relative to
                                  data_root): GET detail's request and state.json's config */
};

struct train_ckpt { int step; char *path; };

/* Loss history for plots: at most TRAIN_HIST_MAX logged points; when full, every other
 * point is dropped and only every stride-th logged step is kept from then on. */
#define TRAIN_HIST_MAX 512
struct train_point { int step; float dm, gan_g, fake, gan_d; };

/* A training job's request and progress (progress guarded by the jobs lock). */
struct train_state {
    struct train_request req;
    int step, generator_steps, resumed_step;   /* resumed_step -1: a fresh run */
    int have_losses;
    double dm, gan_g, fake, gan_d, grad_generator, grad_fake, it_per_s, eta_s;
    char **samples;            /* paths shown relative to data_root */
    int nsamples, cap_samples;
    struct train_ckpt *ckpts;
    int nckpts, cap_ckpts;
    char *generator;           /* OUT/generator.safetensors once one was written */
    struct train_point hist[TRAIN_HIST_MAX];
    int nhist, hist_stride, hist_skip;
    int stop;                  /* stop asked for: checkpoint, then end cancelled */
    char stop_code[32];
    int stop_http;
    char *stop_msg;
};

/* What progress a training iteration reports (the worker fills it from dmd2_stats). */
struct train_update {
    int has_losses;                    /* 0: only step and checkpoint are new */
    int step, generator_steps;
    double dm, gan_g, fake, gan_d, grad_generator, grad_fake, it_per_s, eta_s;
    const char *sample, *checkpoint;   /* absolute paths written by this step, or NULL */
    int emit;                          /* append an event (a logged step) */
};

struct job {
    char id[JOB_ID_LEN + 1];
    enum job_kind kind;
    enum job_status status;
    int refs;
    struct gen_request req;
    struct train_state *train; /* JOB_TRAIN only */
    char *load_generator;      /* JOB_LOAD: the absolute path of the generator to load (NULL:
                                  the model folder's own UNet) */
    char *load_lora;           /*           a LoRA file to merge in, or NULL */
    float load_lora_scale;
    char *load_shown;          /*           what is loaded, as the client wrote it */
    char *load_model;          /*           a whole model to switch to (models.h; its real
                                  path), or NULL for a generator/LoRA swap */
    int load_freed_first;      /*           out: the old model was freed before the load */
    unsigned long long seq;    /* submission order (jobs_submit) */

    double created_at, started_at, finished_at;   /* unix seconds, 0 = not yet */
    double t_submit_ms;                           /* monotonic, for the batch window */
    double queue_ms;
    long long passes_at_submit;                   /* the table's training pass count then */
    size_t mem;                                   /* bytes it holds (struct, strings, events) */
    int in_table;
    long long passes_waited;                      /* training passes run while it was queued */

    int step, total;           /* image-steps done, n * nsteps */
    int steps_base;            /* image-steps of slices already generated */
    int dispatched;            /* images handed to the worker */
    int encoded;               /* images stored in result */
    int truncated;
    struct gen_timings tm;     /* summed over the batches the job ran in */

    char err_code[32], err_field[32];
    char *err_msg;
    int err_http;              /* HTTP status a sync client gets for this failure */

    struct job_result *result; /* filled as images are encoded */
    int result_dropped;        /* 1: delivered to its sync client, 2: expired (memory cap) */

    char **events;             /* JSON snapshots, events[i] has seq events_base + i + 1 */
    int nevents, cap_events, events_base;

    struct job_waiter *waiters;
    struct job *q_prev, *q_next;
    int in_queue;
    struct job *all_prev, *all_next;
    struct job *h_next;
};

/* One engine call: slices of compatible jobs, at most max_batch images. */
struct batch_slice { struct job *job; int first, count; };
struct batch {
    struct gen_params params;
    int nslices, images;
    struct batch_slice s[JOB_MAX_IMAGES];
};

struct jobs;

struct jobs *jobs_new(const struct sdxld_config *cfg, struct metrics *m);
void jobs_free(struct jobs *js);
void jobs_lock(struct jobs *js);
void jobs_unlock(struct jobs *js);

/* A new generation job (not yet submitted) holding one reference for the caller.
 * Takes ownership of req->prompt.  NULL on allocation failure.  The table js names it:
 * a random id, prefixed with the configured replica name (replica.h). */
struct job *job_new_generate(struct jobs *js, struct gen_request *req);
/* A new training job; takes ownership of the strings in *req (also on failure). */
struct job *job_new_train(struct jobs *js, struct train_request *req);
/* A new model-load job; copies the strings. */
struct job *job_new_load(struct jobs *js, const char *path, const char *lora, float lora_scale,
                         const char *shown);
void train_request_free(struct train_request *r);

enum submit_result { SUBMIT_OK, SUBMIT_FULL, SUBMIT_DRAINING, SUBMIT_CONFLICT, SUBMIT_TABLE_FULL };
/* Queue a job; the caller keeps its reference.  *queue_position = 1-based place in its
 * kind's queue.  SUBMIT_CONFLICT: a training job for the same run directory is queued
 * or running (its id in conflict_id, if not NULL).  The table holds at most
 * retained_jobs_max jobs and retained_jobs_mb of their memory (prompts and event logs
 * included): the oldest finished jobs are evicted to make room (their ids then answer
 * 404); SUBMIT_TABLE_FULL only when live (queued, running) jobs alone fill it. */
enum submit_result jobs_submit(struct jobs *js, struct job *j, int *queue_position,
                               char *conflict_id);
/* Seconds a client refused with 429 should wait, estimated from recent batch times. */
int jobs_retry_after_s(struct jobs *js);

/* Look up by id; returns a new reference or NULL. */
struct job *jobs_find(struct jobs *js, const char *id);
/* Why id is not in the table, in words for its 404 (what follows "no job 'ID': "): it
 * finished more than result_ttl_s ago, or was evicted early to keep the table within
 * retained_jobs_max or retained_jobs_mb (the reasons of the last 1024 jobs that left are
 * remembered), else it is unknown. */
void jobs_gone_why(struct jobs *js, const char *id, char *out, size_t n);
void jobs_ref_locked(struct job *j);
void jobs_unref(struct jobs *js, struct job *j);
void jobs_unref_locked(struct jobs *js, struct job *j);

/* Cancel a queued or running job; -1 if it already finished.  A running training job
 * is not final at once: it is asked to stop, and the worker ends it (cancelled) after
 * writing a final checkpoint, so callers wait for the final state. */
int jobs_cancel_locked(struct jobs *js, struct job *j, const char *code, int http,
                       const char *msg);
int jobs_cancel(struct jobs *js, struct job *j, const char *code, int http, const char *msg);

void jobs_watch_locked(struct job *j, struct job_waiter *w);
void jobs_unwatch_locked(struct job *j, struct job_waiter *w);

/* Take a reference on the job's result (NULL if none) — for building a response. */
struct job_result *jobs_result_ref_locked(struct job *j);
/* A sync job's images were handed to its client: drop them from memory. */
void jobs_result_delivered_locked(struct jobs *js, struct job *j);

/* The job as JSON (no image bytes; images appear as seed + url); detail adds the
 * request's parameters.  Lock held. */
json_t *job_to_json_locked(struct jobs *js, struct job *j, int detail);
/* A generation's `warnings` array (its request's warning, if any): the job's JSON and
 * the answers of POST /v1/generate carry it. */
json_t *gen_warnings_json(const struct gen_request *r);
/* A training run's admission estimate as shown by the 202 and GET /v1/train/{id}:
 * {"memory_bytes": integer, "iteration_s": number}, or null when there is none. */
json_t *train_estimate_json(double memory_bytes, double iteration_s);
/* Recent jobs, newest first; status_filter -1 for all. */
json_t *jobs_list_json(struct jobs *js, int status_filter, int limit);

/* Worker side (jobs_work.c).  jobs_next_work blocks until there is something to do, in
 * this order (the policy is batching.h's):
 * a model load (between batches, never in the middle of a sliced job); stopping the
 * training job `training` (the worker's, NULL if none) when it was asked to stop or was
 * cancelled; a generation batch (the batch holds one reference per slice); one more
 * iteration of `training`; starting the next queued training job.  WORK_STOP once the
 * daemon stops and nothing is left.  For WORK_LOAD and WORK_TRAIN_START *job gets a
 * reference for the worker, and the job is running.
 * mid_iteration: asked between the UNet passes of an iteration of `training` — loads and
 * training starts wait; WORK_TRAIN_STEP means "go on with the pass"; never blocks longer
 * than a batch window. */
enum work_kind { WORK_STOP, WORK_BATCH, WORK_LOAD, WORK_TRAIN_START, WORK_TRAIN_STEP,
                 WORK_TRAIN_STOP };
enum work_kind jobs_next_work(struct jobs *js, struct batch *b, struct job *training,
                              struct job **job, int mid_iteration);
/* One more training pass is about to run (the worker, between passes): generations
 * queued meanwhile report how many they waited behind (passes_waited). */
void jobs_count_pass(struct jobs *js);
/* Progress after sampler step `step` of `total`; returns non-zero when the engine should
 * stop (every job of the batch is finished/cancelled, or a forced stop). */
int jobs_batch_progress(struct jobs *js, struct batch *b, int step, int total);
/* The same stop rule without progress (no event): polled by the engine between the
 * blocks of a pass, so a batch nobody wants any more stops within one block. */
int jobs_batch_unwanted(struct jobs *js, const struct batch *b);
/* The engine call finished: st == SD_OK records timings (images go to encoders next);
 * otherwise every live job of the batch fails with the engine's message. */
void jobs_batch_done(struct jobs *js, struct batch *b, sd_status st, const char *msg,
                     const struct gen_timings *tm, const int *truncated, double gen_ms);
/* Encoded PNGs of slice images [first, first+count) of j; takes ownership of pngs[i].
 * The job succeeds when all its images are stored. */
void jobs_store_images(struct jobs *js, struct job *j, int first, int count,
                       struct job_image *imgs);
/* An encoder failed on slice images of j: the job fails. */
void jobs_fail(struct jobs *js, struct job *j, const char *code, int http, const char *msg);
void jobs_batch_release(struct jobs *js, struct batch *b);

/* Training progress from the worker: the step, losses, new sample and checkpoint. */
void jobs_train_update(struct jobs *js, struct job *j, const struct train_update *u);
/* The training job ends: SUCCEEDED, FAILED (code, http, field, msg), or CANCELLED
 * after a stop: then the stop's reason is the error, with msg (if not NULL) appended.
 * No-op if it is already final. */
void jobs_train_finish(struct jobs *js, struct job *j, enum job_status st, const char *code,
                       int http, const char *field, const char *msg);
/* A model load ends: SUCCEEDED, or FAILED with code, http status, the field at fault
 * ("generator" or "lora") and message. */
void jobs_load_finish(struct jobs *js, struct job *j, sd_status st, const char *code, int http,
                      const char *field, const char *msg);
/* A whole-model load failed: queued generations that named no model and were queued for
 * `from` (the default then) run on `to` instead (models.h). */
void jobs_restamp_model(struct jobs *js, const char *from, const char *to);
/* Drain: cancel queued training jobs and ask the running one to stop (it writes a final
 * checkpoint and ends cancelled with this reason). */
void jobs_stop_training(struct jobs *js, const char *code, int http, const char *msg);

/* Lifecycle. */
void jobs_set_accepting(struct jobs *js, int accepting);
int jobs_busy(struct jobs *js);           /* queued or running jobs of any kind */
void jobs_cancel_all(struct jobs *js, const char *code, int http, const char *msg);
void jobs_stop(struct jobs *js);          /* worker returns -1 once the queue is empty */

/* Drop jobs past their TTL and old results over the memory cap. */
void jobs_housekeep(struct jobs *js);
void jobs_gauges(struct jobs *js, struct metrics_gauges *g);

#endif
