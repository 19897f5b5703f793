/* cli_train.c — `sdxld train-vae`, `sdxld train-teacher` (the offline trainers that make
 * sdxld's small built-in model, src/train/trainer.h) and `sdxld train dmd2`.  Their flags,
 * defaults, bounds and --help come from the training option table (src/train/options.h);
 * with --resume the run's stored options apply and a flag that may not change at resume
 * must repeat its stored value.  Progress lines go to stderr; SIGINT/SIGTERM stop after a
 * final checkpoint. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "training.h"
#include "cli.h"
#include "cli_util.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }
static int progress(void *ud, const struct train_progress *p) {
    (void)ud;
    if (p->sample_path) fprintf(stderr, "sample %s\n", p->sample_path);
    if (p->checkpoint_path) fprintf(stderr, "checkpoint %s\n", p->checkpoint_path);
    return stop_requested;
}

/* With --resume: the stored options of o->out, the flags given merged in. */
static int resume_options(const char *cmd, enum train_kind kind, struct train_options *o,
                          const struct topt_given *given) {
    char *text, err[512], flag[80];
    if (ckpt_latest_config(o->out, &text)) return cli_fail(cmd);
    json_t *cfg = json_loads(text, 0, NULL);
    sd_free(text);
    struct train_options stored;
    struct topt_given present;
    topt_defaults(&stored, kind);
    if (!cfg || topt_from_json(&stored, &present, kind, cfg, err, sizeof err)) {
        fprintf(stderr, "sdxld %s: %s: stored options: %s\n", cmd, o->out, cfg ? err : "not JSON");
        json_decref(cfg);
        return 1;
    }
    json_decref(cfg);
    const char *bad = topt_resume_merge(&stored, &present, o, given, kind);
    if (bad) {
        fprintf(stderr, "sdxld %s: %s may not change when a run resumes (%s was started with "
                "another value; its stored options are in state.json)\n", cmd,
                topt_flag(bad, flag, sizeof flag), o->out);
        return 2;
    }
    *o = stored;
    return 0;
}

/* Parse the flags into o (heap: paths make it large), resume, fill the model's defaults
 * and the stored configuration (*cfg, free()).  Returns -1 to go on, else an exit status. */
static int run_options(const char *cmd, const char *usage, enum train_kind kind, int argc, char **argv,
                       int first, struct train_options *o, char **cfg) {
    char err[512];
    struct topt_given given = { 0 };
    topt_defaults(o, kind);
    int rc = topt_parse_args(o, &given, kind, argc, argv, first, err, sizeof err);
    if (rc == 1) { topt_print_help(stdout, kind, usage); return 0; }
    if (rc) { fprintf(stderr, "sdxld %s: %s\n", cmd, err); return 2; }
    const char *model = kind == TRAIN_DMD2 ? o->teacher : o->model;
    if (!model[0] || !o->out[0]) {
        fprintf(stderr, "sdxld %s: need %s and --out\n", cmd, kind == TRAIN_DMD2 ? "--teacher" : "--model");
        return 2;
    }
    if (o->resume && (rc = resume_options(cmd, kind, o, &given))) return rc;
    if (kind == TRAIN_DMD2 && !o->resume && train_teacher_defaults(o->teacher, o, &given)) return cli_fail(cmd);
    struct train_model_info m;
    if (train_model_probe(kind == TRAIN_DMD2 ? o->teacher : o->model, &m)) return cli_fail(cmd);
    train_options_finish(o, kind, &m, train_ram_bytes());
    json_t *j = topt_to_json(o, kind);
    *cfg = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!*cfg) { fprintf(stderr, "sdxld %s: out of memory\n", cmd); return 1; }
    if (kind == TRAIN_DMD2) {
        struct train_estimate e;
        train_estimate_dmd2(o, &m, 0, &e);
        LOG_I("estimate (not a promise): %.3f GiB of memory (weights %.3f, gradients %.3f, optimizer %.3f, "
              "activations %.3f, cache %.3f), %.3g s per iteration", e.memory_bytes / 1073741824.0,
              e.weights_bytes / 1073741824.0, e.gradients_bytes / 1073741824.0, e.optimizer_bytes / 1073741824.0,
              e.activations_bytes / 1073741824.0, e.cache_bytes / 1073741824.0, e.iteration_s);
    }
    return -1;
}

static sd_status open_dataset(const struct train_options *o, struct dataset **d) {
    return !strcmp(o->real_data, "shapes") ? dataset_shapes(d, o->resolution, o->seed ^ 0x5eed, o->dataset_size)
                                           : dataset_folder(d, o->real_data, o->resolution);
}

static int train_main(int argc, char **argv, int teacher) {
    const char *cmd = teacher ? "train teacher" : "train vae";
    enum train_kind kind = teacher ? TRAIN_TEACHER : TRAIN_VAE;
    char usage[160], *cfg = NULL;
    snprintf(usage, sizeof usage, "usage: sdxld %s --model DIR --out RUN [--resume] [options]", cmd);
    struct train_options *o = malloc(sizeof *o);
    if (!o) return 1;
    int rc = run_options(cmd, usage, kind, argc, argv, 1, o, &cfg);
    if (rc >= 0) { free(o); return rc; }
    struct train_config c = {
        .model_dir = o->model, .out_dir = o->out, .backend = o->backend[0] ? o->backend : NULL,
        .resume = o->resume, .batch = o->batch, .steps = o->steps, .seed = o->seed,
        .opt = { .lr = o->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = o->weight_decay,
                 .clip = o->clip, .warmup = o->warmup, .ema = o->ema },
        .log_every = o->log_every, .sample_every = o->sample_every, .checkpoint_every = o->checkpoint_every,
        .keep_checkpoints = o->keep_checkpoints, .config_json = cfg, .shards = o->shards,
        .recompute = o->recompute, .p2_gamma = o->p2_gamma, .cfg_dropout = o->cfg_dropout,
        .cache_size = (int)o->cache_size, .sample_steps = o->sample_steps, .guidance = o->guidance,
        .kl_weight = o->kl_weight, .l1 = !o->l2, .progress = progress,
    };
    struct dataset *d = NULL;
    if (open_dataset(o, &d)) { free(cfg); free(o); return cli_fail("dataset"); }
    c.data = d;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    sd_status st = teacher ? train_teacher(&c) : train_vae(&c);
    dataset_free(d);
    free(cfg);
    free(o);
    return st ? cli_fail(cmd) : 0;
}

int cli_train_vae(int argc, char **argv) { return train_main(argc, argv, 0); }
int cli_train_teacher(int argc, char **argv) { return train_main(argc, argv, 1); }

/* ---- sdxld train dmd2 ---- */

static int dmd2_loop(struct dmd2 *t, const struct dmd2_config *c) {
    double t0 = sd_now_ms();
    int start = -1, rc = 0;
    struct dmd2_stats s;
    while (!dmd2_done(t)) {
        if (dmd2_step(t, &s)) { rc = cli_fail("train dmd2"); break; }
        if (start < 0) start = s.step - 1;
        double el = (sd_now_ms() - t0) / 1e3, ips = (s.step - start) / (el > 1e-9 ? el : 1e-9);
        if (s.step == start + 1 || s.step % (c->log_every > 0 ? c->log_every : 10) == 0 || s.step == c->steps)
            LOG_I("step %d/%d gen_steps %d dm %.4f gan_g %.4f fake %.4f gan_d %.4f |g| gen %.3f fake %.3f %.2f it/s ETA %.0f s",
                  s.step, c->steps, s.generator_steps, s.dm, s.gan_g, s.fake, s.gan_d, s.grad_generator, s.grad_fake, ips,
                  (c->steps - s.step) / (ips > 0 ? ips : 1));
        if (s.sample_path) fprintf(stderr, "sample %s\n", s.sample_path);
        if (s.checkpoint_path) fprintf(stderr, "checkpoint %s\n", s.checkpoint_path);
        if (stop_requested) {
            char p[4096];
            if (dmd2_save(t, p, sizeof p)) rc = cli_fail("final checkpoint");
            else fprintf(stderr, "stopped; checkpoint %s\n", p);
            break;
        }
    }
    return rc;
}

/* `sdxld train vae|teacher|dmd2`: one command for the three run kinds (train-vae and
 * train-teacher stay as the older spellings of the first two). */
int cli_train(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "vae")) return train_main(argc - 1, argv + 1, 0);
    if (argc >= 2 && !strcmp(argv[1], "teacher")) return train_main(argc - 1, argv + 1, 1);
    if (argc < 2 || strcmp(argv[1], "dmd2")) {
        fprintf(stderr, "usage: sdxld train vae|teacher|dmd2 [options] (sdxld train KIND --help)\n");
        return 2;
    }
    if (argc == 3 && !strcmp(argv[2], "--print-api-table")) {   /* docs/daemon.md's copy */
        topt_print_api_table(stdout);
        return 0;
    }
    char *cfg = NULL;
    struct train_options *o = malloc(sizeof *o);
    if (!o) return 1;
    int rc = run_options("train dmd2", "usage: sdxld train dmd2 --teacher DIR --out RUN [--resume] [options]\n"
                         "Defaults are the DMD2 paper's SDXL settings (docs/dmd2.md); small models want larger LRs.",
                         TRAIN_DMD2, argc, argv, 2, o, &cfg);
    if (rc >= 0) { free(o); return rc; }
    struct dmd2_config c = {
        .teacher_dir = o->teacher, .generator_init = strcmp(o->generator_init, "teacher") ? o->generator_init : NULL,
        .out_dir = o->out, .resume = o->resume, .cache_size = o->cache_size, .batch = o->batch, .steps = o->steps,
        .ttur = o->ttur, .lr_generator = o->lr_generator, .lr_fake = o->lr_fake, .guidance = o->guidance,
        .gan_weight_g = o->gan_weight_g, .gan_weight_d = o->gan_weight_d, .clip = o->clip, .warmup = o->warmup,
        .nsteps = o->nsteps, .backward_simulation = o->backward_simulation, .gan = o->gan, .dm_min_t = 20,
        .dm_max_t = 980, .seed = o->seed, .lora_rank = o->lora_rank, .lora_alpha = o->lora_alpha,
        .recompute = o->recompute, .checkpoint_every = o->checkpoint_every, .sample_every = o->sample_every,
        .log_every = o->log_every, .keep_checkpoints = o->keep_checkpoints, .config_json = cfg,
        .shards = o->shards, .backend = o->backend[0] ? o->backend : NULL,
    };
    memcpy(c.timesteps, o->timesteps, sizeof c.timesteps);
    struct dataset *d = NULL;
    struct dmd2 *t = NULL;
    if (open_dataset(o, &d)) rc = cli_fail("dataset");
    else if ((c.data = d, dmd2_open(&t, &c))) rc = cli_fail("train dmd2");
    if (t) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        rc = dmd2_loop(t, &c);
        dmd2_close(t);
    }
    dataset_free(d);
    free(cfg);
    free(o);
    return rc < 0 ? 1 : rc;
}
