/* worker_models.c — the worker's side of models by name (models.h): switching the whole
 * served model (text encoders, UNet, VAE) between batches.
 *
 * A switch happens for one of two reasons, both on the worker thread, never inside a
 * batch: a POST /v1/models/load {"model"} reached the front of the load queue (after
 * every generation queued before it was dispatched: jobs_work.c), or the next batch asks
 * for a model other than the served one (its jobs named one, or were queued while
 * another was the default).  Batches never mix models (batching.c).
 *
 * Memory (models_check_memory): the new model's weights are estimated from its headers.
 * Over the budget alone: refused, the old model serves on.  Within the budget next to
 * the old one: the new one loads first and the old one is freed after, so a failed load
 * changes nothing.  Within it only instead of the old one: the old one is freed first
 * ("freed_first" in the answer and the log); if the new one then fails, the old one is
 * loaded again (it fitted before), and only if that fails too is the daemon without a
 * model: it exits non-zero for systemd to restart it (a device error likewise).
 *
 * Files: a model in models_dir is read confined to models_dir with no link followed
 * (src/core/fs.h), plus the configs and tokenizers a single file takes (model_config or
 * the shipped SDXL-base ones, tokenizers), trusted and read-only.  The startup model is
 * read as at startup (the operator's path). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "api_status.h"
#include "cli_util.h"
#include "daemon.h"
#include "models.h"

struct load_roots { struct sd_root r[3]; int n; };

static void roots_close(struct load_roots *lr) {
    for (int i = 0; i < lr->n; i++) sd_root_close(&lr->r[i]);
    lr->n = 0;
}

static sd_status roots_add(struct load_roots *lr, const char *dir, int flags) {
    if (!dir) return SD_OK;
    sd_status st = sd_root_open(&lr->r[lr->n], dir, flags);
    if (st == SD_OK) lr->n++;
    return st;
}

static void roots_confine(const struct load_roots *lr) {
    const struct sd_root *rs[3] = { &lr->r[0], &lr->r[1], &lr->r[2] };
    sd_fs_confine(rs, lr->n);
}

/* engine_load for the model at path, with the daemon's settings and the backend in use;
 * a model in models_dir is read confined (above). */
static sd_status load_at(struct sdxld *d, const char *path, struct engine **out) {
    const struct sdxld_config *c = &d->cfg;
    const int startup = !strcmp(path, d->model_startup);
    struct engine_config ec = {
        .model_dir = path,
        .unet_path = startup && c->unet[0] ? c->unet : NULL,
        .config_dir = c->model_config[0] ? c->model_config : NULL,
        .tokenizer_dir = c->tokenizers[0] ? c->tokenizers : NULL,
        .backend = d->backend, .threads = c->threads, .weights_dtype = c->weights_dtype,
        .vae_tile = c->vae_tile,
    };
    struct load_roots lr = { .n = 0 };
    sd_status st = SD_OK;
    char cdir[PATH_MAX], tdir[PATH_MAX];
    if (!startup && (st = roots_add(&lr, c->models_dir, 0))) return st;
    roots_confine(&lr);
    struct stat sb;
    const int single = sd_stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    if (!single) ec.config_dir = ec.tokenizer_dir = NULL;   /* a folder has its own */
    if (cli_model_defaults(&ec)) st = SD_ERR_INVALID;   /* a single file: its configs */
    /* Confinement matches absolute paths: the real paths of relative folders. */
    if (ec.config_dir && realpath(ec.config_dir, cdir)) ec.config_dir = cdir;
    if (ec.tokenizer_dir && realpath(ec.tokenizer_dir, tdir)) ec.tokenizer_dir = tdir;
    if (!st && !startup && single && !(st = roots_add(&lr, ec.config_dir, SD_ROOT_LINKS)) &&
        (!ec.tokenizer_dir || strcmp(ec.tokenizer_dir, ec.config_dir ? ec.config_dir : "")))
        st = roots_add(&lr, ec.tokenizer_dir, SD_ROOT_LINKS);
    if (!st) {
        roots_confine(&lr);
        st = engine_load(out, &ec);
    }
    sd_fs_confine(NULL, 0);
    roots_close(&lr);
    return st;
}

/* The new model's weights, estimated from its headers (read as load_at reads it). */
static uint64_t estimate_at(struct sdxld *d, const char *path) {
    struct engine_model_probe p;
    struct load_roots lr = { .n = 0 };
    if (strcmp(path, d->model_startup) && roots_add(&lr, d->cfg.models_dir, 0) == SD_OK) roots_confine(&lr);
    engine_model_probe(path, d->cfg.weights_dtype, &p);
    sd_fs_confine(NULL, 0);
    roots_close(&lr);
    sd_clear_error();
    return p.resident_bytes;
}

static void served_now(struct sdxld *d, struct engine *e, const char *path) {
    pthread_mutex_lock(&d->info_lock);
    d->info = *engine_info(e);
    d->have_info = 1;
    snprintf(d->model_served, sizeof d->model_served, "%s", path);
    snprintf(d->generator, sizeof d->generator, "%s", strcmp(path, d->model_startup) ? "" : d->cfg.unet);
    pthread_mutex_unlock(&d->info_lock);
}

sd_status worker_switch_model(struct sdxld *d, struct engine **e, const char *path, int *freed_first,
                              char *msg, size_t n) {
    char name[MODEL_NAME_MAX], old_name[MODEL_NAME_MAX], old_path[sizeof d->model_served];
    models_name_of(d, path, name, sizeof name);
    snprintf(old_path, sizeof old_path, "%s", d->model_served);
    models_name_of(d, old_path, old_name, sizeof old_name);
    *freed_first = 0;
    if (models_check_memory(d, name, estimate_at(d, path), engine_info(*e)->param_bytes, freed_first,
                            msg, n))
        return SD_ERR_INVALID;
    double t0 = sd_now_ms();
    if (*freed_first) {
        LOG_W("switching to model %s: the budget (model_memory_mb) does not hold it beside %s: "
              "freeing %s first", name, old_name, old_name);
        engine_free(*e);
        *e = NULL;
    }
    struct engine *ne = NULL;
    sd_status st = load_at(d, path, &ne);
    if (st) {
        snprintf(msg, n, "model '%s' does not load (%s keeps serving): %s", name, old_name,
                 sd_last_error()[0] ? sd_last_error() : sd_status_name(st));
        models_strip_dir(d, msg);
        if (*freed_first && load_at(d, old_path, e)) {
            LOG_E("model %s does not load again after %s failed: %s; stopping", old_name, name, sd_last_error());
            return SD_ERR_CUDA;   /* no model to serve: fatal, as a poisoned device */
        }
        if (*freed_first) served_now(d, *e, old_path);
        LOG_E("%s", msg);
        return st;
    }
    engine_free(*e);
    *e = ne;
    served_now(d, ne, path);
    LOG_I("now serving model %s (%s, %.1f MiB of weights; loaded in %.0f ms%s)", name, engine_info(ne)->model_name,
          engine_info(ne)->param_bytes / 1048576.0, sd_now_ms() - t0, *freed_first ? ", after freeing the old" : "");
    return SD_OK;
}

sd_status worker_load_model(struct sdxld *d, struct engine **e, struct job *j) {
    char msg[1536];
    int freed_first = 0;
    sd_status st = SD_OK;
    if (strcmp(j->load_model, d->model_served))
        st = worker_switch_model(d, e, j->load_model, &freed_first, msg, sizeof msg);
    j->load_freed_first = freed_first;   /* read by the request once the job is final */
    if (st == SD_OK) {
        jobs_load_finish(d->jobs, j, SD_OK, NULL, 200, NULL, NULL);
    } else {
        /* The default goes back to the model that serves, and the jobs queued for the
         * failed one without naming it follow (models.h). */
        pthread_mutex_lock(&d->info_lock);
        if (!strcmp(d->model_default, j->load_model))
            snprintf(d->model_default, sizeof d->model_default, "%s", d->model_served);
        pthread_mutex_unlock(&d->info_lock);
        jobs_restamp_model(d->jobs, j->load_model, d->model_served);
        const struct api_status as = api_status_of(st == SD_ERR_CUDA ? SD_ERR_IO : st, API_WORK_LOAD);
        jobs_load_finish(d->jobs, j, st, as.code, as.http, "model", msg);
    }
    jobs_unref(d->jobs, j);
    return st;
}
