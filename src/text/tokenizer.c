/* tokenizer.c — CLIP byte-level BPE with the ids of transformers' CLIPTokenizer.
 *
 * The reference is the tokenizer that made the golden fixture: transformers 5.x (its model
 * configs say 5.17.0), whose CLIPTokenizer is the Rust `tokenizers` library, not the slow
 * Python class of transformers 4 (that one dropped control characters, put spaces around
 * CJK ideographs, treated "\x1c" as a space and applied the final-sigma rule; on ASCII
 * prompts the two agree).  Steps, in the reference's order:
 *
 *   1. UTF-8 -> code points; an ill-formed sequence becomes one U+FFFD per maximal subpart,
 *      as Python's bytes.decode("utf-8", "replace") makes the str the reference would see.
 *   2. Added tokens whose `normalized` flag is false (tokenizer_2's pad "!", tokenizer's
 *      "<|endoftext|>") are cut out of the raw text, leftmost-longest, and emit their id.
 *   3. Each piece between: NFC, then lowercase one code point at a time (so no final
 *      sigma).  The reference also rewrites \s+ to " "; step 5 drops whitespace anyway.
 *   4. Added tokens with `normalized` true are cut out of the normalized piece.
 *   5. The CLIP split: at each position the first alternative that matches of
 *      <|startoftext|> <|endoftext|> 's 't 're 've 'm 'll 'd \p{L}+ \p{N} [^\s\p{L}\p{N}]+;
 *      whitespace matches none and is dropped.  The byte-level pre-tokenizer's GPT-2 regex
 *      then cuts the two special literals into "<|", the word, "|>" and leaves the rest.
 *   6. Each word's UTF-8 bytes map to byte symbols, the last with "</w>"; BPE merges the
 *      lowest-ranked adjacent pair (leftmost on ties) until none is ranked.
 *
 * Which flag an added token has depends on how the folder spells it (see load_specials);
 * it is why "<|ENDOFTEXT|>" is plain text for `tokenizer` but id 49407 for `tokenizer_2`.
 * BPE works on ids: vocab and merges are open-addressing hash tables built once at load,
 * so encoding does no string lookups.  The struct is immutable after load; each encode
 * allocates its own scratch. */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_data.h"

/* ---- small growable buffers ------------------------------------------------------- */


int tok_cpvec_reserve(struct cpvec *v, size_t need) {
    if (need <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < need) cap *= 2;
    uint32_t *p = sd_realloc(v->p, cap * sizeof *p);
    if (!p) return -1;
    v->p = p;
    v->cap = cap;
    return 0;
}

static int cpvec_push(struct cpvec *v, uint32_t cp) {
    if (v->n == v->cap && tok_cpvec_reserve(v, v->n + 1)) return -1;
    v->p[v->n++] = cp;
    return 0;
}

void tok_cpvec_free(struct cpvec *v) { sd_free(v->p); v->p = NULL; v->n = v->cap = 0; }


void tok_sink_put(struct sink *s, int id) {
    if (s->n < s->cap) s->ids[s->n] = id;
    s->n++;
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

/* Decode with U+FFFD for each maximal ill-formed subpart (Unicode §3.9, as CPython). */
int tok_utf8_decode(const unsigned char *s, size_t n, struct cpvec *out) {
    if (tok_cpvec_reserve(out, out->n + n)) return -1;   /* never more code points than bytes */
    size_t i = 0;
    while (i < n) {
        unsigned b = s[i];
        if (b < 0x80) { out->p[out->n++] = b; i++; continue; }
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (b >= 0xC2 && b <= 0xDF) { need = 1; cp = b & 0x1F; }
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2; cp = b & 0x0F;
            if (b == 0xE0) lo = 0xA0;          /* no overlongs */
            if (b == 0xED) hi = 0x9F;          /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3; cp = b & 0x07;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;          /* nothing past U+10FFFF */
        } else { out->p[out->n++] = 0xFFFD; i++; continue; }
        size_t j = i + 1;
        int k = 0;
        for (; k < need && j < n; k++, j++) {
            unsigned c = s[j];
            if (c < lo || c > hi) break;
            cp = cp << 6 | (c & 0x3F);
            lo = 0x80;
            hi = 0xBF;
        }
        out->p[out->n++] = k == need ? cp : 0xFFFD;
        i = j;                                 /* the offending byte starts afresh */
    }
    return 0;
}

int tok_utf8_encode(uint32_t cp, unsigned char *o) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = 0xC0 | cp >> 6; o[1] = 0x80 | (cp & 0x3F); return 2; }
    if (cp < 0x10000) {
        o[0] = 0xE0 | cp >> 12; o[1] = 0x80 | (cp >> 6 & 0x3F); o[2] = 0x80 | (cp & 0x3F);
        return 3;
    }
    o[0] = 0xF0 | cp >> 18; o[1] = 0x80 | (cp >> 12 & 0x3F);
    o[2] = 0x80 | (cp >> 6 & 0x3F); o[3] = 0x80 | (cp & 0x3F);
    return 4;
}

/* ---- normalization: NFC, then per-character lowercase ------------------------------ */

static int decompose_push(struct cpvec *v, uint32_t cp) {
    uint32_t d[2];
    int k = uc_decompose(cp, d);
    if (k == 0) return cpvec_push(v, cp);
    if (decompose_push(v, d[0])) return -1;
    return k == 2 ? decompose_push(v, d[1]) : 0;
}

/* NFC of in[0..n) appended to out (UAX #15: decompose, reorder, compose). */
static int nfc_append(const uint32_t *in, size_t n, struct cpvec *out) {
    size_t base = out->n, i;
    for (i = 0; i < n && in[i] < 0x300; i++) {}
    if (i == n) {   /* below U+0300 nothing decomposes under NFC or combines */
        if (tok_cpvec_reserve(out, out->n + n)) return -1;
        memcpy(out->p + out->n, in, n * sizeof *in);
        out->n += n;
        return 0;
    }
    for (i = 0; i < n; i++)
        if (decompose_push(out, in[i])) return -1;
    uint32_t *p = out->p + base;
    size_t m = out->n - base;
    for (i = 1; i < m; i++) {   /* stable sort each run of non-starters by class */
        uint32_t x = p[i];
        int c = uc_ccc(x);
        if (c == 0) continue;
        size_t j = i;
        while (j > 0 && uc_ccc(p[j - 1]) > c) { p[j] = p[j - 1]; j--; }
        p[j] = x;
    }
    size_t o = 0;
    long starter = -1;
    for (i = 0; i < m; i++) {
        uint32_t cp = p[i];
        int c = uc_ccc(cp);
        if (starter >= 0) {
            /* blocked unless adjacent to the starter or after a lower non-zero class */
            int last = o - 1 == (size_t)starter ? -1 : uc_ccc(p[o - 1]);
            if (last == -1 || (last != 0 && last < c)) {
                uint32_t comp = uc_compose(p[starter], cp);
                if (comp) { p[starter] = comp; continue; }
            }
        }
        if (c == 0) starter = (long)o;
        p[o++] = cp;
    }
    out->n = base + o;
    return 0;
}

static int lower_append(const uint32_t *in, size_t n, struct cpvec *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = in[i], l[3];
        if (cp < 0x80) {
            if (cpvec_push(out, cp >= 'A' && cp <= 'Z' ? cp + 32 : cp)) return -1;
            continue;
        }
        int k = uc_lower(cp, l);
        for (int j = 0; j < k; j++)
            if (cpvec_push(out, l[j])) return -1;
    }
    return 0;
}

/* The reference's normalizer: NFC, then lowercase.  tmp is scratch. */
int tok_normalize(const uint32_t *in, size_t n, struct cpvec *tmp, struct cpvec *out) {
    tmp->n = 0;
    out->n = 0;
    if (nfc_append(in, n, tmp)) return -1;
    return lower_append(tmp->p, tmp->n, out);
}

/* ---- vocab and merges hash tables -------------------------------------------------- */

static uint32_t hash_bytes(const void *s, size_t n) {
    const unsigned char *p = s;
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 16777619u; }
    return h;
}

static uint32_t hash_pair(uint32_t a, uint32_t b) {
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32) ^ (uint32_t)x;
}

static int vocab_find(const struct tokenizer *t, const char *s, size_t n) {
    for (uint32_t i = hash_bytes(s, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        const char *v = t->strings + t->str_off[id];
        if (strncmp(v, s, n) == 0 && v[n] == 0) return id;
    }
}

const struct merge_slot *tok_merge_find(const struct tokenizer *t, uint32_t a, uint32_t b) {
    for (uint32_t i = hash_pair(a, b) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const struct merge_slot *m = &t->merges[i];
        if (m->rank < 0) return NULL;
        if (m->a == a && m->b == b) return m;
    }
}

static uint32_t table_size(size_t n) {   /* power of two, at most half full */
    uint32_t s = 16;
    while (s < 2 * n) s *= 2;
    return s;
}

/* ---- loading ------------------------------------------------------------------------ */

/* Parse dir/name as a JSON object.  Missing and optional: *out = NULL. */
static sd_status load_json(const char *dir, const char *name, int optional, size_t flags,
                           json_t **out) {
    *out = NULL;
    char *path = sd_path_join(dir, name), *data = NULL;
    if (!path) return SD_ERR_NOMEM;
    size_t len;
    sd_status st = sd_read_file(path, TOK_MAX_FILE, &data, &len);
    if (st != SD_OK) {
        if (st == SD_ERR_NOTFOUND && optional) st = SD_OK;
        else if (st == SD_ERR_NOTFOUND) st = sd_fail(st, "tokenizer: %s: no such file", path);
        else st = sd_wrap(st, "tokenizer");
        sd_free(path);
        return st;
    }
    json_error_t err;
    json_t *root = json_loadb(data, len, flags, &err);
    sd_free(data);
    if (!root) st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s: line %d: %s", path, err.line, err.text);
    else if (!json_is_object(root)) {
        json_decref(root);
        st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s: not a JSON object", path);
    } else *out = root;
    sd_free(path);
    return st;
}

static sd_status load_vocab(struct tokenizer *t, const char *dir) {
    json_t *root;
    sd_status st = load_json(dir, "vocab.json", 0, 0, &root);
    if (st != SD_OK) return st;
    const char *key;
    json_t *val;
    size_t count = 0, bytes = 0;
    json_int_t max_id = -1;
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TOK_MAX_ID) {
            st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s/vocab.json: \"%s\": id must be an "
                         "integer in [0, %d)", dir, key, TOK_MAX_ID);
            goto done;
        }
        if (id > max_id) max_id = id;
        count++;
        bytes += strlen(key) + 1;
    }
    if (count == 0 || bytes >= UINT32_MAX) {
        st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s/vocab.json: %s", dir,
                     count ? "too large" : "empty vocabulary");
        goto done;
    }
    t->n_ids = (int)max_id + 1;
    t->vocab_mask = table_size(count) - 1;
    t->strings = sd_malloc(bytes);
    t->str_off = sd_malloc((size_t)t->n_ids * sizeof *t->str_off);
    t->vocab_slots = sd_malloc(((size_t)t->vocab_mask + 1) * sizeof *t->vocab_slots);
    if (!t->strings || !t->str_off || !t->vocab_slots) { st = SD_ERR_NOMEM; goto done; }
    memset(t->str_off, 0xFF, (size_t)t->n_ids * sizeof *t->str_off);
    memset(t->vocab_slots, 0xFF, ((size_t)t->vocab_mask + 1) * sizeof *t->vocab_slots);
    size_t off = 0;
    json_object_foreach(root, key, val) {
        int id = (int)json_integer_value(val);
        size_t n = strlen(key);
        if (t->str_off[id] != UINT32_MAX) {
            st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s/vocab.json: id %d is given to both "
                         "\"%s\" and \"%s\"", dir, id, t->strings + t->str_off[id], key);
            goto done;
        }
        memcpy(t->strings + off, key, n + 1);
        t->str_off[id] = (uint32_t)off;
        off += n + 1;
        uint32_t i = hash_bytes(key, n) & t->vocab_mask;
        while (t->vocab_slots[i] >= 0) i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = id;   /* JSON object keys are unique: no duplicate strings */
    }
done:
    json_decref(root);
    return st;
}

static sd_status load_merges(struct tokenizer *t, const char *dir) {
    char *path = sd_path_join(dir, "merges.txt"), *data = NULL;
    if (!path) return SD_ERR_NOMEM;
    size_t len;
    sd_status st = sd_read_file(path, TOK_MAX_FILE, &data, &len);
    if (st != SD_OK) {
        st = st == SD_ERR_NOTFOUND ? sd_fail(st, "tokenizer: %s: no such file", path)
                                   : sd_wrap(st, "tokenizer");
        goto done;
    }
    if (memchr(data, 0, len)) {
        st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s: contains a NUL byte", path);
        goto done;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    t->merge_mask = table_size(lines) - 1;
    t->merges = sd_malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges) { st = SD_ERR_NOMEM; goto done; }
    for (size_t i = 0; i <= t->merge_mask; i++) t->merges[i].rank = -1;
    char buf[TOK_MAX_MERGE_LINE];
    int lineno = 0;
    for (char *line = data, *next; line < data + len; line = next) {
        char *eol = memchr(line, '\n', (size_t)(data + len - line));
        next = eol ? eol + 1 : data + len;
        size_t n = (size_t)((eol ? eol : data + len) - line);
        lineno++;
        if (n && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        if (lineno == 1 && n >= 8 && memcmp(line, "#version", 8) == 0) continue;
        char *sp = memchr(line, ' ', n);
        size_t na = sp ? (size_t)(sp - line) : 0, nb = sp ? n - na - 1 : 0;
        if (!sp || na == 0 || nb == 0 || memchr(sp + 1, ' ', nb) || n >= sizeof buf) {
            st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s:%d: expected \"left right\"", path,
                         lineno);
            goto done;
        }
        memcpy(buf, line, na);
        memcpy(buf + na, sp + 1, nb);
        int a = vocab_find(t, line, na), b = vocab_find(t, sp + 1, nb),
            m = vocab_find(t, buf, na + nb);
        if (a < 0 || b < 0 || m < 0) {
            buf[na + nb] = 0;
            st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s:%d: \"%.*s\" is not in vocab.json",
                         path, lineno, a < 0 ? (int)na : b < 0 ? (int)nb : (int)(na + nb),
                         a < 0 ? line : b < 0 ? sp + 1 : buf);
            goto done;
        }
        /* A repeated pair keeps its last rank, as the reference's map does. */
        uint32_t i = hash_pair((uint32_t)a, (uint32_t)b) & t->merge_mask;
        while (t->merges[i].rank >= 0 &&
               !(t->merges[i].a == (uint32_t)a && t->merges[i].b == (uint32_t)b))
            i = (i + 1) & t->merge_mask;
        t->merges[i] = (struct merge_slot){ (uint32_t)a, (uint32_t)b, t->n_merges++, m };
    }
done:
    sd_free(data);
    sd_free(path);
    return st;
}

/* Decode a token's content to code points; 0 on success, 1 if empty or too long.  The
 * buffer is on the stack so this cannot fail for want of memory. */
static int content_cps(const char *s, uint32_t *cp, int *len) {
    uint32_t buf[4 * TOK_MAX_ADDED_LEN];
    size_t n = strlen(s);
    if (n == 0 || n > 4 * TOK_MAX_ADDED_LEN) return 1;
    struct cpvec v = { buf, 0, 4 * TOK_MAX_ADDED_LEN };
    tok_utf8_decode((const unsigned char *)s, n, &v);   /* fits: never more cps than bytes */
    if (v.n > TOK_MAX_ADDED_LEN) return 1;
    memcpy(cp, v.p, v.n * sizeof *cp);
    *len = (int)v.n;
    return 0;
}

/* Register an added token.  If its content is already known, override decides: the later
 * spelling's flag wins, or the first one stays. */
static sd_status add_token(struct tokenizer *t, const char *file, const char *content, int id,
                           int normalized, int override) {
    uint32_t raw[TOK_MAX_ADDED_LEN];
    int n;
    if (content_cps(content, raw, &n))
        return sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: %s: token \"%s\": empty or longer "
                       "than %d characters", file, content, TOK_MAX_ADDED_LEN);
    for (int i = 0; i < t->n_added; i++) {
        struct added_token *a = &t->added[i];
        if (a->raw_len == n && memcmp(a->raw, raw, (size_t)n * sizeof *raw) == 0) {
            if (override) {
                a->normalized = normalized;
                a->id = id;
            }
            return SD_OK;
        }
    }
    if (t->n_added == TOK_MAX_ADDED)
        return sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: %s: more than %d added tokens", file,
                       TOK_MAX_ADDED);
    struct added_token *a = &t->added[t->n_added++];
    memcpy(a->raw, raw, (size_t)n * sizeof *raw);
    a->raw_len = n;
    a->id = id;
    a->normalized = normalized;
    return SD_OK;
}

/* A token spelled "text" or {"content": "text", "normalized": bool, ...}; *content = NULL
 * when v is absent or null. */
static sd_status token_spec(json_t *v, const char *file, const char *key, const char **content,
                            int *normalized) {
    *content = NULL;
    *normalized = 0;   /* a plain string is an AddedToken(normalized=False) */
    if (!v || json_is_null(v)) return SD_OK;
    if (json_is_string(v)) { *content = json_string_value(v); return SD_OK; }
    json_t *c = json_is_object(v) ? json_object_get(v, "content") : NULL;
    if (!json_is_string(c))
        return sd_fail(SD_ERR_FORMAT, "tokenizer: %s: %s: expected a string or an object with "
                       "\"content\"", file, key);
    *content = json_string_value(c);
    *normalized = json_is_true(json_object_get(v, "normalized"));
    static const char *const unsupported[] = { "lstrip", "rstrip", "single_word" };
    for (int i = 0; i < 3; i++)
        if (json_is_true(json_object_get(v, unsupported[i])))
            return sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: %s: %s: \"%s\": true is not "
                           "supported", file, key, unsupported[i]);
    return SD_OK;
}

/* Special tokens, as transformers 5 reads them:
 *  - bos/eos/unk/pad come from special_tokens_map.json, else tokenizer_config.json, else the
 *    CLIP defaults; each must be in vocab.json;
 *  - tokenizer_config.json's "added_tokens_decoder", when present, lists added tokens and
 *    their flags first, and its flags stand; the four attributes then add what is missing;
 *  - without it the four attributes are the added tokens, in that order, a later spelling of
 *    the same content overriding an earlier one's flag: `tokenizer` spells pad as the plain
 *    string "<|endoftext|>", so its eos is matched un-normalized (case-sensitive). */
static sd_status load_specials(struct tokenizer *t, const char *dir) {
    static const char *const names[4] = { "bos_token", "eos_token", "unk_token", "pad_token" };
    static const char *const defaults[4] = { "<|startoftext|>", "<|endoftext|>",
                                             "<|endoftext|>", "<|endoftext|>" };
    json_t *smap = NULL, *cfg = NULL;
    sd_status st = load_json(dir, "special_tokens_map.json", 1, 0, &smap);
    if (st == SD_OK)
        st = load_json(dir, "tokenizer_config.json", 1, JSON_DECODE_INT_AS_REAL, &cfg);
    if (st != SD_OK) goto done;
    json_t *decoder = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (decoder && !json_is_object(decoder)) {
        st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s/tokenizer_config.json: added_tokens_decoder:"
                     " not an object", dir);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(decoder, key, v) {
        const char *content;
        int normalized;
        char *end;
        long id = strtol(key, &end, 10);
        if ((st = token_spec(v, "tokenizer_config.json", key, &content, &normalized)))
            goto done;
        if (*end || !content || vocab_find(t, content, strlen(content)) != id) {
            st = sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: %s/tokenizer_config.json: "
                         "added_tokens_decoder: %s: not the vocab.json id of its content",
                         dir, key);
            goto done;
        }
        if ((st = add_token(t, "tokenizer_config.json", content, (int)id, normalized, 1)))
            goto done;
    }
    int ids[4];
    for (int i = 0; i < 4; i++) {
        const char *file = "special_tokens_map.json", *content;
        int normalized;
        v = smap ? json_object_get(smap, names[i]) : NULL;
        if (!v || json_is_null(v)) {
            file = "tokenizer_config.json";
            v = cfg ? json_object_get(cfg, names[i]) : NULL;
        }
        if ((st = token_spec(v, file, names[i], &content, &normalized)) != SD_OK) goto done;
        if (!content) content = defaults[i];
        ids[i] = vocab_find(t, content, strlen(content));
        if (ids[i] < 0) {
            st = sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: %s/%s: %s \"%s\" is not in "
                         "vocab.json", dir, file, names[i], content);
            goto done;
        }
        if ((st = add_token(t, file, content, ids[i], normalized, decoder == NULL)))
            goto done;
    }
    t->bos_id = ids[0];
    t->eos_id = ids[1];
    t->unk_id = ids[2];
    t->pad_id = ids[3];
    /* transformers writes int(1e30) for "no limit" (hence JSON_DECODE_INT_AS_REAL when
     * parsing): then, or past TOK_MAX_LENGTH, keep CLIP's 77, the text encoders' length. */
    t->max_length = TOK_DEFAULT_MAX_LENGTH;
    json_t *ml = cfg ? json_object_get(cfg, "model_max_length") : NULL;
    if (ml && !json_is_null(ml)) {
        double len = json_is_number(ml) ? json_number_value(ml) : -1;
        if (!(len >= 2) || len != floor(len)) {
            st = sd_fail(SD_ERR_FORMAT, "tokenizer: %s/tokenizer_config.json: model_max_length"
                         " must be an integer >= 2", dir);
            goto done;
        }
        if (len <= TOK_MAX_LENGTH) t->max_length = (int)len;
    }
done:
    json_decref(smap);
    json_decref(cfg);
    return st;
}

/* What the added tokens match: their content, NFC'd and lowercased if normalized. */
static sd_status prepare_added(struct tokenizer *t) {
    struct cpvec tmp = { 0 }, out = { 0 };
    sd_status st = SD_OK;
    for (int i = 0; i < t->n_added; i++) {
        struct added_token *a = &t->added[i];
        if (!a->normalized) {
            memcpy(a->cp, a->raw, (size_t)a->raw_len * sizeof *a->cp);
            a->len = a->raw_len;
            continue;
        }
        if (tok_normalize(a->raw, (size_t)a->raw_len, &tmp, &out)) { st = SD_ERR_NOMEM; break; }
        if (out.n == 0 || out.n > TOK_MAX_ADDED_LEN) {
            st = sd_fail(SD_ERR_UNSUPPORTED, "tokenizer: added token %d: too long once "
                         "normalized", a->id);
            break;
        }
        memcpy(a->cp, out.p, out.n * sizeof *a->cp);
        a->len = (int)out.n;
    }
    tok_cpvec_free(&tmp);
    tok_cpvec_free(&out);
    return st;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to
 * U+0100.. in byte order.  Each byte's symbol (and symbol + "</w>") must be in the vocab;
 * if not, the reference uses the unk token. */
static void load_bytes(struct tokenizer *t) {
    uint32_t extra = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = printable ? (uint32_t)b : extra++;
        unsigned char s[8];
        int n = tok_utf8_encode(cp, s);
        memcpy(s + n, "</w>", 4);
        int id = vocab_find(t, (const char *)s, (size_t)n);
        int end = vocab_find(t, (const char *)s, (size_t)n + 4);
        t->byte_id[b] = id >= 0 ? id : t->unk_id;
        t->byte_end_id[b] = end >= 0 ? end : t->unk_id;
    }
}

sd_status tokenizer_load(struct tokenizer **out, const char *dir) {
    *out = NULL;
    struct tokenizer *t = sd_calloc(1, sizeof *t);
    if (!t) return SD_ERR_NOMEM;
    sd_status st;
    if ((st = load_vocab(t, dir)) != SD_OK) goto fail;
    if ((st = load_merges(t, dir)) != SD_OK) goto fail;
    if ((st = load_specials(t, dir)) != SD_OK) goto fail;
    if ((st = prepare_added(t)) != SD_OK) goto fail;
    load_bytes(t);
    *out = t;
    return SD_OK;
fail:
    tokenizer_free(t);
    return st;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    sd_free(t->strings);
    sd_free(t->str_off);
    sd_free(t->vocab_slots);
    sd_free(t->merges);
    sd_free(t);
}

int tokenizer_max_length(const struct tokenizer *t) { return t->max_length; }
int tokenizer_pad_id(const struct tokenizer *t) { return t->pad_id; }
int tokenizer_eos_id(const struct tokenizer *t) { return t->eos_id; }

