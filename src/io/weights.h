/* weights.h — the name table that drives the strict loader.
 *
 * A model "declares" each of its parameters once: a field (float **), a shape and its
 * diffusers name, built by walking the model's config.  The table then
 *   - sizes the parameter arena (one allocation for the whole model) and points every
 *     field into it (wt_alloc),
 *   - binds a safetensors file (wt_load): every declared tensor must be present with the
 *     declared shape, and every tensor in the file must be declared (or ignored by the
 *     model's name mapper); anything else is an error that names the key,
 *   - writes the parameters back out (wt_save), e.g. for `sdxld init`.
 * Declaring fields once keeps loading, saving, initialising and (later) gradients in step:
 * the gradient arena is the same table with a second set of pointers. */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include "../backend/backend.h"
#include "../core/tensor.h"

struct st_file;

#define WT_NAME_MAX 160

enum wt_init { WT_INIT_NORMAL, WT_INIT_ZERO, WT_INIT_ONE };

struct weight_row {
    char name[WT_NAME_MAX];
    float **dst;
    int ndim;
    int64_t shape[4];
    enum wt_init init;      /* for sdxld init: how a fresh parameter starts */
    float init_std;
    int loaded;
    sd_dtype dt;            /* storage: F32, or the table's wdt for a wt_lowp row */
    sd_dtype *dt_slot;      /* wt_lowp: where wt_alloc writes dt for the layer */
};

struct weight_table {
    struct weight_row *rows;
    int n, cap;
    int *hash;              /* open addressing over rows, built by wt_alloc */
    int hash_cap;
    sd_status err;          /* sticky: a failed declaration (out of memory, long name) */
    int64_t total;          /* values */
    sd_dtype wdt;           /* storage of the wt_lowp rows (F32 unless set before wt_alloc) */
    size_t bytes;           /* parameter memory, set by wt_alloc */
};

/* ---- weights in their stored precision ----
 * A model may keep the weights of its GEMMs (linear and conv matrices) in F16 or BF16:
 * half the memory, computed as backend.h's "Weight precision" says.  Biases, norms and
 * embeddings stay F32, and so does every table that trains (gradients, optimiser state
 * and the backward ops are fp32).  WT_DTYPE_AUTO asks for the precision the files hold. */
#define WT_DTYPE_AUTO ((sd_dtype)-1)
/* "auto", "f32", "f16", "bf16" (either case) into *out; 0 on success. */
int wt_dtype_parse(const char *s, sd_dtype *out);
const char *wt_dtype_name(sd_dtype dt);   /* "auto", "f32", "f16", "bf16" */
/* Mark the row just declared as a GEMM weight: wt_alloc stores it as t->wdt and writes
 * that dtype to *slot (the layer's wdt). */
void wt_lowp(struct weight_table *t, sd_dtype *slot);
/* Row r's values as fp32 into dst (numel floats), whatever its storage. */
void wt_row_read(struct backend *be, const struct weight_row *r, float *dst);
/* Replace row r's values from fp32 src (rounded to its storage). */
sd_status wt_row_write(struct backend *be, const struct weight_row *r, const float *src);

/* Maps a file's key to the declared name; returns 0 to bind to buf, 1 to ignore the key
 * (e.g. a stray position_ids buffer).  NULL mapper = names are used as they are. */
typedef int (*wt_name_map)(const char *file_key, char *buf, size_t n);

void wt_init(struct weight_table *t);
void wt_free(struct weight_table *t);
/* Declare a parameter.  Errors are sticky and reported by wt_alloc. */
void wt_add(struct weight_table *t, float **dst, enum wt_init init, float init_std, int ndim,
            const int64_t *shape, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Reserve params (an arena on be) for every row and point each field into it. */
sd_status wt_alloc(struct weight_table *t, struct arena *params, struct backend *be);
const struct weight_row *wt_find(const struct weight_table *t, const char *name);
/* Bind the tensors of a safetensors file (or a PyTorch checkpoint: st_open reads both). */
sd_status wt_load(struct weight_table *t, struct backend *be, const char *path, wt_name_map map);

/* ---- binding from several files, or several tables from one file ----
 * A sharded component is several files bound into one table; a single-file checkpoint
 * (model/sgm.h) is one file bound into four tables.  The caller clears the table
 * (wt_begin), binds each file (wt_bind_file), checks that every row was filled
 * (wt_check_complete) and that every tensor of every file was taken by some table
 * (its `used` flags).
 *
 * A resolver says where one file tensor goes: to one row, or split along dim 0 into n
 * equal parts (OpenCLIP's fused in_proj q|k|v), or transposed (a 2-D matrix stored
 * [in, out], OpenCLIP's text_projection). */
#define WT_MAX_PARTS 3
enum wt_resolution {
    WT_BIND,        /* bind to b->name[0..n-1] (a name with no row: "unexpected tensor") */
    WT_SKIP,        /* a known non-weight (position_ids, logit_scale): taken, not bound */
    WT_FOREIGN,     /* another table's tensor (another component's prefix): left alone */
};
struct wt_bind {
    int n;                                  /* 1..WT_MAX_PARTS */
    int transpose;                          /* 2-D: the file holds the row's transpose */
    char name[WT_MAX_PARTS][WT_NAME_MAX];
};
typedef enum wt_resolution (*wt_resolve_fn)(void *ud, const char *file_key, struct wt_bind *b);

/* The resolver of a one-to-one name map: ud points at a wt_name_map (NULL: names as
 * they are). */
enum wt_resolution wt_map_resolve(void *ud, const char *file_key, struct wt_bind *b);
void wt_begin(struct weight_table *t);
/* Bind every tensor of f that fn claims; used[i] is set for each tensor taken (may be
 * NULL).  Errors name f's path and the key: unexpected, bound twice, mis-shaped,
 * integer or non-finite. */
sd_status wt_bind_file(struct weight_table *t, struct backend *be, const struct st_file *f,
                       wt_resolve_fn fn, void *ud, unsigned char *used);
/* SD_ERR_NOTFOUND naming the first row nothing filled ("what: missing tensor ..."). */
sd_status wt_check_complete(const struct weight_table *t, const char *what);
/* The weights file of a component folder: DIR/ST_NAME (safetensors) when it exists or
 * when DIR/BIN_NAME does not, else DIR/BIN_NAME (the torch.save file of a diffusers
 * folder from the pickle era: diffusion_pytorch_model.bin, pytorch_model.bin).  A fresh
 * string for sd_free; NULL when out of memory. */
char *wt_weights_path(const char *dir, const char *st_name, const char *bin_name);
/* Fill every parameter by its init rule from a seeded normal RNG. */
sd_status wt_init_random(struct weight_table *t, struct backend *be, uint64_t seed);
/* Zero every parameter (a gradient table) with be. */
void wt_zero(const struct weight_table *t, struct backend *be);
/* Write every parameter (dtype F32, F16 or BF16). */
sd_status wt_save(const struct weight_table *t, struct backend *be, const char *path, sd_dtype dt);

#endif
