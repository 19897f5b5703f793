/* lora_cache.h — run-time LoRA adapters (model/lora_rt.h) by name: where a name's file
 * is, and a bounded cache of loaded adapters, so a generation that names an adapter
 * loaded before costs no file read.
 *
 * Names: a LoRA named N is the file DIR/N.safetensors, else DIR/loras/N.safetensors.  A
 * name is a plain file name: 1 to LORA_CACHE_NAME_MAX - 1 bytes, no '/', '\\' or control
 * character, not starting with '.' (so neither ".." nor a hidden file).  lora_find_file is
 * the one place this rule lives (the daemon checks request names with it too, through
 * engine_lora_path).  Files are opened through src/core/fs.h, so a caller confined to DIR
 * (the daemon's worker) cannot be led outside it.
 *
 * The cache holds adapters by path, with the file's identity (device, inode, size,
 * modification time): a file replaced on disk is loaded again.  Its backend memory is
 * bounded by max_bytes: adapters not used by the current call are evicted least recently
 * used first; a set that does not fit even alone is refused (SD_ERR_NOMEM naming the
 * bound).  Counters (loads, hits, evictions) let tests assert that switching adapters
 * reloads nothing.  One thread (the engine's owner). */
#ifndef SD_LORA_CACHE_H
#define SD_LORA_CACHE_H

#include <sys/types.h>

#include "lora_rt.h"

#define LORA_CACHE_NAME_MAX 64

/* 1 if name is a plain name (the rule above). */
int lora_name_ok(const char *name);
/* The file of LoRA `name` under dir into out.  SD_ERR_INVALID for a name that is not a
 * plain name, SD_ERR_NOTFOUND when neither file exists; messages name the LoRA. */
sd_status lora_find_file(const char *dir, const char *name, char *out, size_t n);

struct lora_cache_entry {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    long long mtime_ns;
    uint64_t used;          /* the tick of the call that last used it */
    struct lora_adapter ad;
};

struct lora_cache {
    struct lora_cache_entry **e;    /* [n]: entries stay put, so out[] pointers do */
    int n, cap;
    size_t bytes, max_bytes;
    long long loads, hits, evictions;
    uint64_t tick;
};

void lora_cache_init(struct lora_cache *c, size_t max_bytes);
void lora_cache_free(struct lora_cache *c);
/* Drop every adapter (they were checked against a UNet table that is going away); the
 * counters and the bound stay. */
void lora_cache_clear(struct lora_cache *c);
/* The adapters of paths[0..n) for the UNet table wt, loaded on a miss; out[i] stays valid
 * until the next call.  Adapters of one call are never evicted by that call. */
sd_status lora_cache_get(struct lora_cache *c, struct backend *be, const struct weight_table *wt,
                         const char *const *paths, int n, const struct lora_adapter **out);

#endif
