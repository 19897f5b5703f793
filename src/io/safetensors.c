/* safetensors.c — strict reader and atomic writer for safetensors files.
 *
 * Model files are downloads, so the reader treats every byte as hostile: the header
 * length is bounded before anything is allocated, the JSON goes through jansson with
 * duplicate keys rejected, every field is type-checked, every size is computed with
 * overflow checks, and the data_offsets of all tensors are checked for range, size and
 * (after sorting by begin) overlap.  Nothing is read from the data area while parsing,
 * so a file that passes st_open can be used through plain pointers into the mapping.
 *
 * Layout of one open file, kept to the struct the header fixes: f->tensors is one
 * allocation holding
 *     struct st_tensor[ntensors] | uint32_t index[cap] | the names, NUL-terminated
 * where index is an open-addressing hash table (linear probing, FNV-1a, slot value =
 * tensor index + 1, 0 = empty, cap a power of two >= 2 * ntensors).  SDXL files have
 * about 2,000 tensors and the loaders look up each of them, so st_find is O(1).
 *
 * The writer emits a header in insertion order, padded with spaces to a multiple of 8,
 * and the tensors back to back in the same order with no gaps (the reference Rust
 * reader rejects gaps).  Because the header is padded, the data area starts 8-aligned
 * in the file.  The file appears atomically: PATH.tmp.PID, fsync, rename, fsync dir. */
#include "safetensors.h"
#include "../core/fs.h"
#include "st_internal.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Names and dtypes come from the file and end up in logs and HTTP replies: quote them
 * with control bytes escaped and the length bounded.  Bytes >= 0x80 pass through
 * (jansson has already validated the header as UTF-8). */
const char *st_safe_str(char *buf, size_t n, const char *s) {
    size_t o = 0;
    for (; *s && o + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    if (*s && o + 4 <= n) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = 0;
    return buf;
}

/* Bytes of a tensor, or -1 when the shape is unusable: a negative dim, or a product
 * that overflows int64.  Zero dims are counted as 1 for the overflow test so that no
 * partial product of the dims can overflow in later index arithmetic either. */
int st_shape_bytes(int ndim, const int64_t *shape, size_t elsize, uint64_t *bytes) {
    int64_t bound = (int64_t)elsize, numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] > 0 && __builtin_mul_overflow(bound, shape[i], &bound)) return -1;
        numel *= shape[i];   /* cannot overflow: |numel| <= bound */
    }
    *bytes = (uint64_t)numel * elsize;
    return 0;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

static size_t index_cap(int n) {
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;
    return cap;
}

static uint32_t *index_of(const struct st_file *f) {
    return (uint32_t *)(f->tensors + f->ntensors);
}

sd_status st_table_alloc(struct st_file *f, size_t n, size_t name_bytes, char **names) {
    size_t cap = index_cap((int)n);
    size_t table = n * sizeof(struct st_tensor) + cap * sizeof(uint32_t);
    char *block = sd_calloc(1, table + name_bytes + 1);
    if (!block) return SD_ERR_NOMEM;
    f->tensors = (struct st_tensor *)(void *)block;
    f->ntensors = (int)n;
    *names = block + table;
    return SD_OK;
}

int st_table_index(struct st_file *f, int i) {
    size_t cap = index_cap(f->ntensors);
    uint32_t *index = index_of(f);
    size_t s = (size_t)hash_name(f->tensors[i].name) & (cap - 1);
    for (; index[s]; s = (s + 1) & (cap - 1))
        if (strcmp(f->tensors[index[s] - 1].name, f->tensors[i].name) == 0) return -1;
    index[s] = (uint32_t)(i + 1);
    return 0;
}

/* ---- reader ------------------------------------------------------------------- */

/* One tensor entry: field presence and types, dtype, shape, offsets in range and
 * matching the shape.  Overlap between entries is checked afterwards. */
static sd_status parse_entry(const char *path, const char *name, json_t *v,
                             uint64_t data_size, struct st_tensor *t) {
    char nb[256], tb[64], sb[192];
    const char *qn = st_safe_str(nb, sizeof nb, name);
    if (!json_is_object(v))
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, qn);

    json_t *jdt = NULL, *jshape = NULL, *joff = NULL;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (strcmp(key, "dtype") == 0) jdt = val;
        else if (strcmp(key, "shape") == 0) jshape = val;
        else if (strcmp(key, "data_offsets") == 0) joff = val;
        else return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': unknown field '%s'", path, qn,
                            st_safe_str(tb, sizeof tb, key));
    }
    if (!jdt || !jshape || !joff)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", path, qn,
                       !jdt ? "dtype" : !jshape ? "shape" : "data_offsets");
    if (!json_is_string(jdt))
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, qn);
    if (!json_is_array(jshape))
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': shape is not an array", path, qn);
    if (!json_is_array(joff) || json_array_size(joff) != 2)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets is not an array of 2",
                       path, qn);

    /* Exactly the four storage dtypes (sd_dtype_parse is an exact, case-sensitive match);
     * F64, I32, U8, BOOL, F8_* and anything else are refused by name. */
    if (sd_dtype_parse(json_string_value(jdt), &t->dtype) != 0)
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype '%s' is not supported (F32, F16, BF16, I64 are)",
                       path, qn, st_safe_str(tb, sizeof tb, json_string_value(jdt)));

    size_t ndim = json_array_size(jshape);
    if (ndim > SD_MAX_DIMS)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': %zu dims, at most %d supported",
                       path, qn, ndim, SD_MAX_DIMS);
    t->ndim = (int)ndim;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(jshape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative "
                           "integer", path, qn, i);
        t->shape[i] = (int64_t)json_integer_value(d);
    }
    uint64_t bytes;
    if (st_shape_bytes(t->ndim, t->shape, sd_dtype_size(t->dtype), &bytes) != 0)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': shape %s %s is too large", path, qn,
                       sd_shape_str(sb, sizeof sb, t->ndim, t->shape), sd_dtype_name(t->dtype));

    for (int i = 0; i < 2; i++) {
        json_t *o = json_array_get(joff, (size_t)i);
        if (!json_is_integer(o) || json_integer_value(o) < 0)
            return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets[%d] is not a "
                           "non-negative integer", path, qn, i);
    }
    t->begin = (uint64_t)json_integer_value(json_array_get(joff, 0));
    t->end = (uint64_t)json_integer_value(json_array_get(joff, 1));
    if (t->begin > t->end)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) has begin "
                       "after end", path, qn, (unsigned long long)t->begin,
                       (unsigned long long)t->end);
    if (t->end > data_size)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) run past the "
                       "data area (%llu bytes)", path, qn, (unsigned long long)t->begin,
                       (unsigned long long)t->end, (unsigned long long)data_size);
    if (t->end - t->begin != bytes)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu) do not match "
                       "shape %s %s (%llu bytes)", path, qn, (unsigned long long)t->begin,
                       (unsigned long long)t->end,
                       sd_shape_str(sb, sizeof sb, t->ndim, t->shape),
                       sd_dtype_name(t->dtype), (unsigned long long)bytes);
    return SD_OK;
}

static sd_status check_metadata(const char *path, json_t *v) {
    char kb[128];
    if (!json_is_object(v))
        return sd_fail(SD_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
        if (!json_is_string(val))
            return sd_fail(SD_ERR_FORMAT, "%s: __metadata__ '%s' is not a string", path,
                           st_safe_str(kb, sizeof kb, key));
    return SD_OK;
}

struct span { uint64_t begin, end; int idx; };
static int cmp_span(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sort the non-empty tensors by begin; one that starts before the furthest end seen so
 * far overlaps an earlier one.  Empty tensors occupy no bytes and overlap nothing. */
static sd_status check_overlap(const char *path, const struct st_file *f) {
    if (f->ntensors < 2) return SD_OK;
    struct span *sp = sd_malloc((size_t)f->ntensors * sizeof *sp);
    if (!sp) return SD_ERR_NOMEM;
    int n = 0;
    for (int i = 0; i < f->ntensors; i++)
        if (f->tensors[i].end > f->tensors[i].begin)
            sp[n++] = (struct span){ f->tensors[i].begin, f->tensors[i].end, i };
    qsort(sp, (size_t)n, sizeof *sp, cmp_span);

    sd_status st = SD_OK;
    int last = 0;   /* the span with the furthest end so far */
    for (int k = 1; k < n; k++) {
        if (sp[k].begin < sp[last].end) {
            char a[256], b[256];
            const struct st_tensor *t = &f->tensors[sp[k].idx], *u = &f->tensors[sp[last].idx];
            st = sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' "
                         "[%llu, %llu)", path, st_safe_str(a, sizeof a, t->name),
                         (unsigned long long)t->begin, (unsigned long long)t->end,
                         st_safe_str(b, sizeof b, u->name), (unsigned long long)u->begin,
                         (unsigned long long)u->end);
            break;
        }
        if (sp[k].end > sp[last].end) last = k;
    }
    sd_free(sp);
    return st;
}

/* Parse and validate the header (already bounded) into f->tensors. */
static sd_status parse_header(struct st_file *f, const char *path, const uint8_t *hdr,
                              size_t hlen, uint64_t data_size) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sd_fail(SD_ERR_FORMAT, "%s: header is not valid JSON: %s (byte %d of %zu)",
                       path, jerr.text, jerr.position, hlen);
    sd_status st = SD_OK;
    if (!json_is_object(root)) {
        st = sd_fail(SD_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto out;
    }

    /* First pass: count tensors and their name bytes, check the metadata. */
    size_t n = 0, name_bytes = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = check_metadata(path, val)) != SD_OK) goto out;
            continue;
        }
        if (key[0] == 0) {
            st = sd_fail(SD_ERR_FORMAT, "%s: a tensor has an empty name", path);
            goto out;
        }
        n++;
        name_bytes += strlen(key) + 1;
    }
    if (n > INT32_MAX / 4) {   /* unreachable under ST_MAX_HEADER; keeps int counts safe */
        st = sd_fail(SD_ERR_FORMAT, "%s: too many tensors (%zu)", path, n);
        goto out;
    }

    char *names;
    if ((st = st_table_alloc(f, n, name_bytes, &names)) != SD_OK) goto out;

    /* Second pass: fill in header order, validating each entry and indexing its name. */
    size_t i = 0;
    const uint8_t *data = hdr + hlen;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        struct st_tensor *t = &f->tensors[i];
        size_t len = strlen(key) + 1;
        memcpy(names, key, len);
        t->name = names;
        names += len;
        if ((st = parse_entry(path, key, val, data_size, t)) != SD_OK) goto out;
        t->data = data + t->begin;
        st_table_index(f, (int)i);   /* jansson has refused duplicate names */
        i++;
    }
    st = check_overlap(path, f);
out:
    json_decref(root);
    return st;
}

sd_status st_open(struct st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    sd_status st;
    int fd = sd_open(path, O_RDONLY, 0);   /* never blocks on a FIFO (fs.h); refused below */
    if (fd < 0)
        return sd_fail(errno == ENOENT ? SD_ERR_NOTFOUND : SD_ERR_IO, "%s: cannot open: %s",
                       path, sd_fs_strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sd_fail(SD_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return sd_fail(SD_ERR_IO, "%s: is a directory, not a safetensors file", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sd_fail(SD_ERR_IO, "%s: is not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return sd_fail(SD_ERR_FORMAT, sb.st_size == 0 ? "%s: empty file, not a safetensors file"
                       : "%s: %lld bytes, too short for a safetensors header", path,
                       (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return sd_fail(SD_ERR_IO, "%s: too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return sd_fail(SD_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size,
                       strerror(map_errno));
    f->map = map;
    f->size = size;

    const uint8_t *base = map;
    if (!(f->path = sd_strdup(path))) { st = SD_ERR_NOMEM; goto fail; }
    /* A ZIP local header: torch.save's format since 1.6 (torchfile.c). */
    if (memcmp(base, "PK\x03\x04", 4) == 0) {
        if ((st = torch_parse(f)) != SD_OK) goto fail;
        return SD_OK;
    }
    uint64_t hlen = read_le64(base);
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > size - 8) {
        /* PROTO 2..5 first: a bare pickle, i.e. torch.save before 1.6 (or with
         * _use_new_zipfile_serialization=False).  Its objects can only be rebuilt by
         * running its pickle stream against torch's legacy loader; not done here. */
        if (base[0] == 0x80 && base[1] >= 2 && base[1] <= 5)
            st = sd_fail(SD_ERR_UNSUPPORTED, "%s: legacy (non-zip) PyTorch file: convert it "
                         "with torch ≥1.6 or to safetensors", path);
        else
            st = sd_fail(SD_ERR_FORMAT, "%s: header length %llu is invalid (file has %zu "
                         "bytes, limit %u)", path, (unsigned long long)hlen, size, ST_MAX_HEADER);
        goto fail;
    }
    if ((st = parse_header(f, path, base + 8, (size_t)hlen, size - 8 - hlen)) != SD_OK)
        goto fail;
    return SD_OK;
fail:
    st_close(f);
    return st;
}

void st_close(struct st_file *f) {
    if (f->map) munmap(f->map, f->size);
    sd_free(f->tensors);
    sd_free(f->path);
    memset(f, 0, sizeof *f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    if (!f->tensors || f->ntensors == 0) return NULL;
    size_t cap = index_cap(f->ntensors);
    const uint32_t *index = index_of(f);
    for (size_t s = (size_t)hash_name(name) & (cap - 1); index[s]; s = (s + 1) & (cap - 1)) {
        const struct st_tensor *t = &f->tensors[index[s] - 1];
        if (strcmp(t->name, name) == 0) return t;
    }
    return NULL;
}

int64_t st_numel(const struct st_tensor *t) { return sd_numel(t->ndim, t->shape); }

/* The mapping gives no alignment beyond the file layout (F16 data at odd offsets is
 * legal), so unaligned data is staged through an aligned buffer before conversion. */
void st_read_f32(const struct st_tensor *t, float *dst) {
    size_t n = (size_t)st_numel(t), es = sd_dtype_size(t->dtype);
    if (n == 0) return;
    if ((uintptr_t)t->data % es == 0) {
        sd_convert_to_f32(dst, t->data, t->dtype, n);
        return;
    }
    uint64_t stage[512];
    size_t chunk = sizeof stage / es;
    const uint8_t *src = t->data;
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        memcpy(stage, src + i * es, m * es);
        sd_convert_to_f32(dst + i, stage, t->dtype, m);
    }
}

void st_release(const struct st_file *f, const struct st_tensor *t) {
    uintptr_t base = (uintptr_t)f->map, lo = (uintptr_t)t->data, hi = lo + (uintptr_t)(t->end - t->begin);
    if (!f->map || lo < base || hi > base + f->size || hi <= lo) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo &= ~(page - 1);   /* file-backed and never written: dropping a neighbour's page only re-reads it */
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* ---- writer ------------------------------------------------------------------- */

void st_writer_init(struct st_writer *w) { memset(w, 0, sizeof *w); }

void st_writer_free(struct st_writer *w) {
    for (int i = 0; i < w->n; i++) {
        sd_free(w->e[i].name);
        sd_free(w->e[i].data);
    }
    sd_free(w->e);
    /* metadata_json is borrowed: the caller owns it (it may be a literal). */
    memset(w, 0, sizeof *w);
}

/* Validate and append an entry with an uninitialised buffer of the right size. */
static sd_status writer_push(struct st_writer *w, const char *name, sd_dtype dt, int ndim,
                             const int64_t *shape, struct st_wentry **out) {
    char sb[192];
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0)
        return sd_fail(SD_ERR_INVALID, "safetensors writer: invalid tensor name '%s'",
                       name ? name : "(null)");
    if (sd_dtype_size(dt) == 0)
        return sd_fail(SD_ERR_INVALID, "safetensors writer: %s: invalid dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > SD_MAX_DIMS || (ndim > 0 && !shape))
        return sd_fail(SD_ERR_INVALID, "safetensors writer: %s: %d dims", name, ndim);
    uint64_t bytes;
    if (st_shape_bytes(ndim, shape, sd_dtype_size(dt), &bytes) != 0 || bytes > SIZE_MAX / 2)
        return sd_fail(SD_ERR_INVALID, "safetensors writer: %s: bad shape %s", name,
                       sd_shape_str(sb, sizeof sb, ndim, shape));
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return sd_fail(SD_ERR_INVALID, "safetensors writer: duplicate tensor '%s'", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        struct st_wentry *e = sd_realloc(w->e, (size_t)cap * sizeof *e);
        if (!e) return SD_ERR_NOMEM;
        w->e = e;
        w->cap = cap;
    }
    struct st_wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = sd_strdup(name);
    e->data = sd_malloc(bytes ? (size_t)bytes : 1);
    if (!e->name || !e->data) {
        sd_free(e->name);
        sd_free(e->data);
        return SD_ERR_NOMEM;
    }
    e->dtype = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = (size_t)bytes;
    w->n++;
    *out = e;
    return SD_OK;
}

sd_status st_writer_add(struct st_writer *w, const char *name, sd_dtype dt, int ndim,
                        const int64_t *shape, const void *data) {
    struct st_wentry *e = NULL;
    SD_TRY(writer_push(w, name, dt, ndim, shape, &e));
    if (e->nbytes) memcpy(e->data, data, e->nbytes);
    return SD_OK;
}

sd_status st_writer_add_f32(struct st_writer *w, const char *name, sd_dtype dt, int ndim,
                            const int64_t *shape, const float *data) {
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16)
        return sd_fail(SD_ERR_INVALID, "safetensors writer: %s: fp32 data cannot be stored "
                       "as %s", name ? name : "(null)", sd_dtype_name(dt));
    struct st_wentry *e = NULL;
    SD_TRY(writer_push(w, name, dt, ndim, shape, &e));
    if (e->nbytes) sd_convert_from_f32(e->data, data, dt, e->nbytes / sd_dtype_size(dt));
    return SD_OK;
}

/* {"dtype", "shape", "data_offsets"} for one entry, in that order; NULL when jansson
 * runs out of memory. */
static json_t *header_entry(const struct st_wentry *e, uint64_t off) {
    json_t *shape = json_array(), *offs = json_array(), *ent = json_object();
    int bad = !shape || !offs || !ent;
    for (int d = 0; !bad && d < e->ndim; d++)
        bad |= json_array_append_new(shape, json_integer(e->shape[d])) != 0;
    if (!bad)
        bad = json_array_append_new(offs, json_integer((json_int_t)off)) != 0 ||
              json_array_append_new(offs, json_integer((json_int_t)(off + e->nbytes))) != 0 ||
              json_object_set_new(ent, "dtype", json_string(sd_dtype_name(e->dtype))) != 0 ||
              json_object_set(ent, "shape", shape) != 0 ||
              json_object_set(ent, "data_offsets", offs) != 0;
    json_decref(shape);
    json_decref(offs);
    if (bad) { json_decref(ent); return NULL; }
    return ent;
}

/* The header JSON text, padded with spaces to a multiple of 8, in a fresh buffer. */
static sd_status writer_header(const struct st_writer *w, char **out, size_t *out_len) {
    json_t *root = json_object();
    if (!root) return sd_fail(SD_ERR_NOMEM, "safetensors writer: out of memory");
    sd_status st = SD_OK;
    if (w->metadata_json) {
        json_error_t jerr;
        json_t *meta = json_loads(w->metadata_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!meta) {
            st = sd_fail(SD_ERR_INVALID, "safetensors writer: metadata is not valid JSON: %s",
                         jerr.text);
            goto out;
        }
        if (check_metadata("safetensors writer", meta) != SD_OK) {
            json_decref(meta);
            st = SD_ERR_INVALID;
            goto out;
        }
        json_object_set_new(root, "__metadata__", meta);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const struct st_wentry *e = &w->e[i];
        json_t *ent = header_entry(e, off);
        if (!ent || json_object_set_new(root, e->name, ent) != 0) {
            st = sd_fail(SD_ERR_NOMEM, "safetensors writer: cannot build header for '%s'",
                         e->name);
            goto out;
        }
        off += e->nbytes;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        st = sd_fail(SD_ERR_NOMEM, "safetensors writer: cannot serialise header");
        goto out;
    }
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *buf = sd_malloc(padded + 1);
    if (!buf) {
        free(text);
        st = SD_ERR_NOMEM;
        goto out;
    }
    memcpy(buf, text, len);
    memset(buf + len, ' ', padded - len);
    buf[padded] = 0;
    free(text);
    *out = buf;
    *out_len = padded;
out:
    json_decref(root);
    return st;
}

sd_status st_writer_write(struct st_writer *w, const char *path) {
    char *hdr = NULL;
    size_t hlen = 0;
    SD_TRY(writer_header(w, &hdr, &hlen));
    struct sd_atomic a;
    sd_status st = sd_atomic_begin(&a, path);
    if (st) { sd_free(hdr); return st; }
    uint8_t lenbuf[8];
    write_le64(lenbuf, hlen);
    st = sd_atomic_write(&a, lenbuf, 8);
    if (!st) st = sd_atomic_write(&a, hdr, hlen);
    for (int i = 0; i < w->n && !st; i++) st = sd_atomic_write(&a, w->e[i].data, w->e[i].nbytes);
    sd_free(hdr);
    if (st) { sd_atomic_abort(&a); return st; }
    return sd_atomic_commit(&a);
}
