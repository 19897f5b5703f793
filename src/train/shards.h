/* shards.h — data-parallel training steps for the CPU backend.
 *
 * A CPU backend spreads each op over a pool of parked workers, but the small built-in
 * model's ops are too short for that to pay: on the 2-core box a teacher step kept 1.2
 * cores busy and spent ~15% of its time waking and parking workers.  Sharding cuts a
 * batch into n row ranges instead; shard i runs the forward and backward of its rows on a
 * thread of its own, with its own single-threaded CPU backend (scratch), activation arena
 * and gradient table, and the tables are then summed in shard order into the trainer's.
 * Every op the trainers use is per sample (GroupNorm, attention) or summed over samples
 * (weight gradients), so a sharded step computes the batch's loss and gradient; its float
 * sums depend on n and not on timing, so a run stays reproducible and resumes exactly.
 *
 * CPU backends address host memory, so shards read the model's weights and the batch in
 * place.  Other backends run one shard: the trainer's own backend. */
#ifndef SD_SHARDS_H
#define SD_SHARDS_H

#include "../io/weights.h"
#include "../model/layers.h"

#define SHARDS_MAX 16

struct shard {
    struct backend *be;         /* n = 1: the trainer's backend (not owned) */
    struct arena acts;          /* n = 1: unused (the trainer's arena is in f) */
    struct fwd f;
    int lo, hi;                 /* batch rows [lo, hi) */
    int index;
    double part[4];             /* the shard's partial sums (loss terms), summed by the trainer */
    void *ud;                   /* the trainer's per-shard state (a gradient twin) */
};

struct shards {
    int n;
    int own;                    /* the shards' backends and arenas are ours (n > 1) */
    struct shard s[SHARDS_MAX];
};

/* How many shards: want > 0 asks for that many (capped by batch and SHARDS_MAX); 0 picks
 * one per CPU thread, at most batch, and fewer when n − 1 gradient twins of
 * param_floats would take more than a quarter of the machine's memory.  1 off the CPU. */
int shards_pick(const struct backend *be, int want, int batch, int64_t param_floats);
/* The same rule on the CPU with `threads` threads, before any backend exists (sizing). */
int shards_plan(int want, int threads, int batch, int64_t param_floats);
/* n shards over batch rows; shard 0 of a single shard is be with its arena acts. */
sd_status shards_init(struct shards *sh, struct backend *be, struct arena *acts, int n, int batch);
void shards_free(struct shards *sh);
/* fn(shard, ctx) for every shard at once (shard 0 on the calling thread), then the first
 * backend error of any shard. */
sd_status shards_run(struct shards *sh, void (*fn)(struct shard *s, void *ctx), void *ctx);
/* Rows [*lo, *hi) of an N-row pass that shard i of n takes (the split shards_init uses
 * for the batch, reused for passes over other row counts). */
static inline void shard_range(int N, int i, int n, int *lo, int *hi) {
    *lo = (int)((long long)N * i / n);
    *hi = (int)((long long)N * (i + 1) / n);
}
/* Marks of the shards' own activation arenas and a reset to them (mk NULL: to empty);
 * no-ops with one shard, whose arena is the trainer's. */
void shards_mark(const struct shards *sh, uint64_t *mk);
void shards_reset(struct shards *sh, const uint64_t *mk);
/* dst += src[1] + ... + src[n−1] (src[0] is dst), row ranges split over the shards. */
sd_status shards_reduce(struct shards *sh, const struct weight_table *dst, const struct weight_table *const *src);

#endif
