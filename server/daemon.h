/* daemon.h — the context of one `sdxld serve` process, passed to every part of the
 * daemon (no globals, so tests and the --single-request mode build their own).
 *
 * Ownership: serve.c creates and frees everything here.  The worker thread owns the
 * engine (created, used and freed on that thread only); other threads read the engine's
 * description through `info`, a copy guarded by info_lock. */
#ifndef SD_SERVER_DAEMON_H
#define SD_SERVER_DAEMON_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "config.h"
#include "engine.h"
#include "jobs.h"


struct auth;
struct metrics;
struct jobs;
struct worker;
struct http;

enum sdxld_phase {
    PHASE_STARTING,   /* HTTP up, model not loaded yet */
    PHASE_LOADING,
    PHASE_WARMING,
    PHASE_READY,      /* /readyz 200 */
    PHASE_DRAINING,   /* SIGTERM: no new jobs, queued ones finish */
    PHASE_STOPPED,
};

struct sdxld {
    struct sdxld_config cfg;
    struct auth *auth;
    struct metrics *metrics;
    struct jobs *jobs;
    struct worker *worker;
    struct http *http;

    atomic_int phase;          /* enum sdxld_phase */
    atomic_int fatal_exit;     /* non-zero: the worker hit a fatal error; exit with it */
    int wake_fd;               /* eventfd: worker → main thread (phase change, fatal) */
    double start_time;         /* unix seconds */

    pthread_mutex_t info_lock;
    int have_info;
    struct engine_info info;   /* copied from the engine after load and after batches */
    char backend[16];          /* the backend actually in use */
    char generator[CFG_STR_MAX]; /* the served UNet file ("" = the model folder's own):
                                  * cfg.unet, then what POST /v1/models/load loaded */
    /* Models by name (models.h), real paths: the model the engine holds now, the one a
     * generation that names none is queued for, and the one the daemon started with
     * (written by the worker before PHASE_READY; the first two change with switches). */
    char model_served[PATH_MAX + 256];
    char model_default[PATH_MAX + 256];
    char model_startup[PATH_MAX + 256];

    /* Request defaults and bounds resolved against the model once it is loaded
     * (written by the worker before PHASE_READY, read-only afterwards). */
    int default_width, default_height;
    int native_width, native_height;   /* the model's own size (OpenAI size "auto") */
    int size_multiple;         /* width and height must be multiples of this */
};

/* Wake the main thread (it re-reads phase and fatal_exit). */
void sdxld_wake_main(struct sdxld *d);
/* Log a line and pass it to systemd as STATUS= (no-op without systemd). */
/* notify.c: a systemd notification (no-op without systemd), a status line (logged and
 * sent as STATUS=), waking the main loop. */
void sdxld_notify(const char *state);
void sdxld_status(struct sdxld *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* worker.c: the thread that owns the device, plus the image encoders. */
int worker_start(struct sdxld *d);     /* 0, or -1 (threads could not start) */
void worker_join(struct sdxld *d);     /* after jobs_stop / jobs_cancel_all */

/* worker_train.c: the worker's side of training jobs and model loads (worker thread). */
struct dmd2;
struct dataset;
/* The folders the worker may touch while it acts for a request (src/core/fs.h):
 * data_root (read-write for a run, read-only for a model load) with no link followed, and
 * the served model, trusted and read-only. */
struct run_roots { struct sd_root data_root, model; };

struct train_run {
    struct job *job;           /* the training job (one reference), NULL when idle */
    struct dmd2 *t;
    struct dataset *data;
    double t0_ms;              /* monotonic ms when this session's first iteration began */
    int start_step;            /* the iteration this session started from */
    int last_ckpt_step;        /* step of the newest checkpoint on disk, -1 = none */
    /* The folders the run may touch (src/core/fs.h): data_root read-write with no link
     * followed, the served model read-only; the worker confines itself to them while it
     * acts for the run. */
    struct run_roots roots;
    /* Between the UNet passes of an iteration the worker serves generations (the dmd2
     * yield hook): with this batch buffer; a device error there is fatal. */
    struct sdxld *d;
    struct batch *b;
    int *fatal;
};
/* Open the run of training job j (the worker's reference is taken over); on failure the
 * job fails and the run stays idle. */
void train_run_start(struct sdxld *d, struct train_run *tr, struct job *j, struct batch *b,
                     int *fatal);
/* One iteration; the job succeeds after the last one and fails on an error.  *fatal is
 * set on a device error (the context may be poisoned). */
void train_run_step(struct sdxld *d, struct train_run *tr, int *fatal);
/* Stop: a final checkpoint (unless the job is already final), the job ends cancelled. */
void train_run_stop(struct sdxld *d, struct train_run *tr);
/* The daemon stops: close the run without writing anything. */
void train_run_free(struct sdxld *d, struct train_run *tr);
/* Swap the served UNet for load job j's file (the worker's reference is taken over). */
void worker_load_generator(struct sdxld *d, struct engine *e, struct job *j);
/* worker_models.c: switch the whole served model (*e) to the model at path (a real path,
 * models.h), memory checked first (the rules: worker_models.c).  On failure msg names the
 * model and the old one serves on; SD_ERR_CUDA: no model is left (fatal, *e NULL). */
sd_status worker_switch_model(struct sdxld *d, struct engine **e, const char *path, int *freed_first,
                              char *msg, size_t n);
/* Run load job j for a whole model (j->load_model; the worker's reference is taken over).
 * Returns worker_switch_model's status (SD_ERR_CUDA: fatal). */
sd_status worker_load_model(struct sdxld *d, struct engine **e, struct job *j);
/* Between two UNet passes of the worker's training job `training`: count the pass, run
 * the generation batches that are due (b is the worker's batch buffer), and say how the
 * run goes on (stop: the job was cancelled or the daemon drains; abort: a forced stop or
 * a device error). */
enum pass_verdict { PASS_GO_ON, PASS_STOP, PASS_ABORT };
enum pass_verdict worker_between_passes(struct sdxld *d, struct batch *b, struct job *training,
                                        int *fatal);

#endif
