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
            printf("sdxld %s --model DIR --out RUN [--resume] [--dataset shapes|FOLDER] [--resolution 64]\n"
                   "        [--dataset-size N] [--steps N] [--batch N] [--seed N] [--lr X] [--warmup N]\n"
                   "        [--weight-decay X] [--clip X] [--ema X] [--log-every N] [--sample-every N]\n"
                   "        [--checkpoint-every N]%s\n", cmd,
                   teacher ? " [--cfg-dropout P] [--cache-size N] [--sample-steps N] [--guidance G]"
                           : " [--kl-weight X] [--l2]");
            return 0;
        }
        if (!strcmp(a, "--resume")) { c.resume = 1; continue; }
        if (!strcmp(a, "--l2")) { c.l1 = 0; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) c.model_dir = v;
        else if (!strcmp(a, "--out")) c.out_dir = v;
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
        else if (teacher && !strcmp(a, "--cfg-dropout")) c.cfg_dropout = (float)atof(v);
        else if (teacher && !strcmp(a, "--cache-size")) c.cache_size = atoi(v);
        else if (teacher && !strcmp(a, "--sample-steps")) c.sample_steps = atoi(v);
        else if (teacher && !strcmp(a, "--guidance")) c.guidance = (float)atof(v);
        else if (!teacher && !strcmp(a, "--kl-weight")) c.kl_weight = (float)atof(v);
        else { fprintf(stderr, "sdxld %s: unknown option '%s'\n", cmd, a); return 2; }
    }
    if (!c.model_dir || !c.out_dir) { fprintf(stderr, "sdxld %s: need --model and --out\n", cmd); return 2; }
    if (c.steps < 1 || c.batch < 1 || c.batch > 256 || !(c.opt.lr > 0) || c.cfg_dropout < 0 || c.cfg_dropout > 1) {
        fprintf(stderr, "sdxld %s: steps >= 1, batch in [1, 256], lr > 0, cfg-dropout in [0, 1]\n", cmd);
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
