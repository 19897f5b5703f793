/* op_cases.c — the op kinds (how to run a case of each op on any backend) and the table of
 * every op case with its bound per harness.  See op_cases.h for the harnesses and the
 * conventions; the naive references live in test_ops.c, the only harness that uses them.
 *
 * Where the cases come from: the rows were the separate case lists of test_ops.c (naive),
 * test_backward_ops.c (fd), gpu/test_gpu_ops.c and gpu/test_gpu_backward.c, merged where
 * two lists had the same case.  Toy-sized rows run in every harness whose bound for that op
 * is known; SDXL-sized rows only on the GPU (the naive loops and finite differences would
 * take minutes there). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op_cases.h"
#include "core/rng.h"

/* ---- the table ----
 * Bounds per op, as the separate harnesses had them (STYLE.md: one global tolerance fits
 * no op): GEMM/linear/conv products on the GPU with TF32 (10-bit mantissa operands) 3e-3,
 * fp32 1e-5 (GEMM) / 1e-4 (conv); their backward with TF32 3e-4 (bias sums 1e-5); norms
 * 2e-6 forward, 1e-5 backward; attention 1e-5; elementwise ≤ 1e-6; data movement 1e-7 or
 * exact.  Finite differences: 1e-3, 2e-3 where a normalisation or softmax sits between
 * (each checked to reject a gradient 10% off).  The naive loops: 1e-5 for reductions,
 * 1e-6 for single formulas, exact for data movement. */
#define GEMM_GPU .gpu = 3e-3, .gpu_fp32 = 1e-5
#define CONV_GPU .gpu = 3e-3, .gpu_fp32 = 1e-4
#define PROD_BW .gpu_bw = 3e-4, .gpu_bw_b = 1e-5
/* every transpose of one GEMM shape, C = 0.7·op(A)·op(B) + 0.5·C, padded leading dims */
#define GEMM_T(M, N, K, ta, tb, nv) \
    { OP_GEMM, NULL, .gemm = { M, N, K, ta, tb, 3, 1, 2, 1, 0, 0, 0, 0.7f, 0.5f }, .tol = { .naive = nv, GEMM_GPU } }
#define GEMM_ALL_T(M, N, K, nv) \
    GEMM_T(M, N, K, 0, 0, nv), GEMM_T(M, N, K, 0, 1, nv), GEMM_T(M, N, K, 1, 0, nv), GEMM_T(M, N, K, 1, 1, nv)
#define X(sd, mean) .init = { { sd, mean } }
/* a norm's input far from 0 mean, and FD-friendly weights near 1 */
#define NORM_FD .init = { { 1, 0.5f }, { 0.5f, 1 }, { 0.5f, 0 } }

const struct op_case op_cases[] = {
    GEMM_ALL_T(1, 1, 1, 1e-5),
    GEMM_ALL_T(7, 13, 5, 1e-5),
    GEMM_ALL_T(64, 33, 300, 1e-5),
    GEMM_ALL_T(130, 70, 257, 1e-5),
    GEMM_ALL_T(640, 512, 1024, 0),
    { OP_GEMM, "batched strided, beta 0 over NaN", .gemm = { 5, 6, 7, 0, 0, 0, 0, 0, 3, 5, 8, 1, 1, 0 },
      .tol = { .naive = 1e-5, GEMM_GPU } },
    { OP_GEMM, "batched strided, beta 0 over NaN", .gemm = { 77, 64, 77, 0, 1, 0, 0, 0, 20, 5, 3, 7, 1, 0 },
      .tol = { .naive = 1e-5, GEMM_GPU } },

    { OP_LINEAR, NULL, .linear = { 4, 6, 5, 1 }, .tol = { .naive = 1e-6, GEMM_GPU, PROD_BW } },
    { OP_LINEAR, NULL, .linear = { 4, 6, 5, 0 }, .tol = { .naive = 1e-6, GEMM_GPU, PROD_BW } },
    { OP_LINEAR, NULL, .linear = { 5, 6, 4, 1 }, .tol = { .naive = 1e-6, .fd = 1e-3, GEMM_GPU, PROD_BW } },
    { OP_LINEAR, NULL, .linear = { 5, 6, 4, 0 }, .tol = { .naive = 1e-6, .fd = 1e-3, GEMM_GPU, PROD_BW } },
    { OP_LINEAR, NULL, .linear = { 37, 45, 29, 1 }, .tol = { .naive = 1e-6, GEMM_GPU, PROD_BW } },
    { OP_LINEAR, "UNet projection", .linear = { 4096, 640, 640, 0 }, .tol = { GEMM_GPU } },
    { OP_LINEAR, "UNet projection", .linear = { 4096, 640, 640, 1 }, .tol = { GEMM_GPU } },
    { OP_LINEAR, "cross-attention k/v", .linear = { 154, 2048, 640, 0 }, .tol = { GEMM_GPU } },
    { OP_LINEAR, "cross-attention k/v", .linear = { 154, 2048, 640, 1 }, .tol = { GEMM_GPU } },
    { OP_LINEAR, "UNet GEGLU proj", .linear = { 4096, 320, 2560, 1 }, .tol = { PROD_BW } },

    /*               N    C    H    W    K  kh kw  s pt pl pb pr bias */
    { OP_CONV2D, "same 3x3", .conv = { 2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "1x1 (GEMM path)", .conv = { 1, 4, 8, 8, 6, 1, 1, 1, 0, 0, 0, 0, 1 }, .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "UNet downsample", .conv = { 2, 3, 8, 10, 4, 3, 3, 2, 1, 1, 1, 1, 1 }, .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "VAE downsample, pad right/bottom", .conv = { 1, 3, 8, 8, 3, 3, 3, 2, 0, 0, 1, 1, 1 },
      .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "asymmetric pad, no bias", .conv = { 2, 4, 9, 9, 5, 3, 3, 1, 1, 0, 0, 1, 0 }, .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "rectangular kernel", .conv = { 1, 2, 11, 6, 3, 5, 3, 1, 2, 1, 2, 1, 0 }, .tol = { .naive = 1e-5, CONV_GPU } },
    { OP_CONV2D, "tiny im2col tiles", .conv = { 2, 5, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1 }, .tile = 100, .tol = { .naive = 1e-5 } },
    { OP_CONV2D, "3x3 pad 1", .conv = { 2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "1x1 direct", .conv = { 2, 5, 4, 3, 3, 1, 1, 1, 0, 0, 0, 0, 0 }, .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "1x1 direct", .conv = { 1, 4, 3, 3, 2, 1, 1, 1, 0, 0, 0, 0, 1 }, .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "3x3 stride 2 pad 1", .conv = { 2, 3, 7, 7, 4, 3, 3, 2, 1, 1, 1, 1, 1 },
      .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "3x3 stride 2 bottom/right pad", .conv = { 2, 3, 8, 6, 3, 3, 3, 2, 0, 0, 1, 1, 1 },
      .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "3x3 stride 2 no pad, odd size", .conv = { 1, 2, 8, 7, 3, 3, 3, 2, 0, 0, 0, 0, 0 },
      .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "2x3 asymmetric pad", .conv = { 2, 3, 5, 6, 3, 2, 3, 1, 1, 0, 0, 2, 0 },
      .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    { OP_CONV2D, "1x1 stride 2", .conv = { 1, 3, 6, 5, 2, 1, 1, 2, 0, 0, 0, 0, 1 }, .tol = { .naive = 1e-5, .fd = 1e-3, CONV_GPU, PROD_BW } },
    /* tiles: col + dcol share the bound, so 2·CK·3 floats is 3 columns per tile */
    { OP_CONV2D, "3-column tiles", .conv = { 2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1 }, .tile = 2 * 27 * 3,
      .tol = { .naive = 1e-5, .fd = 1e-3 } },
    { OP_CONV2D, "1-column tiles", .conv = { 1, 2, 7, 6, 3, 3, 3, 2, 1, 1, 1, 1, 1 }, .tile = 1, .tol = { .naive = 1e-5, .fd = 1e-3 } },
    { OP_CONV2D, NULL, .conv = { 2, 8, 9, 11, 6, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { .naive = 1e-5, CONV_GPU, PROD_BW } },
    { OP_CONV2D, NULL, .conv = { 2, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU, PROD_BW } },
    { OP_CONV2D, NULL, .conv = { 2, 32, 16, 16, 48, 1, 1, 1, 0, 0, 0, 0, 1 }, .tol = { CONV_GPU, PROD_BW } },
    { OP_CONV2D, NULL, .conv = { 1, 16, 17, 17, 16, 3, 3, 2, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU, PROD_BW } },
    { OP_CONV2D, "VAE encoder's right/bottom pad", .conv = { 1, 16, 16, 16, 16, 3, 3, 2, 0, 0, 1, 1, 1 }, .tol = { CONV_GPU, PROD_BW } },
    { OP_CONV2D, "UNet resnet conv", .conv = { 2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU } },
    { OP_CONV2D, "UNet shortcut 1x1", .conv = { 2, 640, 32, 32, 1280, 1, 1, 1, 0, 0, 0, 0, 1 }, .tol = { CONV_GPU } },
    { OP_CONV2D, "conv_in 4->320", .conv = { 1, 4, 32, 32, 320, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU } },
    { OP_CONV2D, "VAE encoder downsample 128ch", .conv = { 1, 128, 128, 128, 128, 3, 3, 2, 0, 0, 1, 1, 1 }, .tol = { CONV_GPU } },
    { OP_CONV2D, "VAE decoder conv 256->128", .conv = { 1, 256, 96, 96, 128, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU } },
    { OP_CONV2D, "VAE conv_out 128->3", .conv = { 1, 128, 64, 64, 3, 3, 3, 1, 1, 1, 1, 1, 1 }, .tol = { CONV_GPU } },
    /* batches past the per-call value limit run in chunks of images (TF32 only) */
    { OP_CONV2D, "chunked per image", .conv = { 3, 8, 12, 12, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1000 }, .tol = { .gpu = 3e-3 } },
    { OP_CONV2D, "chunked, padded per chunk", .conv = { 3, 8, 12, 12, 6, 3, 3, 2, 0, 0, 1, 1, 1, 1000 }, .tol = { .gpu = 3e-3 } },

    /*                       N    C    HW   G  silu no_affine eps */
    { OP_GROUP_NORM, NULL, .gn = { 2, 8, 10, 4, 0, 0, 1e-5f }, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, NULL, .gn = { 2, 8, 10, 4, 1, 0, 1e-5f }, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 2, 8, 10, 4, 0, 0, 1e-6f }, X(3, 5), .tol = { .naive = 1e-5, .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 2, 8, 10, 4, 1, 0, 1e-6f }, X(3, 5), .tol = { .naive = 1e-5, .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 2, 64, 33 * 33, 32, 0, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 2, 64, 33 * 33, 32, 1, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 1, 320, 64 * 64, 32, 0, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 1, 320, 64 * 64, 32, 1, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 1, 128, 256 * 256, 32, 0, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5", .gn = { 1, 128, 256 * 256, 32, 1, 0, 1e-6f }, X(3, 5), .tol = { .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5, HW 1", .gn = { 3, 6, 1, 3, 0, 0, 1e-6f }, X(3, 5), .tol = { .naive = 1e-5, .gpu = 2e-6 } },
    { OP_GROUP_NORM, "mean 5, HW 1", .gn = { 3, 6, 1, 3, 1, 0, 1e-6f }, X(3, 5), .tol = { .naive = 1e-5, .gpu = 2e-6 } },
    { OP_GROUP_NORM, NULL, .gn = { 2, 6, 5, 3, 0, 0, 1e-5f }, NORM_FD, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, NULL, .gn = { 2, 6, 5, 3, 1, 0, 1e-5f }, NORM_FD, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, NULL, .gn = { 2, 6, 5, 3, 1, 1, 1e-5f }, NORM_FD, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 2, 64, 256, 32, 0, 0, 1e-5f }, X(3, 2), .tol = { .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 2, 64, 256, 32, 1, 0, 1e-5f }, X(3, 2), .tol = { .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 1, 320, 4096, 32, 0, 0, 1e-5f }, X(3, 2), .tol = { .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 1, 320, 4096, 32, 1, 0, 1e-5f }, X(3, 2), .tol = { .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 2, 8, 10, 8, 0, 0, 1e-5f }, X(3, 2), .tol = { .naive = 1e-5, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_GROUP_NORM, "mean 2", .gn = { 2, 8, 10, 8, 1, 0, 1e-5f }, X(3, 2), .tol = { .naive = 1e-5, .gpu = 2e-6, .gpu_bw = 1e-5 } },

    { OP_LAYER_NORM, NULL, .ln = { 6, 8, 1e-5f }, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_LAYER_NORM, NULL, .ln = { 4, 7, 1e-5f }, NORM_FD, .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_LAYER_NORM, NULL, .ln = { 5, 33, 1e-5f }, .tol = { .naive = 1e-5, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_LAYER_NORM, NULL, .ln = { 3, 33, 1e-5f }, .tol = { .naive = 1e-5, .gpu = 2e-6, .gpu_bw = 1e-5 } },
    { OP_LAYER_NORM, "UNet tokens", .ln = { 4096, 640, 1e-5f }, .tol = { .gpu = 2e-6 } },
    { OP_LAYER_NORM, "UNet tokens", .ln = { 4096, 320, 1e-5f }, .tol = { .gpu_bw = 1e-5 } },
    { OP_LAYER_NORM, "text tokens", .ln = { 154, 1280, 1e-5f }, .tol = { .gpu = 2e-6, .gpu_bw = 1e-5 } },

#define ATT_ALL .tol = { .naive = 1e-5, .fd = 2e-3, .gpu = 1e-5, .gpu_bw = 1e-5 }
    /*                        N   H   Lq   Lk   D causal fused pad ldo_pad */
    { OP_ATTENTION, "tiny", .att = { 2, 3, 7, 7, 4, 0, 0, 0, 0 }, .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "Lq != Lk", .att = { 2, 3, 8, 5, 4, 0, 0, 0, 0 }, .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "causal", .att = { 2, 3, 9, 9, 4, 1, 0, 0, 0 }, .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "padded ld, 2-row tiles", .att = { 2, 3, 10, 10, 4, 0, 0, 5, 5 }, .tile = 20,
      .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "self", .att = { 2, 2, 5, 5, 4, 0, 0, 0, 0 }, ATT_ALL },
    { OP_ATTENTION, "cross", .att = { 2, 2, 4, 7, 4, 0, 0, 0, 0 }, ATT_ALL },
    { OP_ATTENTION, "causal", .att = { 1, 2, 6, 6, 3, 1, 0, 0, 0 }, ATT_ALL },
    { OP_ATTENTION, "causal Lk > Lq", .att = { 1, 2, 4, 6, 3, 1, 0, 0, 0 }, ATT_ALL },
    { OP_ATTENTION, "fused qkv, ldo padded", .att = { 2, 2, 5, 5, 3, 0, 1, 1, 3 }, ATT_ALL },
    { OP_ATTENTION, "fused qkv causal", .att = { 1, 2, 5, 5, 3, 1, 1, 1, 2 }, ATT_ALL },
    /* the backward's tile is bound / (2·Lk) rows: 2-row tiles over 5 and 7 queries */
    { OP_ATTENTION, "cross, 2-row tiles", .att = { 2, 2, 5, 3, 4, 0, 0, 0, 1 }, .tile = 2 * 2 * 3, ATT_ALL },
    { OP_ATTENTION, "causal, 2-row tiles", .att = { 1, 2, 7, 7, 4, 1, 0, 0, 0 }, .tile = 2 * 2 * 7, ATT_ALL },
    { OP_ATTENTION, "fused causal, 1-row tiles", .att = { 1, 1, 5, 5, 4, 1, 1, 1, 0 }, .tile = 1, ATT_ALL },
    { OP_ATTENTION, NULL, .att = { 2, 3, 7, 9, 8, 0, 0, 0, 0 }, .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, NULL, .att = { 1, 2, 33, 33, 64, 1, 0, 0, 0 }, .tol = { .naive = 1e-5, .gpu = 1e-5, .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "tiny CLIP-L", .att = { 5, 4, 77, 77, 8, 1, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "tiny bigG", .att = { 5, 4, 77, 77, 16, 1, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "CLIP-L", .att = { 2, 12, 77, 77, 64, 1, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "tiny UNet cross", .att = { 2, 3, 64, 77, 32, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "D 80: 128-wide tiles", .att = { 1, 5, 130, 70, 80, 0, 0, 3, 3 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "D 200: 256-wide tiles", .att = { 1, 2, 100, 100, 200, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "tiny VAE mid", .att = { 1, 1, 64, 64, 64, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "UNet self", .att = { 1, 10, 4096, 4096, 64, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "UNet cross", .att = { 2, 10, 4096, 77, 64, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "UNet self, level 2", .att = { 1, 20, 1024, 1024, 64, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "VAE mid", .att = { 1, 1, 4096, 4096, 512, 0, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "D 512 causal, ragged tiles", .att = { 1, 1, 1000, 1000, 512, 1, 0, 0, 0 }, .tol = { .gpu = 1e-5 } },
    { OP_ATTENTION, "UNet cross", .att = { 2, 10, 1024, 77, 64, 0, 0, 0, 0 }, .tol = { .gpu_bw = 1e-5 } },
    { OP_ATTENTION, "SDXL level-1 self", .att = { 1, 5, 4096, 4096, 64, 0, 0, 0, 0 }, .tol = { .gpu_bw = 1e-5 } },

#define ACT_ROWS(n, kind, fdb, sd) { OP_ACT, NULL, .act = { n, kind }, X(sd, 0), .tol = { .naive = 1e-6, .fd = fdb, .gpu = 1e-6, .gpu_bw = 1e-6 } }
    ACT_ROWS(200, ACT_SILU, 1e-3, 2), ACT_ROWS(200, ACT_GELU, 1e-3, 2), ACT_ROWS(200, ACT_QUICK_GELU, 1e-3, 2),
    ACT_ROWS(1000, ACT_SILU, 0, 1), ACT_ROWS(1000, ACT_GELU, 0, 1), ACT_ROWS(1000, ACT_QUICK_GELU, 0, 1),
    { OP_ACT, NULL, .act = { 1 << 20, ACT_SILU }, .tol = { .gpu = 1e-6 } },
    { OP_ACT, NULL, .act = { 1 << 20, ACT_GELU }, .tol = { .gpu = 1e-6 } },
    { OP_ACT, NULL, .act = { 1 << 20, ACT_QUICK_GELU }, .tol = { .gpu = 1e-6 } },
    { OP_ACT, NULL, .act = { 100000, ACT_SILU }, .tol = { .gpu_bw = 1e-6 } },
    { OP_ACT, NULL, .act = { 100000, ACT_GELU }, .tol = { .gpu_bw = 1e-6 } },
    { OP_ACT, NULL, .act = { 100000, ACT_QUICK_GELU }, .tol = { .gpu_bw = 1e-6 } },

    { OP_GEGLU, NULL, .geglu = { 10, 50 }, .tol = { .naive = 1e-6, .gpu = 1e-6, .gpu_bw = 1e-6 } },
    { OP_GEGLU, NULL, .geglu = { 4, 9 }, X(1.5f, 0), .tol = { .naive = 1e-6, .fd = 1e-3, .gpu = 1e-6, .gpu_bw = 1e-6 } },
    { OP_GEGLU, "UNet feed-forward", .geglu = { 1024, 2560 }, .tol = { .gpu = 1e-6 } },
    { OP_GEGLU, "text feed-forward", .geglu = { 154, 640 }, .tol = { .gpu_bw = 1e-6 } },

    { OP_UPSAMPLE2X, NULL, .up = { 2, 3, 4, 5 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_UPSAMPLE2X, NULL, .up = { 2, 3, 3, 4 }, .tol = { .naive = TOL_EXACT, .fd = 1e-3, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_UPSAMPLE2X, NULL, .up = { 2, 3, 17, 33 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_UPSAMPLE2X, NULL, .up = { 2, 320, 32, 32 }, .tol = { .gpu_bw = 1e-6 } },

    /* cos/sin of ~1000 rad: an ulp of the angle shows */
    { OP_TIMESTEP_EMBEDDING, "cos first", .ts = { 2, 8, 1, 0, 10000 }, .tol = { .naive = 1e-3, .gpu = 1e-4 } },
    { OP_TIMESTEP_EMBEDDING, "sin first, shift 1", .ts = { 1, 8, 0, 1, 10000 }, .tol = { .naive = 1e-3, .gpu = 1e-4 } },
    { OP_TIMESTEP_EMBEDDING, NULL, .ts = { 3, 320, 1, 0, 10000 }, .tol = { .naive = 1e-3, .gpu = 1e-4 } },
    { OP_TIMESTEP_EMBEDDING, NULL, .ts = { 3, 256, 0, 1, 10000 }, .tol = { .naive = 1e-3, .gpu = 1e-4 } },
    { OP_TIMESTEP_EMBEDDING, "odd width", .ts = { 3, 7, 1, 0, 10000 }, .tol = { .naive = 1e-3, .gpu = 1e-4 } },

    /* V is the table's rows; a row no id picks must get no gradient */
    { OP_EMBEDDING, NULL, .emb = { 5, 7, 6, 5 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_EMBEDDING, "row 5 unused", .emb = { 6, 5, 6, 5 }, .tol = { .naive = TOL_EXACT, .fd = 1e-3, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_EMBEDDING, "text tokens, last row", .emb = { 1000, 64, 154, 1000 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7 } },
    { OP_EMBEDDING, "repeated ids", .emb = { 1000, 64, 77, 50 }, .tol = { .naive = TOL_EXACT, .gpu_bw = 1e-6 } },

    { OP_AXPBY, NULL, .axpby = { 500, 2.0f, -1.0f, 0 }, .tol = { .naive = 1e-7, .gpu = 1e-7 } },
    { OP_AXPBY, NULL, .axpby = { 1 << 20, 2.0f, -0.5f, 0 }, .tol = { .gpu = 1e-7 } },
    { OP_AXPBY, NULL, .axpby = { 1 << 20, 0.25f, 0.0f, 1 }, .tol = { .gpu = 1e-7 } },
    { OP_AXPBY, NULL, .axpby = { 1 << 20, 1.0f, 1.0f, 0 }, .tol = { .gpu = 1e-7 } },

    { OP_ADD_CHANNEL, NULL, .addc = { 2, 3, 10 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_ADD_CHANNEL, NULL, .addc = { 2, 3, 7 }, .tol = { .naive = TOL_EXACT, .fd = 1e-3, .gpu = 1e-7, .gpu_bw = 1e-6 } },
    { OP_ADD_CHANNEL, "resnet time embedding", .addc = { 2, 320, 1000 }, .tol = { .gpu = 1e-7 } },
    { OP_ADD_CHANNEL, NULL, .addc = { 2, 320, 4096 }, .tol = { .gpu_bw = 1e-6 } },

    { OP_CONCAT, NULL, .cat = { 2, 2, 3, 4 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7, .gpu_bw = 1e-7 } },
    { OP_CONCAT, NULL, .cat = { 2, 2, 3, 5 }, .tol = { .naive = TOL_EXACT, .fd = 1e-3, .gpu = 1e-7, .gpu_bw = 1e-7 } },
    { OP_CONCAT, NULL, .cat = { 3, 5, 7, 1001 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7 } },
    { OP_CONCAT, "text context, HW 1", .cat = { 2, 768, 1280, 1 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7 } },
    { OP_CONCAT, "UNet skip", .cat = { 2, 100, 220, 1024 }, .tol = { .gpu_bw = 1e-7 } },

    { OP_TRANSPOSE, NULL, .tr = { 2, 37, 45 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7 } },
    { OP_TRANSPOSE, "UNet tokens", .tr = { 2, 640, 4096 }, .tol = { .gpu = 1e-7 } },
    { OP_TRANSPOSE, NULL, .tr = { 1, 1, 5 }, .tol = { .naive = TOL_EXACT, .gpu = 1e-7 } },
};
const int op_ncases = (int)(sizeof op_cases / sizeof op_cases[0]);


/* ---- GEMM ---- */

struct gemm_dims { int lda, ldb, ldc; long long sA, sB, sC; size_t nA, nB, nC; };

static struct gemm_dims gemm_dims(const struct op_case *c) {
    struct gemm_dims d;
    int M = c->gemm.M, N = c->gemm.N, K = c->gemm.K, batched = c->gemm.batch > 1;
    d.lda = (c->gemm.ta ? M : K) + c->gemm.pad_a;
    d.ldb = (c->gemm.tb ? K : N) + c->gemm.pad_b;
    d.ldc = N + c->gemm.pad_c;
    long long ma = (long long)(c->gemm.ta ? K : M) * d.lda, mb = (long long)(c->gemm.tb ? N : K) * d.ldb;
    long long mc = (long long)M * d.ldc;
    d.sA = batched ? ma + c->gemm.sa_pad : 0;
    d.sB = batched ? mb + c->gemm.sb_pad : 0;
    d.sC = batched ? mc + c->gemm.sc_pad : 0;
    d.nA = (size_t)(batched ? c->gemm.batch * d.sA : ma);
    d.nB = (size_t)(batched ? c->gemm.batch * d.sB : mb);
    d.nC = (size_t)(batched ? c->gemm.batch * d.sC : mc);
    return d;
}

static int gemm_bufs(const struct op_case *c, struct op_buf *d) {
    struct gemm_dims g = gemm_dims(c);
    d[0] = (struct op_buf){ "A", g.nA, OPB_CONST, 0, 0 };
    d[1] = (struct op_buf){ "B", g.nB, OPB_CONST, 0, 0 };
    d[2] = (struct op_buf){ "C", g.nC, OPB_INOUT, 0, c->gemm.beta == 0 };
    return 3;
}

static void gemm_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    struct gemm_dims g = gemm_dims(c);
    be->ops->gemm(be, c->gemm.ta, c->gemm.tb, c->gemm.M, c->gemm.N, c->gemm.K, c->gemm.alpha, b[0], g.lda, g.sA,
                  b[1], g.ldb, g.sB, c->gemm.beta, b[2], g.ldc, g.sC, c->gemm.batch);
}

static int gemm_pad(const struct op_case *c, int i, size_t e) {
    if (i != 2) return 0;
    struct gemm_dims g = gemm_dims(c);
    size_t in = e % (size_t)(g.sC ? g.sC : (long long)g.nC);
    return in >= (size_t)c->gemm.M * g.ldc || (int)(in % g.ldc) >= c->gemm.N;
}

/* naive: per row of C (as test_ops.c always compared); GPU: per matrix of a batch */
static size_t gemm_block(const struct op_case *c, int naive) {
    return naive ? (size_t)c->gemm.N : c->gemm.batch > 1 ? (size_t)c->gemm.M * c->gemm.N : 0;
}

/* ---- linear, conv2d ---- */

static int linear_bufs(const struct op_case *c, struct op_buf *d) {
    int R = c->linear.R, I = c->linear.I, O = c->linear.O;
    d[0] = (struct op_buf){ "inp", (size_t)R * I, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "w", (size_t)O * I, OPB_PARAM, 0, 0 };
    d[2] = (struct op_buf){ "b", c->linear.bias ? (size_t)O : 0, OPB_PARAM, 1, 0 };
    d[3] = (struct op_buf){ "out", (size_t)R * O, OPB_OUT, 0, 0 };
    return 4;
}

static void linear_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->linear(be, b[3], b[0], b[1], DT_F32, b[2], c->linear.R, c->linear.R, c->linear.I, c->linear.O);
}

static void linear_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                       float *const *b) {
    be->ops->linear_backward(be, g[0], g[1], g[2], dout, b[0], b[1], c->linear.R, c->linear.I, c->linear.O);
}

#define CV(c) (c)->conv
static int conv_ho(const struct op_case *c) { return (CV(c).H + CV(c).pt + CV(c).pb - CV(c).kh) / CV(c).s + 1; }
static int conv_wo(const struct op_case *c) { return (CV(c).W + CV(c).pl + CV(c).pr - CV(c).kw) / CV(c).s + 1; }

static int conv_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "inp", (size_t)CV(c).N * CV(c).C * CV(c).H * CV(c).W, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "w", (size_t)CV(c).K * CV(c).C * CV(c).kh * CV(c).kw, OPB_PARAM, 0, 0 };
    d[2] = (struct op_buf){ "b", CV(c).bias ? (size_t)CV(c).K : 0, OPB_PARAM, 1, 0 };
    d[3] = (struct op_buf){ "out", (size_t)CV(c).N * CV(c).K * conv_ho(c) * conv_wo(c), OPB_OUT, 0, 0 };
    return 4;
}

static void conv_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->conv2d(be, b[3], b[0], b[1], DT_F32, b[2], CV(c).N, CV(c).C, CV(c).H, CV(c).W, CV(c).K, CV(c).kh, CV(c).kw,
                    CV(c).s, CV(c).pt, CV(c).pl, CV(c).pb, CV(c).pr);
}

static void conv_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                     float *const *b) {
    be->ops->conv2d_backward(be, g[0], g[1], g[2], dout, b[0], b[1], CV(c).N, CV(c).C, CV(c).H, CV(c).W, CV(c).K,
                             CV(c).kh, CV(c).kw, CV(c).s, CV(c).pt, CV(c).pl, CV(c).pb, CV(c).pr);
}

/* ---- norms ---- */

static int gn_bufs(const struct op_case *c, struct op_buf *d) {
    size_t n = (size_t)c->gn.N * c->gn.C * c->gn.HW, nw = c->gn.no_affine ? 0 : (size_t)c->gn.C;
    d[0] = (struct op_buf){ "inp", n, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "w", nw, OPB_PARAM, 0, 0 };
    d[2] = (struct op_buf){ "b", nw, OPB_PARAM, 1, 0 };
    d[3] = (struct op_buf){ "out", n, OPB_OUT, 0, 0 };
    return 4;
}

static void gn_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->group_norm(be, b[3], b[0], b[1], b[2], c->gn.N, c->gn.C, c->gn.HW, c->gn.G, c->gn.eps, c->gn.silu);
}

static void gn_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                   float *const *b) {
    be->ops->group_norm_backward(be, g[0], g[1], g[2], dout, b[0], b[1], b[2], c->gn.N, c->gn.C, c->gn.HW, c->gn.G,
                                 c->gn.eps, c->gn.silu);
}

static int ln_bufs(const struct op_case *c, struct op_buf *d) {
    size_t n = (size_t)c->ln.R * c->ln.C;
    d[0] = (struct op_buf){ "inp", n, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "w", (size_t)c->ln.C, OPB_PARAM, 0, 0 };
    d[2] = (struct op_buf){ "b", (size_t)c->ln.C, OPB_PARAM, 1, 0 };
    d[3] = (struct op_buf){ "out", n, OPB_OUT, 0, 0 };
    return 4;
}

static void ln_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->layer_norm(be, b[3], b[0], b[1], b[2], c->ln.R, c->ln.C, c->ln.eps);
}

static void ln_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                   float *const *b) {
    be->ops->layer_norm_backward(be, g[0], g[1], g[2], dout, b[0], b[1], c->ln.R, c->ln.C, c->ln.eps);
}

/* ---- attention ---- */

#define AT(c) (c)->att
static int att_ld(const struct op_case *c) { return (AT(c).fused ? 3 : 1) * AT(c).H * AT(c).D + AT(c).pad; }
static int att_ldo(const struct op_case *c) { return AT(c).H * AT(c).D + AT(c).ldo_pad; }

static int att_bufs(const struct op_case *c, struct op_buf *d) {
    size_t nq = (size_t)AT(c).N * AT(c).Lq * att_ld(c), nk = (size_t)AT(c).N * AT(c).Lk * att_ld(c);
    int i = 0;
    if (AT(c).fused) {
        d[i++] = (struct op_buf){ "qkv", nq, OPB_IN, 0, 0 };
    } else {
        d[i++] = (struct op_buf){ "q", nq, OPB_IN, 0, 0 };
        d[i++] = (struct op_buf){ "k", nk, OPB_IN, 0, 0 };
        d[i++] = (struct op_buf){ "v", nk, OPB_IN, 0, 0 };
    }
    d[i++] = (struct op_buf){ "out", (size_t)AT(c).N * AT(c).Lq * att_ldo(c), OPB_OUT, 0, 0 };
    return i;
}

/* q, k, v (or their gradients) of a case, from its buffers */
static void att_views(const struct op_case *c, float *const *b, float **q, float **k, float **v) {
    int HD = AT(c).H * AT(c).D;
    if (!AT(c).fused) { *q = b[0]; *k = b[1]; *v = b[2]; return; }
    *q = b[0]; *k = b[0] ? b[0] + HD : NULL; *v = b[0] ? b[0] + 2 * HD : NULL;
}

static void att_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    float *q, *k, *v;
    att_views(c, b, &q, &k, &v);
    int ld = att_ld(c);
    be->ops->attention(be, b[AT(c).fused ? 1 : 3], q, k, v, AT(c).N, AT(c).H, AT(c).Lq, AT(c).Lk, AT(c).D, ld, ld, ld,
                       att_ldo(c), 1.0f / sqrtf((float)AT(c).D), AT(c).causal);
}

static void att_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                    float *const *b) {
    float *q, *k, *v, *dq, *dk, *dv;
    att_views(c, b, &q, &k, &v);
    att_views(c, g, &dq, &dk, &dv);
    int ld = att_ld(c);
    be->ops->attention_backward(be, dq, dk, dv, dout, q, k, v, AT(c).N, AT(c).H, AT(c).Lq, AT(c).Lk, AT(c).D, ld, ld,
                                ld, att_ldo(c), 1.0f / sqrtf((float)AT(c).D), AT(c).causal);
}

/* the columns past H·D (3·H·D fused) of each row */
static int att_pad(const struct op_case *c, int i, size_t e) {
    int out = i == (AT(c).fused ? 1 : 3);
    int ld = out ? att_ldo(c) : att_ld(c), used = (out || !AT(c).fused ? 1 : 3) * AT(c).H * AT(c).D;
    return (int)(e % (size_t)ld) >= used;
}

/* ---- elementwise ---- */

static int act_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "inp", (size_t)c->act.n, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "out", (size_t)c->act.n, OPB_OUT, 0, 0 };
    return 2;
}
static void act_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->act(be, b[1], b[0], c->act.n, c->act.kind);
}
static void act_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                    float *const *b) {
    be->ops->act_backward(be, g[0], dout, b[0], c->act.n, c->act.kind);
}

static int geglu_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "inp", (size_t)c->geglu.R * 2 * c->geglu.C, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "out", (size_t)c->geglu.R * c->geglu.C, OPB_OUT, 0, 0 };
    return 2;
}
static void geglu_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->geglu(be, b[1], b[0], c->geglu.R, c->geglu.C);
}
static void geglu_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                      float *const *b) {
    be->ops->geglu_backward(be, g[0], dout, b[0], c->geglu.R, c->geglu.C);
}

static int up_bufs(const struct op_case *c, struct op_buf *d) {
    size_t n = (size_t)c->up.N * c->up.C * c->up.H * c->up.W;
    d[0] = (struct op_buf){ "inp", n, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "out", 4 * n, OPB_OUT, 0, 0 };
    return 2;
}
static void up_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->upsample2x(be, b[1], b[0], c->up.N, c->up.C, c->up.H, c->up.W);
}
static void up_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                   float *const *b) {
    (void)b;
    be->ops->upsample2x_backward(be, g[0], dout, c->up.N, c->up.C, c->up.H, c->up.W);
}

static int ts_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "t", (size_t)c->ts.N, OPB_HOST, 0, 0 };
    d[1] = (struct op_buf){ "out", (size_t)c->ts.N * c->ts.dim, OPB_OUT, 0, 0 };
    return 2;
}
static void ts_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->timestep_embedding(be, b[1], b[0], c->ts.N, c->ts.dim, c->ts.flip, c->ts.shift, c->ts.max_period);
}
/* SDXL's first timestep, a fractional one and 0: cos/sin of ~1000 rad show an ulp of the angle */
static void ts_init(const struct op_case *c, int i, float *x, size_t n) {
    (void)c; (void)i;
    static const float t[3] = { 999, 3.5f, 0 };
    for (size_t j = 0; j < n; j++) x[j] = t[j % 3];
}

void op_emb_ids(const struct op_case *c, int *ids) {
    int m = c->emb.id_mod;
    for (int i = 0; i < c->emb.n && i < OP_MAX_IDS; i++) ids[i] = (int)((37LL * i + m - 1) % m);
}
static int emb_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "table", (size_t)c->emb.V * c->emb.D, OPB_PARAM, 0, 0 };
    d[1] = (struct op_buf){ "out", (size_t)c->emb.n * c->emb.D, OPB_OUT, 0, 0 };
    return 2;
}
static void emb_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    int ids[OP_MAX_IDS];
    op_emb_ids(c, ids);
    be->ops->embedding(be, b[1], b[0], DT_F32, ids, c->emb.n, c->emb.D);
}
static void emb_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                    float *const *b) {
    (void)b;
    int ids[OP_MAX_IDS];
    op_emb_ids(c, ids);
    if (g[0]) be->ops->embedding_backward(be, g[0], dout, ids, c->emb.n, c->emb.D);
}

static int axpby_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "a", (size_t)c->axpby.n, OPB_CONST, 0, 0 };
    d[1] = (struct op_buf){ "b", c->axpby.no_b ? 0 : (size_t)c->axpby.n, OPB_CONST, 0, 0 };
    d[2] = (struct op_buf){ "out", (size_t)c->axpby.n, OPB_OUT, 0, 0 };
    return 3;
}
static void axpby_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->axpby(be, b[2], c->axpby.alpha, b[0], c->axpby.beta, b[1], c->axpby.n);
}

/* add_channel adds into its output: the forward copies inp there first */
static int addc_bufs(const struct op_case *c, struct op_buf *d) {
    size_t n = (size_t)c->addc.N * c->addc.C * c->addc.HW;
    d[0] = (struct op_buf){ "inp", n, OPB_CONST, 0, 0 };
    d[1] = (struct op_buf){ "v", (size_t)c->addc.N * c->addc.C, OPB_IN, 0, 0 };
    d[2] = (struct op_buf){ "out", n, OPB_OUT, 0, 0 };
    return 3;
}
static void addc_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->copy(be, b[2], b[0], sizeof(float) * c->addc.N * c->addc.C * c->addc.HW);
    be->ops->add_channel(be, b[2], b[1], c->addc.N, c->addc.C, c->addc.HW);
}
static void addc_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                     float *const *b) {
    (void)b;
    if (g[1]) be->ops->channel_sum(be, g[1], dout, c->addc.N, c->addc.C, c->addc.HW);
}

static int cat_bufs(const struct op_case *c, struct op_buf *d) {
    d[0] = (struct op_buf){ "a", (size_t)c->cat.N * c->cat.Ca * c->cat.HW, OPB_IN, 0, 0 };
    d[1] = (struct op_buf){ "b", (size_t)c->cat.N * c->cat.Cb * c->cat.HW, OPB_IN, 0, 0 };
    d[2] = (struct op_buf){ "out", (size_t)c->cat.N * (c->cat.Ca + c->cat.Cb) * c->cat.HW, OPB_OUT, 0, 0 };
    return 3;
}
static void cat_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->concat_channels(be, b[2], b[0], c->cat.Ca, b[1], c->cat.Cb, c->cat.N, c->cat.HW);
}
static void cat_bwd(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                    float *const *b) {
    (void)b;
    be->ops->split_channels(be, g[0], c->cat.Ca, g[1], c->cat.Cb, dout, c->cat.N, c->cat.HW);
}

static int tr_bufs(const struct op_case *c, struct op_buf *d) {
    size_t n = (size_t)c->tr.N * c->tr.R * c->tr.C;
    d[0] = (struct op_buf){ "inp", n, OPB_CONST, 0, 0 };
    d[1] = (struct op_buf){ "out", n, OPB_OUT, 0, 0 };
    return 2;
}
static void tr_fwd(struct backend *be, const struct op_case *c, float *const *b) {
    be->ops->transpose(be, b[1], b[0], c->tr.N, c->tr.R, c->tr.C);
}

const struct op_kind op_kinds[OP_COUNT] = {
    [OP_GEMM] = { "gemm", gemm_bufs, gemm_fwd, NULL, gemm_pad, NULL, gemm_block, 0, 0 },
    [OP_LINEAR] = { "linear", linear_bufs, linear_fwd, linear_bwd, NULL, NULL, NULL, 0, 0 },
    /* conv: a gradient alone gets the whole tile bound (col and dcol share it), so its
     * sums split differently */
    [OP_CONV2D] = { "conv2d", conv_bufs, conv_fwd, conv_bwd, NULL, NULL, NULL, 0, 1e-6 },
    [OP_GROUP_NORM] = { "group_norm", gn_bufs, gn_fwd, gn_bwd, NULL, NULL, NULL, 1, 0 },
    [OP_LAYER_NORM] = { "layer_norm", ln_bufs, ln_fwd, ln_bwd, NULL, NULL, NULL, 1, 0 },
    [OP_ATTENTION] = { "attention", att_bufs, att_fwd, att_bwd, att_pad, NULL, NULL, 0, 0 },
    [OP_ACT] = { "act", act_bufs, act_fwd, act_bwd, NULL, NULL, NULL, 1, 0 },
    [OP_GEGLU] = { "geglu", geglu_bufs, geglu_fwd, geglu_bwd, NULL, NULL, NULL, 0, 0 },
    [OP_UPSAMPLE2X] = { "upsample2x", up_bufs, up_fwd, up_bwd, NULL, NULL, NULL, 0, 0 },
    [OP_TIMESTEP_EMBEDDING] = { "timestep_embedding", ts_bufs, ts_fwd, NULL, NULL, ts_init, NULL, 0, 0 },
    [OP_EMBEDDING] = { "embedding", emb_bufs, emb_fwd, emb_bwd, NULL, NULL, NULL, 0, 0 },
    [OP_AXPBY] = { "axpby", axpby_bufs, axpby_fwd, NULL, NULL, NULL, NULL, 1, 0 },
    [OP_ADD_CHANNEL] = { "add_channel/channel_sum", addc_bufs, addc_fwd, addc_bwd, NULL, NULL, NULL, 0, 0 },
    [OP_CONCAT] = { "concat/split_channels", cat_bufs, cat_fwd, cat_bwd, NULL, NULL, NULL, 0, 0 },
    [OP_TRANSPOSE] = { "transpose", tr_bufs, tr_fwd, NULL, NULL, NULL, NULL, 0, 0 },
};

/* ---- host buffers, padding, errors ---- */

float *op_dup(const float *x, size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (x) memcpy(p, x, sizeof(float) * n);
    return p;
}

float *op_filled(size_t n, float v) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

void op_host_alloc(const struct op_case *c, struct sd_rng *r, struct op_host *h) {
    const struct op_kind *k = &op_kinds[c->op];
    memset(h, 0, sizeof *h);
    h->nbuf = k->bufs(c, h->d);
    h->out = -1;
    for (int i = 0; i < h->nbuf; i++) {
        const struct op_buf *d = &h->d[i];
        if (d->role == OPB_OUT || d->role == OPB_INOUT) h->out = i;
        if (!d->n) continue;
        if (d->role == OPB_OUT || d->poison) { h->b[i] = op_filled(d->n, NAN); continue; }
        h->b[i] = op_dup(NULL, d->n);
        sd_rng_normal(r, h->b[i], d->n);
        float sd = i < 3 && c->init[i].sd != 0 ? c->init[i].sd : 1, mean = i < 3 ? c->init[i].mean : 0;
        for (size_t j = 0; j < d->n; j++) h->b[i][j] = h->b[i][j] * sd + mean;
        if (k->init) k->init(c, i, h->b[i], d->n);
    }
}

void op_host_free(struct op_host *h) {
    for (int i = 0; i < h->nbuf; i++) free(h->b[i]);
    memset(h, 0, sizeof *h);
}

size_t op_compact(const struct op_case *c, int i, const float *x, size_t n, float *out) {
    int (*pad)(const struct op_case *, int, size_t) = op_kinds[c->op].pad;
    size_t m = 0;
    for (size_t e = 0; e < n; e++)
        if (!pad || !pad(c, i, e)) out[m++] = x[e];
    return m;
}

int op_pads_kept(const struct op_case *c, int i, const float *x, const float *before, size_t n) {
    int (*pad)(const struct op_case *, int, size_t) = op_kinds[c->op].pad;
    for (size_t e = 0; pad && e < n; e++)
        if (pad(c, i, e) && memcmp(&x[e], &before[e], sizeof(float))) return 0;
    return 1;
}

void op_pads_set(const struct op_case *c, int i, float *x, size_t n, float v) {
    int (*pad)(const struct op_case *, int, size_t) = op_kinds[c->op].pad;
    for (size_t e = 0; pad && e < n; e++)
        if (pad(c, i, e)) x[e] = v;
}

double op_block_err(double (*err)(const float *, const float *, size_t), const float *a, const float *b,
                    size_t n, size_t block) {
    if (!block || block > n) block = n;
    double worst = 0;
    for (size_t s = 0; s < n; s += block) {
        double e = err(a + s, b + s, n - s < block ? n - s : block);
        if (!(e <= worst)) worst = e;   /* NaN sticks */
    }
    return worst;
}

static const char *act_names[] = { "silu", "gelu", "quick_gelu" };

void op_case_name(const struct op_case *c, char *buf, size_t n) {
    char p[160];
    switch (c->op) {
    case OP_GEMM:
        snprintf(p, sizeof p, "%dx%dx%d ta=%d tb=%d alpha %g beta %g ld +%d,+%d,+%d batch %d", c->gemm.M, c->gemm.N,
                 c->gemm.K, c->gemm.ta, c->gemm.tb, c->gemm.alpha, c->gemm.beta, c->gemm.pad_a, c->gemm.pad_b,
                 c->gemm.pad_c, c->gemm.batch);
        break;
    case OP_LINEAR:
        snprintf(p, sizeof p, "%dx%d->%d bias=%d", c->linear.R, c->linear.I, c->linear.O, c->linear.bias);
        break;
    case OP_CONV2D:
        snprintf(p, sizeof p, "N%d C%d %dx%d -> K%d k%dx%d s%d pad %d,%d,%d,%d bias=%d", CV(c).N, CV(c).C, CV(c).H,
                 CV(c).W, CV(c).K, CV(c).kh, CV(c).kw, CV(c).s, CV(c).pt, CV(c).pl, CV(c).pb, CV(c).pr, CV(c).bias);
        break;
    case OP_GROUP_NORM:
        snprintf(p, sizeof p, "N%d C%d HW%d G%d silu=%d affine=%d", c->gn.N, c->gn.C, c->gn.HW, c->gn.G, c->gn.silu,
                 !c->gn.no_affine);
        break;
    case OP_LAYER_NORM: snprintf(p, sizeof p, "%dx%d", c->ln.R, c->ln.C); break;
    case OP_ATTENTION:
        snprintf(p, sizeof p, "N%d H%d Lq%d Lk%d D%d causal=%d fused=%d ld %d ldo %d", AT(c).N, AT(c).H, AT(c).Lq,
                 AT(c).Lk, AT(c).D, AT(c).causal, AT(c).fused, att_ld(c), att_ldo(c));
        break;
    case OP_ACT: snprintf(p, sizeof p, "%s n%lld", act_names[c->act.kind], c->act.n); break;
    case OP_GEGLU: snprintf(p, sizeof p, "%d x 2·%d", c->geglu.R, c->geglu.C); break;
    case OP_UPSAMPLE2X: snprintf(p, sizeof p, "N%d C%d %dx%d", c->up.N, c->up.C, c->up.H, c->up.W); break;
    case OP_TIMESTEP_EMBEDDING:
        snprintf(p, sizeof p, "N%d dim %d flip %d shift %g", c->ts.N, c->ts.dim, c->ts.flip, c->ts.shift);
        break;
    case OP_EMBEDDING: snprintf(p, sizeof p, "V%d D%d n%d ids mod %d", c->emb.V, c->emb.D, c->emb.n, c->emb.id_mod); break;
    case OP_AXPBY:
        snprintf(p, sizeof p, "n%lld %g·a + %g·%s", c->axpby.n, c->axpby.alpha, c->axpby.beta, c->axpby.no_b ? "NULL" : "b");
        break;
    case OP_ADD_CHANNEL: snprintf(p, sizeof p, "N%d C%d HW%d", c->addc.N, c->addc.C, c->addc.HW); break;
    case OP_CONCAT: snprintf(p, sizeof p, "N%d Ca%d Cb%d HW%d", c->cat.N, c->cat.Ca, c->cat.Cb, c->cat.HW); break;
    case OP_TRANSPOSE: snprintf(p, sizeof p, "%d x %d x %d", c->tr.N, c->tr.R, c->tr.C); break;
    default: snprintf(p, sizeof p, "?"); break;
    }
    snprintf(buf, n, "%s %s%s%s%s", op_kinds[c->op].name, p, c->what ? " (" : "", c->what ? c->what : "",
             c->what ? ")" : "");
}

