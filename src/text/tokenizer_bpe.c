/* tokenizer_bpe.c — encoding with a loaded tokenizer (tokenizer.c has the steps): added
 * tokens cut out, the CLIP pre-tokenizer split, byte-level BPE over a heap of ranked
 * merges, the 77-token frame. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "unicode_data.h"

/* ---- BPE ---------------------------------------------------------------------------- */

struct bpe_merge { int32_t rank, pos, id; };

/* Per-call scratch, grown as words need. */
struct scratch {
    struct cpvec raw, tmp, norm;
    unsigned char *bytes;            /* a word's UTF-8 */
    int32_t *sym, *prev, *next;      /* symbol list of the word being merged */
    struct bpe_merge *heap;
    size_t cap;                      /* capacity of bytes/sym/prev/next; heap has 3x */
};

static void scratch_free(struct scratch *s) {
    tok_cpvec_free(&s->raw);
    tok_cpvec_free(&s->tmp);
    tok_cpvec_free(&s->norm);
    sd_free(s->bytes);
    sd_free(s->sym);
    sd_free(s->prev);
    sd_free(s->next);
    sd_free(s->heap);
}

static int scratch_reserve(struct scratch *s, size_t n) {
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    void *p[5] = { sd_realloc(s->bytes, cap), sd_realloc(s->sym, cap * 4),
                   sd_realloc(s->prev, cap * 4), sd_realloc(s->next, cap * 4),
                   sd_realloc(s->heap, 3 * cap * sizeof *s->heap) };
    /* sd_realloc leaves the old block alone on failure: keep whichever pointer is live */
    if (p[0]) s->bytes = p[0];
    if (p[1]) s->sym = p[1];
    if (p[2]) s->prev = p[2];
    if (p[3]) s->next = p[3];
    if (p[4]) s->heap = p[4];
    if (!p[0] || !p[1] || !p[2] || !p[3] || !p[4]) return -1;
    s->cap = cap;
    return 0;
}

static int merge_less(struct bpe_merge a, struct bpe_merge b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(struct bpe_merge *h, size_t *n, struct bpe_merge m) {
    size_t i = (*n)++;
    while (i > 0 && merge_less(m, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = m;
}

static struct bpe_merge heap_pop(struct bpe_merge *h, size_t *n) {
    struct bpe_merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(h[c + 1], h[c])) c++;
        if (!merge_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void push_pair(const struct tokenizer *t, struct scratch *s, size_t *nh, int32_t pos) {
    int32_t nx = s->next[pos];
    if (nx < 0) return;
    const struct merge_slot *m = tok_merge_find(t, (uint32_t)s->sym[pos], (uint32_t)s->sym[nx]);
    if (m) heap_push(s->heap, nh, (struct bpe_merge){ m->rank, pos, m->id });
}

/* BPE one word of n bytes (s->bytes) into the sink: lowest rank first, leftmost on ties,
 * like the reference's priority queue.  A queued pair is stale once either side has
 * merged; its merged id then no longer matches the pair's. */
static void bpe_word(const struct tokenizer *t, struct scratch *s, size_t n, struct sink *out) {
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = i + 1 < n ? t->byte_id[s->bytes[i]] : t->byte_end_id[s->bytes[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, s, &nh, (int32_t)i);
    while (nh) {
        struct bpe_merge m = heap_pop(s->heap, &nh);
        int32_t nx = s->next[m.pos];
        if (s->sym[m.pos] < 0 || nx < 0) continue;
        const struct merge_slot *cur = tok_merge_find(t, (uint32_t)s->sym[m.pos], (uint32_t)s->sym[nx]);
        if (!cur || cur->id != m.id) continue;
        s->sym[m.pos] = m.id;
        s->sym[nx] = -1;   /* removed */
        s->next[m.pos] = s->next[nx];
        if (s->next[nx] >= 0) s->prev[s->next[nx]] = m.pos;
        if (s->prev[m.pos] >= 0) push_pair(t, s, &nh, s->prev[m.pos]);
        push_pair(t, s, &nh, m.pos);
    }
    for (int32_t i = 0; i >= 0 && out->n < out->stop; i = s->next[i]) tok_sink_put(out, s->sym[i]);
}

/* UTF-8 encode cps[0..n) into scratch and BPE it. */
static int word_out(const struct tokenizer *t, struct scratch *s, const uint32_t *cps, size_t n,
                    struct sink *out) {
    if (n == 0 || out->n >= out->stop) return 0;
    if (scratch_reserve(s, 4 * n)) return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += (size_t)tok_utf8_encode(cps[i], s->bytes + m);
    bpe_word(t, s, m, out);
    return 0;
}

/* ---- pre-tokenization --------------------------------------------------------------- */

static int cp_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 32) >= 'a' && (cp | 32) <= 'z') return UC_LETTER;
        if (cp >= '0' && cp <= '9') return UC_NUMBER;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return UC_SPACE;
        return UC_OTHER;
    }
    return uc_class(cp);
}

static int match_ascii(const uint32_t *p, size_t n, const char *lit) {
    size_t k = strlen(lit);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++)
        if (p[i] != (unsigned char)lit[i]) return 0;
    return (int)k;
}

/* The CLIP split of a normalized piece, each word BPE'd into the sink. */
static int split_out(const struct tokenizer *t, struct scratch *s, const uint32_t *p, size_t n,
                     struct sink *out) {
    static const char *const contractions[] = { "'s", "'t", "'re", "'ve", "'m", "'ll", "'d" };
    size_t i = 0;
    while (i < n && out->n < out->stop) {
        int c = cp_class(p[i]);
        if (c == UC_SPACE) { i++; continue; }
        size_t k = 0;
        if (p[i] == '<') {
            k = (size_t)match_ascii(p + i, n - i, "<|startoftext|>");
            if (!k) k = (size_t)match_ascii(p + i, n - i, "<|endoftext|>");
            if (k) {   /* the GPT-2 regex cuts the literal: "<|", word, "|>" */
                if (word_out(t, s, p + i, 2, out) || word_out(t, s, p + i + 2, k - 4, out) ||
                    word_out(t, s, p + i + k - 2, 2, out))
                    return -1;
                i += k;
                continue;
            }
        }
        if (p[i] == '\'')
            for (int j = 0; j < 7 && !k; j++)
                k = (size_t)match_ascii(p + i, n - i, contractions[j]);
        if (!k) {
            k = 1;
            if (c == UC_LETTER)
                while (i + k < n && cp_class(p[i + k]) == UC_LETTER) k++;
            else if (c == UC_OTHER)
                while (i + k < n && cp_class(p[i + k]) == UC_OTHER) k++;
        }
        if (word_out(t, s, p + i, k, out)) return -1;
        i += k;
    }
    return 0;
}

/* Leftmost-longest match of the added tokens with the given flag in p[from..n); returns
 * the start (n if none) and sets *tok. */
static size_t find_added(const struct tokenizer *t, int normalized, const uint32_t *p, size_t from,
                         size_t n, const struct added_token **tok) {
    for (size_t i = from; i < n; i++) {
        const struct added_token *best = NULL;
        for (int k = 0; k < t->n_added; k++) {
            const struct added_token *a = &t->added[k];
            if (a->normalized != normalized || (size_t)a->len > n - i) continue;
            if (best && a->len <= best->len) continue;
            if (memcmp(a->cp, p + i, (size_t)a->len * sizeof *p) == 0) best = a;
        }
        if (best) { *tok = best; return i; }
    }
    return n;
}

/* A stretch of raw text between un-normalized added tokens. */
static int segment_out(const struct tokenizer *t, struct scratch *s, const uint32_t *p, size_t n,
                       struct sink *out) {
    if (n == 0) return 0;
    if (tok_normalize(p, n, &s->tmp, &s->norm)) return -1;
    const uint32_t *q = s->norm.p;
    size_t m = s->norm.n, at = 0;
    while (at < m && out->n < out->stop) {
        const struct added_token *tok = NULL;
        size_t hit = find_added(t, 1, q, at, m, &tok);
        if (split_out(t, s, q + at, hit - at, out)) return -1;
        if (tok && out->n < out->stop) tok_sink_put(out, tok->id);
        at = tok ? hit + (size_t)tok->len : m;
    }
    return 0;
}

static sd_status tokenize(const struct tokenizer *t, const char *text, struct sink *out) {
    struct scratch s = { 0 };
    sd_status st = SD_OK;
    if (tok_utf8_decode((const unsigned char *)text, strlen(text), &s.raw)) {
        st = SD_ERR_NOMEM;
        goto done;
    }
    size_t at = 0, n = s.raw.n;
    while (at < n && out->n < out->stop) {
        const struct added_token *tok = NULL;
        size_t hit = find_added(t, 0, s.raw.p, at, n, &tok);
        if (segment_out(t, &s, s.raw.p + at, hit - at, out)) { st = SD_ERR_NOMEM; goto done; }
        if (tok && out->n < out->stop) tok_sink_put(out, tok->id);
        at = tok ? hit + (size_t)tok->len : n;
    }
done:
    scratch_free(&s);
    return st == SD_ERR_NOMEM ? sd_fail(st, "tokenizer: out of memory encoding %zu bytes",
                                        strlen(text)) : st;
}

sd_status tokenizer_encode(const struct tokenizer *t, const char *text, int64_t *ids,
                           int *truncated) {
    if (!t || !text || !ids) return sd_fail(SD_ERR_INVALID, "tokenizer_encode: NULL argument");
    int body[TOK_MAX_LENGTH];
    size_t room = (size_t)t->max_length - 2;   /* BOS and EOS frame the content */
    struct sink out = { body, room, 0, room + 1 };   /* one extra tells us we truncated */
    sd_status st = tokenize(t, text, &out);
    if (st != SD_OK) return st;
    size_t n = out.n < room ? out.n : room, k = 0;
    ids[k++] = t->bos_id;
    for (size_t i = 0; i < n; i++) ids[k++] = body[i];
    ids[k++] = t->eos_id;
    while (k < (size_t)t->max_length) ids[k++] = t->pad_id;
    if (truncated) *truncated = out.n > room;
    return SD_OK;
}

int tokenizer_bpe(const struct tokenizer *t, const char *text, int *ids, int cap) {
    if (!t || !text) return -1;
    struct sink out = { ids, cap > 0 ? (size_t)cap : 0, 0, (size_t)INT32_MAX };
    if (tokenize(t, text, &out) != SD_OK) return -1;   /* out of memory */
    return (int)out.n;
}
