/* jobs_impl.h — the inside of the job table, shared by the files that implement jobs.h
 * and by nothing else:
 *
 *   jobs.c       the table and the job states: creation, ids, references, the queues,
 *                submission, lookup, cancellation, final states, the event log, retained
 *                results, housekeeping, lifecycle and gauges;
 *   jobs_work.c  the worker's side: jobs_next_work (applies batching.c's policy under
 *                the lock and sleeps on the condition variable), batch progress and
 *                results, training and model-load progress;
 *   jobs_json.c  the API's JSON view of a job (GET /v1/jobs/{id}, /v1/train/{id}, the
 *                job list, the SSE event payloads).
 *
 * Everything here runs with the jobs lock held unless its name says otherwise. */
#ifndef SD_SERVER_JOBS_IMPL_H
#define SD_SERVER_JOBS_IMPL_H

#include <pthread.h>

#include "jobs.h"

#define HASH_BUCKETS 4096
#define MAX_EVENTS 4096
#define LOAD_QUEUE_MAX 16

struct jqueue { struct job *head, *tail; int len; };

/* Why a job left the table, remembered for its 404 (jobs_gone_why). */
enum gone_why { GONE_TTL = 1, GONE_MAX_JOBS, GONE_MAX_MB };
#define GONE_REMEMBERED 1024
struct gone_entry { char id[JOB_ID_LEN + 1]; unsigned char why; };

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
    long long train_passes;          /* training passes started (jobs_count_pass) */
    size_t jobs_bytes;               /* memory of the jobs in the table (job->mem summed) */
    long long evicted;               /* finished jobs evicted to make room */
    struct gone_entry gone[GONE_REMEMBERED];   /* the last jobs that left, a ring */
    int gone_next;
    struct job *all_head, *all_tail; /* table in creation order (oldest first) */
    struct job *buckets[HASH_BUCKETS];
    long njobs, nrunning;
    size_t results_bytes;

    int accepting, stopping, stop_now;
    unsigned long long submit_seq;   /* jobs submitted so far (job->seq) */
    double ewma_batch_s;             /* recent engine time per batch, for Retry-After */
};

/* jobs.c */
double jobs_unix_now(void);          /* wall clock, unix seconds (job timestamps) */
/* 1-based place of a queued job in its kind's queue, 0 if it is not queued. */
int jobs_queue_position_locked(struct jobs *js, struct job *j);
/* Unlink j from its queue; the queue's reference is the caller's to drop or hand on. */
void jobs_unlink_locked(struct jobs *js, struct job *j);
/* Unlink j if it is queued and drop the queue's reference. */
void jobs_queue_remove_locked(struct jobs *js, struct job *j);
/* Append an event (a snapshot of the job) to its log and wake its waiters. */
void jobs_emit_locked(struct jobs *js, struct job *j);
/* Move j (not final yet) to a final state; code NULL for no error. */
void jobs_finish_locked(struct jobs *js, struct job *j, enum job_status st, const char *code,
                        int http, const char *field, const char *msg);
/* Ask the running training job j to stop (the worker checkpoints and ends it). */
void jobs_train_stop_locked(struct jobs *js, struct job *j, const char *code, int http,
                            const char *msg);

/* jobs_json.c */
/* The event for the log: the job as JSON plus its seq, as compact text (malloc'ed; NULL
 * when out of memory). */
char *jobs_event_text_locked(struct jobs *js, struct job *j, long seq);
/* A path under data_root as the client would write it (relative to data_root). */
const char *jobs_shown_path(const struct train_request *r, const char *abs);

#endif
