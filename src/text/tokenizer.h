/* tokenizer.h — CLIP byte-level BPE, identical ids to transformers' CLIPTokenizer as
 * transformers 5 runs it (the Rust `tokenizers` pipeline that made the goldens; it
 * differs from transformers 4's slow Python class on control characters, CJK spacing
 * and some Unicode details — see tests/ref/make_tokenizer_fixture.py).
 *
 * Loaded from a diffusers tokenizer folder: vocab.json, merges.txt, and the pad token
 * from special_tokens_map.json / tokenizer_config.json ("<|endoftext|>" -> 49407 for
 * `tokenizer`, "!" -> 0 for `tokenizer_2`).  When the pad token is an ordinary
 * character such as "!", it is a registered special token: every literal occurrence in
 * the text becomes its id, and the text between is tokenized separately (docs/sdxl.md
 * §1.2).  Output is framed [BOS] tokens [EOS] and padded/truncated to model_max_length
 * (77).  Immutable after load: safe to share between threads. */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include "../core/core.h"

struct tokenizer;

sd_status tokenizer_load(struct tokenizer **out, const char *dir);
void tokenizer_free(struct tokenizer *t);
int tokenizer_max_length(const struct tokenizer *t);   /* 77 */
int tokenizer_pad_id(const struct tokenizer *t);
int tokenizer_eos_id(const struct tokenizer *t);
/* Encode text (UTF-8; invalid bytes are handled as the reference does) into exactly
 * max_length ids.  *truncated (may be NULL) is set when content tokens were dropped. */
sd_status tokenizer_encode(const struct tokenizer *t, const char *text, int64_t *ids,
                           int *truncated);
/* Unframed BPE ids of text, for tests: writes up to cap ids, returns the count (may
 * exceed cap, in which case only cap were written), or -1 when out of memory or an
 * argument is NULL. */
int tokenizer_bpe(const struct tokenizer *t, const char *text, int *ids, int cap);

#endif
