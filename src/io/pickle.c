/* pickle.c — the pickle stack machine; see pickle.h for what it accepts and why.
 *
 * Opcodes read (pickletools names; torch.save writes protocol 2, the protocol 4 ones are
 * cheap and make files re-pickled by newer Pythons load too):
 *   PROTO FRAME STOP | MARK POP POP_MARK DUP | NONE NEWTRUE NEWFALSE
 *   BININT BININT1 BININT2 LONG1 BINFLOAT | BINUNICODE SHORT_BINUNICODE BINUNICODE8
 *   SHORT_BINBYTES BINBYTES | EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 | EMPTY_LIST APPEND
 *   APPENDS | EMPTY_DICT SETITEM SETITEMS | BINPUT LONG_BINPUT BINGET LONG_BINGET MEMOIZE
 *   GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID
 * Anything else (INST, OBJ, NEWOBJ, EXT*, the text protocol-0 forms, ...) is refused by
 * opcode and offset.
 *
 * The stack holds object indices.  MARK remembers the stack height; like CPython's
 * unpickler, nothing may pop below the innermost mark except the opcodes that consume
 * it.  The memo maps keys to object indices (-1: unset); objects are shared by index,
 * as Python shares them by reference.  None, True and False are objects 0, 1 and 2.
 * Tuples take their items from one pool, so a whole state dict costs a handful of
 * allocations (each growth doubles): the fault-injection sweep over a real file stays
 * short, and pk_free has few things to free. */
#include "pickle.h"

#include <stdio.h>
#include <string.h>

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
    OP_BINFLOAT = 'G', OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M', OP_NONE = 'N',
    OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINUNICODE = 'X', OP_BINBYTES = 'B',
    OP_SHORT_BINBYTES = 'C', OP_EMPTY_LIST = ']', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_SETITEMS = 'u', OP_EMPTY_DICT = '}', OP_EMPTY_TUPLE = ')',
    OP_PROTO = 0x80, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
};

enum { OBJ_NONE = 0, OBJ_TRUE = 1, OBJ_FALSE = 2 };

struct vm {
    struct pickle *p;
    const char *what;
    const uint8_t *buf;
    size_t len, pos, op_at;     /* op_at: offset of the opcode being run, for messages */
    int32_t *stack;
    uint32_t sp, cap_stack;
    uint32_t *marks;
    uint32_t nmarks, cap_marks;
    int32_t *memo;
    uint32_t cap_memo, memo_count;
};

static const char *const kind_names[] = {
    "None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict", "global",
    "storage", "tensor",
};

static sd_status bad(struct vm *v, const char *msg) {
    return sd_fail(SD_ERR_FORMAT, "%s: pickle: %s at byte %zu", v->what, msg, v->op_at);
}

/* Grow *arr (elements of size es) to hold need elements, doubling, at most max. */
static sd_status grow(struct vm *v, void **arr, uint32_t *cap, uint64_t need, size_t es,
                      uint32_t max, const char *what) {
    if (need <= *cap) return SD_OK;
    if (need > max)
        return sd_fail(SD_ERR_FORMAT, "%s: pickle: more than %u %s at byte %zu", v->what, max,
                       what, v->op_at);
    uint64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    if (c > max) c = max;
    void *n = sd_realloc(*arr, (size_t)c * es);
    if (!n) return SD_ERR_NOMEM;
    *arr = n;
    *cap = (uint32_t)c;
    return SD_OK;
}

static sd_status new_obj(struct vm *v, enum pk_kind kind, int32_t *idx) {
    struct pickle *p = v->p;
    *idx = 0;
    SD_TRY(grow(v, (void **)&p->obj, &p->cap_obj, (uint64_t)p->nobj + 1, sizeof *p->obj,
                PK_MAX_OBJECTS, "objects"));
    struct pk_obj *o = &p->obj[p->nobj];
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    *idx = (int32_t)p->nobj++;
    return SD_OK;
}

static sd_status push(struct vm *v, int32_t idx) {
    SD_TRY(grow(v, (void **)&v->stack, &v->cap_stack, (uint64_t)v->sp + 1, sizeof *v->stack,
                PK_MAX_STACK, "stack entries"));
    v->stack[v->sp++] = idx;
    return SD_OK;
}

static sd_status push_new(struct vm *v, enum pk_kind kind, struct pk_obj **out) {
    int32_t idx;
    SD_TRY(new_obj(v, kind, &idx));
    SD_TRY(push(v, idx));
    *out = &v->p->obj[idx];
    return SD_OK;
}

/* The stack height below which the current frame may not pop: the innermost mark. */
static uint32_t floor_of(const struct vm *v) { return v->nmarks ? v->marks[v->nmarks - 1] : 0; }

static sd_status pop(struct vm *v, int32_t *idx) {
    *idx = 0;
    if (v->sp <= floor_of(v)) return bad(v, "stack underflow");
    *idx = v->stack[--v->sp];
    return SD_OK;
}

static sd_status top(struct vm *v, int32_t *idx) {
    *idx = 0;
    if (v->sp <= floor_of(v)) return bad(v, "stack underflow");
    *idx = v->stack[v->sp - 1];
    return SD_OK;
}

/* Remove the innermost mark; items above it are stack[*base, sp). */
static sd_status pop_mark(struct vm *v, uint32_t *base) {
    *base = 0;
    if (v->nmarks == 0) return bad(v, "no MARK on the stack");
    *base = v->marks[--v->nmarks];
    return SD_OK;
}

static sd_status take(struct vm *v, size_t n, const uint8_t **out) {
    *out = v->buf;
    if (n > v->len - v->pos) return bad(v, "argument runs past the end");
    *out = v->buf + v->pos;
    v->pos += n;
    return SD_OK;
}

static uint64_t le(const uint8_t *b, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | b[i];
    return x;
}

/* ---- scalars and strings ------------------------------------------------------- */

static sd_status op_int(struct vm *v, int op) {
    const uint8_t *b;
    int64_t x;
    if (op == OP_BININT1 || op == OP_BININT2) {
        int n = op == OP_BININT1 ? 1 : 2;
        SD_TRY(take(v, (size_t)n, &b));
        x = (int64_t)le(b, n);
    } else if (op == OP_BININT) {
        SD_TRY(take(v, 4, &b));
        x = (int32_t)(uint32_t)le(b, 4);
    } else {   /* LONG1: u8 length, then that many bytes, little-endian two's complement */
        SD_TRY(take(v, 1, &b));
        int n = b[0];
        if (n > 8) return bad(v, "LONG1 integer wider than 64 bits");
        SD_TRY(take(v, (size_t)n, &b));
        uint64_t u = n ? le(b, n) : 0;
        if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~0ull << (8 * n);
        memcpy(&x, &u, sizeof x);
    }
    struct pk_obj *o;
    SD_TRY(push_new(v, PK_INT, &o));
    o->u.i = x;
    return SD_OK;
}

static sd_status op_float(struct vm *v) {
    const uint8_t *b;
    SD_TRY(take(v, 8, &b));
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | b[i];   /* big-endian */
    struct pk_obj *o;
    SD_TRY(push_new(v, PK_FLOAT, &o));
    memcpy(&o->u.f, &u, sizeof u);
    return SD_OK;
}

static sd_status op_string(struct vm *v, int op) {
    int w = op == OP_SHORT_BINUNICODE || op == OP_SHORT_BINBYTES ? 1
          : op == OP_BINUNICODE8 ? 8 : 4;
    const uint8_t *b;
    SD_TRY(take(v, (size_t)w, &b));
    uint64_t n = le(b, w);
    if (n > PK_MAX_STR) return bad(v, "string longer than the limit");
    SD_TRY(take(v, (size_t)n, &b));
    struct pk_obj *o;
    SD_TRY(push_new(v, op == OP_SHORT_BINBYTES || op == OP_BINBYTES ? PK_BYTES : PK_STR, &o));
    o->u.s = (const char *)b;
    o->n = (uint32_t)n;
    return SD_OK;
}

/* ---- containers ------------------------------------------------------------------ */

/* A tuple of the n stack items from base. */
static sd_status make_tuple(struct vm *v, uint32_t base, uint32_t n) {
    struct pickle *p = v->p;
    if ((p->nitems += n) > PK_MAX_ITEMS) return bad(v, "too many container items");
    SD_TRY(grow(v, (void **)&p->pool, &p->cap_pool, (uint64_t)p->npool + n, sizeof *p->pool,
                PK_MAX_ITEMS, "tuple items"));
    if (n) memcpy(p->pool + p->npool, v->stack + base, n * sizeof *p->pool);
    int32_t idx;
    SD_TRY(new_obj(v, PK_TUPLE, &idx));
    p->obj[idx].u.first = p->npool;
    p->obj[idx].n = n;
    p->npool += n;
    v->sp = base;
    return push(v, idx);
}

static sd_status op_tuple(struct vm *v, int op) {
    uint32_t base;
    if (op == OP_TUPLE) {
        SD_TRY(pop_mark(v, &base));
    } else {
        uint32_t n = op == OP_EMPTY_TUPLE ? 0 : (uint32_t)(op - OP_TUPLE1 + 1);
        if (v->sp - floor_of(v) < n) return bad(v, "stack underflow");
        base = v->sp - n;
    }
    return make_tuple(v, base, v->sp - base);
}

/* Append stack[base, sp) to the list or dict at stack[base - 1]; k items per entry. */
static sd_status extend(struct vm *v, uint32_t base, enum pk_kind kind) {
    if (base == 0 || base - 1 < floor_of(v)) return bad(v, "stack underflow");
    struct pk_obj *o = &v->p->obj[v->stack[base - 1]];
    uint32_t n = v->sp - base;
    if (o->kind != kind)
        return bad(v, kind == PK_DICT ? "SETITEM(S) on something that is not a dict"
                                      : "APPEND(S) on something that is not a list");
    if (kind == PK_DICT && n % 2) return bad(v, "SETITEMS with an odd number of items");
    if ((v->p->nitems += n) > PK_MAX_ITEMS) return bad(v, "too many container items");
    uint32_t slots = o->n * (kind == PK_DICT ? 2 : 1);
    SD_TRY(grow(v, (void **)&o->u.items, &o->cap, (uint64_t)slots + n, sizeof *o->u.items,
                PK_MAX_ITEMS, "container items"));
    if (n) memcpy(o->u.items + slots, v->stack + base, n * sizeof *o->u.items);
    o->n += kind == PK_DICT ? n / 2 : n;
    v->sp = base;
    return SD_OK;
}

static sd_status op_extend(struct vm *v, int op) {
    uint32_t base;
    if (op == OP_SETITEMS || op == OP_APPENDS) {
        SD_TRY(pop_mark(v, &base));
    } else {
        uint32_t n = op == OP_SETITEM ? 2 : 1;
        if (v->sp - floor_of(v) < n) return bad(v, "stack underflow");
        base = v->sp - n;
    }
    return extend(v, base, op == OP_SETITEM || op == OP_SETITEMS ? PK_DICT : PK_LIST);
}

/* ---- memo ------------------------------------------------------------------------ */

static sd_status memo_put(struct vm *v, uint64_t key) {
    int32_t idx;
    SD_TRY(top(v, &idx));
    if (key >= PK_MAX_MEMO) return bad(v, "memo key beyond the limit");
    uint32_t old = v->cap_memo;
    SD_TRY(grow(v, (void **)&v->memo, &v->cap_memo, key + 1, sizeof *v->memo, PK_MAX_MEMO,
                "memo entries"));
    for (uint32_t i = old; i < v->cap_memo; i++) v->memo[i] = -1;
    if (v->memo[key] < 0) v->memo_count++;
    v->memo[key] = idx;
    return SD_OK;
}

static sd_status op_memo(struct vm *v, int op) {
    const uint8_t *b;
    int w = op == OP_BINPUT || op == OP_BINGET ? 1 : 4;
    if (op == OP_MEMOIZE) return memo_put(v, v->memo_count);
    SD_TRY(take(v, (size_t)w, &b));
    uint64_t key = le(b, w);
    if (op == OP_BINPUT || op == OP_LONG_BINPUT) return memo_put(v, key);
    if (key >= v->cap_memo || v->memo[key] < 0) return bad(v, "memo key not set");
    return push(v, v->memo[key]);
}

/* ---- globals and calls ---------------------------------------------------------- */

static const struct allowed {
    const char *module, *name;
    enum pk_global g;
    sd_dtype dtype;
} allowed[] = {
    { "collections", "OrderedDict", PK_G_ORDERED_DICT, DT_F32 },
    { "torch._utils", "_rebuild_tensor_v2", PK_G_REBUILD_TENSOR_V2, DT_F32 },
    { "torch", "FloatStorage", PK_G_STORAGE, DT_F32 },
    { "torch", "HalfStorage", PK_G_STORAGE, DT_F16 },
    { "torch", "BFloat16Storage", PK_G_STORAGE, DT_BF16 },
    { "torch", "LongStorage", PK_G_STORAGE, DT_I64 },
};

static int span_is(const uint8_t *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Look module.name up in the allowlist and push it; refuse anything else by name. */
static sd_status resolve(struct vm *v, const uint8_t *mod, size_t ml, const uint8_t *name,
                         size_t nl) {
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
        if (!span_is(mod, ml, allowed[i].module) || !span_is(name, nl, allowed[i].name))
            continue;
        struct pk_obj *o;
        SD_TRY(push_new(v, PK_GLOBAL, &o));
        o->global = (uint8_t)allowed[i].g;
        o->dtype = (uint8_t)allowed[i].dtype;
        return SD_OK;
    }
    char q[200];
    size_t k = 0, tot = ml + 1 + nl;
    for (size_t i = 0; i < tot && k + 5 < sizeof q; i++) {
        uint8_t c = i < ml ? mod[i] : i == ml ? '.' : name[i - ml - 1];
        if (c < 0x20 || c >= 0x7f) k += (size_t)snprintf(q + k, sizeof q - k, "\\x%02x", c);
        else q[k++] = (char)c;
    }
    q[k] = 0;
    if (span_is(mod, ml, "torch") && nl > 7 && span_is(name + nl - 7, 7, "Storage"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: pickle: storage type '%s' is not supported "
                       "(F32, F16, BF16, I64 are) at byte %zu", v->what, q, v->op_at);
    return sd_fail(SD_ERR_FORMAT, "%s: pickle: global '%s' is not allowed (only tensor "
                   "rebuilding is; nothing was run) at byte %zu", v->what, q, v->op_at);
}

/* GLOBAL: "module\nname\n" in the opcode stream. */
static sd_status op_global(struct vm *v) {
    const uint8_t *line[2];
    size_t n[2];
    for (int k = 0; k < 2; k++) {
        const uint8_t *s = v->buf + v->pos;
        size_t room = v->len - v->pos < 256 ? v->len - v->pos : 256;
        const uint8_t *nl = memchr(s, '\n', room);
        if (!nl) return bad(v, "GLOBAL name is not a short line");
        line[k] = s;
        n[k] = (size_t)(nl - s);
        v->pos += n[k] + 1;
    }
    return resolve(v, line[0], n[0], line[1], n[1]);
}

static sd_status op_stack_global(struct vm *v) {
    int32_t mi, ni;
    SD_TRY(pop(v, &ni));
    SD_TRY(pop(v, &mi));
    const struct pk_obj *m = &v->p->obj[mi], *n = &v->p->obj[ni];
    if (m->kind != PK_STR || n->kind != PK_STR) return bad(v, "STACK_GLOBAL needs two strings");
    return resolve(v, (const uint8_t *)m->u.s, m->n, (const uint8_t *)n->u.s, n->n);
}

/* REDUCE: call(args) for the two callable globals, by building what they would return. */
static sd_status op_reduce(struct vm *v) {
    int32_t ai, fi, idx;
    SD_TRY(pop(v, &ai));
    SD_TRY(pop(v, &fi));
    const struct pk_obj *f = &v->p->obj[fi], *a = &v->p->obj[ai];
    if (f->kind != PK_GLOBAL) return bad(v, "REDUCE on something that is not a global");
    if (a->kind != PK_TUPLE) return bad(v, "REDUCE arguments are not a tuple");
    if (f->global == PK_G_ORDERED_DICT) {
        if (a->n != 0) return bad(v, "collections.OrderedDict called with arguments");
        SD_TRY(new_obj(v, PK_DICT, &idx));
    } else if (f->global == PK_G_REBUILD_TENSOR_V2) {
        SD_TRY(new_obj(v, PK_TENSOR, &idx));
        v->p->obj[idx].ref = ai;
    } else {
        return bad(v, "a storage class is only accepted in a persistent id");
    }
    return push(v, idx);
}

/* BUILD sets attributes; only an OrderedDict's (a state dict's _metadata) are expected,
 * and they are not needed. */
static sd_status op_build(struct vm *v) {
    int32_t si, ti;
    SD_TRY(pop(v, &si));
    SD_TRY(top(v, &ti));
    uint8_t sk = v->p->obj[si].kind, tk = v->p->obj[ti].kind;
    if (tk != PK_DICT || (sk != PK_DICT && sk != PK_NONE)) {
        char msg[96];
        snprintf(msg, sizeof msg, "BUILD of a %s with a %s state is not supported",
                 kind_names[tk], kind_names[sk]);
        return bad(v, msg);
    }
    return SD_OK;
}

/* BINPERSID: torch names a storage ('storage', class, key, location, numel). */
static sd_status op_persid(struct vm *v) {
    int32_t ti, idx;
    SD_TRY(pop(v, &ti));
    const struct pickle *p = v->p;
    const struct pk_obj *t = &p->obj[ti];
    if (t->kind != PK_TUPLE || t->n != 5)
        return bad(v, "persistent id is not a 5-tuple ('storage', class, key, location, numel)");
    const struct pk_obj *tag = &p->obj[pk_item(p, t, 0)], *cls = &p->obj[pk_item(p, t, 1)];
    const struct pk_obj *key = &p->obj[pk_item(p, t, 2)], *loc = &p->obj[pk_item(p, t, 3)];
    const struct pk_obj *numel = &p->obj[pk_item(p, t, 4)];
    if (!pk_str_is(tag, "storage") || cls->kind != PK_GLOBAL || cls->global != PK_G_STORAGE ||
        key->kind != PK_STR || key->n == 0 || key->n > 64 || loc->kind != PK_STR ||
        numel->kind != PK_INT || numel->u.i < 0)
        return bad(v, "persistent id is not ('storage', class, key, location, numel)");
    uint8_t dtype = cls->dtype;
    int64_t count = numel->u.i;
    int32_t key_idx = pk_item(p, t, 2);
    SD_TRY(new_obj(v, PK_STORAGE, &idx));   /* may move p->obj: no pointers past here */
    v->p->obj[idx].dtype = dtype;
    v->p->obj[idx].ref = key_idx;
    v->p->obj[idx].u.i = count;
    return push(v, idx);
}

/* ---- the loop ---------------------------------------------------------------------- */

static sd_status op_stack(struct vm *v, int op, int *stop) {
    int32_t idx;
    uint32_t base;
    switch (op) {
    case OP_MARK:
        SD_TRY(grow(v, (void **)&v->marks, &v->cap_marks, (uint64_t)v->nmarks + 1,
                    sizeof *v->marks, PK_MAX_MARKS, "nested MARKs"));
        v->marks[v->nmarks++] = v->sp;
        return SD_OK;
    case OP_POP:   /* with nothing above the mark it discards the mark, as CPython's */
        if (v->sp > floor_of(v)) { v->sp--; return SD_OK; }
        SD_TRY(pop_mark(v, &base));
        v->sp = base;
        return SD_OK;
    case OP_POP_MARK:
        SD_TRY(pop_mark(v, &base));
        v->sp = base;
        return SD_OK;
    case OP_DUP:
        SD_TRY(top(v, &idx));
        return push(v, idx);
    case OP_STOP:
        if (v->nmarks != 0 || v->sp != 1) return bad(v, "STOP with a stack that is not one item");
        v->p->root = v->stack[0];
        *stop = 1;
        return SD_OK;
    }
    return bad(v, "internal: not a stack opcode");
}

static sd_status step(struct vm *v, int op, int *stop) {
    const uint8_t *b;
    struct pk_obj *o;
    switch (op) {
    case OP_PROTO:
        SD_TRY(take(v, 1, &b));
        return b[0] >= 2 && b[0] <= 5 ? SD_OK : bad(v, "protocol is not 2 to 5");
    case OP_FRAME:
        SD_TRY(take(v, 8, &b));
        return le(b, 8) <= v->len - v->pos ? SD_OK : bad(v, "FRAME runs past the end");
    case OP_MARK: case OP_POP: case OP_POP_MARK: case OP_DUP: case OP_STOP:
        return op_stack(v, op, stop);
    case OP_NONE: return push(v, OBJ_NONE);
    case OP_NEWTRUE: return push(v, OBJ_TRUE);
    case OP_NEWFALSE: return push(v, OBJ_FALSE);
    case OP_BININT: case OP_BININT1: case OP_BININT2: case OP_LONG1:
        return op_int(v, op);
    case OP_BINFLOAT: return op_float(v);
    case OP_BINUNICODE: case OP_SHORT_BINUNICODE: case OP_BINUNICODE8:
    case OP_BINBYTES: case OP_SHORT_BINBYTES:
        return op_string(v, op);
    case OP_EMPTY_TUPLE: case OP_TUPLE: case OP_TUPLE1: case OP_TUPLE2: case OP_TUPLE3:
        return op_tuple(v, op);
    case OP_EMPTY_LIST: return push_new(v, PK_LIST, &o);
    case OP_EMPTY_DICT: return push_new(v, PK_DICT, &o);
    case OP_APPEND: case OP_APPENDS: case OP_SETITEM: case OP_SETITEMS:
        return op_extend(v, op);
    case OP_BINPUT: case OP_LONG_BINPUT: case OP_BINGET: case OP_LONG_BINGET: case OP_MEMOIZE:
        return op_memo(v, op);
    case OP_GLOBAL: return op_global(v);
    case OP_STACK_GLOBAL: return op_stack_global(v);
    case OP_REDUCE: return op_reduce(v);
    case OP_BUILD: return op_build(v);
    case OP_BINPERSID: return op_persid(v);
    }
    char msg[64];
    snprintf(msg, sizeof msg, "opcode 0x%02x is not supported", op);
    return bad(v, msg);
}

sd_status pk_load(struct pickle *p, const char *what, const uint8_t *buf, size_t len) {
    memset(p, 0, sizeof *p);
    struct vm v = { .p = p, .what = what, .buf = buf, .len = len };
    if (len > PK_MAX_PICKLE)
        return sd_fail(SD_ERR_FORMAT, "%s: pickle of %zu bytes is over the limit (%u)", what,
                       len, PK_MAX_PICKLE);
    sd_status st = SD_OK;
    int32_t idx;
    for (int k = 0; k < 3 && st == SD_OK; k++) st = new_obj(&v, k ? PK_BOOL : PK_NONE, &idx);
    if (st == SD_OK) p->obj[OBJ_TRUE].u.i = 1;
    int stop = 0;
    while (st == SD_OK && !stop) {
        if (v.pos >= len) {
            v.op_at = len;
            st = bad(&v, "ends without STOP");
            break;
        }
        v.op_at = v.pos;
        st = step(&v, buf[v.pos++], &stop);
    }
    sd_free(v.stack);
    sd_free(v.marks);
    sd_free(v.memo);
    return st;
}

void pk_free(struct pickle *p) {
    for (uint32_t i = 0; i < p->nobj; i++)
        if (p->obj[i].kind == PK_LIST || p->obj[i].kind == PK_DICT) sd_free(p->obj[i].u.items);
    sd_free(p->obj);
    sd_free(p->pool);
    memset(p, 0, sizeof *p);
}

int32_t pk_item(const struct pickle *p, const struct pk_obj *o, uint32_t k) {
    SD_ASSERT(k < o->n && (o->kind == PK_TUPLE || o->kind == PK_LIST));
    return o->kind == PK_TUPLE ? p->pool[o->u.first + k] : o->u.items[k];
}

int pk_str_is(const struct pk_obj *o, const char *s) {
    return o->kind == PK_STR && strlen(s) == o->n && memcmp(o->u.s, s, o->n) == 0;
}
