/* batching.h — the worker's scheduling policy: what it does next, and which queued
 * generation jobs share the next engine call.
 *
 * Pure: these functions read a snapshot of the queues (struct sched_state, taken by
 * jobs_work.c under the jobs lock) and a time (now_ms, the caller's monotonic clock) and
 * return a decision.  They take no lock, read no clock, allocate nothing and change no
 * job; jobs_work.c applies the decision (references, states, events, the wait itself).
 * So the policy is tested with a fake clock, no threads and no sleeps
 * (tests/test_batching.c).
 *
 * Batching rule: the oldest live queued job (the head) always goes into the next batch,
 * so nothing starves; compatible jobs behind it (same size, timesteps and conditioning:
 * sched_compatible, and the same model: models.h) join it up to max_batch images, even from behind incompatible ones.
 * The head waits at most batch_window_ms after its submission for companions — under
 * load the queue is already full and nobody waits; when idle a lone request pays the
 * window once; while the daemon drains nobody waits.  A job with more images than fit
 * in one batch is taken in slices and stays at the head of the queue until all its
 * images are dispatched.  Final (cancelled, failed) jobs are never batched and do not
 * count as companions.
 *
 * Order between kinds (sched_next), first match wins:
 *   1. a forced stop;
 *   2. a model load — between batches, never between the slices of one job (all of a
 *      job's images come from one generator);
 *   3. ending the worker's training run, when it is final or was asked to stop, or when
 *      the daemon drains and no generation waits;
 *   4. generations: a batch once the head's window closed (or the batch is full, or the
 *      daemon drains), else wait for the window — training does not step meanwhile;
 *   5. one more iteration of the training run;
 *   6. stop, when draining (queued training jobs are not started);
 *   7. start the next queued training job;
 *   8. else wait to be woken.
 * So generations always go before the next training iteration.  Inside an iteration the
 * worker asks again before every UNet pass (mid_iteration: loads and training starts
 * wait for the iteration's end; TRAIN_STEP then means "go on with the pass"), so a
 * generation waits behind at most one pass of training (plus its window), and a stop
 * reaches the run within one pass.  Training jobs run one at a time, in submission
 * order. */
#ifndef SD_SERVER_BATCHING_H
#define SD_SERVER_BATCHING_H

#include "jobs.h"

struct sched_policy {
    int max_batch;            /* images per engine call (capped at JOB_MAX_IMAGES) */
    double batch_window_ms;   /* how long the head job waits for companions */
};

/* What the worker's next step depends on. */
struct sched_state {
    struct job *queue;        /* generation queue, oldest first through q_next; reads
                                 status, req.params, req.model, req.n, dispatched,
                                 t_submit_ms */
    int load_waiting;         /* a model load is queued */
    int training;             /* the worker holds a training run ... */
    int training_ending;      /* ... that is final or was asked to stop */
    int train_waiting;        /* a training job waits to start */
    int stopping;             /* draining: serve what is queued, start nothing new */
    int stop_now;             /* forced stop */
    int mid_iteration;        /* asked between the passes of a training iteration */
};

enum sched_action {
    SCHED_ACT_STOP, SCHED_ACT_LOAD, SCHED_ACT_TRAIN_STOP, SCHED_ACT_BATCH, SCHED_ACT_TRAIN_STEP,
    SCHED_ACT_TRAIN_START, SCHED_ACT_WAIT,
};

struct sched_decision {
    enum sched_action action;
    double wait_until_ms;     /* SCHED_ACT_WAIT: the time to look again (the head's window
                                 closes), INFINITY: until something changes */
};

/* The next step at time now_ms (the order above). */
struct sched_decision sched_next(const struct sched_policy *p, const struct sched_state *s,
                                 double now_ms);

/* Can two generations share an engine call?  Everything but prompt and seed is equal. */
int sched_compatible(const struct gen_params *a, const struct gen_params *b);
/* The head: the oldest job of the queue that is not final, or NULL. */
struct job *sched_head(struct job *queue);
/* Undispatched images compatible with the head (the head's included), counted up to the
 * batch size at most. */
int sched_companions(const struct sched_policy *p, struct job *queue);
/* Does the head's batch go at now_ms?  If not, *deadline_ms is when its window closes.
 * 0 when the queue holds no live job. */
int sched_batch_due(const struct sched_policy *p, struct job *queue, int stopping,
                    double now_ms, double *deadline_ms);
/* The next batch: b->params are the head's; b->s the slices (job, first image, count) of
 * the head and compatible jobs behind it, oldest first, b->images <= max_batch.  Takes no
 * reference and changes no job.  Returns b->images (0: no live job). */
int sched_fill_batch(const struct sched_policy *p, struct job *queue, struct batch *b);

#endif
