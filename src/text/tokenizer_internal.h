/* tokenizer_internal.h — what tokenizer.c (loading, normalisation, UTF-8, the hash
 * tables) and tokenizer_bpe.c (pre-tokenization, BPE, encoding) share.  Not for outside
 * src/text/. */
#ifndef SD_TOKENIZER_INTERNAL_H
#define SD_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_MAX_FILE (64u << 20)
#define TOK_MAX_ID (1 << 24)
#define TOK_MAX_ADDED 16
#define TOK_MAX_ADDED_LEN 64          /* code points */
#define TOK_MAX_LENGTH 1024           /* a larger model_max_length means "no limit" */
#define TOK_DEFAULT_MAX_LENGTH 77     /* CLIP's, when the config omits it */
#define TOK_MAX_MERGE_LINE 1024

struct added_token {
    uint32_t raw[TOK_MAX_ADDED_LEN];  /* content as written */
    uint32_t cp[TOK_MAX_ADDED_LEN];   /* what is matched: normalized if .normalized */
    int raw_len, len, id, normalized;
};

struct merge_slot {
    uint32_t a, b;                    /* left and right symbol ids */
    int32_t rank, id;                 /* rank < 0: empty slot; id: the merged symbol */
};

struct tokenizer {
    int max_length, bos_id, eos_id, pad_id, unk_id;
    int n_ids;                        /* largest vocab id + 1 */
    char *strings;                    /* vocab strings, NUL-terminated, back to back */
    uint32_t *str_off;                /* [n_ids] offset into strings; UINT32_MAX: unused id */
    int32_t *vocab_slots;             /* [vocab_mask + 1] id or -1 */
    uint32_t vocab_mask;
    struct merge_slot *merges;        /* [merge_mask + 1] */
    uint32_t merge_mask;
    int n_merges;
    int byte_id[256], byte_end_id[256];   /* byte symbol, and byte symbol + "</w>" */
    int n_added;
    struct added_token added[TOK_MAX_ADDED];
};

struct cpvec { uint32_t *p; size_t n, cap; };
/* Where ids go: all are counted, the first cap stored; producing stops at stop. */
struct sink { int *ids; size_t cap, n, stop; };

void tok_cpvec_free(struct cpvec *v);
void tok_sink_put(struct sink *s, int id);
int tok_utf8_decode(const unsigned char *s, size_t n, struct cpvec *out);
int tok_utf8_encode(uint32_t cp, unsigned char *o);
int tok_normalize(const uint32_t *in, size_t n, struct cpvec *tmp, struct cpvec *out);
const struct merge_slot *tok_merge_find(const struct tokenizer *t, uint32_t a, uint32_t b);
int tok_cpvec_reserve(struct cpvec *v, size_t need);

#endif
