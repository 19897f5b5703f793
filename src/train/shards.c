/* shards.c — see shards.h. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "../core/core.h"
#include "shards.h"

int shards_pick(const struct backend *be, int want, int batch, int64_t param_floats) {
    if (strcmp(be->name, "cpu")) return 1;
    return shards_plan(want, be->threads, batch, param_floats);
}

int shards_plan(int want, int threads, int batch, int64_t param_floats) {
    if (batch < 2) return 1;
    int n = want > 0 ? want : threads;
    if (n > batch) n = batch;
    if (n > SHARDS_MAX) n = SHARDS_MAX;
    if (want <= 0) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        double ram = pages > 0 && psz > 0 ? (double)pages * psz : 4e9;
        while (n > 1 && (double)(n - 1) * param_floats * 4 > ram / 4) n--;
    }
    return n < 1 ? 1 : n;
}

sd_status shards_init(struct shards *sh, struct backend *be, struct arena *acts, int n, int batch) {
    memset(sh, 0, sizeof *sh);
    if (n < 1 || n > SHARDS_MAX || n > batch) return sd_fail(SD_ERR_INVALID, "shards %d for a batch of %d", n, batch);
    sh->own = n > 1;
    for (int i = 0; i < n; i++) {
        struct shard *s = &sh->s[i];
        s->index = i;
        shard_range(batch, i, n, &s->lo, &s->hi);
        if (n == 1) {
            s->be = be;
            s->f = (struct fwd){ .be = be, .ar = acts };
        } else {
            sd_status st = backend_create(&s->be, "cpu", 1);
            if (st) { shards_free(sh); return st; }
            struct arena_allocator al = backend_allocator(s->be);
            arena_init(&s->acts, "shard activations", &al, 1);
            s->f = (struct fwd){ .be = s->be, .ar = &s->acts };
        }
        sh->n = i + 1;
    }
    return SD_OK;
}

void shards_free(struct shards *sh) {
    if (sh->own)
        for (int i = 0; i < sh->n; i++) {
            arena_free(&sh->s[i].acts);
            backend_destroy(sh->s[i].be);
        }
    memset(sh, 0, sizeof *sh);
}

struct shard_call {
    struct shard *s;
    void (*fn)(struct shard *, void *);
    void *ctx;
};

static void *shard_main(void *p) {
    struct shard_call *c = p;
    c->fn(c->s, c->ctx);
    return NULL;
}

sd_status shards_run(struct shards *sh, void (*fn)(struct shard *s, void *ctx), void *ctx) {
    struct shard_call calls[SHARDS_MAX];
    pthread_t tid[SHARDS_MAX];
    int started[SHARDS_MAX] = { 0 };
    for (int i = 1; i < sh->n; i++) {
        calls[i] = (struct shard_call){ &sh->s[i], fn, ctx };
        started[i] = pthread_create(&tid[i], NULL, shard_main, &calls[i]) == 0;
    }
    fn(&sh->s[0], ctx);
    for (int i = 1; i < sh->n; i++) {     /* a thread that could not start runs here */
        if (started[i]) pthread_join(tid[i], NULL);
        else fn(&sh->s[i], ctx);
    }
    for (int i = 0; i < sh->n; i++) SD_TRY(backend_status(sh->s[i].be));
    return SD_OK;
}

void shards_mark(const struct shards *sh, uint64_t *mk) {
    for (int i = 0; sh->own && i < sh->n; i++) mk[i] = arena_mark(sh->s[i].f.ar);
}

void shards_reset(struct shards *sh, const uint64_t *mk) {
    for (int i = 0; sh->own && i < sh->n; i++) arena_reset(sh->s[i].f.ar, mk ? mk[i] : 0);
}

struct reduce_ctx {
    int n;
    const struct weight_table *dst, *const *src;
};

static void reduce_rows(struct shard *s, void *p) {
    struct reduce_ctx *c = p;
    int lo, hi;
    shard_range(c->dst->n, s->index, c->n, &lo, &hi);
    for (int r = lo; r < hi; r++) {
        float *d = *c->dst->rows[r].dst;
        long long k = sd_numel(c->dst->rows[r].ndim, c->dst->rows[r].shape);
        for (int i = 1; i < c->n; i++) s->be->ops->axpby(s->be, d, 1.0f, d, 1.0f, *c->src[i]->rows[r].dst, k);
    }
}

sd_status shards_reduce(struct shards *sh, const struct weight_table *dst, const struct weight_table *const *src) {
    if (sh->n < 2) return SD_OK;
    for (int i = 1; i < sh->n; i++)
        if (src[i]->n != dst->n) return sd_fail(SD_ERR_INVALID, "shard gradient tables differ");
    struct reduce_ctx c = { sh->n, dst, src };
    return shards_run(sh, reduce_rows, &c);
}
