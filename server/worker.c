/* worker.c — the one thread that owns the engine (and so the GPU), and the image encoders.
 *
 * The worker loads the model, runs a warm-up generation (so "ready" means an image can
 * be made and the first request does not pay for lazy initialisation), then loops:
 * take a batch of compatible jobs from the queue, run engine_generate once for all of
 * them with per-image seeds, and hand the pixels to the encoder threads.  Encoding images
 * off the worker keeps the device busy with the next batch meanwhile.  When no
 * generation waits, it advances the training job by one iteration, and it swaps the
 * served UNet between batches (worker_train.c; the order is jobs_next_work's), or the
 * whole model, when a load asks or the next batch's jobs were queued for another one
 * (worker_models.c).
 *
 * Cancellation: the engine calls back after every sampler step (progress) and polls
 * between the blocks of every UNet and VAE pass; both stop the batch once no job in it
 * is still wanted (jobs_batch_unwanted: each cancelled, or its sync client gone), so an
 * abandoned batch frees the device within one block, not one step.
 *
 * Failure policy (ARCHITECTURE.md, Errors): a failed batch fails its jobs and the
 * daemon lives; SD_ERR_CUDA means the device context may be poisoned, so the worker
 * fails the batch, stops, and the main thread exits non-zero for systemd to restart. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "advice.h"
#include "api_status.h"
#include "cli_util.h"
#include "daemon.h"
#include "jobs.h"
#include "metrics.h"

struct rgb_buf {
    atomic_int refs;
    char model[256];             /* the model that made these pixels (engine_info's name):
                                    the worker may switch models before they are encoded */
    uint8_t data[];
};

struct enc_task {
    struct enc_task *next;
    struct job *job;             /* one reference */
    int first, count;
    struct rgb_buf *buf;         /* one reference */
    size_t offset;               /* bytes into buf->data of image `first` */
};

struct worker {
    pthread_t thread;
    int thread_started;
    pthread_t *enc;
    int nenc;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct enc_task *head, *tail;
    int enc_stop;
    struct engine *e;            /* the served model; replaced by a switch (worker_models.c) */
};

static void rgb_unref(struct rgb_buf *b) {
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

/* One image in the job's format; the "parameters" text goes into the PNG's text chunk
 * and the JPEG's COM marker (a WebP carries none). */
static sd_status encode_image(const struct gen_request *g, const uint8_t *rgb, const char *params,
                              struct job_image *out) {
    const int w = g->params.width, h = g->params.height;
    switch (g->format) {
    case GEN_FORMAT_JPEG:
        return jpeg_encode(rgb, w, h, g->quality, params, &out->png, &out->len);
    case GEN_FORMAT_WEBP:
        return webp_encode(rgb, w, h, g->quality, &out->png, &out->len);
    case GEN_FORMAT_PNG:
        break;
    }
    const struct png_text texts[] = { { "parameters", params }, { "Software", "sdxld " SDXLD_VERSION } };
    return png_encode(rgb, w, h, texts, 2, &out->png, &out->len);
}

static void encode_task(struct sdxld *d, struct enc_task *t) {
    struct job *j = t->job;
    const int w = j->req.params.width, h = j->req.params.height;
    const size_t img_bytes = (size_t)w * h * 3;
    struct job_image imgs[JOB_MAX_IMAGES];
    const char *model = t->buf->model;
    size_t plen = strlen(j->req.prompt) + 512;
    char *params = malloc(plen);
    if (!params) {
        const struct api_status as = api_status_of(SD_ERR_NOMEM, API_WORK_ENCODE);
        jobs_fail(d->jobs, j, as.code, as.http, "out of memory encoding the images");
        return;
    }
    char extra[64];   /* A1111's img2img infotext field */
    snprintf(extra, sizeof extra, "Denoising strength: %g", (double)j->req.params.strength);
    for (int i = 0; i < t->count; i++) {
        uint64_t seed = engine_image_seed(j->req.seed, t->first + i);
        engine_parameters_text(params, plen, j->req.prompt, seed, &j->req.params, model, j->req.init ? extra : NULL);
        imgs[i].seed = seed;
        sd_status st = encode_image(&j->req, t->buf->data + t->offset + (size_t)i * img_bytes,
                                    params, &imgs[i]);
        if (st != SD_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s encoding failed: %s", gen_format_name(j->req.format),
                     sd_last_error());
            LOG_E("job %s: %s", j->id, msg);
            for (int k = 0; k < i; k++) sd_free(imgs[k].png);
            free(params);
            const struct api_status as = api_status_of(st, API_WORK_ENCODE);
            jobs_fail(d->jobs, j, as.code, as.http, msg);
            return;
        }
    }
    free(params);
    jobs_store_images(d->jobs, j, t->first, t->count, imgs);
}

static void *encoder_main(void *arg) {
    struct sdxld *d = arg;
    struct worker *w = d->worker;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->enc_stop) pthread_cond_wait(&w->cond, &w->lock);
        struct enc_task *t = w->head;
        if (!t) {   /* stopping and drained */
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        w->head = t->next;
        if (!w->head) w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        encode_task(d, t);
        jobs_unref(d->jobs, t->job);
        rgb_unref(t->buf);
        free(t);
    }
}

static void enc_push(struct worker *w, struct enc_task *t) {
    pthread_mutex_lock(&w->lock);
    t->next = NULL;
    if (w->tail) w->tail->next = t; else w->head = t;
    w->tail = t;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

struct progress_ctx { struct sdxld *d; struct batch *b; };

static int on_progress(void *ud, int step, int total) {
    struct progress_ctx *c = ud;
    return jobs_batch_progress(c->d->jobs, c->b, step, total);
}

static int on_cancel_poll(void *ud) {
    struct progress_ctx *c = ud;
    return jobs_batch_unwanted(c->d->jobs, c->b);
}

static void copy_info(struct sdxld *d, const struct engine *e) {
    pthread_mutex_lock(&d->info_lock);
    d->info = *engine_info(e);
    d->have_info = 1;
    pthread_mutex_unlock(&d->info_lock);
}

static void fatal(struct sdxld *d, int code) {
    atomic_store(&d->fatal_exit, code);
    sdxld_wake_main(d);
}

/* Exit status for a failed load: a missing or malformed model is a configuration
 * problem (no restart loop); anything else may be transient. */
static int load_exit_code(sd_status st) {
    switch (st) {
    case SD_ERR_NOTFOUND: case SD_ERR_FORMAT: case SD_ERR_SHAPE: case SD_ERR_INVALID:
    case SD_ERR_UNSUPPORTED: case SD_ERR_IO:
        return SDXLD_EXIT_CONFIG;
    default:
        return 1;
    }
}

static struct engine *load_engine(struct sdxld *d) {
    const struct sdxld_config *c = &d->cfg;
    /* The engine reads the model folder again when a generator is loaded, confined to
     * data_root and the model's real path (src/core/fs.h), which matches absolute paths
     * only: give it the real path of a relative `model`. */
    char model[PATH_MAX];
    struct engine_config ec = {
        .model_dir = realpath(c->model, model) ? model : c->model,
        .unet_path = c->unet[0] ? c->unet : NULL,
        .config_dir = c->model_config[0] ? c->model_config : NULL,
        .tokenizer_dir = c->tokenizers[0] ? c->tokenizers : NULL,
        .threads = c->threads,
        .weights_dtype = c->weights_dtype,
        .vae_tile = c->vae_tile,
    };
    struct engine *e = NULL;
    sd_status st;
    if (cli_model_defaults(&ec)) {   /* a single file: its configs and tokenizers */
        LOG_E("cannot load model %s: %s", c->model, sd_last_error());
        fatal(d, SDXLD_EXIT_CONFIG);
        return NULL;
    }
    if (!strcmp(c->backend, "auto")) {
#ifdef SD_HAVE_CUDA_TOOLKIT
        ec.backend = "cuda";
        sdxld_status(d, "loading model %s (backend cuda)", c->model);
        st = engine_load(&e, &ec);
        if (st == SD_OK) goto loaded;
        if (st != SD_ERR_CUDA && st != SD_ERR_UNSUPPORTED) goto failed;
        char line[600];
        if (advice_cpu_fallback(sd_last_error(), advice_gpu_device_seen(), line, sizeof line)) {
            LOG_I("%s", line);   /* the usual case on a machine without one (advice.h) */
            LOG_D("cuda: %s", sd_last_error());
        } else {
            LOG_W("%s", line);
        }
#else
        LOG_I("serving on the CPU (this build has no CUDA backend)");
#endif
        ec.backend = "cpu";
    } else {
        ec.backend = c->backend;
    }
    sdxld_status(d, "loading model %s (backend %s)", c->model, ec.backend);
    st = engine_load(&e, &ec);
    if (st == SD_OK) goto loaded;
#ifdef SD_HAVE_CUDA_TOOLKIT
failed:
#endif
    LOG_E("cannot load model %s: %s (%s)", c->model, sd_last_error(), sd_status_name(st));
    fatal(d, load_exit_code(st));
    return NULL;
loaded:
    pthread_mutex_lock(&d->info_lock);
    snprintf(d->backend, sizeof d->backend, "%s", ec.backend);
    pthread_mutex_unlock(&d->info_lock);
    return e;
}

/* Resolve the request defaults and the size granularity against the loaded model.
 * The granularity (VAE scale times the UNet's downsampling) is found by asking the
 * engine for the smallest square it accepts, so the HTTP threads can reject a bad size
 * before it takes a queue slot.  -1 (fatal, config error) if the defaults do not fit. */
static int resolve_defaults(struct sdxld *d, struct engine *e) {
    const struct engine_info *in = engine_info(e);
    d->size_multiple = in->size_multiple;
    d->native_width = in->default_width;
    d->native_height = in->default_height;
    d->default_width = d->cfg.default_width ? d->cfg.default_width : in->default_width;
    d->default_height = d->cfg.default_height ? d->cfg.default_height : in->default_height;
    const char *bad = NULL;
    if (d->default_width % d->size_multiple || d->default_width > d->cfg.max_width) bad = "width";
    else if (d->default_height % d->size_multiple || d->default_height > d->cfg.max_height) bad = "height";
    if (bad) {
        LOG_E("default size %dx%d does not suit model %s: %s must be a multiple of %d within "
              "max_%s (set default_%s, max_%s)", d->default_width, d->default_height,
              in->model_name, bad, d->size_multiple, bad, bad, bad);
        fatal(d, SDXLD_EXIT_CONFIG);
        return -1;
    }
    LOG_I("default size %dx%d, sizes in multiples of %d up to %dx%d", d->default_width,
          d->default_height, d->size_multiple, d->cfg.max_width, d->cfg.max_height);
    return 0;
}

static int warm_up(struct sdxld *d, struct engine *e) {
    struct gen_params p = { .width = d->default_width, .height = d->default_height,
                            .nsteps = d->cfg.default_steps };
    engine_default_timesteps(p.nsteps, p.timesteps);
    sd_status st = engine_check_params(e, &p);
    if (st != SD_OK) {
        LOG_E("warm-up: default size %dx%d, %d steps is not valid for this model: %s",
              p.width, p.height, p.nsteps, sd_last_error());
        fatal(d, SDXLD_EXIT_CONFIG);
        return -1;
    }
    sdxld_status(d, "warming up (one %dx%d generation)", p.width, p.height);
    uint8_t *rgb = malloc((size_t)p.width * p.height * 3);
    struct gen_item item = { .prompt = "a lighthouse at dusk", .seed = 0 };
    struct gen_timings tm = { 0 };
    double t0 = sd_now_ms();
    st = rgb ? engine_generate(e, &p, &item, 1, rgb, &tm, NULL, NULL) : SD_ERR_NOMEM;
    free(rgb);
    if (st != SD_OK) {
        LOG_E("warm-up generation failed: %s (%s)", sd_last_error(), sd_status_name(st));
        fatal(d, 1);
        return -1;
    }
    LOG_I("warm-up done in %.0f ms (text %.0f, unet %.0f, vae %.0f)", sd_now_ms() - t0,
          tm.text_ms, tm.unet_ms, tm.vae_ms);
    return 0;
}

/* Hand each slice's pixels to the encoders; a slice whose job was cancelled meanwhile
 * (its client gone while the batch ran on for the others) is not encoded. */
static void encode_slices(struct sdxld *d, struct batch *b, struct rgb_buf *buf, size_t img_bytes) {
    size_t off = 0;
    for (int i = 0; i < b->nslices; off += img_bytes * (size_t)b->s[i].count, i++) {
        struct job *j = b->s[i].job;
        jobs_lock(d->jobs);
        int wanted = !job_status_final(j->status);
        if (wanted) jobs_ref_locked(j);   /* the encoder task's */
        jobs_unlock(d->jobs);
        if (!wanted) continue;
        struct enc_task *t = calloc(1, sizeof *t);
        if (!t) {
            const struct api_status as = api_status_of(SD_ERR_NOMEM, API_WORK_ENCODE);
            jobs_fail(d->jobs, j, as.code, as.http, "out of memory");
            jobs_unref(d->jobs, j);
            continue;
        }
        *t = (struct enc_task){ .job = j, .first = b->s[i].first, .count = b->s[i].count,
                                .buf = buf, .offset = off };
        atomic_fetch_add(&buf->refs, 1);
        enc_push(d->worker, t);
    }
}

/* engine_generate; with LoRA adapters the engine may read their files, so the thread is
 * confined to models_dir meanwhile (src/core/fs.h: no link followed, nothing written), and
 * a request's names can reach no other file.  The engine is told models_dir's real path
 * (what the confinement matches) and lora_cache_mb here, whichever way it was loaded. */
static sd_status generate(struct sdxld *d, struct engine *e, const struct gen_params *p, struct gen_item *items,
                          int n, uint8_t *rgb, struct gen_timings *tm, const struct gen_hooks *hooks) {
    if (!p->lora[0].name[0]) return engine_generate(e, p, items, n, rgb, tm, hooks, NULL);
    struct sd_root root;
    sd_status st = sd_root_open(&root, d->cfg.models_dir, 0);
    if (st) return sd_wrap(st, "lora: models_dir");
    const struct sd_root *rs[1] = { &root };
    if (!(st = engine_set_lora_dir(e, root.path, (size_t)d->cfg.lora_cache_mb << 20))) {
        sd_fs_confine(rs, 1);
        st = engine_generate(e, p, items, n, rgb, tm, hooks, NULL);
        sd_fs_confine(NULL, 0);
    }
    sd_root_close(&root);
    return st;
}

/* The batch's model (one per batch: batching.c) is served, switching to it if need be;
 * else its jobs fail with the message naming the model.  0 when the batch can run. */
static int batch_model(struct sdxld *d, struct batch *b, int *stop) {
    const char *want = b->s[0].job->req.model;   /* immutable once dispatched */
    if (!want || !strcmp(want, d->model_served)) return 0;
    char msg[1536];
    int freed_first;
    sd_status st = worker_switch_model(d, &d->worker->e, want, &freed_first, msg, sizeof msg);
    if (st == SD_OK) return 0;
    const struct api_status as = api_status_of(st == SD_ERR_CUDA ? SD_ERR_IO : st, API_WORK_LOAD);
    for (int i = 0; i < b->nslices; i++) jobs_fail(d->jobs, b->s[i].job, as.code, as.http, msg);
    if (st == SD_ERR_CUDA) *stop = 1;
    return -1;
}

static void run_batch(struct sdxld *d, struct batch *b, int *stop) {
    if (batch_model(d, b, stop)) return;
    struct engine *e = d->worker->e;
    const struct gen_params *p = &b->params;
    sd_status st = engine_check_params(e, p);
    if (st != SD_OK) {
        jobs_batch_done(d->jobs, b, SD_ERR_INVALID, sd_last_error(), NULL, NULL, 0);
        return;
    }
    struct gen_item items[JOB_MAX_IMAGES];
    int truncated[JOB_MAX_IMAGES];
    int k = 0;
    for (int i = 0; i < b->nslices; i++)
        for (int t = 0; t < b->s[i].count; t++, k++) {
            items[k].prompt = b->s[i].job->req.prompt;
            items[k].seed = engine_image_seed(b->s[i].job->req.seed, b->s[i].first + t);
            items[k].init = b->s[i].job->req.init;   /* immutable once queued */
            items[k].mask = b->s[i].job->req.mask;
            items[k].truncated = 0;
        }
    const size_t img_bytes = (size_t)p->width * p->height * 3;
    struct rgb_buf *buf = malloc(sizeof *buf + img_bytes * (size_t)b->images);
    if (!buf) {
        jobs_batch_done(d->jobs, b, SD_ERR_NOMEM, "out of memory for the batch's pixels",
                        NULL, NULL, 0);
        return;
    }
    atomic_init(&buf->refs, 1);
    snprintf(buf->model, sizeof buf->model, "%s", engine_info(e)->model_name);
    struct gen_timings tm = { 0 };
    struct progress_ctx pc = { d, b };
    const struct gen_hooks hooks = { on_progress, on_cancel_poll, &pc };
    LOG_D("batch: %d image(s) from %d job(s), %dx%d, %d steps", b->images, b->nslices,
          p->width, p->height, p->nsteps);
    double t0 = sd_now_ms();
    st = generate(d, e, p, items, b->images, buf->data, &tm, &hooks);
    double gen_ms = sd_now_ms() - t0;
    const char *msg = st == SD_OK ? "" : sd_last_error();
    if (st == SD_ERR_CANCELLED) {
        LOG_I("batch of %d image(s) from %d job(s) stopped after %.0f ms (%s): no job in it "
              "was still wanted, or the daemon is stopping", b->images, b->nslices, gen_ms, msg);
        metrics_batch_stopped(d->metrics);
    } else if (st != SD_OK) {
        LOG_E("batch of %d image(s) failed: %s (%s)", b->images, msg, sd_status_name(st));
    }
    for (k = 0; k < b->images; k++) truncated[k] = items[k].truncated;
    if (st == SD_OK) metrics_batch(d->metrics, b->images, gen_ms / 1e3);
    /* SD_ERR_CANCELLED with live jobs only happens on a forced stop. */
    jobs_batch_done(d->jobs, b, st, msg, &tm, truncated, gen_ms);
    if (st == SD_OK) encode_slices(d, b, buf, img_bytes);
    rgb_unref(buf);
    copy_info(d, e);
    if (st == SD_ERR_CUDA) {
        LOG_E("device error: the CUDA context may be unusable; stopping so the service "
              "manager restarts the daemon");
        *stop = 1;
    }
}

static void worker_loop(struct sdxld *d);

/* The model paths once the startup model is loaded (models.h). */
static void startup_paths(struct sdxld *d) {
    char real[PATH_MAX];
    pthread_mutex_lock(&d->info_lock);
    snprintf(d->model_startup, sizeof d->model_startup, "%s", realpath(d->cfg.model, real) ? real : d->cfg.model);
    snprintf(d->model_served, sizeof d->model_served, "%s", d->model_startup);
    snprintf(d->model_default, sizeof d->model_default, "%s", d->model_startup);
    pthread_mutex_unlock(&d->info_lock);
}

static void *worker_main(void *arg) {
    struct sdxld *d = arg;
    atomic_store(&d->phase, PHASE_LOADING);
    sdxld_wake_main(d);
    double t0 = sd_now_ms();
    struct engine *e = load_engine(d);
    if (!e) return NULL;
    copy_info(d, e);
    startup_paths(d);
    pthread_mutex_lock(&d->info_lock);
    snprintf(d->generator, sizeof d->generator, "%s", d->cfg.unet);
    pthread_mutex_unlock(&d->info_lock);
    LOG_I("model %s loaded in %.0f ms (backend %s, %.1f MiB of weights)", d->info.model_name,
          sd_now_ms() - t0, d->backend, d->info.param_bytes / 1048576.0);
    if (resolve_defaults(d, e)) {
        engine_free(e);
        return NULL;
    }
    if (d->cfg.warmup && atomic_load(&d->phase) < PHASE_DRAINING) {
        atomic_store(&d->phase, PHASE_WARMING);
        if (warm_up(d, e)) {
            engine_free(e);
            return NULL;
        }
        copy_info(d, e);
    }
    /* A SIGTERM during the load already moved the phase on; keep it. */
    int expect = d->cfg.warmup ? PHASE_WARMING : PHASE_LOADING;
    atomic_compare_exchange_strong(&d->phase, &expect, PHASE_READY);
    sdxld_wake_main(d);

    d->worker->e = e;
    worker_loop(d);
    engine_free(d->worker->e);
    return NULL;
}

enum pass_verdict worker_between_passes(struct sdxld *d, struct batch *b, struct job *training,
                                        int *fatal) {
    jobs_count_pass(d->jobs);
    for (;;) {
        struct job *j;
        switch (jobs_next_work(d->jobs, b, training, &j, 1)) {
        case WORK_BATCH:
            run_batch(d, b, fatal);
            jobs_batch_release(d->jobs, b);
            if (*fatal) return PASS_ABORT;
            continue;
        case WORK_TRAIN_STOP: return PASS_STOP;
        case WORK_STOP: return PASS_ABORT;
        default: return PASS_GO_ON;   /* WORK_TRAIN_STEP: on with the pass */
        }
    }
}

/* Serve until the daemon stops: batches first, training iterations while no generation
 * waits (and between the passes of one: worker_between_passes), model loads between
 * batches (the order is jobs_next_work's). */
static void worker_loop(struct sdxld *d) {
    struct worker *w = d->worker;
    struct batch *b = malloc(sizeof *b);
    struct train_run tr = { 0 };
    struct job *j;
    int stop = !b;
    while (!stop) {
        switch (jobs_next_work(d->jobs, b, tr.job, &j, 0)) {
        case WORK_STOP:
            stop = 2;
            break;
        case WORK_BATCH:
            run_batch(d, b, &stop);
            jobs_batch_release(d->jobs, b);
            break;
        case WORK_LOAD:
            if (j->load_model) {
                if (worker_load_model(d, &w->e, j) == SD_ERR_CUDA) stop = 1;
                break;
            }
            worker_load_generator(d, w->e, j);
            copy_info(d, w->e);
            break;
        case WORK_TRAIN_START:
            train_run_start(d, &tr, j, b, &stop);
            break;
        case WORK_TRAIN_STEP:
            train_run_step(d, &tr, &stop);
            break;
        case WORK_TRAIN_STOP:
            train_run_stop(d, &tr);
            break;
        }
    }
    train_run_free(d, &tr);
    free(b);
    if (stop == 1) fatal(d, 1);
}

int worker_start(struct sdxld *d) {
    struct worker *w = calloc(1, sizeof *w);
    if (!w) return -1;
    d->worker = w;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->enc = calloc((size_t)d->cfg.encode_threads, sizeof *w->enc);
    if (!w->enc) return -1;
    for (int i = 0; i < d->cfg.encode_threads; i++) {
        if (pthread_create(&w->enc[i], NULL, encoder_main, d)) return -1;
        w->nenc++;
    }
    if (pthread_create(&w->thread, NULL, worker_main, d)) return -1;
    w->thread_started = 1;
    return 0;
}

void worker_join(struct sdxld *d) {
    struct worker *w = d->worker;
    if (!w) return;
    if (w->thread_started) pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->lock);
    w->enc_stop = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->nenc; i++) pthread_join(w->enc[i], NULL);
    free(w->enc);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    d->worker = NULL;
}
