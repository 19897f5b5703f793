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
 * leaves the previous checkpoint intact and findable.
 *
 * Before writing, the free space of RUN's file system must cover the checkpoint's
 * expected size (its tensors' bytes) plus a margin (CKPT_MARGIN: 5%, at least 16 MiB);
 * otherwise the save fails naming the folder and both sizes, and nothing is touched.
 * After writing, retention (keep > 0) removes the oldest RUN/checkpoint-NNNNNNN folders
 * (that exact pattern: 7 digits) beyond the newest `keep`; the one `latest` names is never
 * removed, and so neither is a run's final checkpoint, the newest when the run ends. */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include "optim.h"

struct ckpt_state {
    int step;
    uint64_t rng_seed, rng_offset;
    long long data_cursor;
    char *config_json;      /* a JSON object; sd_malloc'ed when loaded */
    int keep;               /* saving: checkpoint folders to keep (0 = all) */
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
/* The "config" object of the latest checkpoint's state.json (sd_malloc'ed JSON text; "{}"
 * for runs written before configurations were stored). */
sd_status ckpt_latest_config(const char *run_dir, char **config_json);

/* The space decision: SD_OK when free_bytes covers need_bytes plus the margin, else
 * SD_ERR_IO with a message naming dir and the sizes. */
sd_status ckpt_space_check(const char *dir, uint64_t need_bytes, uint64_t free_bytes);
/* Remove checkpoint folders of run_dir beyond the newest keep (0: none), never the one
 * of step protect.  Folders that do not hold only our files are left (with a warning). */
sd_status ckpt_prune(const char *run_dir, int keep, int protect);
/* Tests: pretend every checkpoint is extra_bytes larger (0 = off). */
void ckpt_test_set_extra_bytes(uint64_t extra_bytes);

#endif
