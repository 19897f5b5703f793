/* st_internal.h — what the safetensors and PyTorch readers share to fill a struct st_file
 * (src/io only; consumers use safetensors.h).
 *
 * f->tensors is one allocation: struct st_tensor[n] | uint32_t index[cap] | names, where
 * index is the open-addressing name table st_find probes (see safetensors.c). */
#ifndef SD_ST_INTERNAL_H
#define SD_ST_INTERNAL_H

#include "safetensors.h"

/* Allocate the block for n tensors with name_bytes of names (NULs included); sets
 * f->tensors and f->ntensors, and *names to the (zeroed) name area. */
sd_status st_table_alloc(struct st_file *f, size_t n, size_t name_bytes, char **names);
/* Enter tensor i (its name set) in the name index: 0, or -1 if the name is already in. */
int st_table_index(struct st_file *f, int i);
/* Quote a name from a file for a message: control bytes escaped, length bounded. */
const char *st_safe_str(char *buf, size_t n, const char *s);
/* Bytes of a tensor of this shape, or -1 when a dim is negative or the size overflows. */
int st_shape_bytes(int ndim, const int64_t *shape, size_t elsize, uint64_t *bytes);

/* The PyTorch zip reader (torchfile.c): f->path, f->map and f->size are set; fills
 * f->tensors.  On failure the caller closes f. */
sd_status torch_parse(struct st_file *f);

#endif
