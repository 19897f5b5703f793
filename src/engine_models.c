/* engine_models.c — what a file or folder of a models folder is, from its headers alone
 * (engine.h, "models by name").
 *
 * The daemon lists models_dir on every GET /v1/models and checks a model's memory before
 * switching to it, so nothing here reads a tensor: safetensors headers are parsed and the
 * file mapped (st_open), torch files have their pickle interpreted, and the tensors'
 * dtypes and shapes decide.  Content decides, never the name: a LoRA renamed model.bin is
 * still a LoRA.  The same strict readers as loading are used, so a file listed as a model
 * at least opens the way the loader opens it; a corrupt or hostile one is an `error` entry
 * with the reader's message. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "io/weights.h"
#include "io/wfiles.h"
#include "model/lora.h"
#include "model/sgm.h"

const char *engine_model_kind_name(enum engine_model_kind k) {
    static const char *const n[] = { "error", "diffusers", "checkpoint", "unet", "lora" };
    return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "error";
}

/* The text encoders' position embeddings: 2-D, but kept F32 (model/clip.c; the token
 * tables are stored like the GEMM weights), in diffusers and both original spellings. */
static int is_f32_table(const char *name) {
    return strstr(name, "position_embedding") || strstr(name, "positional_embedding");
}

/* Bytes a loaded table holds for these files: GEMM weights (2+ dimensions) in the
 * storage engine_load picks (wfiles_dtype), the rest (biases, norms, position tables) in f32. */
static uint64_t resident_of(const struct wfiles *w, sd_dtype want) {
    sd_dtype gemm = wfiles_dtype(w, want);
    uint64_t sum = 0;
    for (int i = 0; i < w->n; i++)
        for (int k = 0; k < w->f[i].ntensors; k++) {
            const struct st_tensor *t = &w->f[i].tensors[k];
            if (t->dtype == DT_I64) continue;   /* position ids: not weights */
            sum += (uint64_t)st_numel(t) * (t->ndim >= 2 && !is_f32_table(t->name) ? sd_dtype_size(gemm) : 4);
        }
    return sum;
}

static void fail(struct engine_model_probe *out, const char *fmt, const char *what) {
    out->kind = ENGINE_MODEL_ERROR;
    snprintf(out->error, sizeof out->error, fmt, what);
}

/* Regular files under dir, recursively (depth-bounded; under a confined no-links root a
 * link is seen as a link, sd_stat, and not counted). */
static uint64_t folder_bytes(const char *dir, int depth) {
    DIR *d = depth < 8 ? sd_opendir(dir) : NULL;
    if (!d) return 0;
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = sd_path_join(dir, de->d_name);
        struct stat sb;
        if (p && !sd_stat(p, &sb)) {
            if (S_ISREG(sb.st_mode)) sum += (uint64_t)sb.st_size;
            else if (S_ISDIR(sb.st_mode)) sum += folder_bytes(p, depth + 1);
        }
        sd_free(p);
    }
    closedir(d);
    return sum;
}

/* A diffusers folder: the weight headers of its four components. */
static void probe_folder(const char *dir, sd_dtype want, struct engine_model_probe *out) {
    struct model_parts mp;
    if (model_parts_load(&mp, dir)) {
        fail(out, "model_index.json: %s", sd_last_error());
        return;
    }
    const char *subs[4] = { mp.unet, mp.vae, mp.te1, mp.te2 };
    for (int i = 0; i < 4; i++) {
        char *p = sd_path_join(dir, subs[i]);
        struct wfiles w;
        int te = i >= 2;
        sd_status st = p ? wfiles_open_dir(&w, p, te ? "model" : "diffusion_pytorch_model",
                                           te ? "pytorch_model" : "diffusion_pytorch_model") : SD_ERR_NOMEM;
        sd_free(p);
        if (st) {
            fail(out, "%s", sd_last_error());
            return;
        }
        out->resident_bytes += resident_of(&w, want);
        wfiles_close(&w);
    }
    out->kind = ENGINE_MODEL_DIFFUSERS;
    out->file_bytes = folder_bytes(dir, 0);
}

/* Does the file hold a bare UNet, in either key layout? */
static int is_unet_only(const struct st_file *f) {
    return st_find(f, "conv_in.weight") || st_find(f, "input_blocks.0.0.weight");
}

static int is_lora(const struct st_file *f) {
    for (int i = 0; i < f->ntensors; i++)
        if (!lora_key_is_adapter(f->tensors[i].name)) return 0;
    return f->ntensors > 0;
}

static void probe_file(const char *path, sd_dtype want, struct engine_model_probe *out) {
    struct wfiles w;
    if (wfiles_open_file(&w, path)) {
        fail(out, "%s", sd_last_error());
        return;
    }
    const struct st_file *f = &w.f[0];
    if (sgm_is_checkpoint(f)) {
        out->kind = ENGINE_MODEL_CHECKPOINT;
        out->sdxl_base = sgm_is_sdxl_base(f) == 1;
        out->resident_bytes = resident_of(&w, want);
    } else if (is_lora(f)) {
        out->kind = ENGINE_MODEL_LORA;
    } else if (is_unet_only(f)) {
        out->kind = ENGINE_MODEL_UNET;
    } else {
        char why[200];
        snprintf(why, sizeof why, "%d tensors, none in a layout sdxld loads (first: '%.100s')", f->ntensors,
                 f->ntensors ? f->tensors[0].name : "");
        fail(out, "%s", why);
    }
    wfiles_close(&w);
}

void engine_model_probe(const char *path, const char *weights_dtype, struct engine_model_probe *out) {
    memset(out, 0, sizeof *out);
    sd_dtype want;
    if (wt_dtype_parse(weights_dtype ? weights_dtype : "auto", &want)) want = WT_DTYPE_AUTO;
    struct stat sb;
    if (sd_stat(path, &sb)) {
        fail(out, "%s", sd_fs_strerror(errno));
        return;
    }
    if (S_ISLNK(sb.st_mode)) {
        fail(out, "%s", "a symbolic link (not followed)");
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        char *idx = sd_path_join(path, "model_index.json");
        struct stat ib;
        int has = idx && !sd_stat(idx, &ib) && S_ISREG(ib.st_mode);
        sd_free(idx);
        if (has) probe_folder(path, want, out);
        else fail(out, "%s", "a folder without model_index.json (not a diffusers model)");
        return;
    }
    if (!S_ISREG(sb.st_mode)) {
        fail(out, "%s", "not a regular file");
        return;
    }
    out->file_bytes = (uint64_t)sb.st_size;
    probe_file(path, want, out);
    sd_clear_error();
}
