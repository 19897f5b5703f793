/* lora.h — low-rank adapters on a UNet's weights (docs/dmd2.md §9.6).
 *
 * An adapted module's weight W [cout, K] (K = cin for a linear, cin·k·k for a conv) is
 * W0 + s·B·A with A [r, K] ("lora_down"), B [cout, r] ("lora_up") and s = alpha / r.
 * That is exactly peft's LoRA (W0 x + s·B(A x), a conv's A being a k×k conv to r
 * channels and B a 1×1 conv), computed by merging: the UNet keeps running on plain
 * weights, so every forward and backward in the engine serves LoRA unchanged.
 *
 *   - Serving: lora_apply_file merges an adapter file into a loaded UNet (W += scale·s·B·A);
 *     model/lora_rt.h applies adapter files unmerged, per generation, from a cache.
 *   - Training: struct lora holds A, B (a weight table the optimiser and checkpoints use),
 *     their gradients, and a frozen copy of each adapted W0.  After a backward pass has
 *     left dL/dW in the UNet's gradient twin, lora_grads turns it into dL/dA = s·Bᵀ·dW and
 *     dL/dB = s·dW·Aᵀ; after the optimiser step lora_merge rewrites W = W0 + s·B·A.
 *
 * Target modules (DMD2's LoRA config): to_q, to_k, to_v, to_out.0, proj_in, proj_out,
 * ff.net.0.proj, ff.net.2, conv1, conv2, conv_shortcut, downsamplers.0.conv,
 * upsamplers.0.conv, time_emb_proj.
 *
 * Files: kohya-style safetensors as DMD2 exports them — "lora_unet_<diffusers module path
 * with '.' → '_'>.lora_down.weight" [r, cin(, k, k)], ".lora_up.weight" [cout, r(, 1, 1)],
 * ".alpha" (a scalar).  The reader also takes the peft/diffusers naming
 * ("[unet.]<module path>.lora_A.weight" / ".lora_B.weight", alpha = r unless an ".alpha"
 * tensor is given).  F32, F16 and BF16. */
#ifndef SD_LORA_H
#define SD_LORA_H

#include "../io/safetensors.h"
#include "../io/weights.h"

#define LORA_NAME_MAX 200

/* 1 if the weight-table row `name` (e.g. "…attn1.to_q.weight") is a LoRA target. */
int lora_is_target(const char *name);
/* "down_blocks.0.resnets.1.conv1.weight" -> "lora_unet_down_blocks_0_resnets_1_conv1". */
void lora_kohya_name(const char *weight_name, char *out, size_t n);
/* 1 if a file's tensor name is an adapter's (".lora_down.weight", ".lora_up.weight",
 * ".lora_A.weight", ".lora_B.weight" or ".alpha"): how a model catalog tells a LoRA file
 * from a model by its header alone. */
int lora_key_is_adapter(const char *key);

/* Merge the adapter file at path into the UNet weights of table wt (on be), scaled by
 * scale (1 = as trained).  Every adapter in the file must name an adapted-shape weight
 * of the table, with A and B shapes that fit it; anything else is an error naming the key
 * and leaves the weights untouched. */
sd_status lora_apply_file(struct weight_table *wt, struct backend *be, const char *path, float scale);

/* Reading an adapter file against a UNet table (the merge above and the run-time adapters
 * of model/lora_rt.h).  lora_reader_open checks every key and shape (the rules of
 * lora_apply_file) and reads no values; lora_reader_read reads adapter i's A [rank, K] and
 * B [cout, rank] as fp32 (a non-finite value is an error naming the tensor) and its alpha
 * (rank when the file has none). */
struct lora_file_adapter {
    const struct st_tensor *a, *b, *alpha;
    int row, rank, cout;    /* row: the table row it adapts */
    long long K;
};
struct lora_reader {
    struct st_file f;
    struct lora_file_adapter *ad;
    int n;
};
sd_status lora_reader_open(struct lora_reader *r, const struct weight_table *wt, const char *path);
sd_status lora_reader_read(const struct lora_reader *r, int i, float *a, float *b, float *alpha);
void lora_reader_close(struct lora_reader *r);

struct lora_module {
    int row;                /* index in the UNet's table (and its gradient twin's) */
    int cout, K;
    float *w0;              /* frozen base weight [cout, K] */
    float *a, *b;           /* A [r, K], B [cout, r]: parameters (in lora.wt) */
    float *da, *db;         /* their gradients (in lora.gt) */
};

struct lora {
    int rank, n;
    float alpha, scale;     /* scale = alpha / rank */
    struct lora_module *m;
    struct weight_table wt, gt;     /* A and B / their gradients, kohya names */
    struct arena params, grads, base;
    const struct weight_table *unet, *unet_grads;
};

/* Adapters of rank r on every target of the UNet table `unet` (whose current weights
 * become W0), gradients read from the twin table `unet_grads` (may be NULL for
 * inference-only use).  A ~ N(0, 1/(3·K)) (the variance of peft's Kaiming-uniform), B = 0,
 * so the merged UNet starts equal to the base. */
sd_status lora_create(struct lora *l, struct backend *be, const struct weight_table *unet,
                      const struct weight_table *unet_grads, int rank, float alpha, uint64_t seed);
void lora_free(struct lora *l);
/* W = W0 + s·B·A for every module. */
void lora_merge(struct lora *l, struct backend *be);
/* dA += s·Bᵀ·dW, dB += s·dW·Aᵀ from the UNet's gradient twin (which is scaled in place). */
void lora_grads(struct lora *l, struct backend *be);
/* Kohya-style adapter file (with .alpha tensors), stored as dt. */
sd_status lora_save(const struct lora *l, struct backend *be, const char *path, sd_dtype dt);
/* Adapter parameters: 0 when no module was adapted. */
long long lora_param_count(const struct lora *l);

#endif
