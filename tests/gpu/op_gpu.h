/* op_gpu.h — what the two GPU harnesses of the op table (test_gpu_ops.c, forward;
 * test_gpu_backward.c, backward) share: a case's buffers on the device, and the comparison
 * of a device result with the CPU's over the data elements (layout padding must keep its
 * bits), in the kind's blocks, by ‖gpu − cpu‖ / ‖cpu‖.  Include after gpu_util.h. */
#ifndef SD_OP_GPU_H
#define SD_OP_GPU_H

#include <string.h>

#include "op_cases.h"

/* Device copies of h's buffers (host arrays stay host arrays; absent stay NULL). */
static void op_dev_alloc(const struct op_host *h, float **d) {
    for (int i = 0; i < OP_MAX_BUFS; i++) d[i] = NULL;
    for (int i = 0; i < h->nbuf; i++) {
        if (!h->d[i].n) continue;
        d[i] = h->d[i].role == OPB_HOST ? h->b[i] : dev(h->b[i], h->d[i].n);
    }
}

static void op_dev_free(const struct op_host *h, float **d) {
    for (int i = 0; i < h->nbuf; i++)
        if (d[i] && h->d[i].role != OPB_HOST) dfree(d[i]);
}

/* Buffer i of case c on the device (d_x) against the CPU's (ref); before: its initial
 * contents, whose padding must survive.  Reports one TAP line; clears a sticky error. */
static int op_check(const char *what, const struct op_case *c, int i, const float *d_x, const float *ref,
                    const float *before, size_t n, double tol) {
    float *g = back(d_x, n), *a = malloc(sizeof(float) * (n ? n : 1)), *r = malloc(sizeof(float) * (n ? n : 1));
    int kept = op_pads_kept(c, i, g, before, n);
    size_t m = op_compact(c, i, g, n, a);
    op_compact(c, i, ref, n, r);
    size_t block = op_kinds[c->op].block ? op_kinds[c->op].block(c, 0) : 0;
    double e = op_block_err(nerr, a, r, m, block);
    sd_status st = backend_status(gpu);
    int good = ok(st == SD_OK && kept && e < tol, "%s: err %.2g < %.0e%s%s%s", what, e, tol,
                  kept ? "" : ", padding written", st ? ", backend: " : "", st ? sd_last_error() : "");
    if (st) gpu->err = SD_OK;
    free(g); free(a); free(r);
    return good;
}

#endif
