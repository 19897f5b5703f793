/* cpu_dnnl.h — the CPU backend's bf16 GEMM through oneDNN (cpu_dnnl.c; only built with
 * SD_HAVE_DNNL).  Host memory, one backend's thread at a time. */
#ifndef SD_CPU_DNNL_H
#define SD_CPU_DNNL_H

#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"

struct cpu_dnnl;

/* C[M, N] (+)= A[M, K]·B[K, N] (+ bias[N]): A and B bf16 with element strides (row,
 * column), so a transposed operand is a stride swap; C fp32 with row stride ldc.
 * accumulate: add onto C (else overwrite). */
struct cpu_dnnl_mm {
    int M, N, K;
    const uint16_t *A; long long sa0, sa1;
    const uint16_t *B; long long sb0, sb1;
    float *C; long long ldc;
    const float *bias;          /* per column of C, or NULL */
    int accumulate;
};

/* *out NULL (and SD_OK) when oneDNN cannot make an engine here; SD_ERR_NOMEM. */
sd_status cpu_dnnl_create(struct cpu_dnnl **out);
void cpu_dnnl_destroy(struct cpu_dnnl *d);
/* Whether the CPU runs oneDNN's bf16 kernels natively (AVX512-BF16 or AMX). */
int cpu_dnnl_has_bf16(void);
/* "oneDNN 2.6.3 (avx512_core_amx)". */
void cpu_dnnl_describe(char *buf, size_t n);
/* Runs on the calling thread alone; slot (0 .. CPU_DNNL_SLOTS-1) picks the scratchpad, so
 * concurrent callers pass different slots. */
#define CPU_DNNL_SLOTS 64
sd_status cpu_dnnl_gemm(struct cpu_dnnl *d, int slot, const struct cpu_dnnl_mm *p);

#endif
