/* fuzz_tokenizer.c — libFuzzer harness: any bytes as a prompt through both CLIP tokenizers
 * of the tiny golden model (UTF-8 repair, NFC, added tokens, the CLIP split, BPE, the
 * 77-token frame).  SDXLD_TEST_DATA names tests/data (default: tests/data). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct tokenizer *t1, *t2;
    if (!t1) {
        const char *d = getenv("SDXLD_TEST_DATA");
        char p[1024];
        snprintf(p, sizeof p, "%s/tiny-sdxl-a/tokenizer", d ? d : "tests/data");
        if (tokenizer_load(&t1, p)) abort();
        snprintf(p, sizeof p, "%s/tiny-sdxl-a/tokenizer_2", d ? d : "tests/data");
        if (tokenizer_load(&t2, p)) abort();
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    int64_t ids[77];
    int trunc = 0;
    tokenizer_encode(t1, text, ids, &trunc);
    tokenizer_encode(t2, text, ids, &trunc);
    free(text);
    sd_clear_error();
    return 0;
}
