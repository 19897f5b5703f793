/* safetensors.h — strict reader and atomic writer for the safetensors format.
 *
 * Format: u64 little-endian header length N | N bytes of UTF-8 JSON | data.  The JSON
 * maps name -> {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative to
 * the first byte after the header; "__metadata__" is an optional string->string map.
 *
 * Model files are downloads, so the reader trusts nothing: the header length is bounded
 * (ST_MAX_HEADER) and must fit the file, every entry must have a known dtype, a shape of
 * at most SD_MAX_DIMS non-negative dims, offsets inside the data area with
 * end - begin == numel * dtype size, and no two tensors may overlap.  Duplicate names
 * are rejected.  The file is mmap'ed read-only; tensors point into the mapping.
 * Dtypes read: F32, F16, BF16, I64; anything else is SD_ERR_UNSUPPORTED naming the
 * tensor. */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include "../core/tensor.h"

#define ST_MAX_HEADER (100u << 20)

struct st_tensor {
    char *name;
    sd_dtype dtype;
    int ndim;
    int64_t shape[SD_MAX_DIMS];
    uint64_t begin, end;    /* relative to the data area */
    const void *data;       /* into the mapping; may be unaligned for F16 */
};

struct st_file {
    char *path;
    void *map;
    size_t size;
    int ntensors;
    struct st_tensor *tensors;  /* in file order */
};

/* Open and validate.  On failure f is left closed and the message names the path and
 * the offending tensor/field. */
sd_status st_open(struct st_file *f, const char *path);
void st_close(struct st_file *f);
const struct st_tensor *st_find(const struct st_file *f, const char *name);
int64_t st_numel(const struct st_tensor *t);
/* Convert to fp32 into dst (numel floats).  I64 converts by value. */
void st_read_f32(const struct st_tensor *t, float *dst);
/* Done with t's bytes for now: its pages of f's mapping leave memory (they are read from
 * the file again if touched), so binding a model holds one tensor of the file at a time
 * instead of the whole file.  A no-op for data outside the mapping. */
void st_release(const struct st_file *f, const struct st_tensor *t);

/* Writer: collect tensors (data is copied at add time, converted to the requested
 * storage dtype when src is fp32), then write atomically: PATH.tmp.PID, fsync, rename.
 * Names are kept in insertion order and the header is padded to a multiple of 8. */
struct st_writer {
    int n, cap;
    struct st_wentry { char *name; sd_dtype dtype; int ndim; int64_t shape[SD_MAX_DIMS];
                       void *data; size_t nbytes; } *e;
    char *metadata_json; /* optional: a JSON object text for "__metadata__"; owned by
                            the caller (st_writer_free leaves it alone) */
};
void st_writer_init(struct st_writer *w);
/* Add raw storage already in dtype dt (for I64 ids, or copying tensors unchanged). */
sd_status st_writer_add(struct st_writer *w, const char *name, sd_dtype dt, int ndim,
                        const int64_t *shape, const void *data);
/* Add fp32 data, stored as dt (F32, F16 or BF16). */
sd_status st_writer_add_f32(struct st_writer *w, const char *name, sd_dtype dt, int ndim,
                            const int64_t *shape, const float *data);
sd_status st_writer_write(struct st_writer *w, const char *path);
void st_writer_free(struct st_writer *w);

#endif
