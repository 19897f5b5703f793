/* test_torchfile.c — PyTorch checkpoints (zipfile.c, pickle.c, torchfile.c through
 * st_open) against the fixtures of tests/ref/make_torch_fixtures.py.
 *
 *  - every good file, tensor by tensor and bit for bit, against its safetensors
 *    original; fp16 and bf16 made by torch from fp32 against sd_convert_from_f32;
 *  - the tiny VAE from a pickle-era diffusers folder (diffusion_pytorch_model.bin only)
 *    through vae_load, against the golden decoder and encoder outputs;
 *  - every hostile file refused with the expected message, and the marker file its
 *    payload would create never appears;
 *  - the interpreter's limits on hand-written pickles, ZIP overlap and duplicate games
 *    on hand-built archives;
 *  - a byte-mutation loop and truncation at every length over a small checkpoint, and
 *    an allocation-fault sweep over three files: clean errors, no leaks. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "io/zipfile.h"
#include "model/vae.h"
#include "tap.h"

#define MARKER "/tmp/sdxld-torch-pwned"

static char data_dir[1024];
static char tmpdir[64];

static const char *dpath(const char *name) {
    static char buf[4][1200];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 1200, "%s/%s", data_dir, name);
    return b;
}

static const char *tpath(const char *name) {
    static char buf[1200];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { printf("Bail out! cannot read %s\n", path); exit(1); }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, fp);
    fclose(fp);
    return b;
}

static void write_bytes(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) { perror(path); exit(2); }
    if (len && fwrite(buf, 1, len, fp) != len) { perror(path); exit(2); }
    fclose(fp);
}

static int closed(const struct st_file *f) {
    return f->map == NULL && f->tensors == NULL && f->path == NULL && f->ntensors == 0;
}

static void open_or_bail(struct st_file *f, const char *path) {
    if (st_open(f, path) != SD_OK) { printf("Bail out! %s\n", sd_last_error()); exit(1); }
}

static size_t nbytes(const struct st_tensor *t) {
    return (size_t)st_numel(t) * sd_dtype_size(t->dtype);
}

static int same_tensor(const struct st_tensor *a, const struct st_tensor *b) {
    if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return memcmp(a->data, b->data, nbytes(a)) == 0;
}

/* Every tensor of got equals the tensor of the same name in want, and no more or less. */
static void compare_files(const char *what, const char *got_path, const char *want_path) {
    struct st_file g, w;
    open_or_bail(&g, got_path);
    open_or_bail(&w, want_path);
    int same = g.ntensors == w.ntensors, inside = 1;
    for (int i = 0; i < g.ntensors; i++) {
        const struct st_tensor *t = &g.tensors[i];
        const uint8_t *lo = g.map, *d = t->data;
        inside &= d >= lo && d + nbytes(t) <= lo + g.size && st_find(&g, t->name) == t;
        if (!same_tensor(t, st_find(&w, t->name))) {
            if (same) diag("%s: '%s' differs", what, t->name);
            same = 0;
        }
    }
    ok(same, "%s: %d tensors bit-identical to %s", what, g.ntensors, want_path);
    ok(inside, "%s: every tensor lies in the mapping and is found by name", what);
    st_close(&g);
    st_close(&w);
}

/* fp32 tensors of got equal the (fp16) tensors of want widened to fp32, exactly. */
static void compare_widened(const char *what, const char *got_path, const char *want_path,
                            int want_n) {
    struct st_file g, w;
    open_or_bail(&g, got_path);
    open_or_bail(&w, want_path);
    int same = g.ntensors == want_n;
    for (int i = 0; i < g.ntensors; i++) {
        const struct st_tensor *t = &g.tensors[i], *r = st_find(&w, t->name);
        if (!r || t->dtype != DT_F32 || st_numel(t) != st_numel(r)) { same = 0; continue; }
        float *a = malloc(nbytes(t) + 4), *b = malloc(nbytes(t) + 4);
        st_read_f32(t, a);
        st_read_f32(r, b);
        same &= memcmp(a, b, nbytes(t)) == 0;
        free(a);
        free(b);
    }
    ok(same, "%s: %d fp32 tensors equal the fp16 originals widened", what, g.ntensors);
    st_close(&g);
    st_close(&w);
}

/* torch's fp32 -> fp16 / bf16 (as_f16, as_bf16 of src_f32) against ours. */
static void test_rounding(void) {
    struct st_file f;
    open_or_bail(&f, dpath("mixed.pt"));
    const struct st_tensor *src = st_find(&f, "src_f32");
    const struct st_tensor *h = st_find(&f, "as_f16"), *b = st_find(&f, "as_bf16");
    ok(src && h && b && src->dtype == DT_F32 && h->dtype == DT_F16 && b->dtype == DT_BF16,
       "rounding: src_f32, as_f16, as_bf16 present");
    if (src && h && b) {
        size_t n = (size_t)st_numel(src);
        float *x = malloc(n * 4);
        uint16_t *y = malloc(n * 2);
        st_read_f32(src, x);
        sd_convert_from_f32(y, x, DT_F16, n);
        ok(memcmp(y, h->data, n * 2) == 0, "rounding: sd_convert_from_f32 to F16 matches torch "
           "on %zu values (ties, subnormals, overflow, inf, nan)", n);
        /* NaN payloads are not rounding: torch's vectorised CPU path writes 0xffff for a
         * NaN, its scalar c10::BFloat16 0x7fc0, ours keeps the sign (0x7fc0 here). */
        sd_convert_from_f32(y, x, DT_BF16, n);
        int same = 1, nans = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t t;
            memcpy(&t, (const uint8_t *)b->data + 2 * i, 2);
            int both_nan = (y[i] & 0x7fff) > 0x7f80 && (t & 0x7fff) > 0x7f80;
            nans += both_nan;
            same &= y[i] == t || both_nan;
        }
        ok(same, "rounding: to BF16 matches torch on %zu values (%d NaNs: any NaN)", n, nans);
        free(x);
        free(y);
    }
    st_close(&f);
}

static void test_good(void) {
    char ref[1200];
    snprintf(ref, sizeof ref, "%s/../tiny-sdxl-a/vae/diffusion_pytorch_model.safetensors",
             data_dir);
    compare_files("vae .bin (OrderedDict + _metadata)", dpath("vae/diffusion_pytorch_model.bin"),
                  ref);
    compare_widened("vae_small_f32.pt", dpath("vae_small_f32.pt"), ref, 189);
    compare_widened("vae_small.ckpt (state_dict, module. prefixes)", dpath("vae_small.ckpt"), ref,
                    189);
    compare_files("mixed.pt", dpath("mixed.pt"), dpath("mixed_ref.safetensors"));
    compare_files("mixed_zip64.pt", dpath("mixed_zip64.pt"), dpath("mixed_ref.safetensors"));
    compare_files("mixed_pyzip.pt", dpath("mixed_pyzip.pt"), dpath("mixed_ref.safetensors"));

    struct st_file f;
    open_or_bail(&f, dpath("mixed.pt"));
    const struct st_tensor *r = st_find(&f, "rows_2_to_5"), *s = st_find(&f, "scalar");
    const struct st_tensor *e = st_find(&f, "empty"), *c = st_find(&f, "col_t");
    const struct st_tensor *i = st_find(&f, "ids_i64");
    ok(r && r->ndim == 2 && r->shape[0] == 3 && ((const float *)r->data)[0] == 8.0f,
       "a view at storage offset 8 reads rows 2..4");
    ok(s && s->ndim == 0 && st_numel(s) == 1, "a 0-dim tensor has one element");
    ok(e && e->ndim == 2 && st_numel(e) == 0, "an empty tensor loads");
    ok(c && c->ndim == 2 && c->shape[0] == 7 && c->shape[1] == 1,
       "(7,1) with stride (1,7) counts as contiguous, as in torch");
    int64_t v[6];
    if (i) memcpy(v, i->data, sizeof v);
    ok(i && i->dtype == DT_I64 && v[2] == (int64_t)1 << 40 && v[5] == -((int64_t)1 << 62),
       "int64 values survive");
    st_close(&f);
    test_rounding();
}

/* ---- the model loader on a pickle-era diffusers folder --------------------------- */

static float *golden(struct st_file *g, const char *name) {
    const struct st_tensor *t = st_find(g, name);
    if (!t) { printf("Bail out! golden %s missing\n", name); exit(1); }
    float *d = malloc(sizeof(float) * (size_t)st_numel(t));
    st_read_f32(t, d);
    return d;
}

static void test_loader(void) {
    char *p = wt_weights_path(dpath("vae"), "diffusion_pytorch_model.safetensors",
                              "diffusion_pytorch_model.bin");
    ok(p && strstr(p, "/vae/diffusion_pytorch_model.bin"), "a folder with only .bin: %s", p);
    sd_free(p);
    p = wt_weights_path(dpath("../tiny-sdxl-a/vae"), "diffusion_pytorch_model.safetensors",
                        "diffusion_pytorch_model.bin");
    ok(p && strstr(p, ".safetensors"), "a folder with safetensors keeps it");
    sd_free(p);

    struct st_file g;
    open_or_bail(&g, dpath("../tiny-sdxl-a/golden.safetensors"));
    struct backend *be;
    if (backend_create(&be, "cpu", 0)) { printf("Bail out! %s\n", sd_last_error()); exit(1); }
    struct arena ar;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    struct fwd f = { .be = be, .ar = &ar };
    struct vae v;
    sd_status st = vae_load(&v, be, dpath("vae"), DT_F32);
    ok(st == SD_OK, "vae_load from diffusion_pytorch_model.bin: %s", st ? sd_last_error() : "ok");
    if (st == SD_OK) {
        const struct st_tensor *te = st_find(&g, "vae_enc_in"), *td = st_find(&g, "vae_dec_in");
        float *ein = golden(&g, "vae_enc_in"), *din = golden(&g, "vae_dec_in");
        float *mean = malloc(sizeof(float) * st_numel(st_find(&g, "vae_enc_mean")));
        float *dout = malloc(sizeof(float) * st_numel(st_find(&g, "vae_dec_out")));
        vae_encode(&f, &v, mean, ein, (int)te->shape[0], (int)te->shape[2], (int)te->shape[3]);
        vae_decode(&f, &v, dout, din, (int)td->shape[0], (int)td->shape[2], (int)td->shape[3]);
        ok(backend_status(be) == SD_OK, "vae ran");
        float *wm = golden(&g, "vae_enc_mean"), *wd = golden(&g, "vae_dec_out");
        double em = rel_err(mean, wm, (size_t)st_numel(st_find(&g, "vae_enc_mean")));
        double ed = rel_err(dout, wd, (size_t)st_numel(st_find(&g, "vae_dec_out")));
        ok(em < 1e-4, "golden vae_enc_mean from the .bin: rel err %.3g < 1e-4", em);
        ok(ed < 1e-4, "golden vae_dec_out from the .bin: rel err %.3g < 1e-4", ed);
        free(ein); free(din); free(mean); free(dout); free(wm); free(wd);
        vae_free(&v);
    }
    arena_free(&ar);
    backend_destroy(be);
    st_close(&g);
}

/* ---- hostile files ------------------------------------------------------------------- */

static void expect(const char *path, sd_status want, const char *frag, const char *frag2) {
    struct st_file f;
    size_t live = sd_alloc_live_bytes();
    sd_clear_error();
    sd_status st = st_open(&f, path);
    const char *msg = sd_last_error();
    if (st == SD_OK) st_close(&f);
    ok(st == want && closed(&f) && strstr(msg, path) && strstr(msg, frag) &&
       (!frag2 || strstr(msg, frag2)), "%s: %s", sd_status_name(st), msg);
    ok(sd_alloc_live_bytes() == live, "  nothing left allocated");
}

static void test_hostile(void) {
    unlink(MARKER);
    static const struct { const char *file; sd_status st; const char *frag, *frag2; } cases[] = {
        { "evil_os_system.pt", SD_ERR_FORMAT, "global 'os.system' is not allowed", NULL },
        { "evil_posix_system.pt", SD_ERR_FORMAT, "global 'posix.system' is not allowed", NULL },
        { "evil_eval.pt", SD_ERR_FORMAT, "global 'builtins.eval' is not allowed", NULL },
        { "evil_class.pt", SD_ERR_FORMAT, "global '__main__.Foo' is not allowed", NULL },
        { "evil_numpy.pt", SD_ERR_FORMAT, "multiarray._reconstruct' is not allowed", NULL },
        { "evil_parameter.pt", SD_ERR_FORMAT, "'torch._utils._rebuild_parameter' is not allowed",
          NULL },
        { "noncontig.pt", SD_ERR_UNSUPPORTED, "tensor 't'", "stride (1,4) is not a contiguous" },
        { "offset_oob.pt", SD_ERR_FORMAT, "tensor 'late'", "offset 2 + 3 elements run past" },
        { "storage_size.pt", SD_ERR_FORMAT, "tensor 'short'", "does not match its 16-byte entry" },
        { "double.pt", SD_ERR_UNSUPPORTED, "storage type 'torch.DoubleStorage' is not supported",
          NULL },
        { "dup_module.pt", SD_ERR_FORMAT, "tensor 'w' appears twice", NULL },
        { "deflated.pt", SD_ERR_UNSUPPORTED, "'archive/data.pkl' is compressed (method 8)", NULL },
        { "legacy.pt", SD_ERR_UNSUPPORTED, "legacy (non-zip) PyTorch file: convert it with "
          "torch ≥1.6 or to safetensors", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect(dpath(cases[i].file), cases[i].st, cases[i].frag, cases[i].frag2);
    ok(access(MARKER, F_OK) != 0, "no payload ran: %s was never created", MARKER);
}

/* ---- the interpreter's limits -------------------------------------------------------- */

static void expect_pickle(const char *what, const uint8_t *b, size_t n, sd_status want,
                          const char *frag) {
    struct pickle p;
    size_t live = sd_alloc_live_bytes();
    sd_status st = pk_load(&p, what, b, n);
    const char *msg = st ? sd_last_error() : "loaded";
    ok(st == want && (!frag || strstr(msg, frag)), "pickle %s: %s", what, msg);
    pk_free(&p);
    ok(sd_alloc_live_bytes() == live, "  nothing left allocated");
}

#define PK(what, lit, want, frag) \
    expect_pickle(what, (const uint8_t *)(lit), sizeof(lit) - 1, want, frag)

static void test_pickle(void) {
    PK("cycle", "\x80\x02}q\x00h\x00h\x00s.", SD_OK, NULL);   /* d[d] = d: no recursion */
    PK("no stop", "\x80\x02N", SD_ERR_FORMAT, "ends without STOP");
    PK("underflow", "\x80\x02Ns.", SD_ERR_FORMAT, "stack underflow");
    PK("POP with nothing above its mark drops the mark", "\x80\x02N(0.", SD_OK, NULL);
    PK("SETITEM across a mark", "\x80\x02}(Ns.", SD_ERR_FORMAT, "stack underflow");
    PK("two items at STOP", "\x80\x02NN.", SD_ERR_FORMAT, "STOP with a stack");
    PK("unset memo", "\x80\x02h\x05.", SD_ERR_FORMAT, "memo key not set");
    PK("memo bound", "\x80\x02Nr\xff\xff\xff\xff.", SD_ERR_FORMAT, "memo key beyond the limit");
    PK("long string", "\x80\x02X\xff\xff\xff\x7f", SD_ERR_FORMAT, "string longer than the limit");
    PK("truncated string", "\x80\x02X\x10\x00\x00\x00" "ab", SD_ERR_FORMAT, "runs past the end");
    PK("wide LONG1", "\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", SD_ERR_FORMAT,
       "wider than 64 bits");
    PK("INST", "\x80\x02i__main__\nFoo\n.", SD_ERR_FORMAT, "opcode 0x69 is not supported");
    PK("reduce on a string", "\x80\x02X\x01\x00\x00\x00" "a)R.", SD_ERR_FORMAT,
       "REDUCE on something that is not a global");
    PK("OrderedDict with args", "\x80\x02\x63\x63ollections\nOrderedDict\n]\x85R.", SD_ERR_FORMAT,
       "called with arguments");
    PK("storage called", "\x80\x02\x63torch\nFloatStorage\n)R.", SD_ERR_FORMAT,
       "only accepted in a persistent id");
    PK("bad persid", "\x80\x02NQ.", SD_ERR_FORMAT, "persistent id is not");
    PK("BUILD on a list", "\x80\x02]}b.", SD_ERR_FORMAT, "BUILD of a list");
    PK("protocol 0", "\x80\x00N.", SD_ERR_FORMAT, "protocol is not 2 to 5");
    PK("global without newline", "\x80\x02\x63os", SD_ERR_FORMAT, "not a short line");

    struct pickle p;
    static const uint8_t neg[] = "\x80\x02\x8a\x02\x00\xff.";
    ok(pk_load(&p, "LONG1", neg, sizeof neg - 1) == SD_OK &&
       pk_get(&p, p.root)->kind == PK_INT && pk_get(&p, p.root)->u.i == -256,
       "LONG1 sign-extends (-256)");
    pk_free(&p);

    size_t n = 2 + PK_MAX_MARKS + 1;
    uint8_t *b = malloc(PK_MAX_STACK + 8);
    memcpy(b, "\x80\x02", 2);
    memset(b + 2, '(', n - 2);
    expect_pickle("deep marks", b, n, SD_ERR_FORMAT, "nested MARKs");
    memset(b + 2, 'N', PK_MAX_STACK + 1);
    expect_pickle("tall stack", b, PK_MAX_STACK + 3, SD_ERR_FORMAT, "stack entries");
    free(b);
}

/* ---- hand-built archives: overlap and duplicate games ---------------------------------- */

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

static size_t local_header(uint8_t *p, const char *name, uint32_t size) {
    size_t nl = strlen(name);
    memset(p, 0, 30);
    put32(p, 0x04034b50);
    put32(p + 18, size);
    put32(p + 22, size);
    put16(p + 26, (unsigned)nl);
    memcpy(p + 30, name, nl);
    return 30 + nl;
}

static size_t central(uint8_t *p, const char *name, uint32_t size, uint32_t off) {
    size_t nl = strlen(name);
    memset(p, 0, 46);
    put32(p, 0x02014b50);
    put32(p + 20, size);
    put32(p + 24, size);
    put16(p + 28, (unsigned)nl);
    put32(p + 42, off);
    memcpy(p + 46, name, nl);
    return 46 + nl;
}

static size_t end_record(uint8_t *p, unsigned count, uint32_t cd_size, uint32_t cd_off) {
    memset(p, 0, 22);
    put32(p, 0x06054b50);
    put16(p + 8, count);
    put16(p + 10, count);
    put32(p + 12, cd_size);
    put32(p + 16, cd_off);
    return 22;
}

static void test_zip_games(void) {
    uint8_t b[1024];
    /* "a/x" holds, as its data, a complete local header + data for "a/y": both headers
     * agree with the directory, but the bytes of "a/y" are inside "a/x". */
    size_t inner = 30 + 3 + 4;
    size_t o = local_header(b, "a/x", (uint32_t)inner);
    size_t y_at = o;
    o += local_header(b + o, "a/y", 4);
    memcpy(b + o, "1234", 4);
    o += 4;
    size_t cd = o;
    o += central(b + o, "a/x", (uint32_t)inner, 0);
    o += central(b + o, "a/y", 4, (uint32_t)y_at);
    o += end_record(b + o, 2, (uint32_t)(o - cd), (uint32_t)cd);
    write_bytes(tpath("overlap.zip"), b, o);
    struct zip_archive z;
    size_t live = sd_alloc_live_bytes();
    sd_status st = zip_open(&z, "overlap.zip", b, o);
    ok(st == SD_ERR_FORMAT && strstr(sd_last_error(), "overlaps"), "nested entries: %s",
       sd_last_error());
    /* two directory records for one entry */
    o = local_header(b, "a/x", 4);
    memcpy(b + o, "1234", 4);
    o += 4;
    cd = o;
    o += central(b + o, "a/x", 4, 0);
    o += central(b + o, "a/x", 4, 0);
    o += end_record(b + o, 2, (uint32_t)(o - cd), (uint32_t)cd);
    st = zip_open(&z, "dup.zip", b, o);
    ok(st == SD_ERR_FORMAT && strstr(sd_last_error(), "'a/x' appears twice"), "duplicate: %s",
       sd_last_error());
    /* a count the directory cannot hold */
    put16(b + o - 22 + 8, 60000);
    put16(b + o - 22 + 10, 60000);
    st = zip_open(&z, "count.zip", b, o);
    ok(st == SD_ERR_FORMAT && strstr(sd_last_error(), "do not fit"), "entry count: %s",
       sd_last_error());
    /* a valid single entry, found by name */
    put16(b + o - 22 + 8, 1);
    put16(b + o - 22 + 10, 1);
    put32(b + o - 22 + 12, 46 + 3);
    memmove(b + cd + 49, b + o - 22, 22);
    o = cd + 49 + 22;
    st = zip_open(&z, "one.zip", b, o);
    const struct zip_entry *e = st ? NULL : zip_find(&z, "a/x");
    ok(e && e->size == 4 && memcmp(b + e->offset, "1234", 4) == 0 && !zip_find(&z, "a/y"),
       "a one-entry archive: %s", st ? sd_last_error() : "found a/x");
    zip_close(&z);
    ok(sd_alloc_live_bytes() == live, "zip games: nothing left allocated");
    /* a ZIP that is not a torch checkpoint */
    write_bytes(tpath("plain.zip"), b, o);
    expect(tpath("plain.zip"), SD_ERR_FORMAT, "without ARCHIVE/data.pkl", NULL);
}

/* ---- mutation loop and fault sweep ---------------------------------------------------- */

static void fuzz_one(const char *p, int *opened, int *clean, int *sane) {
    struct st_file f;
    sd_status st = st_open(&f, p);
    if (st != SD_OK) {
        *clean &= (st == SD_ERR_FORMAT || st == SD_ERR_UNSUPPORTED) && closed(&f);
        return;
    }
    ++*opened;
    for (int k = 0; k < f.ntensors; k++) {
        const struct st_tensor *t = &f.tensors[k];
        const uint8_t *d = t->data, *lo = (const uint8_t *)f.map;
        *sane &= d >= lo && d + nbytes(t) <= lo + f.size && st_find(&f, t->name) == t;
        float tmp[16];
        if (st_numel(t) <= 16) st_read_f32(t, tmp);
    }
    st_close(&f);
}

static void test_fuzz(void) {
    size_t n;
    uint8_t *base = read_bytes(dpath("fuzz.pt"), &n), *b = malloc(n);
    static const uint8_t set[] = { 0x00, 0xff, '(', 't', 'u', 's', 'R', 'q', 'h', 'X', '.', '}' };
    const char *p = tpath("fuzz.pt");
    int runs = 0, opened = 0, clean = 1, sane = 1;
    size_t live = sd_alloc_live_bytes();
    for (size_t pos = 0; pos < n; pos++) {
        for (int m = 0; m < 2 + (int)sizeof set; m++) {
            memcpy(b, base, n);
            if (m == 0) b[pos] ^= 0x01;
            else if (m == 1) b[pos] ^= 0x80;
            else b[pos] = set[m - 2];
            if (b[pos] == base[pos]) continue;
            write_bytes(p, b, n);
            fuzz_one(p, &opened, &clean, &sane);
            runs++;
        }
    }
    for (size_t len = 0; len < n; len++) {
        write_bytes(p, base, len);
        fuzz_one(p, &opened, &clean, &sane);
        runs++;
    }
    ok(clean, "fuzz: %d mutated/truncated files, %d opened, the rest failed cleanly", runs,
       opened);
    ok(sane, "fuzz: every opened tensor lies inside the mapping and is found by name");
    ok(sd_alloc_live_bytes() == live, "fuzz: nothing left allocated");
    free(b);
    free(base);
}

static void test_faults(const char *name) {
    size_t live = sd_alloc_live_bytes();
    int n, clean = 1;
    struct st_file f;
    for (n = 1; n < 1000; n++) {
        sd_fault_arm_alloc(n);
        sd_status st = st_open(&f, dpath(name));
        sd_fault_arm_alloc(0);
        if (st == SD_OK) break;
        clean &= st == SD_ERR_NOMEM && closed(&f) && sd_alloc_live_bytes() == live;
    }
    ok(clean && n < 1000, "%s: each of %d allocations failing is clean, then it opens", name,
       n - 1);
    st_close(&f);
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
    const char *data = getenv("SDXLD_TEST_DATA");
    snprintf(data_dir, sizeof data_dir, "%s/torch", data ? data : "tests/data");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sdxld-torch-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    test_good();
    test_loader();
    test_hostile();
    test_pickle();
    test_zip_games();
    test_fuzz();
    test_faults("vae/diffusion_pytorch_model.bin");
    test_faults("vae_small.ckpt");
    test_faults("mixed.pt");
    cleanup_dir();
    ok(sd_alloc_live_bytes() == 0, "every sd_malloc freed (%zu bytes live)", sd_alloc_live_bytes());
    return done_testing();
}
