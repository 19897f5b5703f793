/* models.c — the catalog of models_dir (contracts in models.h).
 *
 * Read on every call, confined to models_dir: sd_root_open gives the folder's real path
 * and a descriptor, and while the calling thread is confined to it (no SD_ROOT_LINKS) no
 * symbolic link is followed, anywhere, so a link pointing out of the folder is listed as
 * an error and never opened.  Classification is engine_model_probe's (headers only). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "models.h"

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s && s[1] ? s + 1 : p;
}

void models_name_of(const struct sdxld *d, const char *path, char *out, size_t n) {
    char root[PATH_MAX];
    if (d->cfg.models_dir[0] && realpath(d->cfg.models_dir, root)) {
        size_t k = strlen(root);
        if (!strncmp(path, root, k) && path[k] == '/' && path[k + 1]) {
            snprintf(out, n, "%s", path + k + 1);
            return;
        }
    }
    snprintf(out, n, "%s", base_name(path));
}

/* A probe's message with the folder's real path cut out (clients see names only). */
static void strip_root(char *msg, const char *root) {
    size_t k = strlen(root);
    for (char *p = strstr(msg, root); p; p = strstr(p, root)) {
        size_t skip = k + (p[k] == '/');
        memmove(p, p + skip, strlen(p + skip) + 1);
    }
}

void models_strip_dir(const struct sdxld *d, char *msg) {
    char root[PATH_MAX];
    if (d->cfg.models_dir[0] && realpath(d->cfg.models_dir, root) && strcmp(root, "/")) strip_root(msg, root);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const struct model_entry *)a)->name, ((const struct model_entry *)b)->name);
}

/* The entries of one folder (prefix "" or "loras/"), appended to *e. */
static void scan_dir(const struct sdxld *d, const struct sd_root *root, const char *prefix,
                     struct model_entry *e, int *n, int *truncated) {
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s%s%s", root->path, prefix[0] ? "/" : "", prefix);
    if (prefix[0]) dir[strlen(dir) - 1] = 0;   /* "loras/" -> "/loras" */
    DIR *dh = sd_opendir(dir);
    if (!dh) return;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.') continue;   /* ., .., hidden files and partial downloads */
        if (!prefix[0] && !strcmp(de->d_name, "loras") && de->d_type == DT_DIR) continue;
        if (*n == MODELS_MAX) {
            *truncated = 1;
            break;
        }
        struct model_entry *m = &e[*n];
        snprintf(m->name, sizeof m->name, "%s%s", prefix, de->d_name);
        snprintf(m->path, sizeof m->path, "%s/%s", root->path, m->name);
        engine_model_probe(m->path, d->cfg.weights_dtype, &m->p);
        strip_root(m->p.error, root->path);
        (*n)++;
    }
    closedir(dh);
}

int models_scan(const struct sdxld *d, struct model_entry **out, int *n, int *truncated,
                char *err, size_t errlen) {
    *out = NULL;
    *n = *truncated = 0;
    if (!d->cfg.models_dir[0]) {
        snprintf(err, errlen, "no models_dir is configured: only the served model can be named");
        return -1;
    }
    struct sd_root root;
    if (sd_root_open(&root, d->cfg.models_dir, 0)) {
        snprintf(err, errlen, "models_dir does not open: %s", sd_last_error());
        sd_clear_error();
        return -1;
    }
    struct model_entry *e = calloc(MODELS_MAX, sizeof *e);
    if (!e) {
        sd_root_close(&root);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const struct sd_root *roots[1] = { &root };
    sd_fs_confine(roots, 1);
    scan_dir(d, &root, "", e, n, truncated);
    if (!*truncated) scan_dir(d, &root, "loras/", e, n, truncated);
    sd_fs_confine(NULL, 0);
    sd_clear_error();
    sd_root_close(&root);
    qsort(e, (size_t)*n, sizeof *e, entry_cmp);
    *out = e;
    return 0;
}

/* One name of the catalog: a plain entry name or loras/NAME, nothing else ('..', '/',
 * hidden names are no catalog entry). */
static int valid_name(const char *name) {
    const char *s = !strncmp(name, "loras/", 6) ? name + 6 : name;
    return s[0] && s[0] != '.' && !strchr(s, '/') && strlen(name) < MODEL_NAME_MAX;
}

static int probe_one(const struct sdxld *d, const char *name, struct model_entry *m) {
    struct sd_root root;
    if (!d->cfg.models_dir[0] || !valid_name(name) || sd_root_open(&root, d->cfg.models_dir, 0)) {
        sd_clear_error();
        return -1;
    }
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->path, sizeof m->path, "%s/%s", root.path, name);
    const struct sd_root *roots[1] = { &root };
    sd_fs_confine(roots, 1);
    struct stat sb;
    int there = sd_stat(m->path, &sb) == 0;
    if (there) engine_model_probe(m->path, d->cfg.weights_dtype, &m->p);
    sd_fs_confine(NULL, 0);
    sd_clear_error();
    strip_root(m->p.error, root.path);
    sd_root_close(&root);
    return there ? 0 : -1;
}

int models_resolve(const struct sdxld *d, const char *name, const char *field, struct model_ref *out,
                   char *err, size_t errlen) {
    struct model_entry m = { 0 };
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    char startup[MODEL_NAME_MAX];
    models_name_of(d, d->model_startup, startup, sizeof startup);
    if (probe_one(d, name, &m)) {
        if (strcmp(name, startup) && strcmp(name, base_name(d->model_startup))) {
            snprintf(err, errlen, "%s: no model '%s'%s (GET /v1/models lists them)", field, name,
                     d->cfg.models_dir[0] ? " in models_dir" : " (no models_dir is configured)");
            return 404;
        }
        snprintf(out->path, sizeof out->path, "%s", d->model_startup);
        out->startup = 1;
        return 0;
    }
    if (m.p.kind != ENGINE_MODEL_DIFFUSERS && m.p.kind != ENGINE_MODEL_CHECKPOINT) {
        if (m.p.kind == ENGINE_MODEL_ERROR)
            snprintf(err, errlen, "%s: '%s' is not a model sdxld can load: %s", field, name, m.p.error);
        else
            snprintf(err, errlen, "%s: '%s' is a %s file, not a whole model (%s)", field, name,
                     m.p.kind == ENGINE_MODEL_LORA ? "LoRA" : "UNet-only generator",
                     m.p.kind == ENGINE_MODEL_LORA ? "load it with \"lora\"" : "load it with \"generator\"");
        return 400;
    }
    snprintf(out->path, sizeof out->path, "%s", m.path);
    out->resident_bytes = m.p.resident_bytes;
    out->startup = !strcmp(m.path, d->model_startup);
    return 0;
}

uint64_t models_budget_bytes(const struct sdxld *d) {
    if (d->cfg.model_memory_mb) return (uint64_t)d->cfg.model_memory_mb << 20;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 4 * 3 : UINT64_MAX;
}

int models_check_memory(const struct sdxld *d, const char *name, uint64_t new_bytes, uint64_t old_bytes,
                        int *free_first, char *err, size_t errlen) {
    const uint64_t budget = models_budget_bytes(d);
    *free_first = 0;
    if (new_bytes > budget) {
        snprintf(err, errlen, "model '%s' needs about %.1f MiB of weights, over the model memory budget "
                 "of %.1f MiB (model_memory_mb)", name, new_bytes / 1048576.0, budget / 1048576.0);
        return -1;
    }
    *free_first = new_bytes + old_bytes > budget;
    return 0;
}

static json_t *entry_json(const struct model_entry *m, int loaded) {
    const struct engine_model_probe *p = &m->p;
    int whole = p->kind == ENGINE_MODEL_DIFFUSERS || p->kind == ENGINE_MODEL_CHECKPOINT;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b}", "id", m->name, "object", "model",
                          "owned_by", "sdxld", "name", m->name, "kind", engine_model_kind_name(p->kind),
                          "size_bytes", (json_int_t)p->file_bytes, "loaded", loaded);
    if (o && whole) json_object_set_new(o, "resident_bytes", json_integer((json_int_t)p->resident_bytes));
    if (o && p->kind == ENGINE_MODEL_CHECKPOINT) json_object_set_new(o, "sdxl_base", json_boolean(p->sdxl_base));
    if (o && p->kind == ENGINE_MODEL_ERROR) json_object_set_new(o, "error", json_string(p->error));
    return o;
}

/* The served model's entry, as GET /v1/models gave it before models_dir (info lock held). */
static json_t *served_json(struct sdxld *d) {
    const char *gen = d->generator[0] ? d->generator : NULL;
    char name[MODEL_NAME_MAX];
    models_name_of(d, d->model_served, name, sizeof name);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s?, s:s?, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:i}",
        "id", d->info.model_name, "object", "model", "owned_by", "sdxld", "name", name, "kind", "served",
        "path", d->model_served, "loaded", 1, "generator", gen, "unet", gen,
        "backend", d->backend, "param_bytes", (json_int_t)d->info.param_bytes,
        "scratch_bytes", (json_int_t)d->info.scratch_bytes,
        "latent_channels", d->info.latent_channels, "max_tokens", d->info.max_tokens,
        "size_multiple", d->size_multiple, "default_width", d->default_width,
        "default_height", d->default_height);
}

json_t *models_list_json(struct sdxld *d, char *err, size_t errlen, int *truncated) {
    struct model_entry *e = NULL;
    int n = 0;
    err[0] = 0;
    *truncated = 0;
    if (d->cfg.models_dir[0]) models_scan(d, &e, &n, truncated, err, errlen);
    json_t *data = json_array();
    pthread_mutex_lock(&d->info_lock);
    json_t *s = d->have_info ? served_json(d) : NULL;
    if (s) json_array_append_new(data, s);
    for (int i = 0; data && i < n; i++) {
        json_t *o = entry_json(&e[i], d->have_info && !strcmp(e[i].path, d->model_served));
        if (!o || json_array_append_new(data, o)) {
            json_decref(data);
            data = NULL;
        }
    }
    pthread_mutex_unlock(&d->info_lock);
    free(e);
    return data;
}
