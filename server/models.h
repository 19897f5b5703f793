/* models.h — models by name: the catalog of the models_dir folder (docs/api.md, Models).
 *
 * models_dir holds diffusers folders, single-file checkpoints, UNet-only generators and
 * LoRA files (at its top, or under loras/); each is classified by its contents
 * (engine_model_probe: headers only), never by its name.  The catalog is read again on
 * every call: the folder is the truth, so a model copied in is listed at once.  Every
 * read is confined (src/core/fs.h) to models_dir with no link followed: a symbolic link,
 * even one pointing inside, is an `error` entry and never opened; a file that does not
 * parse is an `error` entry with the reader's message (paths shown relative to the
 * folder).  At most MODELS_MAX entries are listed (the rest: `truncated`).
 *
 * Names: a top-level entry's file or folder name ("tiny-b", "tiny.safetensors"), or
 * "loras/NAME".  The model the daemon started with (`model`) is named by its catalog name
 * when it lies in models_dir, else by its basename; requests may name it either way.
 *
 * Which model a generation runs on: the one its request names (`model`), else the
 * daemon's default when it was queued: the startup model, then the last model a POST
 * /v1/models/load {"model"} was accepted for (docs/api.md says why: jobs queued before a
 * switch finish on the model they were queued for).  Paths identify models (two names of
 * one folder are one model); names are for people.
 *
 * Threading: any thread; the calls that read models_dir confine the calling thread for
 * the read and lift it after (do not call them from a thread already confined). */
#ifndef SD_SERVER_MODELS_H
#define SD_SERVER_MODELS_H

#include <limits.h>
#include <jansson.h>

#include "engine.h"

#define MODELS_MAX 256
#define MODEL_NAME_MAX 256

struct sdxld;

struct model_entry {
    char name[MODEL_NAME_MAX];
    char path[PATH_MAX + MODEL_NAME_MAX]; /* absolute: the real path of models_dir + name */
    struct engine_model_probe p;
};

/* The model a request named, resolved: what to load and how much memory it needs. */
struct model_ref {
    char name[MODEL_NAME_MAX];
    char path[PATH_MAX + MODEL_NAME_MAX]; /* absolute; the startup model's real path for it */
    uint64_t resident_bytes;       /* engine_model_probe's estimate (0: unknown) */
    int startup;                   /* the model the daemon was started with */
};

/* Every entry of models_dir (and of models_dir/loras), in name order, into a fresh array
 * (*out, free() it); *truncated when there were more than MODELS_MAX.  -1 with a message
 * in err when models_dir is not set or does not open. */
int models_scan(const struct sdxld *d, struct model_entry **out, int *n, int *truncated,
                char *err, size_t errlen);
/* Resolve a model name a request gave (field: the request's name for it, for messages).
 * 0, or the HTTP status of the refusal (404 unknown name, 400 not a whole model: a UNet,
 * a LoRA or an error entry) with the message in err. */
int models_resolve(const struct sdxld *d, const char *name, const char *field, struct model_ref *out,
                   char *err, size_t errlen);
/* The name of the model at path (the catalog's when it lies in models_dir, else its
 * basename). */
void models_name_of(const struct sdxld *d, const char *path, char *out, size_t n);
/* msg with every "MODELS_DIR/" cut out (clients name models relative to it). */
void models_strip_dir(const struct sdxld *d, char *msg);
/* The weights budget (model_memory_mb, or 3/4 of the physical memory). */
uint64_t models_budget_bytes(const struct sdxld *d);
/* Does a model of new_bytes fit next to (or instead of) the served one of old_bytes?
 * 0 with *free_first (1: the old must go first), or -1 with the refusal in err. */
int models_check_memory(const struct sdxld *d, const char *name, uint64_t new_bytes, uint64_t old_bytes,
                        int *free_first, char *err, size_t errlen);
/* GET /v1/models's `data`: the served model first (as before models_dir existed), then
 * the catalog; NULL when out of memory.  *err gets a message when models_dir does not
 * open (listed as the answer's `models_dir_error`). */
json_t *models_list_json(struct sdxld *d, char *err, size_t errlen, int *truncated);

#endif
