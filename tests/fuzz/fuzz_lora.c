/* fuzz_lora.c — libFuzzer harness: the LoRA key mapper (src/model/lora.c) against the UNet
 * weight table of tests/data/tiny-sdxl-a (loaded once, CPU backend, one thread).  The first
 * byte picks how the rest is read:
 *   even: an adapter file as is, through lora_apply_file (safetensors reader, key mapping,
 *         shape checks, the merge);
 *   odd:  lines "KEY D0 D1 ..." (0 to 4 dimensions) made into a valid safetensors file of
 *         F32 tensors (zeros, at most 64 Ki values each), so the mutations reach the key
 *         mapping and the shape checks instead of breaking the header; each KEY also goes
 *         through lora_is_target and lora_kohya_name.
 * A file is merged in full or refused with the weights untouched (lora.h: a refused row
 * that differs from the loaded weights is a finding), and a merge leaves every weight
 * finite; after a merge the weights go back to the loaded ones.  Needs SDXLD_TEST_DATA
 * (tests/fuzz/run.sh sets it). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/lora.h"
#include "model/unet.h"
#include "fuzz_file.h"

#define MAX_NUMEL (1 << 16)

static struct backend *be;
static struct unet U;

static float **saved;   /* every row's weights as loaded */

/* The harness's own loops over the weights are not instrumented (they would dominate a run). */
#define NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))

static size_t row_numel(int i) { return (size_t)sd_numel(U.wt.rows[i].ndim, U.wt.rows[i].shape); }

NO_COVERAGE static void save_weights(void) {
    saved = calloc((size_t)U.wt.n, sizeof *saved);
    for (int i = 0; saved && i < U.wt.n; i++)
        if ((saved[i] = malloc(row_numel(i) * sizeof(float))))
            memcpy(saved[i], *U.wt.rows[i].dst, row_numel(i) * sizeof(float));
}

/* Does row i differ from the loaded weights?  Every 97th weight is compared: a merge
 * changes whole rows, and a full compare of the table would cost more than the run. */
NO_COVERAGE static int row_changed(int i) {
    const float *w = *U.wt.rows[i].dst;
    for (size_t k = 0, n = row_numel(i); k < n; k += 97)
        if (w[k] != saved[i][k]) return 1;   /* the saved weights are finite */
    return 0;
}

/* The first row that differs from the loaded weights, or -1. */
NO_COVERAGE static int changed_row(void) {
    for (int i = 0; i < U.wt.n; i++)
        if (row_changed(i)) return i;
    return -1;
}

/* After a merge: the first row holding a non-finite weight, or -1; the merged rows go back
 * to the loaded weights. */
NO_COVERAGE static int restore_weights(void) {
    int bad = -1;
    for (int i = 0; i < U.wt.n; i++)
        if (row_changed(i)) {
            if (bad < 0 && sd_find_nonfinite(*U.wt.rows[i].dst, row_numel(i)) >= 0) bad = i;
            memcpy(*U.wt.rows[i].dst, saved[i], row_numel(i) * sizeof(float));
        }
    return bad;
}

static void init(void) {
    const char *data = getenv("SDXLD_TEST_DATA");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny-sdxl-a/unet", data ? data : "tests/data");
    if (backend_create(&be, "cpu", 1) || unet_load(&U, be, dir, NULL, DT_F32)) {
        fprintf(stderr, "fuzz_lora: cannot load the tiny UNet from %s: %s\n", dir, sd_last_error());
        abort();
    }
    save_weights();
}

/* One "KEY D0 D1 ..." line into the header h; its data size added to *bytes.  0 or -1. */
static int add_line(json_t *h, char *line, size_t *bytes) {
    char *sp = strchr(line, ' ');
    if (sp) *sp = 0;
    int is_t = lora_is_target(line);   /* the name functions on any name */
    char kohya[LORA_NAME_MAX];
    lora_kohya_name(line, kohya, (size_t)(is_t ? sizeof kohya : 12));
    json_t *shape = json_array();
    long long numel = 1;
    for (char *p = sp ? sp + 1 : NULL; p && *p && json_array_size(shape) < 4;) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p || d < 0 || d > MAX_NUMEL) break;
        numel *= d;
        json_array_append_new(shape, json_integer(d));
        p = end;
    }
    if (numel > MAX_NUMEL) numel = -1;
    size_t nb = numel < 0 ? 0 : (size_t)numel * 4;
    json_t *t = numel < 0 ? NULL : json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                                             "data_offsets", (json_int_t)*bytes, (json_int_t)(*bytes + nb));
    if (numel < 0) json_decref(shape);
    if (!t || json_object_set_new(h, line, t)) return -1;   /* not UTF-8, or out of memory */
    *bytes += nb;
    return 0;
}

/* The lines of text as a safetensors file (fresh malloc, *len bytes), or NULL. */
static uint8_t *safetensors_of(char *text, size_t *len) {
    json_t *h = json_object();
    size_t bytes = 0;
    for (char *line = text; h && line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line && bytes < (4u << 20) && add_line(h, line, &bytes)) break;
        line = nl ? nl + 1 : NULL;
    }
    char *hs = h ? json_dumps(h, JSON_COMPACT) : NULL;
    json_decref(h);
    size_t hl = hs ? strlen(hs) : 0;
    uint8_t *f = hs ? calloc(1, 8 + hl + bytes) : NULL;
    if (f) {
        for (int i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        memcpy(f + 8, hs, hl);
        *len = 8 + hl + bytes;
    }
    free(hs);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size < 1) return 0;
    uint8_t *file = NULL;
    size_t len = size - 1;
    if (data[0] & 1) {
        char *text = malloc(size);
        if (!text) return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = 0;
        file = safetensors_of(text, &len);
        free(text);
        if (!file) return 0;
    }
    const char *path = fuzz_file("lora", file ? file : data + 1, len);
    free(file);
    if (!path) return 0;
    sd_status st = lora_apply_file(&U.wt, be, path, 1.0f);
    int row = st ? changed_row() : restore_weights();
    if (row >= 0) {
        fprintf(stderr, "%s: %s (%s)\n", U.wt.rows[row].name, st ? "a refused adapter file changed it"
                : "a merged adapter file left a non-finite weight", sd_last_error());
        abort();
    }
    sd_clear_error();
    return 0;
}
