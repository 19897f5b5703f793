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

/* One trained network: its tensors are stored as prefix + name (prefix "" for a
 * single-network run, so its weights file loads as a model file); o may be NULL. */
struct ckpt_part { const char *prefix; const struct weight_table *wt; struct optimizer *o; };

/* path_out (may be NULL) receives the checkpoint directory. */
sd_status ckpt_save_parts(const char *run_dir, struct backend *be, const struct ckpt_part *parts, int nparts,
                          const struct ckpt_state *s, char *path_out, size_t n);
sd_status ckpt_load_parts(const char *ckpt_dir, struct backend *be, const struct ckpt_part *parts, int nparts,
                          struct ckpt_state *s);
/* Single-network shorthands. */
sd_status ckpt_save(const char *run_dir, struct backend *be, const struct weight_table *model,
                    const struct optimizer *o, const struct ckpt_state *s, char *path_out, size_t n);
sd_status ckpt_load(const char *ckpt_dir, struct backend *be, struct weight_table *model,
                    struct optimizer *o, struct ckpt_state *s);
/* The directory RUN/latest names, or SD_ERR_NOTFOUND. */
sd_status ckpt_latest(const char *run_dir, char *out, size_t n);

#endif
