/* wfiles.c — see wfiles.h.  The shard index is a download too: its JSON is bounded, its
 * shard names are checked before any path is built from them, and its weight_map is
 * compared with what the shards really hold. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/fs.h"
#include "weights.h"
#include "wfiles.h"

#define INDEX_MAX_BYTES (64u << 20)

static sd_status wfiles_grow(struct wfiles *w) {
    struct st_file *f = sd_realloc(w->f, sizeof *f * (size_t)(w->n + 1));
    if (f) w->f = f;
    unsigned char **u = f ? sd_realloc(w->used, sizeof *u * (size_t)(w->n + 1)) : NULL;
    if (u) w->used = u;
    return f && u ? SD_OK : SD_ERR_NOMEM;
}

/* Open path as file w->n (and its used flags). */
static sd_status wfiles_add(struct wfiles *w, const char *path) {
    SD_TRY(wfiles_grow(w));
    SD_TRY(st_open(&w->f[w->n], path));
    w->used[w->n] = sd_calloc((size_t)w->f[w->n].ntensors + 1, 1);
    if (!w->used[w->n]) { st_close(&w->f[w->n]); return SD_ERR_NOMEM; }
    w->n++;
    return SD_OK;
}

void wfiles_close(struct wfiles *w) {
    for (int i = 0; i < w->n; i++) { st_close(&w->f[i]); sd_free(w->used[i]); }
    sd_free(w->f);
    sd_free(w->used);
    memset(w, 0, sizeof *w);
}

sd_status wfiles_open_file(struct wfiles *w, const char *path) {
    memset(w, 0, sizeof *w);
    sd_status st = wfiles_add(w, path);
    if (st) wfiles_close(w);
    return st;
}

sd_status wfiles_check_used(const struct wfiles *w) {
    for (int i = 0; i < w->n; i++)
        for (int j = 0; j < w->f[i].ntensors; j++)
            if (!w->used[i][j]) return sd_fail(SD_ERR_FORMAT, "%s: unexpected tensor '%s'", w->f[i].path, w->f[i].tensors[j].name);
    return SD_OK;
}

/* A file name inside the folder: no separator, not '.' or '..', printable. */
static int plain_name(const char *s) {
    if (!*s || !strcmp(s, ".") || !strcmp(s, "..") || strlen(s) > 255) return 0;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20) return 0;
    return 1;
}

/* Each shard holds exactly the tensors the index gives it. */
static sd_status check_shards(const struct wfiles *w, json_t *map, const char *index) {
    for (int i = 0; i < w->n; i++) {
        const struct st_file *f = &w->f[i];
        const char *base = strrchr(f->path, '/') ? strrchr(f->path, '/') + 1 : f->path;
        for (int j = 0; j < f->ntensors; j++) {
            const char *want = json_string_value(json_object_get(map, f->tensors[j].name));
            if (!want) return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' is not in %s's weight_map", f->path, f->tensors[j].name, index);
            if (strcmp(want, base))
                return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' is also here, but %s places it in %s (a tensor in two shards)",
                               f->path, f->tensors[j].name, index, want);
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        int k = 0;
        for (; k < w->n; k++) {
            const char *base = strrchr(w->f[k].path, '/') + 1;
            if (!strcmp(base, json_string_value(v))) break;
        }
        if (k == w->n || !st_find(&w->f[k], key))
            return sd_fail(SD_ERR_NOTFOUND, "%s: tensor '%s' missing from its shard %s", index, key, json_string_value(v));
    }
    return SD_OK;
}

/* The shards of index (a *.index.json in dir), each opened once. */
static sd_status open_index(struct wfiles *w, const char *dir, const char *index) {
    char *text;
    size_t len;
    SD_TRY(sd_read_file(index, INDEX_MAX_BYTES, &text, &len));
    json_error_t e;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    sd_free(text);
    json_t *map = json_object_get(o, "weight_map");
    sd_status st = SD_OK;
    if (!json_is_object(map)) { st = sd_fail(SD_ERR_FORMAT, "%s: no \"weight_map\" object (%s)", index, o ? "" : e.text); goto out; }
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *shard = json_string_value(v);
        if (!shard || !plain_name(shard)) {
            st = sd_fail(SD_ERR_FORMAT, "%s: tensor '%s': shard '%.100s' is not a file name inside the folder", index, key,
                         shard ? shard : "(not a string)");
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < w->n && !seen; i++) seen = !strcmp(strrchr(w->f[i].path, '/') + 1, shard);
        if (seen) continue;
        if (w->n >= WFILES_MAX_SHARDS) { st = sd_fail(SD_ERR_FORMAT, "%s: more than %d shards", index, WFILES_MAX_SHARDS); goto out; }
        char *p = sd_path_join(dir, shard);
        st = p ? wfiles_add(w, p) : SD_ERR_NOMEM;
        if (st) sd_wrap(st, "%s: shard %s", index, shard);
        sd_free(p);
        if (st) goto out;
    }
    st = check_shards(w, map, index);
out:
    json_decref(o);
    return st;
}

sd_status wfiles_open_dir(struct wfiles *w, const char *dir, const char *st_stem, const char *bin_stem) {
    static const char *const forms[] = { "%s.safetensors", "%s.safetensors.index.json", "%s.fp16.safetensors",
                                         "%s.safetensors.index.fp16.json", "%s.bin", "%s.bin.index.json",
                                         "%s.fp16.bin", "%s.bin.index.fp16.json" };
    memset(w, 0, sizeof *w);
    char name[256];
    struct stat sb;
    for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
        snprintf(name, sizeof name, forms[k], k < 4 ? st_stem : bin_stem);
        char *p = sd_path_join(dir, name);
        if (!p) return SD_ERR_NOMEM;
        if (sd_stat(p, &sb)) { sd_free(p); continue; }
        sd_status st = strstr(name, ".index.") ? open_index(w, dir, p) : wfiles_add(w, p);
        sd_free(p);
        if (st) wfiles_close(w);
        return st;
    }
    return sd_fail(SD_ERR_NOTFOUND, "%s/%s.safetensors: no weights (nor a .fp16 variant, a sharded index or a .bin)",
                   dir, st_stem);
}

static sd_status part_name(char *dst, const char *key, const char *index) {
    if (!plain_name(key) || strlen(key) >= 64)
        return sd_fail(SD_ERR_FORMAT, "%s: component '%.80s' is not a subfolder name", index, key);
    snprintf(dst, 64, "%s", key);
    return SD_OK;
}

sd_status model_parts_load(struct model_parts *p, const char *dir) {
    *p = (struct model_parts){ "unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler" };
    char *index = sd_path_join(dir, "model_index.json"), *text;
    size_t len;
    struct stat sb;
    if (!index) return SD_ERR_NOMEM;
    if (sd_stat(index, &sb)) { sd_free(index); return SD_OK; }
    sd_status st = sd_read_file(index, 1u << 20, &text, &len);
    json_error_t e;
    json_t *o = st ? NULL : json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    if (!st) sd_free(text);
    if (!st && !json_is_object(o)) st = sd_fail(SD_ERR_FORMAT, "%s: invalid JSON: %s", index, e.text);
    char *slot[4] = { p->unet, p->vae, p->te1, p->te2 };
    int found[4] = { 0 }, ntok = 0;
    const char *key, *tok[2] = { NULL, NULL };
    json_t *v;
    if (!st) json_object_foreach(o, key, v) {
        const char *cls = json_string_value(json_array_get(v, 1));
        if (!cls || st) continue;
        int k = !strcmp(cls, "UNet2DConditionModel") ? 0 : !strcmp(cls, "AutoencoderKL") ? 1
              : !strcmp(cls, "CLIPTextModel") ? 2 : !strcmp(cls, "CLIPTextModelWithProjection") ? 3 : -1;
        if (k >= 0) { st = part_name(slot[k], key, index); found[k] = 1; }
        else if (!strncmp(cls, "CLIPTokenizer", 13) && ntok < 2) tok[ntok++] = key;
    }
    if (ntok == 2 && strcmp(tok[0], tok[1]) > 0) { const char *t = tok[0]; tok[0] = tok[1]; tok[1] = t; }
    for (int i = 0; i < ntok && !st; i++) st = part_name(i ? p->tok2 : p->tok1, tok[i], index);
    static const char *const what[4] = { "UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel", "CLIPTextModelWithProjection" };
    for (int k = 0; k < 4 && !st; k++)
        if (!found[k]) st = sd_fail(SD_ERR_UNSUPPORTED, "%s: no %s component (sdxld needs an SDXL base pipeline: unet, vae and both text encoders)", index, what[k]);
    if (!st && ntok != 2) st = sd_fail(SD_ERR_UNSUPPORTED, "%s: expected two CLIPTokenizer components, found %d", index, ntok);
    json_decref(o);
    sd_free(index);
    return st;
}

sd_dtype wfiles_dtype(const struct wfiles *w, sd_dtype req) {
    if (req != WT_DTYPE_AUTO) return req;
    int64_t count[3] = { 0 };   /* F32, F16, BF16 */
    for (int i = 0; i < w->n; i++)
        for (int j = 0; j < w->f[i].ntensors; j++) {
            const struct st_tensor *x = &w->f[i].tensors[j];
            if (x->dtype == DT_F32 || x->dtype == DT_F16 || x->dtype == DT_BF16) count[x->dtype] += st_numel(x);
        }
    sd_dtype best = DT_F32;
    for (int d = DT_F16; d <= DT_BF16; d++)
        if (count[d] > count[best]) best = (sd_dtype)d;
    return best;
}
