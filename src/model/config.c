/* config.c — config.json parsers (jansson).  Rules from docs/sdxl.md §3.1 and §8:
 * attention_head_dim is a head count when num_attention_heads is null; scalar per-level
 * keys broadcast; the up path uses reversed lists. */
#include <jansson.h>
#include <string.h>

#include "../backend/backend.h"
#include "config.h"

#define MAX_CONFIG_BYTES (1u << 20)

static sd_status load_json(const char *path, json_t **out) {
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, MAX_CONFIG_BYTES, &text, &len));
    json_error_t e;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    sd_free(text);
    if (!*out || !json_is_object(*out)) {
        json_decref(*out);
        return sd_fail(SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, e.line, e.text);
    }
    return SD_OK;
}

/* Integer key: must exist (unless dflt_ok) and lie in [lo, hi]. */
static sd_status get_int(json_t *o, const char *what, const char *key, int lo, int hi, int dflt,
                         int required, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return sd_fail(SD_ERR_FORMAT, "%s: missing key '%s'", what, key);
        *out = dflt;
        return SD_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be an integer in [%d, %d]", what, key, lo, hi);
    *out = (int)json_integer_value(v);
    return SD_OK;
}

static sd_status get_num(json_t *o, const char *what, const char *key, double dflt, int required,
                         double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return sd_fail(SD_ERR_FORMAT, "%s: missing key '%s'", what, key);
        *out = dflt;
        return SD_OK;
    }
    if (!json_is_number(v)) return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be a number", what, key);
    *out = json_number_value(v);
    return SD_OK;
}

static const char *get_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A per-level list or a scalar broadcast to n levels. */
static sd_status get_levels(json_t *o, const char *what, const char *key, int n, int lo, int hi,
                            int *out, int required, int dflt) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return sd_fail(SD_ERR_FORMAT, "%s: missing key '%s'", what, key);
        for (int i = 0; i < n; i++) out[i] = dflt;
        return SD_OK;
    }
    if (json_is_integer(v)) {
        for (int i = 0; i < n; i++) out[i] = (int)json_integer_value(v);
    } else if (json_is_array(v) && (int)json_array_size(v) == n) {
        for (int i = 0; i < n; i++) {
            json_t *x = json_array_get(v, i);
            if (!json_is_integer(x)) return sd_fail(SD_ERR_FORMAT, "%s: '%s'[%d] must be an integer", what, key, i);
            out[i] = (int)json_integer_value(x);
        }
    } else return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be an integer or a list of %d", what, key, n);
    for (int i = 0; i < n; i++)
        if (out[i] < lo || out[i] > hi)
            return sd_fail(SD_ERR_FORMAT, "%s: '%s'[%d] = %d outside [%d, %d]", what, key, i, out[i], lo, hi);
    return SD_OK;
}

sd_status clip_config_load(struct clip_config *c, const char *path) {
    json_t *o;
    SD_TRY(load_json(path, &o));
    memset(c, 0, sizeof *c);
    sd_status st;
    double eps = 1e-5;
    if ((st = get_int(o, path, "hidden_size", 1, 1 << 16, 0, 1, &c->hidden)) ||
        (st = get_int(o, path, "intermediate_size", 1, 1 << 18, 0, 1, &c->intermediate)) ||
        (st = get_int(o, path, "num_hidden_layers", 2, 1024, 0, 1, &c->layers)) ||
        (st = get_int(o, path, "num_attention_heads", 1, 1024, 0, 1, &c->heads)) ||
        (st = get_int(o, path, "vocab_size", 1, 1 << 24, 49408, 0, &c->vocab)) ||
        (st = get_int(o, path, "max_position_embeddings", 1, 4096, 77, 0, &c->max_pos)) ||
        (st = get_int(o, path, "projection_dim", 1, 1 << 16, c->hidden, 0, &c->projection_dim)) ||
        (st = get_int(o, path, "eos_token_id", 0, 1 << 24, 49407, 0, &c->eos_id)) ||
        (st = get_num(o, path, "layer_norm_eps", 1e-5, 0, &eps)))
        goto out;
    c->ln_eps = (float)eps;
    if (c->hidden % c->heads) {
        st = sd_fail(SD_ERR_FORMAT, "%s: hidden_size %d not divisible by num_attention_heads %d", path, c->hidden, c->heads);
        goto out;
    }
    const char *act = get_str(o, "hidden_act");
    if (!act || !strcmp(act, "quick_gelu")) c->act = ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) c->act = ACT_GELU;
    else st = sd_fail(SD_ERR_UNSUPPORTED, "%s: hidden_act '%s' (quick_gelu, gelu)", path, act);
out:
    json_decref(o);
    return st;
}

static sd_status unet_config_from(struct unet_config *c, json_t *o, const char *what) {
    memset(c, 0, sizeof *c);
    sd_status st;
    json_t *boc = json_object_get(o, "block_out_channels");
    if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > UNET_MAX_LEVELS)
        return sd_fail(SD_ERR_FORMAT, "%s: 'block_out_channels' must be a list of 1..%d", what, UNET_MAX_LEVELS);
    int n = c->nlevels = (int)json_array_size(boc);
    double eps, shift;
    if ((st = get_levels(o, what, "block_out_channels", n, 1, 1 << 14, c->ch, 1, 0)) ||
        (st = get_int(o, what, "in_channels", 1, 64, 4, 0, &c->in_ch)) ||
        (st = get_int(o, what, "out_channels", 1, 64, 4, 0, &c->out_ch)) ||
        (st = get_int(o, what, "layers_per_block", 1, 7 /* up blocks have one more: UNET_MAX_RES */, 2, 0, &c->layers_per_block)) ||
        (st = get_int(o, what, "cross_attention_dim", 1, 1 << 14, 0, 1, &c->cross_dim)) ||
        (st = get_int(o, what, "norm_num_groups", 1, 1024, 32, 0, &c->groups)) ||
        (st = get_num(o, what, "norm_eps", 1e-5, 0, &eps)) ||
        (st = get_int(o, what, "addition_time_embed_dim", 2, 1 << 12, 0, 1, &c->addition_time_embed_dim)) ||
        (st = get_int(o, what, "projection_class_embeddings_input_dim", 1, 1 << 16, 0, 1, &c->add_in_dim)) ||
        (st = get_num(o, what, "freq_shift", 0, 0, &shift)) ||
        (st = get_int(o, what, "sample_size", 1, 1 << 14, 128, 0, &c->sample_size)) ||
        (st = get_int(o, what, "conv_in_kernel", 1, 7, 3, 0, &c->conv_in_kernel)) ||
        (st = get_int(o, what, "conv_out_kernel", 1, 7, 3, 0, &c->conv_out_kernel)) ||
        (st = get_levels(o, what, "transformer_layers_per_block", n, 1, 64 /* TRANSFORMER_MAX_DEPTH */, c->depth, 0, 1)))
        return st;
    c->eps = (float)eps;
    c->freq_shift = (float)shift;
    json_t *flip = json_object_get(o, "flip_sin_to_cos");
    c->flip_sin_to_cos = flip ? json_is_true(flip) : 1;
    if (c->conv_in_kernel % 2 == 0 || c->conv_out_kernel % 2 == 0)
        return sd_fail(SD_ERR_FORMAT, "%s: conv kernels must be odd", what);
    /* heads: num_attention_heads if non-null, else attention_head_dim (a head count) */
    json_t *nah = json_object_get(o, "num_attention_heads");
    st = get_levels(o, what, nah && !json_is_null(nah) ? "num_attention_heads" : "attention_head_dim",
                    n, 1, 1024, c->heads, 1, 0);
    if (st) return st;
    json_t *rev = json_object_get(o, "reverse_transformer_layers_per_block");
    if (rev && !json_is_null(rev)) {
        if ((st = get_levels(o, what, "reverse_transformer_layers_per_block", n, 1, 64, c->up_depth, 1, 0)))
            return st;
    } else for (int i = 0; i < n; i++) c->up_depth[i] = c->depth[n - 1 - i];
    /* block types */
    json_t *down = json_object_get(o, "down_block_types"), *up = json_object_get(o, "up_block_types");
    if (!json_is_array(down) || (int)json_array_size(down) != n || !json_is_array(up) || (int)json_array_size(up) != n)
        return sd_fail(SD_ERR_FORMAT, "%s: down_block_types/up_block_types must list %d blocks", what, n);
    for (int i = 0; i < n; i++) {
        const char *d = json_string_value(json_array_get(down, i)), *u = json_string_value(json_array_get(up, i));
        if (!d || !u) return sd_fail(SD_ERR_FORMAT, "%s: block types must be strings", what);
        if (!strcmp(d, "CrossAttnDownBlock2D")) c->attn[i] = 1;
        else if (strcmp(d, "DownBlock2D")) return sd_fail(SD_ERR_UNSUPPORTED, "%s: down block type '%s'", what, d);
        if (!strcmp(u, "CrossAttnUpBlock2D")) c->up_attn[i] = 1;
        else if (strcmp(u, "UpBlock2D")) return sd_fail(SD_ERR_UNSUPPORTED, "%s: up block type '%s'", what, u);
    }
    const char *s;
    if ((s = get_str(o, "mid_block_type")) && strcmp(s, "UNetMidBlock2DCrossAttn"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: mid_block_type '%s'", what, s);
    if ((s = get_str(o, "addition_embed_type")) && strcmp(s, "text_time"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: addition_embed_type '%s' (text_time)", what, s);
    if ((s = get_str(o, "act_fn")) && strcmp(s, "silu"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: act_fn '%s'", what, s);
    json_t *lin = json_object_get(o, "use_linear_projection");
    if (lin && !json_is_true(lin))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: use_linear_projection false (conv proj_in)", what);
    for (int i = 0; i < n; i++) {
        if (c->ch[i] % c->groups) return sd_fail(SD_ERR_FORMAT, "%s: block_out_channels[%d] = %d not divisible by norm_num_groups %d", what, i, c->ch[i], c->groups);
        if ((c->attn[i] || c->up_attn[n - 1 - i]) && c->ch[i] % c->heads[i])
            return sd_fail(SD_ERR_FORMAT, "%s: level %d: %d channels not divisible by %d heads", what, i, c->ch[i], c->heads[i]);
    }
    if (c->ch[0] % 2 || c->addition_time_embed_dim % 2)
        return sd_fail(SD_ERR_FORMAT, "%s: embedding dims must be even", what);
    return SD_OK;
}

sd_status unet_config_parse(struct unet_config *c, const char *text, const char *what) {
    json_error_t e;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return sd_fail(SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", what, e.line, e.text);
    }
    sd_status st = unet_config_from(c, o, what);
    json_decref(o);
    return st;
}

sd_status unet_config_load(struct unet_config *c, const char *path) {
    json_t *o;
    SD_TRY(load_json(path, &o));
    sd_status st = unet_config_from(c, o, path);
    json_decref(o);
    return st;
}

sd_status vae_config_load(struct vae_config *c, const char *path) {
    json_t *o;
    SD_TRY(load_json(path, &o));
    memset(c, 0, sizeof *c);
    sd_status st;
    double sf;
    json_t *boc = json_object_get(o, "block_out_channels");
    if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > VAE_MAX_LEVELS) {
        st = sd_fail(SD_ERR_FORMAT, "%s: 'block_out_channels' must be a list of 1..%d", path, VAE_MAX_LEVELS);
        goto out;
    }
    c->nlevels = (int)json_array_size(boc);
    if ((st = get_levels(o, path, "block_out_channels", c->nlevels, 1, 1 << 14, c->ch, 1, 0)) ||
        (st = get_int(o, path, "in_channels", 1, 64, 3, 0, &c->in_ch)) ||
        (st = get_int(o, path, "out_channels", 1, 64, 3, 0, &c->out_ch)) ||
        (st = get_int(o, path, "latent_channels", 1, 64, 4, 0, &c->latent_ch)) ||
        (st = get_int(o, path, "layers_per_block", 1, 16, 2, 0, &c->layers_per_block)) ||
        (st = get_int(o, path, "norm_num_groups", 1, 1024, 32, 0, &c->groups)) ||
        (st = get_int(o, path, "sample_size", 1, 1 << 16, 1024, 0, &c->sample_size)) ||
        (st = get_num(o, path, "scaling_factor", 0.18215, 0, &sf)))
        goto out;
    c->scaling_factor = (float)sf;
    json_t *v;
    c->mid_attn = (v = json_object_get(o, "mid_block_add_attention")) ? json_is_true(v) : 1;
    c->quant_conv = (v = json_object_get(o, "use_quant_conv")) ? json_is_true(v) : 1;
    c->post_quant_conv = (v = json_object_get(o, "use_post_quant_conv")) ? json_is_true(v) : 1;
    for (int i = 0; i < c->nlevels; i++)
        if (c->ch[i] % c->groups) {
            st = sd_fail(SD_ERR_FORMAT, "%s: block_out_channels[%d] not divisible by norm_num_groups", path, i);
            goto out;
        }
    if (!(c->scaling_factor > 0)) st = sd_fail(SD_ERR_FORMAT, "%s: scaling_factor must be > 0", path);
out:
    json_decref(o);
    return st;
}

sd_status sched_config_load(struct sched_config *c, const char *path) {
    c->num_train_timesteps = 1000;
    c->beta_start = 0.00085;
    c->beta_end = 0.012;
    c->scaled_linear = 1;
    c->timestep_scaling = 10.0;
    json_t *o;
    sd_status st = load_json(path, &o);
    if (st == SD_ERR_NOTFOUND) { sd_clear_error(); return SD_OK; }
    if (st) return st;
    if ((st = get_int(o, path, "num_train_timesteps", 2, 100000, 1000, 0, &c->num_train_timesteps)) ||
        (st = get_num(o, path, "beta_start", 0.00085, 0, &c->beta_start)) ||
        (st = get_num(o, path, "beta_end", 0.012, 0, &c->beta_end)) ||
        (st = get_num(o, path, "timestep_scaling", 10.0, 0, &c->timestep_scaling)))
        goto out;
    const char *s = get_str(o, "beta_schedule");
    if (s && !strcmp(s, "linear")) c->scaled_linear = 0;
    else if (s && strcmp(s, "scaled_linear")) st = sd_fail(SD_ERR_UNSUPPORTED, "%s: beta_schedule '%s'", path, s);
    if (!st && (s = get_str(o, "prediction_type")) && strcmp(s, "epsilon"))
        st = sd_fail(SD_ERR_UNSUPPORTED, "%s: prediction_type '%s' (epsilon)", path, s);
    if (!st && !(c->beta_start > 0 && c->beta_end > c->beta_start && c->beta_end < 1))
        st = sd_fail(SD_ERR_FORMAT, "%s: need 0 < beta_start < beta_end < 1", path);
out:
    json_decref(o);
    return st;
}
