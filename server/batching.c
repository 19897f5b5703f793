/* batching.c — the worker's scheduling policy (rules and contracts in batching.h).
 *
 * Kept apart from the job table so that the policy is a function of its inputs: the
 * table (jobs_work.c) snapshots the queues under its lock, reads its monotonic clock,
 * asks sched_next, and applies the answer.  Nothing here may block, read a clock or
 * touch a job's state. */
#include "batching.h"

#include <math.h>
#include <string.h>

static int batch_cap(const struct sched_policy *p) {
    return p->max_batch < JOB_MAX_IMAGES ? p->max_batch : JOB_MAX_IMAGES;
}

/* The whole struct is compared, so a field added to gen_params later (a sampler,
 * guidance) separates batches without a change here; requests build their params from
 * a zeroed struct, so unused entries compare equal. */
int sched_compatible(const struct gen_params *a, const struct gen_params *b) {
    return !memcmp(a, b, sizeof *a);
}

/* One model per batch (models.h): the worker switches models between batches. */
static int same_batch(const struct job *a, const struct job *b) {
    const char *ma = a->req.model, *mb = b->req.model;
    return sched_compatible(&a->req.params, &b->req.params) && (ma == mb || (ma && mb && !strcmp(ma, mb)));
}

struct job *sched_head(struct job *queue) {
    struct job *q = queue;
    while (q && job_status_final(q->status)) q = q->q_next;
    return q;
}

int sched_companions(const struct sched_policy *p, struct job *queue) {
    const struct job *head = sched_head(queue);
    const int cap = batch_cap(p);
    int n = 0;
    for (const struct job *q = head; q && n < cap; q = q->q_next)
        if (!job_status_final(q->status) && same_batch(q, head))
            n += q->req.n - q->dispatched;
    return n;
}

int sched_batch_due(const struct sched_policy *p, struct job *queue, int stopping,
                    double now_ms, double *deadline_ms) {
    const struct job *head = sched_head(queue);
    if (!head) return 0;
    double deadline = head->t_submit_ms + p->batch_window_ms;
    if (stopping || now_ms >= deadline || sched_companions(p, queue) >= batch_cap(p)) return 1;
    *deadline_ms = deadline;
    return 0;
}

int sched_fill_batch(const struct sched_policy *p, struct job *queue, struct batch *b) {
    struct job *head = sched_head(queue);
    const int cap = batch_cap(p);
    memset(b, 0, sizeof *b);
    if (!head) return 0;
    b->params = head->req.params;
    for (struct job *q = head; q && b->images < cap; q = q->q_next) {
        if (job_status_final(q->status) || !same_batch(q, head))
            continue;
        int take = q->req.n - q->dispatched;
        if (take > cap - b->images) take = cap - b->images;
        if (take <= 0) continue;   /* fully dispatched: about to leave the queue */
        b->s[b->nslices++] = (struct batch_slice){ .job = q, .first = q->dispatched,
                                                   .count = take };
        b->images += take;
    }
    return b->images;
}

struct sched_decision sched_next(const struct sched_policy *p, const struct sched_state *s,
                                 double now_ms) {
    struct sched_decision d = { .action = SCHED_ACT_WAIT, .wait_until_ms = INFINITY };
    const struct job *head = sched_head(s->queue);
    if (s->stop_now)
        d.action = SCHED_ACT_STOP;
    else if (s->load_waiting && !s->mid_iteration && !(head && head->dispatched > 0))
        d.action = SCHED_ACT_LOAD;
    else if (s->training && (s->training_ending || (s->stopping && !head)))
        d.action = SCHED_ACT_TRAIN_STOP;
    else if (head)   /* generations before the next training iteration */
        d.action = sched_batch_due(p, s->queue, s->stopping, now_ms, &d.wait_until_ms)
                   ? SCHED_ACT_BATCH : SCHED_ACT_WAIT;
    else if (s->training)
        d.action = SCHED_ACT_TRAIN_STEP;
    else if (s->stopping)
        d.action = SCHED_ACT_STOP;
    else if (s->train_waiting && !s->mid_iteration)
        d.action = SCHED_ACT_TRAIN_START;
    return d;
}
