/* test_engine_models.c — engine_model_probe (src/engine_models.c): what a models folder's
 * entries are, from their headers alone.
 *
 * Covers: the tiny golden model folder is a diffusers model whose resident estimate is the
 * weights engine_load holds, for each weights_dtype; its UNet file alone is a UNet; the
 * kohya LoRA fixture is a LoRA; a VAE-only torch checkpoint, hostile torch
 * files (pickles that try to call things), a truncated safetensors, a folder without
 * model_index.json, a FIFO and a missing path are errors with a message, never a crash;
 * sdxld's own single-file export of the tiny model is a checkpoint (not SDXL base) whose
 * estimate matches the loaded weights too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "tap.h"

static char data[512], tiny[600];

static const char *path(const char *rel) {
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", data, rel);
    return p[k];
}

static size_t loaded_bytes(const char *model, const char *config, const char *wdt) {
    struct engine *e = NULL;
    struct engine_config ec = { .model_dir = model, .config_dir = config, .weights_dtype = wdt, .threads = 1 };
    if (engine_load(&e, &ec) != SD_OK) return 0;
    size_t n = engine_info(e)->param_bytes;
    engine_free(e);
    return n;
}

static int near(uint64_t est, size_t real) {
    double d = (double)est - (double)real;
    return real > 0 && (d < 0 ? -d : d) <= real / 1000.0;
}

static void test_folder(void) {
    static const char *const wdts[] = { "auto", "f32", "f16", "bf16" };
    for (int i = 0; i < 4; i++) {
        struct engine_model_probe p;
        engine_model_probe(tiny, wdts[i], &p);
        size_t real = loaded_bytes(tiny, NULL, wdts[i]);
        ok(p.kind == ENGINE_MODEL_DIFFUSERS && near(p.resident_bytes, real),
           "tiny folder, weights_dtype %s: diffusers, estimate %llu vs loaded %zu", wdts[i],
           (unsigned long long)p.resident_bytes, real);
    }
    struct engine_model_probe p;
    engine_model_probe(tiny, "auto", &p);
    ok(p.file_bytes > 20u << 20 && !strcmp(engine_model_kind_name(p.kind), "diffusers"),
       "its size is its files' (%llu bytes) and its kind's name 'diffusers'", (unsigned long long)p.file_bytes);
}

static void expect(const char *p, enum engine_model_kind kind, const char *what, const char *msg_has) {
    struct engine_model_probe r;
    engine_model_probe(p, "auto", &r);
    ok(r.kind == kind && (!msg_has || strstr(r.error, msg_has)), "%s: %s (%s)", what,
       engine_model_kind_name(r.kind), r.error[0] ? r.error : "no error");
}

static void test_files(void) {
    expect(path("tiny-sdxl-a/unet/diffusion_pytorch_model.safetensors"), ENGINE_MODEL_UNET, "a UNet file", NULL);
    expect(path("tiny-sdxl-a/lora/lora_kohya.safetensors"), ENGINE_MODEL_LORA, "a kohya LoRA", NULL);
    expect(path("tiny-sdxl-a/vae/diffusion_pytorch_model.safetensors"), ENGINE_MODEL_ERROR,
           "a VAE alone", "layout");
    expect(path("torch/vae_small.ckpt"), ENGINE_MODEL_ERROR, "a VAE-only torch checkpoint", "layout");
    expect(path("torch/evil_os_system.pt"), ENGINE_MODEL_ERROR, "a pickle calling os.system", NULL);
    expect(path("torch/evil_class.pt"), ENGINE_MODEL_ERROR, "a pickle building a class", NULL);
    expect(path("tiny-sdxl-a/tokenizer"), ENGINE_MODEL_ERROR, "a folder without model_index.json",
           "model_index.json");
    expect(path("no-such-model"), ENGINE_MODEL_ERROR, "a missing path", NULL);
}

static void test_made(void) {
    char dir[] = "/tmp/sdxld-probe-XXXXXX";
    ok(mkdtemp(dir) != NULL, "a scratch folder");
    char single[600], cut[600], fifo[600];
    snprintf(single, sizeof single, "%s/tiny.safetensors", dir);
    snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
    snprintf(fifo, sizeof fifo, "%s/pipe.safetensors", dir);
    struct engine_convert cv = { .model = tiny, .out = single, .to_single = 1, .dtype = DT_F32 };
    ok(engine_convert(&cv) == SD_OK, "the tiny model as one original-layout file: %s", sd_last_error());
    struct engine_model_probe p;
    engine_model_probe(single, "auto", &p);
    size_t real = loaded_bytes(single, tiny, "auto");
    struct stat sb;
    ok(p.kind == ENGINE_MODEL_CHECKPOINT && !p.sdxl_base && near(p.resident_bytes, real) &&
       stat(single, &sb) == 0 && p.file_bytes == (uint64_t)sb.st_size,
       "a checkpoint, not SDXL base, estimate %llu vs loaded %zu, size its file's",
       (unsigned long long)p.resident_bytes, real);
    FILE *in = fopen(single, "rb"), *out = fopen(cut, "wb");
    char buf[1 << 16];
    size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
    if (out) fwrite(buf, 1, n, out);
    if (in) fclose(in);
    if (out) fclose(out);
    expect(cut, ENGINE_MODEL_ERROR, "its first 64 KiB", NULL);
    ok(mkfifo(fifo, 0600) == 0, "a FIFO");
    expect(fifo, ENGINE_MODEL_ERROR, "a FIFO (no hang)", "regular file");
    unlink(single);
    unlink(cut);
    unlink(fifo);
    rmdir(dir);
}

int main(void) {
    const char *d = getenv("SDXLD_TEST_DATA");
    snprintf(data, sizeof data, "%s", d ? d : "tests/data");
    snprintf(tiny, sizeof tiny, "%s/tiny-sdxl-a", data);
    test_folder();
    test_files();
    test_made();
    return done_testing();
}
