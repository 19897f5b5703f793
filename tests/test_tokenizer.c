/* test_tokenizer.c — CLIP tokenizer against transformers' CLIPTokenizer.
 *
 *  1. the golden prompts: tok1_ids / tok2_ids of tiny-sdxl-a/golden.safetensors;
 *  2. tests/data/tokenizer/fixture.json (tests/ref/make_tokenizer_fixture.py): tricky
 *     strings, framed and unframed ids, both tokenizers;
 *  3. error cases, a leak check under allocation failures, and speed.
 * SDXLD_TEST_DATA names tests/data.  The golden file is read by a few lines here rather than
 * through src/io so a safetensors bug cannot hide a tokenizer one. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "text/tokenizer.h"


static const char *data_dir;
static char tok1_dir[4096], tok2_dir[4096];

static char *read_all(const char *path, size_t *len) {
    char *d = NULL;
    return sd_read_file(path, 256u << 20, &d, len) == SD_OK ? d : NULL;
}

static int write_all(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* The [5, 77] I64 tensor `name` of golden.safetensors, or NULL. */
static int64_t *golden_ids(const char *file, size_t flen, const char *name) {
    if (flen < 8) return NULL;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)file[i];
    if (hlen > flen - 8) return NULL;
    json_t *h = json_loadb(file + 8, hlen, 0, NULL), *e = h ? json_object_get(h, name) : NULL;
    json_t *off = json_object_get(e, "data_offsets"), *shape = json_object_get(e, "shape");
    int64_t *ids = NULL;
    if (json_is_array(off) && json_array_size(off) == 2 && json_is_array(shape) &&
        json_integer_value(json_array_get(shape, 0)) == 5 &&
        json_integer_value(json_array_get(shape, 1)) == 77 &&
        strcmp(json_string_value(json_object_get(e, "dtype")), "I64") == 0) {
        uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0));
        uint64_t en = (uint64_t)json_integer_value(json_array_get(off, 1));
        if (en - b == 5 * 77 * 8 && 8 + hlen + en <= flen && (ids = malloc(en - b)))
            memcpy(ids, file + 8 + hlen + b, en - b);   /* little-endian host */
    }
    json_decref(h);
    return ids;
}

static void test_golden(const struct tokenizer *t1, const struct tokenizer *t2) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tiny-sdxl-a/golden.json", data_dir);
    json_t *g = json_load_file(path, 0, NULL);
    json_t *prompts = json_object_get(g, "prompts");
    snprintf(path, sizeof path, "%s/tiny-sdxl-a/golden.safetensors", data_dir);
    size_t flen = 0;
    char *file = read_all(path, &flen);
    int64_t *g1 = file ? golden_ids(file, flen, "tok1_ids") : NULL;
    int64_t *g2 = file ? golden_ids(file, flen, "tok2_ids") : NULL;
    if (!ok(json_array_size(prompts) == 5 && g1 && g2, "golden prompts and ids read")) goto done;
    for (size_t p = 0; p < 5; p++) {
        const char *text = json_string_value(json_array_get(prompts, p));
        int64_t ids[77];
        int trunc = -1;
        const struct tokenizer *tk[2] = { t1, t2 };
        const int64_t *want[2] = { g1 + p * 77, g2 + p * 77 };
        for (int k = 0; k < 2; k++) {
            sd_status st = tokenizer_encode(tk[k], text, ids, &trunc);
            int same = st == SD_OK && memcmp(ids, want[k], sizeof ids) == 0;
            ok(same, "golden prompt %zu: tok%d_ids match", p, k + 1);
            if (!same)
                for (int i = 0; i < 77; i++)
                    if (ids[i] != want[k][i])
                        diag("  first difference at %d: got %lld, want %lld", i,
                             (long long)ids[i], (long long)want[k][i]);
        }
        ok(trunc == (p == 4), "golden prompt %zu: truncated = %d", p, trunc);
    }
done:
    free(g1);
    free(g2);
    sd_free(file);
    json_decref(g);
}

static int ids_equal_json(const int64_t *ids, int n, json_t *arr) {
    if ((int)json_array_size(arr) != n) return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] != json_integer_value(json_array_get(arr, (size_t)i))) return 0;
    return 1;
}

static void test_fixture(const struct tokenizer *t1, const struct tokenizer *t2) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer/fixture.json", data_dir);
    json_error_t err;
    json_t *fx = json_load_file(path, 0, &err);
    json_t *cases = json_object_get(fx, "cases");
    if (!ok(json_array_size(cases) >= 40, "fixture: %zu cases (%s)", json_array_size(cases),
            fx ? json_string_value(json_object_get(fx, "transformers")) : err.text))
        goto done;
    int all = 1;
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *hex = json_string_value(json_object_get(cs, "hex"));
        size_t hn = strlen(hex);
        char *text = malloc(hn / 2 + 1);
        for (size_t i = 0; i < hn / 2; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            text[i] = (char)v;
        }
        text[hn / 2] = 0;
        const struct tokenizer *tk[2] = { t1, t2 };
        for (int k = 0; k < 2; k++) {
            char key[8];
            int64_t ids[77];
            int trunc = -1, bpe[512];
            int64_t bpe64[512];
            snprintf(key, sizeof key, "ids%d", k + 1);
            sd_status st = tokenizer_encode(tk[k], text, ids, &trunc);
            int same = st == SD_OK && ids_equal_json(ids, 77, json_object_get(cs, key));
            snprintf(key, sizeof key, "bpe%d", k + 1);
            json_t *want = json_object_get(cs, key);
            int n = tokenizer_bpe(tk[k], text, bpe, 512);
            for (int i = 0; i < n && i < 512; i++) bpe64[i] = bpe[i];
            int same_bpe = n <= 512 && ids_equal_json(bpe64, n, want);
            int trunc_ok = trunc == (json_array_size(want) > 75);
            all &= same && same_bpe && trunc_ok;
            if (!ok(same && same_bpe && trunc_ok, "fixture %s: tokenizer%s", name,
                    k ? "_2" : "")) {
                diag("  framed %s, unframed %s (%d ids, want %zu), truncated %d", same ? "ok" :
                     "DIFFER", same_bpe ? "ok" : "DIFFER", n, json_array_size(want), trunc);
                for (int i = 0; i < n && i < 512; i++)
                    if (i >= (int)json_array_size(want) ||
                        bpe[i] != json_integer_value(json_array_get(want, (size_t)i))) {
                        diag("  first difference at %d: got %d, want %lld", i, bpe[i],
                             (long long)json_integer_value(json_array_get(want, (size_t)i)));
                        break;
                    }
            }
        }
        free(text);
    }
    ok(all, "fixture: every case matches transformers");
done:
    json_decref(fx);
}

static void test_api(const struct tokenizer *t1, const struct tokenizer *t2) {
    ok(tokenizer_max_length(t1) == 77 && tokenizer_max_length(t2) == 77, "max_length 77");
    ok(tokenizer_pad_id(t1) == 49407, "tokenizer pads with 49407");
    ok(tokenizer_pad_id(t2) == 0, "tokenizer_2 pads with 0 (\"!\")");
    ok(tokenizer_eos_id(t1) == 49407 && tokenizer_eos_id(t2) == 49407, "eos 49407");
    int ids[4] = { -1, -1, -1, -1 };
    int n = tokenizer_bpe(t1, "a photograph of an astronaut", ids, 2);
    ok(n == 5 && ids[0] == 320 && ids[2] == -1, "tokenizer_bpe counts past cap, writes cap");
    ok(tokenizer_bpe(t2, "a mat!!", ids, 4) == 4 && ids[2] == 0 && ids[3] == 0,
       "tokenizer_2: each \"!\" is id 0");
    ok(tokenizer_bpe(t1, "a mat!!", ids, 4) == 3 && ids[2] == 748, "tokenizer: \"!!\" is 748");
    int64_t frame[77];
    ok(tokenizer_encode(t1, NULL, frame, NULL) == SD_ERR_INVALID, "NULL text is invalid");

    /* Pathological input is handled whole (the BPE merge queue is O(n log n); its speed is
     * a benchmark, tests/bench/tokenizer.sh, not a test: no wall-clock bound here). */
    size_t big = 200000;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++) s[i] = "abcdefghij"[i * 7 % 10];
    s[big] = 0;
    double t0 = sd_now_ms();
    n = tokenizer_bpe(t1, s, NULL, 0);
    double ms = sd_now_ms() - t0;
    ok(n > 1000, "200 kB single word: %d ids", n);
    diag("200 kB single word: %.0f ms", ms);
    for (size_t i = 0; i < big; i++) s[i] = (char)(0x80 + i % 64);   /* all invalid */
    int trunc = 0;
    t0 = sd_now_ms();
    sd_status st = tokenizer_encode(t2, s, frame, &trunc);
    ms = sd_now_ms() - t0;
    ok(st == SD_OK && trunc && frame[0] == 49406 && frame[76] == 49407,
       "200 kB of invalid UTF-8: encodes, truncated");
    diag("200 kB of invalid UTF-8: %.0f ms", ms);
    free(s);
}

/* A scratch copy of the tokenizer folder in which one file is replaced (or removed). */
static char scratch[64];

static void scratch_make(const char *replace, const char *content, size_t len) {
    static const char *const files[] = { "vocab.json", "merges.txt", "special_tokens_map.json",
                                         "tokenizer_config.json" };
    for (int i = 0; i < 4; i++) {
        char src[4200], dst[128];
        snprintf(src, sizeof src, "%s/%s", tok2_dir, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", scratch, files[i]);
        unlink(dst);
        if (strcmp(files[i], replace) == 0) {
            if (content) write_all(dst, content, len);
            continue;
        }
        size_t n;
        char *d = read_all(src, &n);
        if (d) write_all(dst, d, n);
        sd_free(d);
    }
}

static void scratch_put(const char *replace, const char *text) {
    scratch_make(replace, text, strlen(text));
}

static void expect_fail(const char *what, sd_status want, const char *needle) {
    struct tokenizer *t = (struct tokenizer *)1;
    size_t live = sd_alloc_live_bytes();
    sd_status st = tokenizer_load(&t, scratch);
    const char *msg = sd_last_error();
    ok(st == want && t == NULL && strstr(msg, needle) && sd_alloc_live_bytes() == live,
       "%s: %s (%s)", what, sd_status_name(st), msg);
    if (st == SD_OK) tokenizer_free(t);
}

static void test_errors(void) {
    struct tokenizer *t = (struct tokenizer *)1;
    sd_status st = tokenizer_load(&t, "/nonexistent/tokenizer");
    ok(st == SD_ERR_NOTFOUND && t == NULL && strstr(sd_last_error(), "vocab.json"),
       "missing folder: %s (%s)", sd_status_name(st), sd_last_error());

    strcpy(scratch, "/tmp/sdxld-tok-XXXXXX");
    if (!ok(mkdtemp(scratch) != NULL, "scratch folder %s", scratch)) return;
    char src[4200];
    snprintf(src, sizeof src, "%s/vocab.json", tok2_dir);
    size_t vlen;
    char *vocab = read_all(src, &vlen);
    scratch_make("vocab.json", vocab, vlen / 2);
    expect_fail("truncated vocab.json", SD_ERR_FORMAT, "vocab.json");
    scratch_put("vocab.json", "{\"a\": -3}");
    expect_fail("negative id in vocab.json", SD_ERR_FORMAT, "vocab.json");
    scratch_put("vocab.json", "[1, 2]");
    expect_fail("vocab.json not an object", SD_ERR_FORMAT, "vocab.json");
    scratch_make("merges.txt", NULL, 0);
    expect_fail("missing merges.txt", SD_ERR_NOTFOUND, "merges.txt");
    scratch_put("merges.txt", "#version: 0.2\ni n\nzz\n");
    expect_fail("malformed merges line", SD_ERR_FORMAT, "merges.txt:3");
    scratch_put("merges.txt", "#version: 0.2\ni \xe2\x98\x83\n");
    expect_fail("merge of a token not in the vocab", SD_ERR_FORMAT, "merges.txt:2");
    scratch_put("special_tokens_map.json", "{\"pad_token\": ");
    expect_fail("truncated special_tokens_map.json", SD_ERR_FORMAT, "special_tokens_map.json");
    scratch_put("special_tokens_map.json", "{\"pad_token\": \"\xe2\x98\x83\xe2\x98\x83\"}");
    expect_fail("pad token not in the vocab", SD_ERR_UNSUPPORTED, "pad_token");
    scratch_put("tokenizer_config.json", "{\"model_max_length\": 1}");
    expect_fail("model_max_length 1", SD_ERR_FORMAT, "model_max_length");

    /* Without the two json files: CLIP defaults, every special token un-normalized. */
    scratch_make("special_tokens_map.json", NULL, 0);
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", scratch);
    unlink(cfg);
    st = tokenizer_load(&t, scratch);
    int ids[8];
    ok(st == SD_OK && tokenizer_pad_id(t) == 49407 && tokenizer_max_length(t) == 77 &&
       tokenizer_bpe(t, "x <|ENDOFTEXT|>", ids, 8) == 7,
       "no config files: defaults (pad 49407, 77, case-sensitive specials)");
    if (st == SD_OK) tokenizer_free(t);

    /* transformers >= 4.34 layout: "added_tokens_decoder" sets the flags (eos normalized,
     * bos not), pad "!" is still added, and int(1e30) means no limit.  Expected ids from
     * transformers 5.24 on this folder. */
    scratch_put("tokenizer_config.json", "{\"model_max_length\": 1000000000000000019884624838656,"
                " \"pad_token\": \"!\", \"added_tokens_decoder\": {"
                "\"49406\": {\"content\": \"<|startoftext|>\", \"normalized\": false},"
                "\"49407\": {\"content\": \"<|endoftext|>\", \"normalized\": true}}}");
    static const int want_atd[] = { 343, 49407, 27, 347, 993, 6659, 4160, 91, 285, 320, 0, 321 };
    st = tokenizer_load(&t, scratch);
    int got[16], same = 0;
    if (st == SD_OK) {
        same = tokenizer_bpe(t, "x <|ENDOFTEXT|> <|STARTOFTEXT|> a!b", got, 16) == 12 &&
               memcmp(got, want_atd, sizeof want_atd) == 0 && tokenizer_pad_id(t) == 0 &&
               tokenizer_max_length(t) == 77;
        tokenizer_free(t);
    }
    ok(same, "added_tokens_decoder flags, huge model_max_length: %s",
       st ? sd_last_error() : "ok");
    scratch_make("", NULL, 0);   /* leaves the originals */

    /* Every allocation of a load fails in turn: each must fail cleanly, leaking nothing. */
    size_t live = sd_alloc_live_bytes();
    int n, clean = 1;
    for (n = 1; n < 200; n++) {
        sd_fault_arm_alloc(n);
        st = tokenizer_load(&t, scratch);
        sd_fault_arm_alloc(0);
        if (st == SD_OK) break;
        clean &= st == SD_ERR_NOMEM && t == NULL && sd_alloc_live_bytes() == live;
    }
    ok(st == SD_OK && clean, "load with allocation %d..%d failing: no leak, NOMEM", 1, n - 1);
    int64_t frame[77];
    int enc_clean = 1;
    for (n = 1; n < 100; n++) {
        sd_fault_arm_alloc(n);
        st = tokenizer_encode(t, "Caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd a mat!! 123", frame, NULL);
        sd_fault_arm_alloc(0);
        if (st == SD_OK) break;
        enc_clean &= st == SD_ERR_NOMEM;
    }
    tokenizer_free(t);
    ok(st == SD_OK && enc_clean && sd_alloc_live_bytes() == live,
       "encode with allocation 1..%d failing: NOMEM, no leak", n - 1);

    static const char *const files[] = { "vocab.json", "merges.txt", "special_tokens_map.json",
                                         "tokenizer_config.json" };
    for (int i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", scratch, files[i]);
        unlink(p);
    }
    rmdir(scratch);
    sd_free(vocab);
}

int main(void) {
    data_dir = getenv("SDXLD_TEST_DATA");
    if (!data_dir) data_dir = "tests/data";
    snprintf(tok1_dir, sizeof tok1_dir, "%s/tiny-sdxl-a/tokenizer", data_dir);
    snprintf(tok2_dir, sizeof tok2_dir, "%s/tiny-sdxl-a/tokenizer_2", data_dir);

    struct tokenizer *t1 = NULL, *t2 = NULL;
    double t0 = sd_now_ms();
    sd_status st = tokenizer_load(&t1, tok1_dir);
    double ms = sd_now_ms() - t0;
    if (!ok(st == SD_OK, "load tokenizer: %s", st ? sd_last_error() : "ok")) return done_testing();
    diag("tokenizer_load: %.1f ms", ms);
    st = tokenizer_load(&t2, tok2_dir);
    if (!ok(st == SD_OK, "load tokenizer_2: %s", st ? sd_last_error() : "ok"))
        return done_testing();

    test_api(t1, t2);
    test_golden(t1, t2);
    test_fixture(t1, t2);
    tokenizer_free(t1);
    tokenizer_free(t2);
    test_errors();
    ok(sd_alloc_live_bytes() == 0, "no live allocations at exit");
    return done_testing();
}
