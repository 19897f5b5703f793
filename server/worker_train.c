/* worker_train.c — the worker's side of training jobs (DMD2 distillation, through the
 * src/train/dmd2.h stepper) and of model loads.
 *
 * Everything here runs on the worker thread, the one thread that owns the device.  A
 * training job is a struct train_run held by the worker: train_run_start opens the
 * trainer (teacher, generator, fake score, latent cache), and the worker then calls
 * train_run_step once per iteration, asking the queue for work in between — so a
 * generation waits for at most one iteration, never for a whole run (jobs.c,
 * jobs_next_work).  A stop (DELETE, SIGTERM) is seen between iterations: the run writes
 * a final checkpoint and the job ends cancelled with that checkpoint listed; `resume`
 * continues from it.
 *
 * Failure policy (ARCHITECTURE.md, Errors): whatever fails inside training — a teacher
 * folder that does not load, a dataset that does not open, out of memory — fails that
 * job with the trainer's message; the daemon keeps serving.  Only a device error
 * (SD_ERR_CUDA) stops the daemon, as for a generation batch.
 *
 * Paths in progress reports are shown relative to data_root, as clients write them.
 *
 * Files: while it acts for a run or a model load the worker thread is confined
 * (src/core/fs.h) to data_root, where no symbolic link is followed and every create,
 * rename and removal happens beneath a descriptor of data_root, and to the served model
 * folder, read-only.  A link planted inside a run folder therefore fails the job instead
 * of letting it write, read or delete outside; api_train.c's checks of the named paths
 * are the friendly first line, this is the guarantee. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "training.h"
#include "api_status.h"
#include "daemon.h"

static const char *r_out(const struct job *j) { return j->train->req.out; }

static const char *last_error(sd_status st) {
    const char *m = sd_last_error();
    return m && m[0] ? m : sd_status_name(st);
}

/* The run's folders: data_root read-write without links, the served model trusted and
 * read-only (when it opens: a model given as a file list has no folder to trust). */
static sd_status roots_open(struct sdxld *d, struct run_roots *rr, const char *data_root, int write) {
    rr->data_root.fd = rr->model.fd = -1;
    SD_TRY(sd_root_open(&rr->data_root, data_root, write ? SD_ROOT_WRITE : 0));
    if (sd_root_open(&rr->model, d->model_served[0] ? d->model_served : d->cfg.model, SD_ROOT_LINKS))
        rr->model.fd = -1;
    sd_clear_error();
    return SD_OK;
}

static void roots_close(struct run_roots *rr) {
    sd_root_close(&rr->data_root);
    sd_root_close(&rr->model);
}

static void confine(const struct run_roots *rr) {
    const struct sd_root *rs[2] = { &rr->data_root, &rr->model };
    sd_fs_confine(rs, rr->model.fd >= 0 ? 2 : 1);
}

static void unconfine(void) { sd_fs_confine(NULL, 0); }

/* Remove every "ROOT/" from msg: clients name paths relative to data_root. */
static void strip_root(char *msg, const char *root) {
    size_t n = strlen(root);
    if (n <= 1) return;
    for (char *s = msg; (s = strstr(s, root));) {
        if (s[n] != '/') { s += n; continue; }
        memmove(s, s + n + 1, strlen(s + n + 1) + 1);
    }
}

static void run_close(struct train_run *tr) {
    dmd2_close(tr->t);
    dataset_free(tr->data);
    tr->t = NULL;
    tr->data = NULL;
    roots_close(&tr->roots);
}

static void run_release(struct sdxld *d, struct train_run *tr) {
    run_close(tr);
    jobs_unref(d->jobs, tr->job);
    tr->job = NULL;
}

static void fail_job(struct sdxld *d, struct train_run *tr, sd_status st, const char *what) {
    const struct api_status as = api_status_of(st, API_WORK_TRAIN);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", what, last_error(st));   /* jobs.c logs it */
    strip_root(msg, tr->roots.data_root.fd >= 0 ? tr->roots.data_root.path : tr->job->train->req.root);
    jobs_train_finish(d->jobs, tr->job, JOB_FAILED, as.code, as.http, NULL, msg);
    run_release(d, tr);
}


/* The dmd2 yield hook: before every UNet pass, the generations that are due run (so one
 * waits behind at most one pass), and a stop or a forced stop reaches the run. */
static int pass_hook(void *ud) {
    struct train_run *tr = ud;
    enum pass_verdict v = worker_between_passes(tr->d, tr->b, tr->job, tr->fatal);
    if (v == PASS_ABORT) return DMD2_YIELD_ABORT;
    if (v == PASS_STOP) return DMD2_YIELD_STOP;
    if (tr->d->cfg.debug_train_pass_sleep_ms > 0) usleep((useconds_t)tr->d->cfg.debug_train_pass_sleep_ms * 1000);
    return DMD2_YIELD_CONTINUE;
}

static void run_open(struct sdxld *d, struct train_run *tr, struct job *j) {
    const struct train_request *r = &j->train->req;   /* immutable once submitted */
    const struct train_options *o = &r->opt;
    double t0 = sd_now_ms();
    sd_status st = r->data ? dataset_folder(&tr->data, r->data, o->resolution)
                           : dataset_shapes(&tr->data, o->resolution, o->seed ^ 0x5eed,
                                            o->dataset_size);
    if (st) {
        fail_job(d, tr, st, "real_data: the dataset does not open");
        return;
    }
    if ((st = sd_mkdir_p(r->out, strlen(r->root)))) {   /* the folders above exist: api_train checked */
        fail_job(d, tr, st, "out: cannot create the run directory");
        return;
    }
    struct dmd2_config c = {
        .teacher_dir = r->teacher, .generator_init = r->generator_init, .out_dir = r->out,
        .resume = r->resume, .data = tr->data, .cache_size = o->cache_size,
        .batch = o->batch, .steps = o->steps, .ttur = o->ttur,
        .lr_generator = o->lr_generator, .lr_fake = o->lr_fake, .guidance = o->guidance,
        .gan_weight_g = o->gan_weight_g, .gan_weight_d = o->gan_weight_d, .clip = o->clip,
        .warmup = o->warmup, .nsteps = o->nsteps, .backward_simulation = o->backward_simulation,
        .gan = o->gan, .dm_min_t = 20, .dm_max_t = 980, .seed = o->seed,
        .lora_rank = o->lora_rank, .lora_alpha = o->lora_alpha, .recompute = o->recompute,
        .checkpoint_every = o->checkpoint_every, .sample_every = o->sample_every,
        .log_every = o->log_every, .keep_checkpoints = o->keep_checkpoints,
        .config_json = r->echo, .threads = d->cfg.threads,
        .yield = pass_hook, .yield_ud = tr,
        /* the backend that serves (the GPU's when the daemon serves on it), unless the
         * run's options name one */
        .backend = o->backend[0] ? o->backend : d->backend,
    };
    memcpy(c.timesteps, o->timesteps, sizeof c.timesteps);
    if ((st = dmd2_open(&tr->t, &c)) == SD_ERR_CANCELLED) {
        jobs_train_finish(d->jobs, j, JOB_CANCELLED, NULL, 0, NULL, "stopped while the run was "
                          "opening; nothing was written");
        run_release(d, tr);
        return;
    }
    if (st) {
        fail_job(d, tr, st, "cannot start the training run");
        return;
    }
    tr->start_step = dmd2_iteration(tr->t);
    if (r->resume) {
        tr->last_ckpt_step = tr->start_step;   /* the checkpoint it resumed from */
        jobs_lock(d->jobs);
        j->train->resumed_step = tr->start_step;
        j->train->step = j->step = tr->start_step;
        jobs_unlock(d->jobs);
        if (dmd2_done(tr->t)) {
            char msg[256];
            snprintf(msg, sizeof msg, "steps: the run is already at step %d; ask for more steps "
                     "to continue it", tr->start_step);
            jobs_train_finish(d->jobs, j, JOB_FAILED, "invalid_argument", 400, "steps", msg);
            run_release(d, tr);
            return;
        }
    }
    LOG_I("job %s: training run %s opened in %.0f ms (%s at step %d of %d)", j->id, r->out,
          sd_now_ms() - t0, r->resume ? "resumed" : "starting", tr->start_step, r->steps);
    tr->t0_ms = sd_now_ms();
}

void train_run_start(struct sdxld *d, struct train_run *tr, struct job *j, struct batch *b,
                     int *fatal) {
    memset(tr, 0, sizeof *tr);
    tr->job = j;
    tr->d = d;
    tr->b = b;
    tr->fatal = fatal;
    tr->last_ckpt_step = -1;
    tr->roots.data_root.fd = tr->roots.model.fd = -1;
    sd_status st = roots_open(d, &tr->roots, j->train->req.root, 1);
    if (st) {
        fail_job(d, tr, st, "data_root does not open");
        return;
    }
    confine(&tr->roots);
    run_open(d, tr, j);
    unconfine();
}

static void run_step(struct sdxld *d, struct train_run *tr, int *fatal) {
    struct job *j = tr->job;
    const struct train_request *r = &j->train->req;
    struct dmd2_stats s;
    sd_status st = dmd2_step(tr->t, &s);
    if (st == SD_ERR_CANCELLED) {   /* stopped between passes: the worker ends the run next */
        LOG_I("job %s: iteration %d %s", j->id, dmd2_iteration(tr->t) + 1, dmd2_broken(tr->t) ?
              "aborted half-way (no final checkpoint: the last one stands)" : "stopped before any update (undone)");
        return;
    }
    if (st) {
        if (st == SD_ERR_CUDA) *fatal = 1;
        char what[64];
        snprintf(what, sizeof what, "training failed at step %d", dmd2_iteration(tr->t) + 1);
        fail_job(d, tr, st, what);
        return;
    }
    double el_s = (sd_now_ms() - tr->t0_ms) / 1e3;
    int done_here = s.step - tr->start_step;
    double ips = el_s > 0 ? done_here / el_s : 0;
    struct train_update u = {
        .has_losses = 1, .step = s.step, .generator_steps = s.generator_steps, .dm = s.dm, .gan_g = s.gan_g,
        .fake = s.fake, .gan_d = s.gan_d, .grad_generator = s.grad_generator,
        .grad_fake = s.grad_fake, .it_per_s = ips,
        .eta_s = ips > 0 ? (r->steps - s.step) / ips : 0,
        .sample = s.sample_path, .checkpoint = s.checkpoint_path,
        .emit = s.step % r->opt.log_every == 0 || done_here == 1 || s.step == r->steps,
    };
    if (s.checkpoint_path) tr->last_ckpt_step = s.step;
    if (u.emit)
        LOG_D("job %s: step %d/%d gen_steps %d dm %.4f gan_g %.4f fake %.4f gan_d %.4f "
              "|g| gen %.3f fake %.3f, %.2f it/s", j->id, s.step, r->steps, s.generator_steps,
              s.dm, s.gan_g, s.fake, s.gan_d, s.grad_generator, s.grad_fake, ips);
    jobs_train_update(d->jobs, j, &u);
    if (dmd2_done(tr->t)) {
        jobs_train_finish(d->jobs, j, JOB_SUCCEEDED, NULL, 0, NULL, NULL);
        run_release(d, tr);
    }
}

void train_run_step(struct sdxld *d, struct train_run *tr, int *fatal) {
    confine(&tr->roots);
    run_step(d, tr, fatal);
    unconfine();
}

static void run_stop(struct sdxld *d, struct train_run *tr) {
    struct job *j = tr->job;
    jobs_lock(d->jobs);
    int final = job_status_final(j->status);
    jobs_unlock(d->jobs);
    if (!final) {
        int step = dmd2_iteration(tr->t);
        char note[1200] = "";
        char path[4096];
        if (step == tr->last_ckpt_step) {
            /* That checkpoint is the final one; list it if this job has not (a run
             * stopped right after it resumed). */
            jobs_lock(d->jobs);
            const struct train_state *t = j->train;
            int listed = t->nckpts && t->ckpts[t->nckpts - 1].step == step;
            jobs_unlock(d->jobs);
            if (!listed && ckpt_latest(r_out(j), path, sizeof path) == SD_OK) {
                struct train_update u = { .step = step, .checkpoint = path };
                jobs_train_update(d->jobs, j, &u);
            }
        } else {
            sd_status st = dmd2_save(tr->t, path, sizeof path);
            if (st) {
                snprintf(note, sizeof note, "the final checkpoint could not be written: %s",
                         last_error(st));
                LOG_E("job %s: %s", j->id, note);
            } else {
                struct train_update u = { .step = step, .checkpoint = path };
                jobs_train_update(d->jobs, j, &u);
                LOG_I("job %s: final checkpoint %s", j->id, path);
            }
        }
        jobs_train_finish(d->jobs, j, JOB_CANCELLED, NULL, 0, NULL, note[0] ? note : NULL);
    }
    run_release(d, tr);
}

void train_run_stop(struct sdxld *d, struct train_run *tr) {
    confine(&tr->roots);
    run_stop(d, tr);
    unconfine();
}

void train_run_free(struct sdxld *d, struct train_run *tr) {
    if (!tr->job) return;
    LOG_W("job %s: training run closed without a final checkpoint (forced stop)", tr->job->id);
    run_release(d, tr);
}

/* ---- model loads ---- */

void worker_load_generator(struct sdxld *d, struct engine *e, struct job *j) {
    double t0 = sd_now_ms();
    struct run_roots files = { 0 };
    const char *failed = "generator";
    sd_status st = roots_open(d, &files, d->cfg.data_root, 0);   /* read-only: a load writes nothing */
    if (!st) {
        confine(&files);
        st = engine_load_unet(e, j->load_generator, j->load_lora, j->load_lora_scale, &failed);
        unconfine();
    }
    roots_close(&files);
    if (st == SD_OK) {
        pthread_mutex_lock(&d->info_lock);
        d->info = *engine_info(e);
        d->have_info = 1;
        snprintf(d->generator, sizeof d->generator, "%s", j->load_shown);
        pthread_mutex_unlock(&d->info_lock);
        LOG_I("job %s: now serving generator %s (loaded in %.0f ms)", j->id, j->load_shown,
              sd_now_ms() - t0);
        jobs_load_finish(d->jobs, j, SD_OK, NULL, 200, NULL, NULL);
    } else {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s does not load (the previous generator keeps "
                 "serving): %s", failed, j->load_shown, last_error(st));
        strip_root(msg, files.data_root.path);
        const struct api_status as = api_status_of(st, API_WORK_LOAD);
        jobs_load_finish(d->jobs, j, st, as.code, as.http, failed, msg);
    }
    jobs_unref(d->jobs, j);
}
