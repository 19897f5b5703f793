/* cli_train.c — `sdxld train-vae` and `sdxld train-teacher`: the offline trainers that
 * make sdxld's small built-in model (src/train/trainer.h).  Progress lines go to stderr;
 * SIGINT/SIGTERM stop after a final checkpoint, and --resume continues a run. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "train/trainer.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }
static int progress(void *ud, const struct train_progress *p) {
    (void)ud;
    if (p->sample_path) fprintf(stderr, "sample %s\n", p->sample_path);
    if (p->checkpoint_path) fprintf(stderr, "checkpoint %s\n", p->checkpoint_path);
    return stop_requested;
}

static int train_main(int argc, char **argv, int teacher) {
    const char *cmd = teacher ? "train-teacher" : "train-vae", *dataset = "shapes";
    struct train_config c = {
        .batch = 8, .steps = 1000, .seed = 0, .log_every = 10, .sample_every = 250, .checkpoint_every = 500,
        .cfg_dropout = 0.1f, .cache_size = 4096, .sample_steps = 50, .guidance = 4.0f, .kl_weight = 1e-4f, .l1 = 1,
        .opt = { .lr = teacher ? 2e-4f : 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 1e-2f,
                 .clip = 1.0f, .warmup = 100, .ema = 0 },
        .progress = progress,
    };
    int res = 64;
    long dsize = 1L << 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld %s --model DIR --out RUN [--resume] [--backend cpu|cuda] [--dataset shapes|FOLDER] [--resolution 64]\n"
                   "        [--dataset-size N] [--steps N] [--batch N] [--seed N] [--lr X] [--warmup N]\n"
                   "        [--weight-decay X] [--clip X] [--ema X] [--log-every N] [--sample-every N]\n"
                   "        [--checkpoint-every N] [--shards N]  (CPU: the batch in N row ranges, one thread\n"
                   "        each; default one per core)%s\n", cmd,
                   teacher ? " [--cfg-dropout P] [--cache-size N] [--sample-steps N] [--guidance G] [--recompute]\n"
                             "        [--p2-gamma G]  (loss weight (1+SNR)^-G: the coarse, high-noise steps count more)"
                           : " [--kl-weight X] [--l2]");
            return 0;
        }
        if (!strcmp(a, "--resume")) { c.resume = 1; continue; }
        if (!strcmp(a, "--l2")) { c.l1 = 0; continue; }
        if (!strcmp(a, "--recompute")) { c.recompute = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) c.model_dir = v;
        else if (!strcmp(a, "--out")) c.out_dir = v;
        else if (!strcmp(a, "--backend")) c.backend = v;
        else if (!strcmp(a, "--dataset")) dataset = v;
        else if (!strcmp(a, "--resolution")) res = atoi(v);
        else if (!strcmp(a, "--dataset-size")) dsize = atol(v);
        else if (!strcmp(a, "--steps")) c.steps = atoi(v);
        else if (!strcmp(a, "--batch")) c.batch = atoi(v);
        else if (!strcmp(a, "--seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--lr")) c.opt.lr = (float)atof(v);
        else if (!strcmp(a, "--warmup")) c.opt.warmup = atoi(v);
        else if (!strcmp(a, "--weight-decay")) c.opt.weight_decay = (float)atof(v);
        else if (!strcmp(a, "--clip")) c.opt.clip = (float)atof(v);
        else if (!strcmp(a, "--ema")) c.opt.ema = (float)atof(v);
        else if (!strcmp(a, "--log-every")) c.log_every = atoi(v);
        else if (!strcmp(a, "--sample-every")) c.sample_every = atoi(v);
        else if (!strcmp(a, "--checkpoint-every")) c.checkpoint_every = atoi(v);
        else if (!strcmp(a, "--shards")) c.shards = atoi(v);
        else if (teacher && !strcmp(a, "--cfg-dropout")) c.cfg_dropout = (float)atof(v);
        else if (teacher && !strcmp(a, "--p2-gamma")) c.p2_gamma = (float)atof(v);
        else if (teacher && !strcmp(a, "--cache-size")) c.cache_size = atoi(v);
        else if (teacher && !strcmp(a, "--sample-steps")) c.sample_steps = atoi(v);
        else if (teacher && !strcmp(a, "--guidance")) c.guidance = (float)atof(v);
        else if (!teacher && !strcmp(a, "--kl-weight")) c.kl_weight = (float)atof(v);
        else { fprintf(stderr, "sdxld %s: unknown option '%s'\n", cmd, a); return 2; }
    }
    if (!c.model_dir || !c.out_dir) { fprintf(stderr, "sdxld %s: need --model and --out\n", cmd); return 2; }
    if (c.steps < 1 || c.batch < 1 || c.batch > 256 || !(c.opt.lr > 0) || c.cfg_dropout < 0 || c.cfg_dropout > 1 ||
        !(c.p2_gamma >= 0 && c.p2_gamma <= 4) || c.shards < 0 || c.shards > 16) {
        fprintf(stderr, "sdxld %s: steps >= 1, batch in [1, 256], lr > 0, cfg-dropout in [0, 1], p2-gamma in [0, 4],\n"
                        "shards in [0, 16]\n", cmd);
        return 2;
    }
    struct dataset *d = NULL;
    sd_status st = !strcmp(dataset, "shapes") ? dataset_shapes(&d, res, c.seed ^ 0x5eed, dsize) : dataset_folder(&d, dataset, res);
    if (st) return cli_fail("dataset");
    c.data = d;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    st = teacher ? train_teacher(&c) : train_vae(&c);
    dataset_free(d);
    if (st) return cli_fail(cmd);
    return 0;
}

int cli_train_vae(int argc, char **argv) { return train_main(argc, argv, 0); }
int cli_train_teacher(int argc, char **argv) { return train_main(argc, argv, 1); }

/* ---- sdxld train dmd2 ---- */

#include "train/dmd2.h"

static int parse_ts(const char *s, int *ts) {
    int n = 0;
    while (*s && n < 4) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) return -1;
        ts[n++] = (int)v;
        s = *e == ',' ? e + 1 : e;
    }
    return *s ? -1 : n;
}

int cli_train(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "dmd2")) {
        fprintf(stderr, "usage: sdxld train dmd2 --teacher DIR --out RUN [options] (sdxld train dmd2 --help)\n");
        return 2;
    }
    const char *dataset = "shapes";
    int res = 64;
    long dsize = 1L << 30;
    struct dmd2_config c = {
        .batch = 4, .steps = 1000, .ttur = 5, .lr_generator = 5e-7f, .lr_fake = 5e-7f, .guidance = 8.0f,
        .gan_weight_g = 5e-3f, .gan_weight_d = 1e-2f, .clip = 10.0f, .warmup = 500, .nsteps = 4,
        .timesteps = { 999, 749, 499, 249 }, .backward_simulation = 1, .gan = 1, .dm_min_t = 20, .dm_max_t = 980,
        .cache_size = 4096, .checkpoint_every = 500, .sample_every = 250, .log_every = 10,
        .lora_rank = 0, .lora_alpha = 8.0f,
    };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld train dmd2 --teacher DIR --out RUN [--resume] [--generator-init teacher|FILE] [--backend cpu|cuda]\n"
                   "   [--data shapes|FOLDER] [--resolution 64] [--dataset-size N] [--cache-size 4096]\n"
                   "   [--steps 1000] [--batch 4] [--ttur 5] [--lr-generator 5e-7] [--lr-fake 5e-7] [--warmup 500]\n"
                   "   [--guidance 8] [--gan-weight-g 5e-3] [--gan-weight-d 1e-2] [--clip 10]\n"
                   "   [--timesteps 999,749,499,249] [--no-backward-simulation] [--no-gan] [--seed N]\n"
                   "   [--checkpoint-every 500] [--sample-every 250] [--log-every 10]\n"
                   "   [--lora-rank R] [--lora-alpha 8]   (R > 0: train LoRA adapters, not the whole generator)\n"
                   "   [--recompute]   (recompute each block's activations in backward: less memory, slower)\n"
                   "   [--shards N]    (CPU: each UNet pass over the batch in N row ranges, one thread each;\n"
                   "                    default one per core)\n"
                   "Defaults are the DMD2 paper's SDXL settings (spec/dmd2.md); small models want larger LRs.\n");
            return 0;
        }
        if (!strcmp(a, "--resume")) { c.resume = 1; continue; }
        if (!strcmp(a, "--no-backward-simulation")) { c.backward_simulation = 0; continue; }
        if (!strcmp(a, "--no-gan")) { c.gan = 0; continue; }
        if (!strcmp(a, "--recompute")) { c.recompute = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--teacher")) c.teacher_dir = v;
        else if (!strcmp(a, "--out")) c.out_dir = v;
        else if (!strcmp(a, "--generator-init")) c.generator_init = strcmp(v, "teacher") ? v : NULL;
        else if (!strcmp(a, "--backend")) c.backend = v;
        else if (!strcmp(a, "--data")) dataset = v;
        else if (!strcmp(a, "--resolution")) res = atoi(v);
        else if (!strcmp(a, "--dataset-size")) dsize = atol(v);
        else if (!strcmp(a, "--cache-size")) c.cache_size = atoll(v);
        else if (!strcmp(a, "--steps")) c.steps = atoi(v);
        else if (!strcmp(a, "--batch")) c.batch = atoi(v);
        else if (!strcmp(a, "--ttur")) c.ttur = atoi(v);
        else if (!strcmp(a, "--lr-generator")) c.lr_generator = (float)atof(v);
        else if (!strcmp(a, "--lr-fake")) c.lr_fake = (float)atof(v);
        else if (!strcmp(a, "--warmup")) c.warmup = atoi(v);
        else if (!strcmp(a, "--guidance")) c.guidance = (float)atof(v);
        else if (!strcmp(a, "--gan-weight-g")) c.gan_weight_g = (float)atof(v);
        else if (!strcmp(a, "--gan-weight-d")) c.gan_weight_d = (float)atof(v);
        else if (!strcmp(a, "--clip")) c.clip = (float)atof(v);
        else if (!strcmp(a, "--seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--checkpoint-every")) c.checkpoint_every = atoi(v);
        else if (!strcmp(a, "--sample-every")) c.sample_every = atoi(v);
        else if (!strcmp(a, "--log-every")) c.log_every = atoi(v);
        else if (!strcmp(a, "--lora-rank")) c.lora_rank = atoi(v);
        else if (!strcmp(a, "--lora-alpha")) c.lora_alpha = (float)atof(v);
        else if (!strcmp(a, "--shards")) c.shards = atoi(v);
        else if (!strcmp(a, "--timesteps")) {
            if ((c.nsteps = parse_ts(v, c.timesteps)) < 1) { fprintf(stderr, "sdxld train dmd2: bad --timesteps\n"); return 2; }
        } else { fprintf(stderr, "sdxld train dmd2: unknown option '%s'\n", a); return 2; }
    }
    if (!c.teacher_dir || !c.out_dir) { fprintf(stderr, "sdxld train dmd2: need --teacher and --out\n"); return 2; }
    if (c.shards < 0 || c.shards > 16) { fprintf(stderr, "sdxld train dmd2: --shards in [0, 16]\n"); return 2; }
    struct dataset *d = NULL;
    sd_status st = !strcmp(dataset, "shapes") ? dataset_shapes(&d, res, c.seed ^ 0x5eed, dsize) : dataset_folder(&d, dataset, res);
    if (st) return cli_fail("dataset");
    c.data = d;
    struct dmd2 *t;
    if (dmd2_open(&t, &c)) { dataset_free(d); return cli_fail("train dmd2"); }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t0 = sd_now_ms();
    int start = -1, rc = 0;
    struct dmd2_stats s;
    while (!dmd2_done(t)) {
        if (dmd2_step(t, &s)) { rc = cli_fail("train dmd2"); break; }
        if (start < 0) start = s.step - 1;
        double el = (sd_now_ms() - t0) / 1e3, ips = (s.step - start) / (el > 1e-9 ? el : 1e-9);
        if (s.step == start + 1 || s.step % (c.log_every > 0 ? c.log_every : 10) == 0 || s.step == c.steps)
            LOG_I("step %d/%d gen_steps %d dm %.4f gan_g %.4f fake %.4f gan_d %.4f |g| gen %.3f fake %.3f %.2f it/s ETA %.0f s",
                  s.step, c.steps, s.generator_steps, s.dm, s.gan_g, s.fake, s.gan_d, s.grad_generator, s.grad_fake, ips,
                  (c.steps - s.step) / (ips > 0 ? ips : 1));
        if (s.sample_path) fprintf(stderr, "sample %s\n", s.sample_path);
        if (s.checkpoint_path) fprintf(stderr, "checkpoint %s\n", s.checkpoint_path);
        if (stop_requested) {
            char p[4096];
            if (dmd2_save(t, p, sizeof p)) rc = cli_fail("final checkpoint");
            else fprintf(stderr, "stopped; checkpoint %s\n", p);
            break;
        }
    }
    dmd2_close(t);
    dataset_free(d);
    return rc;
}
