/* pickle.h — a pickle interpreter for PyTorch checkpoints that builds data, never code.
 *
 * torch.save writes the object tree as a Python pickle (protocol 2) in ARCHIVE/data.pkl.
 * Unpickling in Python means calling whatever GLOBAL names, so a checkpoint can run
 * os.system on load.  This interpreter is a small stack machine that knows only the
 * opcodes torch writes for state dicts (see pickle.c for the list) and only these
 * globals, none of which it ever calls; it records what a call would build:
 *   collections.OrderedDict            () -> an empty dict (PK_DICT)
 *   torch._utils._rebuild_tensor_v2    (args) -> PK_TENSOR holding the args tuple,
 *                                      checked by the caller, who knows the tensor's name
 *   torch.FloatStorage / HalfStorage / BFloat16Storage / LongStorage
 *                                      only inside the persistent id that names a
 *                                      storage: ('storage', class, key, location, numel)
 *                                      -> PK_STORAGE
 * Any other global is refused with a message naming it (module.name); other torch
 * storage classes are refused as unsupported dtypes.  BUILD is accepted only on a dict
 * (an OrderedDict's attributes, e.g. a state dict's _metadata) and ignored.
 *
 * Everything is bounded (PK_MAX_*): the pickle length, objects, stack, mark depth, memo
 * keys, container items, string lengths.  No recursion: the interpreter is a loop, and
 * objects refer to each other by index, so cycles made through the memo are harmless.
 * Strings point into the caller's buffer (not NUL-terminated), so the buffer must
 * outlive the struct pickle.  All memory is owned by the struct pickle: pk_free frees it
 * on every path, including a failed pk_load. */
#ifndef SD_PICKLE_H
#define SD_PICKLE_H

#include "../core/tensor.h"

#define PK_MAX_PICKLE (256u << 20)
#define PK_MAX_OBJECTS (1u << 22)
#define PK_MAX_STACK (1u << 20)
#define PK_MAX_MARKS 4096u
#define PK_MAX_MEMO (1u << 22)
#define PK_MAX_ITEMS (1u << 24)
#define PK_MAX_STR (1u << 20)

enum pk_kind {
    PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES, PK_TUPLE, PK_LIST, PK_DICT,
    PK_GLOBAL, PK_STORAGE, PK_TENSOR,
};

enum pk_global { PK_G_ORDERED_DICT, PK_G_REBUILD_TENSOR_V2, PK_G_STORAGE };

struct pk_obj {
    uint8_t kind;       /* enum pk_kind */
    uint8_t global;     /* PK_GLOBAL: enum pk_global */
    uint8_t dtype;      /* PK_GLOBAL storage class and PK_STORAGE: sd_dtype */
    uint32_t n;         /* STR/BYTES: bytes; TUPLE/LIST: items; DICT: key-value pairs */
    uint32_t cap;       /* LIST/DICT: allocated item slots */
    int32_t ref;        /* STORAGE: its key (a STR); TENSOR: its args (a TUPLE) */
    union {
        int64_t i;          /* BOOL, INT; STORAGE: numel */
        double f;           /* FLOAT */
        const char *s;      /* STR, BYTES: into the pickle buffer */
        uint32_t first;     /* TUPLE: its first item in pickle.pool */
        int32_t *items;     /* LIST: items; DICT: key, value, key, value, ... */
    } u;
};

struct pickle {
    struct pk_obj *obj;
    uint32_t nobj, cap_obj;
    int32_t *pool;          /* tuple items */
    uint32_t npool, cap_pool;
    uint64_t nitems;        /* all container items, for PK_MAX_ITEMS */
    int32_t root;           /* the object STOP returned */
};

/* Interpret buf[0, len).  what names the source in messages ("PATH: ARCHIVE/data.pkl").
 * On failure the message names what, the byte offset and the opcode or global; p is
 * still to be pk_free'd (it is always safe to call). */
sd_status pk_load(struct pickle *p, const char *what, const uint8_t *buf, size_t len);
void pk_free(struct pickle *p);

static inline const struct pk_obj *pk_get(const struct pickle *p, int32_t i) {
    return &p->obj[i];
}
/* Item k of a TUPLE or LIST (k < n). */
int32_t pk_item(const struct pickle *p, const struct pk_obj *o, uint32_t k);
/* 1 when o is a STR equal to s. */
int pk_str_is(const struct pk_obj *o, const char *s);

#endif
