/* lora_cache.c — see lora_cache.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/fs.h"
#include "lora_cache.h"

int lora_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= LORA_CACHE_NAME_MAX || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] == '/' || name[i] == '\\' || (unsigned char)name[i] < 0x20 || name[i] == 0x7f) return 0;
    return 1;
}

sd_status lora_find_file(const char *dir, const char *name, char *out, size_t n) {
    static const char *const where[2] = { "%s/%s.safetensors", "%s/loras/%s.safetensors" };
    if (!lora_name_ok(name))
        return sd_fail(SD_ERR_INVALID, "LoRA name '%.80s' is not a plain name (1 to %d bytes, no '/' or '\\', "
                       "not starting with '.')", name, LORA_CACHE_NAME_MAX - 1);
    if (!dir || !dir[0]) return sd_fail(SD_ERR_NOTFOUND, "LoRA '%s': no models_dir to look in", name);
    for (int i = 0; i < 2; i++) {
        struct stat sb;
        int k = snprintf(out, n, where[i], dir, name);
        if (k < 0 || (size_t)k >= n) return sd_fail(SD_ERR_INVALID, "LoRA '%s': path too long", name);
        if (sd_stat(out, &sb) == 0 && S_ISREG(sb.st_mode)) return SD_OK;
    }
    return sd_fail(SD_ERR_NOTFOUND, "LoRA '%s': neither %s/%s.safetensors nor %s/loras/%s.safetensors exists",
                   name, dir, name, dir, name);
}

void lora_cache_init(struct lora_cache *c, size_t max_bytes) {
    memset(c, 0, sizeof *c);
    c->max_bytes = max_bytes;
}

static void entry_free(struct lora_cache_entry *x) {
    lora_adapter_free(&x->ad);
    sd_free(x->path);
    sd_free(x);
}

static void drop(struct lora_cache *c, int i) {
    c->bytes -= c->e[i]->ad.bytes;
    entry_free(c->e[i]);
    memmove(&c->e[i], &c->e[i + 1], sizeof *c->e * (size_t)(c->n - i - 1));
    c->n--;
}

void lora_cache_clear(struct lora_cache *c) {
    while (c->n) drop(c, c->n - 1);
}

void lora_cache_free(struct lora_cache *c) {
    lora_cache_clear(c);
    sd_free(c->e);
    memset(c, 0, sizeof *c);
}

/* lora_adapter_load's room hook: evict the least recently used adapters of earlier calls
 * until `bytes` more fit. */
static sd_status make_room(void *ud, size_t bytes) {
    struct lora_cache *c = ud;
    if (bytes > c->max_bytes)
        return sd_fail(SD_ERR_NOMEM, "LoRA adapter: %.1f MiB do not fit the adapter cache (lora_cache_mb: %.1f MiB)",
                       bytes / 1048576.0, c->max_bytes / 1048576.0);
    while (c->bytes + bytes > c->max_bytes) {
        int lru = -1;
        for (int i = 0; i < c->n; i++)
            if (c->e[i]->used < c->tick && (lru < 0 || c->e[i]->used < c->e[lru]->used)) lru = i;
        if (lru < 0)
            return sd_fail(SD_ERR_NOMEM, "LoRA adapters: %.1f MiB more do not fit the adapter cache "
                           "(lora_cache_mb: %.1f MiB, %.1f MiB held by this generation's other adapters)",
                           bytes / 1048576.0, c->max_bytes / 1048576.0, c->bytes / 1048576.0);
        LOG_I("LoRA cache: evicting %s (%.1f MiB)", c->e[lru]->path, c->e[lru]->ad.bytes / 1048576.0);
        drop(c, lru);
        c->evictions++;
    }
    return SD_OK;
}

static int same_file(const struct lora_cache_entry *x, const struct stat *sb) {
    return x->dev == sb->st_dev && x->ino == sb->st_ino && x->size == sb->st_size &&
           x->mtime_ns == (long long)sb->st_mtim.tv_sec * 1000000000LL + sb->st_mtim.tv_nsec;
}

/* The entry for path, loaded or reloaded as needed. */
static sd_status get_one(struct lora_cache *c, struct backend *be, const struct weight_table *wt, const char *path,
                         struct lora_cache_entry **out) {
    struct stat sb;
    if (sd_stat(path, &sb) != 0) return sd_fail(SD_ERR_NOTFOUND, "%s: %s", path, sd_fs_strerror(errno));
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->e[i]->path, path)) continue;
        if (same_file(c->e[i], &sb)) {
            c->hits++;
            *out = c->e[i];
            return SD_OK;
        }
        drop(c, i);   /* replaced on disk: load the new one */
        break;
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        struct lora_cache_entry **e = sd_realloc(c->e, sizeof *e * (size_t)cap);
        if (!e) return SD_ERR_NOMEM;
        c->e = e;
        c->cap = cap;
    }
    struct lora_cache_entry *x = sd_calloc(1, sizeof *x);
    if (!x || !(x->path = sd_strdup(path))) { sd_free(x); return SD_ERR_NOMEM; }
    sd_status st = lora_adapter_load(&x->ad, be, wt, path, make_room, c);
    if (st) { entry_free(x); return st; }
    x->dev = sb.st_dev;
    x->ino = sb.st_ino;
    x->size = sb.st_size;
    x->mtime_ns = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
    c->e[c->n++] = x;
    c->bytes += x->ad.bytes;
    c->loads++;
    LOG_I("LoRA cache: loaded %s (%d modules, %.1f MiB; %d adapters, %.1f MiB cached)", path, x->ad.n,
          x->ad.bytes / 1048576.0, c->n, c->bytes / 1048576.0);
    *out = x;
    return SD_OK;
}

sd_status lora_cache_get(struct lora_cache *c, struct backend *be, const struct weight_table *wt,
                         const char *const *paths, int n, const struct lora_adapter **out) {
    c->tick++;
    for (int i = 0; i < n; i++) {
        struct lora_cache_entry *x = NULL;
        SD_TRY(get_one(c, be, wt, paths[i], &x));
        x->used = c->tick;
        out[i] = &x->ad;
    }
    return SD_OK;
}
