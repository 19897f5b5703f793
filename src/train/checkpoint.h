/* checkpoint.h — training checkpoints that survive a crash.
 *
 * A checkpoint is a directory RUN/checkpoint-<step>/ holding
 *   weights.safetensors   fp32 master weights under their diffusers names (loadable as
 *                         a model file: a UNet checkpoint's weights serve directly)
 *   optim.safetensors     adam_m.<name>, adam_v.<name> and, with EMA, ema.<name>
 *   state.json            {"format": "sdxld-train-state", "version": 1, "step",
 *                          "optimizer_step", "rng_seed", "rng_offset", "data_cursor",
 *                          "config": {...}}
 * It is written into checkpoint-<step>.tmp and renamed into place, then RUN/latest (a
 * one-line file naming the directory) is replaced atomically, so a crash at any point
 * leaves the previous checkpoint intact and findable. */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include "optim.h"

struct ckpt_state {
    int step;
    uint64_t rng_seed, rng_offset;
    long long data_cursor;
    char *config_json;      /* a JSON object; sd_malloc'ed when loaded */
};

/* path_out (may be NULL) receives the checkpoint directory. */
sd_status ckpt_save(const char *run_dir, struct backend *be, const struct weight_table *model,
                    const struct optimizer *o, const struct ckpt_state *s, char *path_out, size_t n);
/* Restore into an already built model/optimiser of the same shapes. */
sd_status ckpt_load(const char *ckpt_dir, struct backend *be, struct weight_table *model,
                    struct optimizer *o, struct ckpt_state *s);
/* The directory RUN/latest names, or SD_ERR_NOTFOUND. */
sd_status ckpt_latest(const char *run_dir, char *out, size_t n);

#endif
