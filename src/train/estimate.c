/* estimate.c — see estimate.h.
 *
 * Memory of a DMD2 run, fp32 throughout (as dmd2.c allocates it):
 *   weights      three UNets (real score, generator, fake score) + the frozen VAE and text
 *                encoders; with LoRA also the adapters and a frozen copy of each adapted W0
 *   gradients    the generator's and fake score's gradient twins (two UNets; the generator's
 *                twin exists with LoRA too: dW feeds dA, dB), the adapters' gradients, and
 *                one more pair per extra CPU shard (shards_plan decides how many)
 *   optimizer    AdamW's two moments of what trains: the fake score and the generator (or
 *                its adapters)
 *   activations  the largest taped pass, the GAN discriminator's over 2·batch rows: per
 *                row, Σ over the UNet's blocks of the block's pixels × channels × what its
 *                backward keeps (layers.h: a ResNet ~6 tensors, a transformer block ~20;
 *                with recompute 1 each, the block inputs)
 *   cache        cache_size items × (latent + text embedding + pooled embedding)
 * The GAN head (a few convolutions at the mid block) and scratch are left out.
 *
 * Calibration (docs/training.md, "Admission"): the scales and the seconds per unit were
 * measured on the 2-core development box with `sdxld train dmd2` (max RSS from
 * /usr/bin/time, it/s from the log) on the built-in shapes-small model (64², batch 2 and
 * 6) and the micro test model (16² and 32²). */
#include "estimate.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fs.h"
#include "../io/safetensors.h"
#include "../model/lora.h"
#include "../model/unet.h"
#include "shards.h"

/* Floats a ResNet / transformer block keeps per pixel and channel for its backward. */
#define KEEP_RESNET 6.0
#define KEEP_TBLOCK 20.0
/* Measured / counted bytes: activations (scratch, the head, arena slack) and the
 * parameter-sized state (alignment, weight files mapped while loading, shard arenas). */
#define KEEP_SCALE 2.0
#define STATE_SCALE 1.4
/* Seconds per (UNet parameter × batch row × latent pixel / shard) of one DMD2 iteration,
 * and per UNet parameter (optimiser steps, copies: batch-independent), on the development
 * box; recompute costs 1.36× (docs/training.md: keep-all vs recompute). */
#define SECONDS_PER_UNIT 7.4e-11
#define SECONDS_PER_PARAM 2.33e-8

double train_ram_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * psz : 4e9;
}

int train_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Floats of every tensor in a safetensors file (its header only); 0 if it is absent. */
static int64_t file_floats(const char *dir, const char *sub) {
    char *p = sd_path_join(dir, sub);
    struct st_file f;
    int64_t n = 0;
    if (p && st_open(&f, p) == SD_OK) {
        for (int i = 0; i < f.ntensors; i++) n += st_numel(&f.tensors[i]);
        st_close(&f);
    }
    sd_free(p);
    sd_clear_error();
    return n;
}

static sd_status load_cfg(const char *dir, const char *sub, sd_status (*load)(void *, const char *), void *c) {
    char *p = sd_path_join(dir, sub);
    if (!p) return SD_ERR_NOMEM;
    sd_status st = load(c, p);
    sd_free(p);
    return st;
}

static sd_status unet_cfg(void *c, const char *p) { return unet_config_load(c, p); }
static sd_status vae_cfg(void *c, const char *p) { return vae_config_load(c, p); }
static sd_status clip_cfg(void *c, const char *p) { return clip_config_load(c, p); }

/* Parameter counts of the UNet: all of them, and what LoRA adapts. */
static sd_status count_unet(struct train_model_info *m) {
    struct unet u;
    SD_TRY(unet_declare(&u, &m->unet));
    m->unet_params = u.wt.total;
    for (int i = 0; i < u.wt.n; i++) {
        const struct weight_row *r = &u.wt.rows[i];
        if (!lora_is_target(r->name) || r->ndim < 2) continue;
        int64_t n = sd_numel(r->ndim, r->shape), cout = r->shape[0];
        m->lora_base += n;
        m->lora_per_rank += cout + n / cout;
    }
    unet_free(&u);
    return SD_OK;
}

const char *train_teacher_component(const char *dir) {
    char *p = sd_path_join(dir, "teacher/config.json");
    struct stat st;
    int own = p && !sd_stat(p, &st) && S_ISREG(st.st_mode);
    sd_free(p);
    return own ? "teacher" : "unet";
}

#define MAX_DEFAULTS_BYTES (64u << 10)

sd_status train_teacher_defaults(const char *dir, struct train_options *o, const struct topt_given *given) {
    if (strcmp(train_teacher_component(dir), "teacher")) return SD_OK;
    char *p = sd_path_join(dir, "teacher/dmd2_defaults.json"), *text = NULL, field[64] = "", err[256];
    struct stat st;
    size_t len;
    if (!p) return SD_ERR_NOMEM;
    sd_status rc = SD_OK;
    if (!sd_stat(p, &st) && !(rc = sd_read_file(p, MAX_DEFAULTS_BYTES, &text, &len))) {
        json_error_t je;
        json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!j)
            rc = sd_fail(SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", p, je.line, je.text);
        else if (topt_apply_defaults(o, given, TRAIN_DMD2, j, field, err, sizeof err))
            rc = sd_fail(SD_ERR_FORMAT, "%s: %s", p, err);
        json_decref(j);
    }
    sd_free(text);
    sd_free(p);
    return rc;
}

sd_status train_model_probe(const char *dir, struct train_model_info *m) {
    memset(m, 0, sizeof *m);
    struct vae_config v;
    SD_TRY(load_cfg(dir, "vae/config.json", vae_cfg, &v));
    m->vae_scale = 1 << (v.nlevels - 1);
    m->latent_ch = v.latent_ch;
    m->native_resolution = v.sample_size;
    m->frozen_params = file_floats(dir, "vae/diffusion_pytorch_model.safetensors");
    char sub[32];
    snprintf(sub, sizeof sub, "%s/config.json", train_teacher_component(dir));
    char *p = sd_path_join(dir, sub);
    struct stat st;
    m->has_unet = p && !sd_stat(p, &st);
    sd_free(p);
    if (!m->has_unet) return SD_OK;
    SD_TRY(load_cfg(dir, sub, unet_cfg, &m->unet));
    m->native_resolution = m->unet.sample_size * m->vae_scale;
    m->text_dim = m->unet.cross_dim;
    m->pooled_dim = m->unet.add_in_dim - 6 * m->unet.addition_time_embed_dim;
    struct clip_config c;
    SD_TRY(load_cfg(dir, "text_encoder/config.json", clip_cfg, &c));
    m->text_len = c.max_pos;
    m->frozen_params += file_floats(dir, "text_encoder/model.safetensors") +
                        file_floats(dir, "text_encoder_2/model.safetensors");
    return count_unet(m);
}

static double cache_item_bytes(const struct train_model_info *m, int resolution) {
    double h = (double)resolution / (m->vae_scale > 0 ? m->vae_scale : 8);
    return 4.0 * ((double)m->latent_ch * h * h + (double)m->text_len * m->text_dim + m->pooled_dim);
}

void train_options_finish(struct train_options *o, enum train_kind kind,
                          const struct train_model_info *m, double ram_bytes) {
    if (o->resolution == 0) o->resolution = m->native_resolution;
    if (kind == TRAIN_DMD2 && o->cache_size == 0) {
        double fit = ram_bytes / 8 / cache_item_bytes(m, o->resolution);
        o->cache_size = fit >= 4096 ? 4096 : fit >= 1 ? (long long)fit : 1;
    }
}

/* Floats one sample's taped UNet pass keeps at latent side h (keep: all; else inputs). */
static double unet_activations(const struct unet_config *u, int h, int keep) {
    double kr = keep ? KEEP_RESNET : 1, kt = keep ? KEEP_TBLOCK : 1, a = 0;
    for (int l = 0; l < u->nlevels; l++) {
        double px = (double)(h >> l) * (h >> l) * u->ch[l];
        double blocks = 2.0 * u->layers_per_block + 1;   /* down: lpb, up: lpb + 1 */
        a += px * blocks * (kr + (u->attn[l] ? u->depth[l] * kt : 0));
    }
    int n = u->nlevels - 1;
    a += (double)(h >> n) * (h >> n) * u->ch[n] * (2 * kr + u->depth[n] * kt);   /* mid block */
    return a;
}

void train_estimate_dmd2(const struct train_options *o, const struct train_model_info *m,
                         int threads, struct train_estimate *e) {
    memset(e, 0, sizeof *e);
    double P = (double)m->unet_params, lora = o->lora_rank > 0 ? (double)o->lora_rank * m->lora_per_rank : 0;
    int cores = threads > 0 ? threads : train_cores(), h = o->resolution / (m->vae_scale > 0 ? m->vae_scale : 8);
    e->shards = shards_plan(o->shards, cores, o->batch, 2 * m->unet_params);
    e->weights_bytes = STATE_SCALE * 4 * (3 * P + (double)m->frozen_params + (lora > 0 ? lora + (double)m->lora_base : 0));
    e->gradients_bytes = STATE_SCALE * 4 * (2 * P * e->shards + lora);
    e->optimizer_bytes = STATE_SCALE * 4 * 2 * ((lora > 0 ? lora : P) + P);
    e->activations_bytes = 4 * KEEP_SCALE * 2 * o->batch * unet_activations(&m->unet, h, !o->recompute);
    e->cache_bytes = (double)o->cache_size * cache_item_bytes(m, o->resolution);
    e->memory_bytes = e->weights_bytes + e->gradients_bytes + e->optimizer_bytes + e->activations_bytes +
                      e->cache_bytes;
    double used = e->shards > 1 ? e->shards : 1;
    e->iteration_s = SECONDS_PER_UNIT * P * o->batch * (double)h * h / used * (o->recompute ? 1.36 : 1.0) +
                     SECONDS_PER_PARAM * P;
}
