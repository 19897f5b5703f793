/* tensor.h — storage dtypes and a small host tensor used for I/O.
 *
 * Compute is fp32 everywhere on the CPU; storage may be F32, F16, BF16 or I64 (token
 * ids).  A struct sd_tensor owns its host buffer (data) unless 'borrowed' is set. */
#ifndef SD_TENSOR_H
#define SD_TENSOR_H

#include "core.h"

typedef enum { DT_F32, DT_F16, DT_BF16, DT_I64 } sd_dtype;

#define SD_MAX_DIMS 8

size_t sd_dtype_size(sd_dtype dt);
const char *sd_dtype_name(sd_dtype dt);   /* "F32", "F16", "BF16", "I64" */
int sd_dtype_parse(const char *s, sd_dtype *out); /* 0 on success */

struct sd_tensor {
    sd_dtype dtype;
    int ndim;
    int64_t shape[SD_MAX_DIMS];
    void *data;
};

int64_t sd_numel(int ndim, const int64_t *shape);
/* "(2,4,8,8)" into buf; returns buf. */
char *sd_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* Allocate a zeroed host tensor. */
sd_status sd_tensor_alloc(struct sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape);
void sd_tensor_free(struct sd_tensor *t);

/* Half-precision conversions (round to nearest even). */
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_bf16_to_f32(uint16_t h);
uint16_t sd_f32_to_bf16(float f);
/* Convert n elements of storage dtype dt at src to fp32 at dst (I64 converts by value). */
void sd_convert_to_f32(float *dst, const void *src, sd_dtype dt, size_t n);
/* Index of the first NaN or infinity in x[0..n), or -1. */
long long sd_find_nonfinite(const float *x, size_t n);
void sd_convert_from_f32(void *dst, const float *src, sd_dtype dt, size_t n);

#endif
