/* jobs_work.c — the worker's side of the job table (contracts in jobs.h): what to do
 * next, and the progress and results of the work it did.
 *
 * jobs_next_work is the glue between the table and the scheduling policy: under the
 * jobs lock it snapshots the queues, reads the monotonic clock, asks batching.c's
 * sched_next (pure: the rules live there) and applies the answer — taking a batch's
 * references and making its jobs running, starting a load or a training job, or sleeping
 * on the condition variable until the head's batch window closes or something changes.
 *
 * Progress is counted in image-steps (total = n * nsteps), so a job split over several
 * batches still reports one monotonic count.  Every change appends an event (jobs.c). */
#include "jobs_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_status.h"
#include "batching.h"
#include "config.h"
#include "metrics.h"

/* Take queued job j off its queue and make it running (its queue reference becomes
 * the worker's). */
static void start_locked(struct jobs *js, struct job *j) {
    jobs_unlink_locked(js, j);
    j->status = JOB_RUNNING;
    js->nrunning++;
    j->started_at = jobs_unix_now();
    j->queue_ms = sd_now_ms() - j->t_submit_ms;
    jobs_emit_locked(js, j);
}

/* Take the batch the policy chose: the batch's references, dispatched images, and the
 * jobs that start running with it. */
static void take_batch_locked(struct jobs *js, const struct sched_policy *p, struct batch *b) {
    sched_fill_batch(p, js->q.head, b);
    double now_ms = sd_now_ms(), now = jobs_unix_now();
    for (int i = 0; i < b->nslices; i++) {
        struct job *q = b->s[i].job;
        q->refs++;   /* the batch's reference */
        q->dispatched += b->s[i].count;
        js->qimages -= b->s[i].count;
        if (q->status == JOB_QUEUED) {
            q->status = JOB_RUNNING;
            js->nrunning++;
            q->started_at = now;
            q->queue_ms = now_ms - q->t_submit_ms;
            q->passes_waited = js->train_passes - q->passes_at_submit;
            metrics_queue_wait(js->metrics, q->queue_ms / 1e3);
            jobs_emit_locked(js, q);
        }
        if (q->dispatched == q->req.n) jobs_queue_remove_locked(js, q);   /* nothing left to take */
    }
}

/* Start the next queued training job; *job gets the worker's reference. */
static void start_training_locked(struct jobs *js, struct job **job) {
    *job = js->tq.head;
    start_locked(js, *job);
    js->training = *job;
    js->tg = (struct train_gauges){ .seen = 1, .running = 1, .total = (*job)->train->req.steps };
    for (int i = 0; i < 4; i++) js->tg.loss[i] = NAN;
    js->tg.grad[0] = js->tg.grad[1] = NAN;
    LOG_I("job %s: training started (queued %.0f ms)", (*job)->id, (*job)->queue_ms);
}

/* Sleep until woken, or until deadline_ms on the monotonic clock (the condition variable
 * uses CLOCK_MONOTONIC). */
static void wait_locked(struct jobs *js, double deadline_ms) {
    if (isinf(deadline_ms)) {
        pthread_cond_wait(&js->work, &js->lock);
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ms / 1e3);
    ts.tv_nsec = (long)((deadline_ms - ts.tv_sec * 1e3) * 1e6);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&js->work, &js->lock, &ts);
}

void jobs_count_pass(struct jobs *js) {
    pthread_mutex_lock(&js->lock);
    js->train_passes++;
    pthread_mutex_unlock(&js->lock);
}

/* Is the first queued load due?  A generator swap goes before the next batch; a whole-model
 * switch waits until every generation queued before it was dispatched, so they run on the
 * model they were queued for (models.h) instead of switching back and forth. */
static int load_due_locked(const struct jobs *js) {
    const struct job *l = js->cq.head, *h = sched_head(js->q.head);
    return l && (!l->load_model || !h || h->seq > l->seq);
}

enum work_kind jobs_next_work(struct jobs *js, struct batch *b, struct job *training,
                              struct job **job, int mid_iteration) {
    const struct sched_policy p = { .max_batch = js->cfg->max_batch,
                                    .batch_window_ms = js->cfg->batch_window_ms };
    *job = NULL;
    pthread_mutex_lock(&js->lock);
    for (;;) {
        const struct sched_state s = {
            .queue = js->q.head, .load_waiting = load_due_locked(js),
            .training = training != NULL,
            .training_ending = training && (job_status_final(training->status) ||
                                            training->train->stop),
            .train_waiting = js->tq.head != NULL,
            .stopping = js->stopping, .stop_now = js->stop_now, .mid_iteration = mid_iteration,
        };
        const struct sched_decision d = sched_next(&p, &s, sd_now_ms());
        enum work_kind w;
        switch (d.action) {
        case SCHED_ACT_WAIT:   /* re-check after: the head may have been cancelled meanwhile */
            wait_locked(js, d.wait_until_ms);
            continue;
        case SCHED_ACT_STOP: w = WORK_STOP; break;
        case SCHED_ACT_LOAD:
            *job = js->cq.head;
            start_locked(js, *job);
            w = WORK_LOAD;
            break;
        case SCHED_ACT_TRAIN_STOP: w = WORK_TRAIN_STOP; break;
        case SCHED_ACT_BATCH:
            take_batch_locked(js, &p, b);
            w = WORK_BATCH;
            break;
        case SCHED_ACT_TRAIN_STEP: w = WORK_TRAIN_STEP; break;
        case SCHED_ACT_TRAIN_START:
            start_training_locked(js, job);
            w = WORK_TRAIN_START;
            break;
        default: SD_PANIC("sched_next: action %d", (int)d.action);
        }
        pthread_mutex_unlock(&js->lock);
        return w;
    }
}

/* The one rule for stopping a batch on the device: none of its jobs is still wanted (each
 * is final: cancelled, or its sync client went away), or a forced stop.  A batch with one
 * job still wanted runs on for it. */
static int batch_unwanted_locked(struct jobs *js, const struct batch *b) {
    if (js->stop_now) return 1;
    for (int i = 0; i < b->nslices; i++)
        if (!job_status_final(b->s[i].job->status)) return 0;
    return 1;
}

int jobs_batch_progress(struct jobs *js, struct batch *b, int step, int total) {
    (void)total;
    pthread_mutex_lock(&js->lock);
    for (int i = 0; i < b->nslices; i++) {
        struct job *j = b->s[i].job;
        if (job_status_final(j->status)) continue;
        j->step = j->steps_base + step * b->s[i].count;
        jobs_emit_locked(js, j);
    }
    int stop = batch_unwanted_locked(js, b);
    pthread_mutex_unlock(&js->lock);
    return stop;
}

int jobs_batch_unwanted(struct jobs *js, const struct batch *b) {
    pthread_mutex_lock(&js->lock);
    int stop = batch_unwanted_locked(js, b);
    pthread_mutex_unlock(&js->lock);
    return stop;
}

void jobs_batch_done(struct jobs *js, struct batch *b, sd_status st, const char *msg,
                     const struct gen_timings *tm, const int *truncated, double gen_ms) {
    pthread_mutex_lock(&js->lock);
    if (st == SD_OK)
        js->ewma_batch_s = js->ewma_batch_s > 0 ? 0.8 * js->ewma_batch_s + 0.2 * gen_ms / 1e3
                                                : gen_ms / 1e3;
    /* A forced stop (SD_ERR_CANCELLED with live jobs) cancels; other errors fail. */
    const struct api_status as = api_status_of(st, API_WORK_GENERATE);
    int k = 0;
    for (int i = 0; i < b->nslices; i++) {
        struct batch_slice *s = &b->s[i];
        struct job *j = s->job;
        if (job_status_final(j->status)) {
            /* cancelled while on the device: nothing to record */
        } else if (st == SD_OK) {
            j->steps_base += s->count * b->params.nsteps;
            j->step = j->steps_base;
            j->tm.text_ms += tm->text_ms;
            j->tm.unet_ms += tm->unet_ms;
            j->tm.vae_ms += tm->vae_ms;
            for (int t = 0; t < s->count; t++) j->truncated |= truncated[k + t];
        } else if (st == SD_ERR_CANCELLED) {
            jobs_finish_locked(js, j, JOB_CANCELLED, as.code, as.http, NULL,
                               "the daemon is shutting down; the job was cancelled");
        } else {
            jobs_finish_locked(js, j, JOB_FAILED, as.code, as.http, NULL, msg);
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
            const struct api_status as = api_status_of(SD_ERR_NOMEM, API_WORK_ENCODE);
            jobs_finish_locked(js, j, JOB_FAILED, as.code, as.http, NULL,
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
    if (j->encoded == j->req.n) jobs_finish_locked(js, j, JOB_SUCCEEDED, NULL, 0, NULL, NULL);
    pthread_mutex_unlock(&js->lock);
}

void jobs_fail(struct jobs *js, struct job *j, const char *code, int http, const char *msg) {
    pthread_mutex_lock(&js->lock);
    if (!job_status_final(j->status)) jobs_finish_locked(js, j, JOB_FAILED, code, http, NULL, msg);
    pthread_mutex_unlock(&js->lock);
}

void jobs_restamp_model(struct jobs *js, const char *from, const char *to) {
    pthread_mutex_lock(&js->lock);
    for (struct job *q = js->q.head; q; q = q->q_next) {
        if (q->req.model_named || !q->req.model || q->dispatched || strcmp(q->req.model, from)) continue;
        char *t = strdup(to);
        if (!t) continue;   /* out of memory: it asks for `from` and fails with its name */
        free(q->req.model);
        q->req.model = t;
    }
    pthread_mutex_unlock(&js->lock);
}

void jobs_batch_release(struct jobs *js, struct batch *b) {
    pthread_mutex_lock(&js->lock);
    for (int i = 0; i < b->nslices; i++) jobs_unref_locked(js, b->s[i].job);
    b->nslices = 0;
    pthread_mutex_unlock(&js->lock);
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
        shown = jobs_shown_path(&t->req, u->sample);
        if (t->nsamples < t->cap_samples && (t->samples[t->nsamples] = strdup(shown)))
            t->nsamples++;
    }
    if (u->checkpoint) {
        if (t->nckpts == t->cap_ckpts) {
            int nc = t->cap_ckpts ? 2 * t->cap_ckpts : 16;
            struct train_ckpt *nk = realloc(t->ckpts, (size_t)nc * sizeof *nk);
            if (nk) { t->ckpts = nk; t->cap_ckpts = nc; }
        }
        shown = jobs_shown_path(&t->req, u->checkpoint);
        if (t->nckpts < t->cap_ckpts && (t->ckpts[t->nckpts].path = strdup(shown)))
            t->ckpts[t->nckpts++].step = u->step;
        /* every checkpoint also rewrites OUT/generator.safetensors */
        if (!t->generator) {
            char p[4200];
            snprintf(p, sizeof p, "%s/generator.safetensors", jobs_shown_path(&t->req, t->req.out));
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
    if (u->emit || u->sample || u->checkpoint) jobs_emit_locked(js, j);
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
            jobs_finish_locked(js, j, JOB_CANCELLED,
                               t->stop_code[0] ? t->stop_code : "cancelled",
                               t->stop_http ? t->stop_http : 409, NULL, m);
        } else {
            jobs_finish_locked(js, j, st, code, http, field, msg);
        }
    }
    pthread_mutex_unlock(&js->lock);
}

void jobs_load_finish(struct jobs *js, struct job *j, sd_status st, const char *code, int http,
                      const char *field, const char *msg) {
    pthread_mutex_lock(&js->lock);
    if (!job_status_final(j->status))
        jobs_finish_locked(js, j, st == SD_OK ? JOB_SUCCEEDED : JOB_FAILED,
                           st == SD_OK ? NULL : code, http, st == SD_OK ? NULL : field, msg);
    pthread_mutex_unlock(&js->lock);
}
