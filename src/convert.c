/* convert.c — engine_convert (engine.h): any model sdxld reads (a diffusers folder as
 * downloaded, a single-file checkpoint in the original layout, safetensors or torch
 * pickle, a UNet-only file in either naming) written out as safetensors in a chosen
 * dtype: a diffusers folder, a UNet-only file, or a single file in the original layout
 * that stable-diffusion.cpp, ComfyUI and diffusers' from_single_file read.  A pickle is
 * then read once and never again.
 *
 * Each component is bound into its weight table (the same strict loader as serving),
 * written and freed in turn, so peak memory is the largest component in fp32 plus the
 * output being collected (for a single file, the whole model in the output dtype). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "io/wfiles.h"
#include "model/clip.h"
#include "model/sgm.h"
#include "model/unet.h"
#include "model/vae.h"

enum { PART_UNET, PART_VAE, PART_TE1, PART_TE2 };

static const struct conv_part {
    const char *stem;            /* the component's weights file in a diffusers folder */
    enum sgm_part sp;
    const char *sgm_prefix;
    const char *diff_prefix;     /* what transformers writes before our names */
} parts[4] = {
    { "diffusion_pytorch_model", SGM_UNET, SGM_UNET_PREFIX, "" },
    { "diffusion_pytorch_model", SGM_VAE, SGM_VAE_PREFIX, "" },
    { "model", SGM_CLIP_L, SGM_CLIP_L_PREFIX, "" },
    { "model", SGM_CLIP_G, SGM_CLIP_G_PREFIX, "text_model." },
};

struct convert_job {
    const char *model, *unet_file, *cdir, *out;
    int single_in, to_single;
    sd_dtype dt;
    struct model_parts mp;      /* subfolders of model (folder) or cdir (single file) */
    struct backend *be;
    struct st_writer w;         /* --to single-file: everything */
};

/* One component, created from its config and bound from the input. */
union model { struct unet u; struct vae v; struct clip c; };

static sd_status part_load(struct convert_job *c, int k, union model *m, const struct weight_table **t, const void **cfg) {
    const char *sub = k == PART_UNET ? c->mp.unet : k == PART_VAE ? c->mp.vae : k == PART_TE1 ? c->mp.te1 : c->mp.te2;
    char cpath[8300], dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", c->single_in || c->unet_file ? c->cdir : c->model, sub);
    if (k == PART_UNET) {
        const char *file = c->unet_file ? c->unet_file : c->single_in ? c->model : NULL;
        SD_TRY(unet_load(&m->u, c->be, dir, file, WT_DTYPE_AUTO));   /* as stored: read back exactly */
        *t = &m->u.wt; *cfg = &m->u.cfg;
        return SD_OK;
    }
    if (!c->single_in) {
        SD_TRY(k == PART_VAE ? vae_load(&m->v, c->be, dir, WT_DTYPE_AUTO) : clip_load(&m->c, c->be, dir, k == PART_TE2, WT_DTYPE_AUTO));
    } else {
        struct vae_config vc;
        struct clip_config cc;
        snprintf(cpath, sizeof cpath, "%s/config.json", dir);
        SD_TRY(k == PART_VAE ? vae_config_load(&vc, cpath) : clip_config_load(&cc, cpath));
        SD_TRY(k == PART_VAE ? vae_create(&m->v, c->be, &vc) : clip_create(&m->c, c->be, &cc, k == PART_TE2));
        struct wfiles w;
        sd_status st = wfiles_open_file(&w, c->model);
        if (!st) {
            st = k == PART_VAE ? vae_bind(&m->v, c->be, &w, SGM_VAE_PREFIX, c->model)
                               : clip_bind(&m->c, c->be, &w, parts[k].sgm_prefix, c->model);
            wfiles_close(&w);
        }
        if (st) { if (k == PART_VAE) vae_free(&m->v); else clip_free(&m->c); return st; }
    }
    *t = k == PART_VAE ? &m->v.wt : &m->c.wt;
    *cfg = k == PART_VAE ? (const void *)&m->v.cfg : NULL;
    return SD_OK;
}

static void part_free(int k, union model *m) {
    if (k == PART_UNET) unet_free(&m->u);
    else if (k == PART_VAE) vae_free(&m->v);
    else clip_free(&m->c);
}



/* --to diffusers, one component: OUT/sub/STEM.safetensors + its config.json. */
static sd_status write_diffusers_part(struct convert_job *c, int k, const struct weight_table *t, const char *sub) {
    char dir[4096], path[8300], from[8300];
    snprintf(dir, sizeof dir, "%s/%s", c->out, sub);
    SD_TRY(sd_mkdir_p(dir, 0));
    struct st_writer w;
    st_writer_init(&w);
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, parts[k].stem);
    sd_status st = sgm_write_table(&w, t, c->be, c->dt, NULL, parts[k].diff_prefix, "text_projection.weight");
    if (!st) st = st_writer_write(&w, path);
    st_writer_free(&w);
    snprintf(from, sizeof from, "%s/%s/config.json", c->single_in || c->unet_file ? c->cdir : c->model, sub);
    snprintf(path, sizeof path, "%s/config.json", dir);
    return st ? st : sd_copy_file(from, path, 64u << 20);
}

/* Tokenizers, scheduler and model_index.json of a diffusers output, from the input's
 * folder (or the single file's config and tokenizer folders); absent ones are skipped. */
static sd_status copy_extras(struct convert_job *c, const char *tok_dir) {
    static const char *const files[] = { "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json" };
    const char *src = c->single_in ? c->cdir : c->model;
    char from[4096], to[4096];
    struct stat sb;
    const char *tsub[2] = { c->mp.tok1, c->mp.tok2 };
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            snprintf(from, sizeof from, "%s/%s/%s", c->single_in && tok_dir ? tok_dir : src, tsub[i], files[j]);
            if (sd_stat(from, &sb)) continue;
            snprintf(to, sizeof to, "%s/%s", c->out, tsub[i]);
            SD_TRY(sd_mkdir_p(to, 0));
            snprintf(to, sizeof to, "%s/%s/%s", c->out, tsub[i], files[j]);
            SD_TRY(sd_copy_file(from, to, 64u << 20));
        }
    snprintf(from, sizeof from, "%s/%s/scheduler_config.json", src, c->mp.scheduler);
    if (!sd_stat(from, &sb)) {
        snprintf(to, sizeof to, "%s/%s", c->out, c->mp.scheduler);
        SD_TRY(sd_mkdir_p(to, 0));
        snprintf(to, sizeof to, "%s/%s/scheduler_config.json", c->out, c->mp.scheduler);
        SD_TRY(sd_copy_file(from, to, 64u << 20));
    }
    snprintf(from, sizeof from, "%s/model_index.json", src);
    snprintf(to, sizeof to, "%s/model_index.json", c->out);
    return sd_stat(from, &sb) ? SD_OK : sd_copy_file(from, to, 64u << 20);
}

static sd_status convert_run(struct convert_job *c, const char *tok_dir) {
    int nparts = c->unet_file ? 1 : 4;
    const char *sub[4] = { c->mp.unet, c->mp.vae, c->mp.te1, c->mp.te2 };
    sd_status st = SD_OK;
    if (!c->to_single && !c->unet_file) SD_TRY(sd_mkdir_p(c->out, 0));
    for (int k = 0; k < nparts && !st; k++) {
        union model m;
        const struct weight_table *t;
        const void *cfg;
        if ((st = part_load(c, k, &m, &t, &cfg))) break;
        LOG_I("%s: %d tensors, %.1f M parameters", sub[k], t->n, t->total / 1e6);
        if (c->to_single) {
            struct sgm_map map;
            if (!(st = sgm_map_build(&map, t, parts[k].sp, cfg, parts[k].sgm_prefix))) {
                st = sgm_write_table(&c->w, t, c->be, c->dt, &map, parts[k].sgm_prefix, NULL);
                sgm_map_free(&map);
            }
        } else if (c->unet_file) {
            st = sgm_write_table(&c->w, t, c->be, c->dt, NULL, "", NULL);
        } else st = write_diffusers_part(c, k, t, sub[k]);
        part_free(k, &m);
    }
    if (!st && (c->to_single || c->unet_file)) st = st_writer_write(&c->w, c->out);
    if (!st && !c->to_single && !c->unet_file) st = copy_extras(c, tok_dir);
    return st;
}


sd_status engine_convert(const struct engine_convert *j) {
    struct convert_job c = { .model = j->model, .unet_file = j->unet_file, .cdir = j->config_dir, .out = j->out,
                             .to_single = j->to_single, .dt = j->dtype };
    struct stat sb;
    c.single_in = c.model && !sd_stat(c.model, &sb) && S_ISREG(sb.st_mode);
    if (c.unet_file && !c.cdir) return sd_fail(SD_ERR_INVALID, "convert: a UNet file needs its config folder (unet/config.json)");
    SD_TRY(model_parts_load(&c.mp, c.single_in || c.unet_file ? c.cdir : c.model));
    SD_TRY(backend_create(&c.be, "cpu", 0));
    st_writer_init(&c.w);
    sd_status st = convert_run(&c, j->tokenizer_dir);
    st_writer_free(&c.w);
    backend_destroy(c.be);
    return st;
}

int engine_file_is_sdxl_base(const char *path) {
    struct st_file f;
    if (st_open(&f, path)) return -1;
    int base = sgm_is_sdxl_base(&f);
    st_close(&f);
    return base;
}
