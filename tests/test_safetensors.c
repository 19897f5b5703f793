/* test_safetensors.c — the strict reader against hostile files, the writer round trip,
 * the real golden file, a mutation fuzz loop and allocation fault injection.
 *
 * Every hostile case must fail with the expected status, leave the st_file closed, name
 * the file in the message, and free everything (checked with sd_alloc_live_bytes; run
 * the binary under valgrind for the rest). */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "tap.h"

static char tmpdir[64];
static char pathbuf[512];

static const char *tpath(const char *name) {
    snprintf(pathbuf, sizeof pathbuf, "%s/%s", tmpdir, name);
    return pathbuf;
}

static void write_bytes(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) { perror(path); exit(2); }
    if (len && fwrite(buf, 1, len, fp) != len) { perror(path); exit(2); }
    fclose(fp);
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, fp);
    fclose(fp);
    return b;
}

static void le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* u64 hlen (as given) | hsize header bytes | data_len bytes of a counting pattern. */
static size_t build(uint8_t **out, uint64_t hlen, const char *hdr, size_t hsize,
                    size_t data_len) {
    size_t n = 8 + hsize + data_len;
    uint8_t *b = malloc(n + 1);
    le64(b, hlen);
    memcpy(b + 8, hdr, hsize);
    for (size_t i = 0; i < data_len; i++) b[8 + hsize + i] = (uint8_t)(i * 7 + 1);
    *out = b;
    return n;
}

static void write_st(const char *path, const char *hdr, size_t data_len) {
    uint8_t *b;
    size_t n = build(&b, strlen(hdr), hdr, strlen(hdr), data_len);
    write_bytes(path, b, n);
    free(b);
}

static int closed(const struct st_file *f) {
    return f->map == NULL && f->tensors == NULL && f->path == NULL && f->ntensors == 0;
}

/* Open path and expect status want; a failure must leave f closed, name the file (and
 * the fragment frag if given) and free everything. */
static void expect_st(const char *what, const char *path, sd_status want, const char *frag) {
    struct st_file f;
    size_t live = sd_alloc_live_bytes();
    sd_clear_error();
    sd_status st = st_open(&f, path);
    const char *msg = sd_last_error();
    if (st == SD_OK) {
        ok(want == SD_OK, "%s: opened (%d tensors)", what, f.ntensors);
        st_close(&f);
    } else {
        ok(st == want && closed(&f) && strstr(msg, path) && (!frag || strstr(msg, frag)),
           "%s: %s: %s", what, sd_status_name(st), msg);
    }
    ok(sd_alloc_live_bytes() == live, "%s: nothing left allocated", what);
}

static void expect_hdr(const char *what, const char *hdr, size_t data_len, sd_status want,
                       const char *frag) {
    const char *p = tpath("case.safetensors");
    write_st(p, hdr, data_len);
    expect_st(what, p, want, frag);
}

/* One tensor "t" with the given dtype/shape/offsets text and data_len data bytes. */
static void expect_one(const char *what, const char *entry, size_t data_len, sd_status want,
                       const char *frag) {
    char hdr[1024];
    snprintf(hdr, sizeof hdr, "{\"t\":%s}", entry);
    expect_hdr(what, hdr, data_len, want, frag);
}

static void test_bad_files(void) {
    uint8_t *b;
    size_t n;
    char p[512];
    snprintf(p, sizeof p, "%s", tpath("h.safetensors"));
    const char *one = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t ol = strlen(one);

    expect_st("nonexistent path", tpath("missing.safetensors"), SD_ERR_NOTFOUND, NULL);
    expect_st("directory", tmpdir, SD_ERR_IO, "directory");
    if (mkfifo(tpath("fifo"), 0600) == 0) {
        snprintf(p, sizeof p, "%s", tpath("fifo"));
        expect_st("a FIFO (must not block)", p, SD_ERR_IO, "regular");
        unlink(p);
        snprintf(p, sizeof p, "%s", tpath("h.safetensors"));
    }
    write_bytes(p, "", 0);
    expect_st("empty file", p, SD_ERR_FORMAT, "empty");
    write_bytes(p, "\x02\0\0\0\0\0\0", 7);
    expect_st("7-byte file", p, SD_ERR_FORMAT, NULL);
    write_bytes(p, "\0\0\0\0\0\0\0\0", 8);
    expect_st("header length 0, nothing else", p, SD_ERR_FORMAT, "header length");
    n = build(&b, 0, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("header length 0", p, SD_ERR_FORMAT, "header length");
    n = build(&b, 1, "{", 1, 0);
    write_bytes(p, b, n); free(b);
    expect_st("header length 1", p, SD_ERR_FORMAT, "header length");
    n = build(&b, 1000, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("header length larger than file", p, SD_ERR_FORMAT, "header length");
    n = build(&b, ol + 9, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("header length one past the file", p, SD_ERR_FORMAT, "header length");
    n = build(&b, (uint64_t)ST_MAX_HEADER + 1, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("header length above ST_MAX_HEADER", p, SD_ERR_FORMAT, "header length");
    n = build(&b, UINT64_MAX, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("header length 2^64-1", p, SD_ERR_FORMAT, "header length");
    n = build(&b, ol, one, ol, 8);
    write_bytes(p, b, n - 3); free(b);
    expect_st("truncated data", p, SD_ERR_FORMAT, "data area");
    n = build(&b, ol, one, ol, 8);
    write_bytes(p, b, 8 + ol / 2); free(b);
    expect_st("truncated header", p, SD_ERR_FORMAT, "header length");
    n = build(&b, ol, one, ol, 8);
    write_bytes(p, b, n); free(b);
    expect_st("the same file untruncated", p, SD_OK, NULL);
    n = build(&b, 8, "{}\0\0\0\0\0\0", 8, 0);
    write_bytes(p, b, n); free(b);
    expect_st("header padded with NUL", p, SD_ERR_FORMAT, "JSON");

    expect_hdr("non-JSON header", "hello world!", 0, SD_ERR_FORMAT, "JSON");
    expect_hdr("header is an array", "[1, 2, 3]", 0, SD_ERR_FORMAT, NULL);
    expect_hdr("header is a string", "\"abc\"", 0, SD_ERR_FORMAT, NULL);
    expect_hdr("trailing garbage", "{} x", 0, SD_ERR_FORMAT, "JSON");
    expect_hdr("unterminated object", "{\"a\":", 0, SD_ERR_FORMAT, "JSON");
    expect_hdr("invalid UTF-8", "{\"\xff\xfe\":1}", 0, SD_ERR_FORMAT, "JSON");
    expect_hdr("metadata is an array",
               "{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
               "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0, SD_ERR_FORMAT,
               "__metadata__");
    {
        enum { DEPTH = 100000 };
        char *deep = malloc(2 * DEPTH + 1);
        memset(deep, '[', DEPTH);
        memset(deep + DEPTH, ']', DEPTH);
        deep[2 * DEPTH] = 0;
        expect_hdr("nesting 100000 deep", deep, 0, SD_ERR_FORMAT, "JSON");
        free(deep);
    }
    expect_hdr("duplicate tensor names",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               SD_ERR_FORMAT, "duplicate");
    expect_hdr("duplicate field in an entry",
               "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],"
               "\"data_offsets\":[0,4]}}", 4, SD_ERR_FORMAT, "duplicate");
    expect_hdr("overlapping tensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
               SD_ERR_FORMAT, "overlaps");
    expect_hdr("overlap in reverse file order",
               "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
               SD_ERR_FORMAT, "overlaps");
    expect_hdr("tensor inside a larger one",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
               "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16,
               SD_ERR_FORMAT, "overlaps");
    expect_hdr("identical offsets",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               SD_ERR_FORMAT, "overlaps");
    expect_hdr("adjacent tensors in reverse order",
               "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
               SD_OK, NULL);
    expect_hdr("metadata with a number",
               "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, SD_ERR_FORMAT, "'n'");
    expect_hdr("metadata not an object", "{\"__metadata__\":\"pt\"}", 0, SD_ERR_FORMAT,
               "__metadata__");
    expect_hdr("entry is a number", "{\"t\":3}", 0, SD_ERR_FORMAT, "'t'");
    expect_hdr("entry is an array", "{\"t\":[0,4]}", 0, SD_ERR_FORMAT, "'t'");
    expect_hdr("empty tensor name",
               "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               SD_ERR_FORMAT, "empty");

    expect_one("missing dtype", "{\"shape\":[1],\"data_offsets\":[0,4]}", 4, SD_ERR_FORMAT,
               "dtype");
    expect_one("missing shape", "{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", 4,
               SD_ERR_FORMAT, "shape");
    expect_one("missing data_offsets", "{\"dtype\":\"F32\",\"shape\":[1]}", 4, SD_ERR_FORMAT,
               "data_offsets");
    expect_one("unknown field",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}", 4,
               SD_ERR_FORMAT, "'x'");
    expect_one("dtype is a number", "{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}", 4,
               SD_ERR_FORMAT, "dtype");
    expect_one("shape is a number", "{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}",
               4, SD_ERR_FORMAT, "shape");
    expect_one("shape has a string",
               "{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", 4,
               SD_ERR_FORMAT, "shape");
    expect_one("shape has a real", "{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}",
               4, SD_ERR_FORMAT, "shape");
    expect_one("negative dim",
               "{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", 4, SD_ERR_FORMAT,
               "shape[0]");
    expect_one("negative dims that multiply to a valid size",
               "{\"dtype\":\"F32\",\"shape\":[-1,-1],\"data_offsets\":[0,4]}", 4,
               SD_ERR_FORMAT, "shape[0]");
    expect_one("too many dims",
               "{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}", 4,
               SD_ERR_FORMAT, "dims");
    expect_one("huge dims that overflow to 0 bytes",
               "{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}",
               0, SD_ERR_FORMAT, "too large");
    expect_one("huge dims that overflow to 4 bytes",
               "{\"dtype\":\"F32\",\"shape\":[4611686018427387905],\"data_offsets\":[0,4]}",
               4, SD_ERR_FORMAT, "too large");
    expect_one("dim beyond int64",
               "{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}",
               4, SD_ERR_FORMAT, "JSON");
    expect_one("dtype F64", "{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}", 8,
               SD_ERR_UNSUPPORTED, "'F64'");
    expect_one("dtype I32", "{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4,
               SD_ERR_UNSUPPORTED, "'I32'");
    expect_one("dtype garbage", "{\"dtype\":\"f32\\n\\u001b[31m\",\"shape\":[1],"
               "\"data_offsets\":[0,4]}", 4, SD_ERR_UNSUPPORTED, "\\x1b");
    expect_one("dtype empty", "{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}", 4,
               SD_ERR_UNSUPPORTED, "'t'");
    expect_one("offsets not an array", "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}",
               4, SD_ERR_FORMAT, "data_offsets");
    expect_one("three offsets", "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}",
               8, SD_ERR_FORMAT, "data_offsets");
    expect_one("negative offset",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}", 4, SD_ERR_FORMAT,
               "data_offsets[0]");
    expect_one("offset is a string",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}", 4,
               SD_ERR_FORMAT, "data_offsets[0]");
    expect_one("begin after end", "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}",
               8, SD_ERR_FORMAT, "begin after end");
    expect_one("end past the data area",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}", 6, SD_ERR_FORMAT,
               "data area");
    expect_one("huge offsets",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
               "[9223372036854775803,9223372036854775807]}", 4, SD_ERR_FORMAT, "data area");
    expect_one("wrong size for shape",
               "{\"dtype\":\"F16\",\"shape\":[320,4,3,3],\"data_offsets\":[0,100]}", 100,
               SD_ERR_FORMAT, "'t': data_offsets [0, 100) do not match shape (320,4,3,3) F16 "
               "(23040 bytes)");
    expect_one("size 0 for non-empty shape",
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,0]}", 4, SD_ERR_FORMAT,
               "do not match");
    expect_one("bytes for an empty shape",
               "{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,4]}", 4, SD_ERR_FORMAT,
               "do not match");
}

static void test_good_files(void) {
    struct st_file f;
    expect_hdr("empty tensor list", "{}", 0, SD_OK, NULL);
    expect_hdr("empty tensor list, padded", "{}      ", 0, SD_OK, NULL);
    expect_hdr("empty tensor list with trailing data", "{}", 5, SD_OK, NULL);
    expect_hdr("metadata only", "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"\"}}", 0, SD_OK,
               NULL);
    expect_hdr("empty metadata", "{\"__metadata__\":{}}", 0, SD_OK, NULL);

    const char *p = tpath("good.safetensors");
    write_st(p, "{\"__metadata__\":{\"format\":\"pt\"},"
                "\"z\":{\"dtype\":\"F16\",\"shape\":[3,0,2],\"data_offsets\":[12,12]},"
                "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                "\"e\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                "\"h\":{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[12,14]}}    ", 14);
    sd_status st = st_open(&f, p);
    ok(st == SD_OK, "zero-size, scalar and mixed tensors open: %s", st ? sd_last_error() : "ok");
    if (st != SD_OK) return;
    ok(f.ntensors == 5, "metadata is not a tensor (%d tensors)", f.ntensors);
    ok(strcmp(f.tensors[0].name, "z") == 0 && strcmp(f.tensors[4].name, "h") == 0,
       "tensors are kept in header order");
    const struct st_tensor *z = st_find(&f, "z"), *s = st_find(&f, "s"), *i = st_find(&f, "i");
    ok(z && z->ndim == 3 && st_numel(z) == 0 && z->dtype == DT_F16, "zero-size tensor z");
    ok(s && s->ndim == 0 && st_numel(s) == 1 && s->dtype == DT_F32, "scalar tensor s");
    ok(i && i->dtype == DT_I64 && i->data == (const uint8_t *)f.map + 8 + (f.size - 8 - 14),
       "data points into the mapping after the header");
    ok(st_find(&f, "__metadata__") == NULL && st_find(&f, "nope") == NULL &&
           st_find(&f, "") == NULL, "st_find misses return NULL");
    st_close(&f);
    ok(closed(&f), "st_close leaves the struct zeroed");
    st_close(&f);
    ok(closed(&f), "st_close twice is harmless");
}

/* Build a file with many tensors (half empty) and check st_find finds every one. */
static void test_many(void) {
    enum { N = 3000 };
    size_t cap = (size_t)N * 96 + 64, o = 0;
    char *hdr = malloc(cap);
    o += (size_t)snprintf(hdr + o, cap - o, "{");
    for (int k = 0; k < N; k++) {
        unsigned b = (unsigned)(k / 2) * 4, e = k % 2 ? b : b + 4;
        o += (size_t)snprintf(hdr + o, cap - o, "%s\"blk.%d.w\":{\"dtype\":\"F32\",\"shape\":[%d],"
                              "\"data_offsets\":[%u,%u]}", k ? "," : "", k, k % 2 ? 0 : 1, b,
                              e);
    }
    snprintf(hdr + o, cap - o, "}");
    const char *p = tpath("many.safetensors");
    write_st(p, hdr, (size_t)N / 2 * 4);
    free(hdr);
    struct st_file f;
    sd_status st = st_open(&f, p);
    ok(st == SD_OK && f.ntensors == N, "%d tensors open: %s", N, st ? sd_last_error() : "ok");
    if (st != SD_OK) return;
    int found = 0, right = 0;
    double t0 = sd_now_ms();
    for (int k = 0; k < N; k++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.w", k);
        const struct st_tensor *t = st_find(&f, name);
        found += t != NULL;
        right += t && t == &f.tensors[k] && strcmp(t->name, name) == 0;
    }
    double dt = sd_now_ms() - t0;
    ok(found == N && right == N, "st_find finds all %d tensors (%d right) in %.2f ms", N, right,
       dt);
    ok(st_find(&f, "blk.3000.w") == NULL && st_find(&f, "blk.1.") == NULL,
       "st_find rejects near misses");
    st_close(&f);
}

static int count_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void test_roundtrip(void) {
    enum { NF = 37 };
    float src[NF];
    for (int k = 0; k < NF; k++) src[k] = (float)(k - 18) * 0.37f + (k == 5 ? 1e-7f : 0);
    int64_t ids[2 * 77];
    for (int k = 0; k < 2 * 77; k++) ids[k] = k % 3 ? 49407 : (int64_t)k * 1000003 - 5;
    uint16_t halfs[NF], bhalfs[NF];
    sd_convert_from_f32(halfs, src, DT_F16, NF);
    sd_convert_from_f32(bhalfs, src, DT_BF16, NF);

    size_t live = sd_alloc_live_bytes();
    struct st_writer w;
    st_writer_init(&w);
    w.metadata_json = "{\"format\":\"pt\",\"note\":\"round trip\"}";
    int64_t s1[1] = { NF }, s2[2] = { 2, 77 }, s0[3] = { 4, 0, 2 };
    ok(st_writer_add(&w, "raw.f16", DT_F16, 1, s1, halfs) == SD_OK, "add raw F16 (odd size)");
    ok(st_writer_add_f32(&w, "w.f32", DT_F32, 1, s1, src) == SD_OK, "add F32");
    ok(st_writer_add(&w, "ids", DT_I64, 2, s2, ids) == SD_OK, "add I64");
    ok(st_writer_add_f32(&w, "w.bf16", DT_BF16, 1, s1, src) == SD_OK, "add F32 as BF16");
    ok(st_writer_add_f32(&w, "w.f16", DT_F16, 1, s1, src) == SD_OK, "add F32 as F16");
    ok(st_writer_add(&w, "empty", DT_F32, 3, s0, NULL) == SD_OK, "add zero-size");
    ok(st_writer_add(&w, "scalar", DT_F32, 0, NULL, &src[3]) == SD_OK, "add scalar");
    ok(st_writer_add(&w, "ids", DT_I64, 2, s2, ids) == SD_ERR_INVALID, "duplicate name refused");
    ok(st_writer_add(&w, "__metadata__", DT_I64, 2, s2, ids) == SD_ERR_INVALID,
       "__metadata__ as a name refused");
    ok(st_writer_add_f32(&w, "x", DT_I64, 2, s2, src) == SD_ERR_INVALID,
       "fp32 data stored as I64 refused");
    int64_t bad[2] = { -1, 3 };
    ok(st_writer_add(&w, "neg", DT_F32, 2, bad, src) == SD_ERR_INVALID, "negative dim refused");
    ok(st_writer_add(&w, "deep", DT_F32, SD_MAX_DIMS + 1, s0, src) == SD_ERR_INVALID,
       "too many dims refused");

    const char *p = tpath("rt.safetensors");
    sd_status st = st_writer_write(&w, p);
    ok(st == SD_OK, "write: %s", st ? sd_last_error() : "ok");
    ok(count_tmp_files() == 0, "no temporary file left behind");

    size_t len;
    uint8_t *raw = read_bytes(p, &len);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | raw[k];
    ok(hlen % 8 == 0 && raw[8 + hlen - 1] != 0 && raw[8] == '{', "header is padded to %llu",
       (unsigned long long)hlen);
    char *h = strndup((const char *)raw + 8, hlen);
    const char *head = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"round trip\"},"
                       "\"raw.f16\":{\"dtype\":\"F16\",\"shape\":[37],\"data_offsets\":[0,74]},";
    ok(strncmp(h, head, strlen(head)) == 0, "header keeps insertion order: %.120s", h);
    free(h);

    struct st_file f;
    st = st_open(&f, p);
    ok(st == SD_OK && f.ntensors == 7, "reopen: %s", st ? sd_last_error() : "ok");
    if (st == SD_OK) {
        const char *order[] = { "raw.f16", "w.f32", "ids", "w.bf16", "w.f16", "empty", "scalar" };
        int inorder = 1;
        uint64_t expect_begin = 0;
        for (int k = 0; k < 7; k++) {
            inorder &= strcmp(f.tensors[k].name, order[k]) == 0;
            inorder &= f.tensors[k].begin == expect_begin;
            expect_begin = f.tensors[k].end;
        }
        ok(inorder, "tensors in insertion order, back to back");
        ok(expect_begin == f.size - 8 - hlen, "data area holds exactly the tensors");
        const struct st_tensor *t;
        t = st_find(&f, "raw.f16");
        ok(t && t->dtype == DT_F16 && memcmp(t->data, halfs, sizeof halfs) == 0,
           "F16 bytes round-trip");
        t = st_find(&f, "w.f32");
        ok(t && t->dtype == DT_F32 && memcmp(t->data, src, sizeof src) == 0,
           "F32 bytes round-trip");
        t = st_find(&f, "ids");
        ok(t && t->dtype == DT_I64 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 77 &&
               memcmp(t->data, ids, sizeof ids) == 0, "I64 bytes round-trip");
        t = st_find(&f, "w.bf16");
        ok(t && t->dtype == DT_BF16 && memcmp(t->data, bhalfs, sizeof bhalfs) == 0,
           "BF16 bytes round-trip");
        t = st_find(&f, "w.f16");
        ok(t && memcmp(t->data, halfs, sizeof halfs) == 0, "F32 stored as F16 matches");

        float back[2 * 77], want[NF];
        st_read_f32(st_find(&f, "w.f32"), back);
        ok(memcmp(back, src, sizeof src) == 0, "st_read_f32 of F32 is exact");
        /* w.f32 follows 74 bytes of F16: its data is not 4-aligned. */
        ok(((uintptr_t)st_find(&f, "w.f32")->data & 3) != 0, "F32 data is unaligned here");
        sd_convert_to_f32(want, halfs, DT_F16, NF);
        st_read_f32(st_find(&f, "w.f16"), back);
        ok(memcmp(back, want, sizeof want) == 0, "st_read_f32 of F16");
        sd_convert_to_f32(want, bhalfs, DT_BF16, NF);
        st_read_f32(st_find(&f, "w.bf16"), back);
        ok(memcmp(back, want, sizeof want) == 0, "st_read_f32 of BF16");
        st_read_f32(st_find(&f, "ids"), back);
        ok(back[0] == -5.0f && back[1] == 49407.0f && back[3] == 3000004.0f,
           "st_read_f32 of I64 converts by value");
        st_read_f32(st_find(&f, "scalar"), back);
        ok(back[0] == src[3], "scalar round-trips");
        st_close(&f);
    }
    free(raw);

    /* Overwrite in place, then refuse bad metadata without touching the old file. */
    st = st_writer_write(&w, p);
    ok(st == SD_OK, "rewrite over an existing file");
    w.metadata_json = "{\"n\":1}";
    ok(st_writer_write(&w, p) == SD_ERR_INVALID, "non-string metadata refused");
    w.metadata_json = "[";
    ok(st_writer_write(&w, p) == SD_ERR_INVALID, "metadata that is not JSON refused");
    ok(st_open(&f, p) == SD_OK, "previous file still intact");
    st_close(&f);
    w.metadata_json = NULL;
    ok(st_writer_write(&w, tpath("no/such/dir.safetensors")) == SD_ERR_IO &&
           strstr(sd_last_error(), "no/such/dir"), "unwritable path: %s", sd_last_error());
    st_writer_free(&w);

    st_writer_init(&w);
    const char *pe = tpath("empty.safetensors");
    ok(st_writer_write(&w, pe) == SD_OK, "write an empty file");
    raw = read_bytes(pe, &len);
    ok(len == 16 && memcmp(raw + 8, "{}      ", 8) == 0, "empty file is {} padded to 8");
    free(raw);
    st_writer_free(&w);
    ok(sd_alloc_live_bytes() == live, "writer frees everything");
}

static void test_golden(void) {
    const char *dir = getenv("SDXLD_TEST_DATA");
    char p[1024];
    snprintf(p, sizeof p, "%s/tiny-sdxl-a/golden.safetensors", dir ? dir : "data");
    struct st_file f;
    sd_status st = st_open(&f, p);
    ok(st == SD_OK, "open %s: %s", p, st ? sd_last_error() : "ok");
    if (st != SD_OK) return;
    ok(f.ntensors > 100, "golden has %d tensors", f.ntensors);
    const struct st_tensor *t = st_find(&f, "tok1_ids");
    ok(t && t->dtype == DT_I64 && t->ndim == 2 && t->shape[0] == 5 && t->shape[1] == 77,
       "tok1_ids is I64 [5,77]");
    if (t) {
        float ids[5 * 77];
        st_read_f32(t, ids);
        ok(ids[0] == 49406.0f && ids[1] == 320.0f && ids[2] == 8853.0f,
           "tok1_ids starts 49406, 320, 8853 (got %g, %g, %g)", ids[0], ids[1], ids[2]);
    }
    t = st_find(&f, "unet_out");
    ok(t && t->dtype == DT_F32 && t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 4 &&
           t->shape[2] == 8 && t->shape[3] == 8, "unet_out is F32 [2,4,8,8]");
    if (t) {
        float v[2 * 4 * 8 * 8];
        st_read_f32(t, v);
        double sum = 0;
        for (int k = 0; k < 512; k++) sum += v[k];
        /* reference values read with Python's struct module */
        ok(v[0] == 0.22476056218147278f && v[511] == 0.3525570333003998f &&
               fabs(sum - -42.18083187378943) < 1e-4, "unet_out values match (sum %.6f)", sum);
    }
    int all = 1;
    for (int k = 0; k < f.ntensors; k++) all &= st_find(&f, f.tensors[k].name) == &f.tensors[k];
    ok(all, "every golden tensor is found by name");
    st_close(&f);

    /* The fixture model files (F16 weights) open under the same strict rules. */
    static const char *models[] = {
        "text_encoder/model.safetensors", "text_encoder_2/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
    };
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        snprintf(p, sizeof p, "%s/tiny-sdxl-a/%s", dir ? dir : "data", models[k]);
        st = st_open(&f, p);
        ok(st == SD_OK && f.ntensors > 0, "open %s: %d tensors %s", models[k], f.ntensors,
           st ? sd_last_error() : "");
        if (st == SD_OK) {
            const struct st_tensor *last = &f.tensors[f.ntensors - 1];
            float *v = malloc((size_t)st_numel(last) * sizeof *v + 1);
            st_read_f32(last, v);
            int finite = 1;
            for (int64_t q = 0; q < st_numel(last); q++) finite &= isfinite(v[q]) != 0;
            ok(finite, "%s: '%s' reads as finite fp32", models[k], last->name);
            free(v);
        }
        st_close(&f);
    }
}

/* Mutate every byte of a small valid file (several ways) and truncate it at every
 * length: each open must either succeed with sane tensors or fail cleanly. */
static void test_fuzz(void) {
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
        "\"b\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[12,28]},"
        "\"c\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[28,28]},"
        "\"d\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[28,36]}}";
    uint8_t *base;
    size_t n = build(&base, strlen(hdr), hdr, strlen(hdr), 36);
    uint8_t *b = malloc(n);
    const char *p = tpath("fuzz.safetensors");
    static const uint8_t set[] = { '"', '}', '{', ']', ',', '9', '-', '0', ' ', 0, 0xff };
    int runs = 0, opened = 0, clean = 1, sane = 1;
    size_t live = sd_alloc_live_bytes();
    for (size_t pos = 0; pos < n; pos++) {
        for (int m = 0; m < 2 + (int)sizeof set; m++) {
            memcpy(b, base, n);
            if (m == 0) b[pos] ^= 0x01;
            else if (m == 1) b[pos] ^= 0x80;
            else b[pos] = set[m - 2];
            if (pos >= 8 + strlen(hdr) && m > 1) continue;   /* data bytes: flips suffice */
            write_bytes(p, b, n);
            struct st_file f;
            sd_status st = st_open(&f, p);
            runs++;
            if (st == SD_OK) {
                opened++;
                for (int k = 0; k < f.ntensors; k++) {
                    const struct st_tensor *t = &f.tensors[k];
                    const uint8_t *d = t->data, *lo = (const uint8_t *)f.map;
                    sane &= d >= lo && d + (t->end - t->begin) <= lo + f.size;
                    sane &= st_find(&f, t->name) == t;
                    float tmp[8];
                    if (st_numel(t) <= 8) st_read_f32(t, tmp);
                }
                st_close(&f);
            } else {
                clean &= (st == SD_ERR_FORMAT || st == SD_ERR_UNSUPPORTED) && closed(&f);
            }
        }
    }
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, base, len);
        struct st_file f;
        sd_status st = st_open(&f, p);
        runs++;
        clean &= st == SD_ERR_FORMAT && closed(&f);
        if (st == SD_OK) st_close(&f);
    }
    ok(clean, "fuzz: %d mutated/truncated files, %d opened, the rest failed cleanly", runs,
       opened);
    ok(sane, "fuzz: every opened tensor lies inside the mapping and is found by name");
    ok(sd_alloc_live_bytes() == live, "fuzz: nothing left allocated");
    free(b);
    free(base);
}

/* Fail each allocation of st_open and of the writer in turn: no leak, clean status. */
static void test_faults(void) {
    const char *p = tpath("good.safetensors");
    size_t live = sd_alloc_live_bytes();
    int n, clean = 1;
    struct st_file f;
    for (n = 1; n < 100; n++) {
        sd_fault_arm_alloc(n);
        sd_status st = st_open(&f, p);
        sd_fault_arm_alloc(0);
        if (st == SD_OK) break;
        clean &= st == SD_ERR_NOMEM && closed(&f) && sd_alloc_live_bytes() == live;
    }
    ok(clean && n < 100, "st_open: each of %d allocations failing is clean", n - 1);
    st_close(&f);

    float x[4] = { 1, 2, 3, 4 };
    int64_t s[1] = { 4 };
    const char *out = tpath("fault.safetensors");
    clean = 1;
    for (n = 1; n < 100; n++) {
        struct st_writer w;
        st_writer_init(&w);
        sd_fault_arm_alloc(n);
        sd_status st = st_writer_add_f32(&w, "a", DT_F16, 1, s, x);
        if (st == SD_OK) st = st_writer_add(&w, "b", DT_F32, 1, s, x);
        if (st == SD_OK) st = st_writer_write(&w, out);
        sd_fault_arm_alloc(0);
        st_writer_free(&w);
        clean &= (st == SD_OK || st == SD_ERR_NOMEM) && sd_alloc_live_bytes() == live;
        if (st == SD_OK) break;
    }
    ok(clean && n < 100, "writer: each of %d allocations failing is clean", n - 1);
    ok(count_tmp_files() == 0, "no temporary file left behind by failed writes");
}

static void cleanup_dir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        unlink(tpath(e->d_name));
    }
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sdxld-st-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    test_bad_files();
    test_good_files();
    test_many();
    test_roundtrip();
    test_golden();
    test_fuzz();
    test_faults();
    cleanup_dir();
    return done_testing();
}
