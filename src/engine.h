/* engine.h — the facade the daemon and the subcommands use: load a model folder, make
 * images.  Knows all of src/, nothing of HTTP.
 *
 * Threading: an engine is owned by one thread at a time (the daemon's worker).  Nothing
 * here is thread-safe except engine_info(), which reads immutable fields, and the
 * functions that take no engine (engine_lora_add, engine_lora_path, ...).
 *
 * A generation call takes a batch of items that share size, timesteps and img2img
 * strength; each item has its own prompt and seed (and init image and mask, for img2img:
 * src/img2img.h), and draws its noise from its own seed only, so its pixels do not depend
 * on what it was batched with. */
#ifndef SD_ENGINE_H
#define SD_ENGINE_H

/* Re-exported, the parts of the lower layers the daemon and the CLI (server/) use beside
 * the engine itself: status codes and logging, file access and its confinement, the
 * reproducible noise RNG, the tensor and image file formats, the timestep-list rules.
 * server/ includes this header and training.h only (tests/lint.py). */
#include "core/core.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/rng.h"
#include "io/jpeg.h"
#include "io/png.h"
#include "io/webp.h"
#include "io/safetensors.h"
#include "sample/timesteps.h"

struct engine;

struct engine_config {
    const char *model_dir;   /* diffusers folder (components found through model_index.json;
                                weights plain, fp16-variant or sharded: io/wfiles.h), or a
                                single-file checkpoint in the original layout (model/sgm.h) */
    const char *config_dir;  /* single file only: a folder with unet/, vae/, text_encoder/,
                                text_encoder_2/ config.json (and scheduler/), e.g. the shipped
                                conf/models/sdxl-base; required with a single file */
    const char *tokenizer_dir; /* single file only: a folder with tokenizer/ and tokenizer_2/;
                                NULL = config_dir */
    const char *unet_path;   /* optional: a separate UNet safetensors (the DMD2 generator) */
    const char *lora_path;   /* optional: a LoRA adapter file merged into the UNet (model/lora.h) */
    float lora_scale;        /* its strength; 0 = 1 (as trained) */
    const char *backend;     /* "cpu" (default) or "cuda" */
    int threads;             /* CPU threads; 0 = all cores */
    const char *weights_dtype; /* storage of the GEMM weights: "auto" (NULL: the files' own
                                precision), "f32", "f16" or "bf16" (io/weights.h; how each is
                                computed: backend/backend.h, "Weight precision").  On CUDA
                                auto is f32 (F32 weights only, until its bf16 stage) */
    int vae_tile;            /* tiled VAE decode: 0 = off, else the tile's size in latent
                                pixels (ENGINE_VAE_TILE_MIN..MAX); engine_set_vae_tile */
    int vae_tile_overlap;    /* latent pixels neighbouring tiles share; 0 = vae_tile / 4 */
    const char *lora_dir;    /* where run-time LoRA adapters are found by name (gen_params.lora,
                                engine_lora_path); NULL = none */
    size_t lora_cache_bytes; /* bound on the adapters kept loaded; 0 = ENGINE_LORA_CACHE_DEFAULT */
};

#define ENGINE_LORA_CACHE_DEFAULT ((size_t)1024 << 20)

#define ENGINE_VAE_TILE_MIN 8
#define ENGINE_VAE_TILE_MAX 2048

struct engine_info {
    char model_name[256];    /* basename of model_dir (+ ":" unet file basename) */
    int latent_channels;
    int vae_scale;           /* pixels per latent (8 for SDXL) */
    int max_tokens;          /* 77 */
    int default_width, default_height;  /* unet sample_size × vae_scale (1024 for SDXL) */
    int size_multiple;       /* widths and heights are multiples of this: vae_scale × 2^(levels-1) */
    const char *backend;
    const char *kernels;     /* backend_kernels: the libraries, their versions and ISA */
    const char *weights_dtype; /* the UNet's weight storage: "f32", "f16" or "bf16" */
    size_t param_bytes;      /* weights resident */
    size_t scratch_bytes;    /* activation arena high-water mark */
    size_t device_bytes;     /* backend memory held now, and the most held at once (weights, */
    size_t device_peak_bytes;/* arenas, scratch); 0 where the backend does not count (cpu) */
    int vae_tile, vae_tile_overlap; /* the tiled VAE decode in force (0 = untiled) */
    /* run-time LoRA adapters (engine_generate with gen_params.lora): the cache's backend
     * memory and adapters now, and since load the files read, the adapters found loaded
     * and the ones evicted to make room */
    size_t lora_bytes;
    int lora_cached;
    long long lora_loads, lora_hits, lora_evictions;
};

#define ENGINE_MAX_STEPS 16

enum gen_sampler {
    GEN_SAMPLER_DMD2 = 0,    /* the few-step DMD2/LCM loop over `timesteps` (the product) */
    GEN_SAMPLER_DDIM,        /* deterministic DDIM over nsteps evenly spaced steps with CFG
                                (`guidance`, null condition = zero embeddings): a teacher's sampler */
};

/* Run-time LoRA adapters of a generation (model/lora_rt.h): applied unmerged, y = W x +
 * scale · (alpha/rank) · B (A x), so adapters change per batch without touching the UNet.
 * A name is a plain file name found under engine_config.lora_dir (engine_lora_path). */
#define ENGINE_LORA_MAX 4            /* adapters per generation */
#define ENGINE_LORA_NAME_MAX 64      /* bytes of a name, with its NUL */
#define ENGINE_LORA_SCALE_MAX 10.0f  /* |scale| at most this */
struct gen_lora {
    char name[ENGINE_LORA_NAME_MAX]; /* "" = unused */
    float scale;
};

struct gen_params {
    int width, height;       /* pixels, multiples of vae_scale */
    int nsteps;              /* DMD2: 1..ENGINE_MAX_STEPS; DDIM: 1..1000 */
    int timesteps[ENGINE_MAX_STEPS]; /* DMD2: strictly decreasing in [0, 999] */
    enum gen_sampler sampler;
    float guidance;          /* DDIM only; <= 1 disables CFG */
    int time_ids[6];         /* orig_h, orig_w, crop_top, crop_left, target_h, target_w;
                                all zero = (H, W, 0, 0, H, W) */
    float strength;          /* img2img (src/img2img.h): 0 or 1 = from noise; in (0, 1) the run
                                starts at the first timestep below strength × 1000 from each
                                item's noised init image (every item needs one) */
    struct gen_lora lora[ENGINE_LORA_MAX]; /* canonical (engine_lora_add): sorted by name,
                                unused entries all zero, so equal sets compare equal byte for
                                byte (the daemon batches by memcmp of gen_params) */
};

/* The first step an img2img run at p->strength runs (0 at strength 0 or 1), or -1 when
 * the strength leaves no step or is outside [0, 1] (a 400 naming "strength"). */
int engine_img2img_start(const struct gen_params *p);

/* Add LoRA `name` at `scale` to p->lora in canonical order (a scale of 0 adds nothing).
 * SD_ERR_INVALID with a message naming "lora" for a name that is not plain (engine_lora_path's
 * rule), a scale not finite or beyond ±ENGINE_LORA_SCALE_MAX, a name given twice, or more
 * than ENGINE_LORA_MAX adapters. */
sd_status engine_lora_add(struct gen_params *p, const char *name, float scale);
/* p->lora as engine_lora_add leaves it (a prefix of used entries, names terminated, scales
 * in bounds); engine_check_params runs it.  SD_ERR_INVALID naming "lora". */
sd_status engine_lora_check(const struct gen_params *p);
/* The file of LoRA `name` under dir (dir/NAME.safetensors, else dir/loras/NAME.safetensors)
 * into out: SD_ERR_INVALID for a name that is not a plain name (no '/', '\\', control
 * characters, leading '.'; 1..ENGINE_LORA_NAME_MAX-1 bytes), SD_ERR_NOTFOUND when neither
 * file exists.  The one place this rule lives (model/lora_cache.h). */
sd_status engine_lora_path(const char *dir, const char *name, char *out, size_t n);

/* The seed of image i of a request with seed `seed`: every image is reproducible alone
 * (the one place this rule is written). */
static inline uint64_t engine_image_seed(uint64_t seed, int i) { return seed + (uint64_t)i; }

struct gen_item {
    const char *prompt;      /* in */
    uint64_t seed;           /* in: this image's seed (engine_image_seed) */
    const uint8_t *init;     /* in, optional: the image to start from (img2img), width × height
                                × 3 RGB bytes, row-major; NULL = from noise */
    const uint8_t *mask;     /* in, optional with init: width × height bytes, >= 128 = repaint
                                (white), below = keep the init image's VAE round trip */
    int truncated;           /* out: prompt was cut to max_tokens */
};

struct gen_timings { double text_ms, unet_ms, vae_ms; };

/* The version (PNG metadata, --version, /v1/health): meson's project version, given
 * to every file on the command line (meson.build). */
#ifndef SDXLD_VERSION
#error "SDXLD_VERSION is defined by meson.build (project version)"
#endif

/* Fresh weights for one model component ("unet", "vae", "text_encoder" or
 * "text_encoder_2") of the config at cfg_path, each parameter drawn by its init rule from
 * seed on the CPU, written to wpath as dtype dt: `sdxld init` (SDXL-size models for
 * benchmarks without a download). */
sd_status engine_init_component(const char *sub, const char *cfg_path, const char *wpath, uint64_t seed,
                                sd_dtype dt);

/* `sdxld convert` (src/convert.c): the model (a folder, a single file in either layout,
 * safetensors or torch) or a UNet file (its config in config_dir/unet) written as a
 * diffusers folder, or (to_single) one original-layout file, or with unet_file a UNet
 * file, as safetensors in dtype.  config_dir: the configs of a single file;
 * tokenizer_dir: copied into a diffusers folder made from a single file. */
struct engine_convert {
    const char *model, *unet_file, *config_dir, *tokenizer_dir, *out;
    int to_single;
    sd_dtype dtype;
};
sd_status engine_convert(const struct engine_convert *job);
/* Are the tensors of this single file SDXL base's (so the shipped SDXL-base configs fit)?
 * 1 / 0, -1 when it does not open. */
int engine_file_is_sdxl_base(const char *path);

/* The PNG "parameters" text of one image, in AUTOMATIC1111's infotext format (the prompt,
 * then "Steps: 4, Sampler: DMD2, CFG scale: 1, Seed: …, Size: WxH, Model: …, Timesteps:
 * 999,749,499,249, Version: sdxld …"), so any image can be regenerated from its file and
 * A1111-aware tools read it; run-time LoRA adapters follow the prompt as A1111's tags
 * (" <lora:NAME:SCALE>").  extra (may be NULL) is appended as ", extra". */
void engine_parameters_text(char *out, size_t n, const char *prompt, uint64_t seed,
                            const struct gen_params *p, const char *model, const char *extra);

/* Called after each sampler step (step = 1..total) with the batch done so far; return
 * non-zero to cancel (engine_generate then returns SD_ERR_CANCELLED). */
typedef int (*gen_progress_fn)(void *ud, int step, int total);
/* Polled between the blocks of every UNet and VAE pass (each ResNet and transformer
 * block), so a cancel takes effect within one block's work rather than one step's (at
 * 1536x1536 a step of a batch can take minutes on a CPU); non-zero cancels (SD_ERR_CANCELLED).
 * It must be cheap and must not block: it runs hundreds of times per step. */
typedef int (*gen_cancel_fn)(void *ud);
/* What a generation reports to, and asks, its caller; any member may be NULL. */
struct gen_hooks {
    gen_progress_fn progress;
    gen_cancel_fn cancelled;
    void *ud;
};

/* Optional conformance hooks: fixed noises instead of seeds, and a trace of every
 * intermediate tensor (docs/conformance.md `generate`). */
struct gen_trace {
    const float *init_noise;        /* [B,C,h,w] or NULL */
    const float *step_noise[ENGINE_MAX_STEPS]; /* [B,C,h,w] per re-noise, or NULL */
    float *eps[ENGINE_MAX_STEPS];   /* out if non-NULL: [B,C,h,w] */
    float *denoised[ENGINE_MAX_STEPS];
    float *image;                   /* out if non-NULL: [B,3,H,W] in [0,1] */
};

sd_status engine_load(struct engine **out, const struct engine_config *cfg);
void engine_free(struct engine *e);
const struct engine_info *engine_info(const struct engine *e);

/* Tiled VAE decode for every later decode (engine_generate, engine_vae_decode): a latent
 * wider or taller than `tile` latent pixels is decoded tile by tile, neighbours sharing
 * `overlap` (0 = tile / 4; at most tile / 4) and blended with linear ramps across it
 * (model/vae.h, vae_decode_tiled), so the activation memory is one tile's decode, not
 * the image's; a latent within one tile decodes untiled, bit for bit.  The pixels
 * differ a little from the untiled decode (docs/benchmarks.md, "Tiled VAE decode").
 * tile 0 turns it off.  SD_ERR_INVALID naming "vae_tile" out of bounds. */
sd_status engine_set_vae_tile(struct engine *e, int tile, int overlap);

/* Where run-time LoRA adapters are found and how much of them is kept (engine_config's
 * lora_dir and lora_cache_bytes, 0 = ENGINE_LORA_CACHE_DEFAULT) for the engine as it is,
 * however it was loaded; cached adapters stay (they are kept by path).  SD_ERR_NOMEM. */
sd_status engine_set_lora_dir(struct engine *e, const char *dir, size_t cache_bytes);

/* Validate params against the model (sizes, steps, timesteps); SD_ERR_INVALID with a
 * message naming the field ("width", "timesteps", ...) on failure. */
sd_status engine_check_params(const struct engine *e, const struct gen_params *p);
/* Fill timesteps for the DMD2 defaults: 4 -> 999,749,499,249; 1 -> 399; other n ->
 * evenly spaced from 999 (n >= 1, n <= ENGINE_MAX_STEPS). */
void engine_default_timesteps(int nsteps, int *timesteps);

/* rgb: n * H * W * 3 bytes, image-major, row-major HWC.  hooks and trace may be NULL.
 * A cancelled call leaves the engine ready for the next one.  With p->lora the adapters
 * are taken from the engine's cache, their files read (under lora_dir, through
 * core/fs.h) only on a miss; SD_ERR_NOTFOUND for a name with no file, SD_ERR_NOMEM when
 * they do not fit lora_cache_bytes, messages starting "lora". */
sd_status engine_generate(struct engine *e, const struct gen_params *p,
                          struct gen_item *items, int n, uint8_t *rgb,
                          struct gen_timings *tm, const struct gen_hooks *hooks,
                          struct gen_trace *trace);

/* ---- stage-level calls for the conformance subcommands and tests (host memory) ---- */

struct engine_text {             /* any output may be NULL */
    int64_t *ids1, *ids2;        /* [n, L] */
    float *te1_penult, *te1_last;    /* [n, L, D1] */
    float *te2_penult;           /* [n, L, D2] */
    float *pooled;               /* [n, P] (te2 text_embeds) */
    float *context;              /* [n, L, D1 + D2] */
    int *truncated;              /* [n] */
};
struct engine_dims { int L, D1, D2, P, cross, latent_ch, unet_in; };
void engine_dims(const struct engine *e, struct engine_dims *d);
sd_status engine_encode(struct engine *e, const char *const *prompts, int n, struct engine_text *out);
/* x, out [N, C, h, w]; t [N]; ctx [N, L, cross]; pooled [N, P]; time_ids [N, 6]. */
sd_status engine_unet(struct engine *e, const float *x, const float *t, const float *ctx,
                      const float *pooled, const float *time_ids, int N, int h, int w, float *out);
/* img [N, 3, H, W] -> mean [N, C, H/s, W/s] (unscaled posterior mean). */
sd_status engine_vae_encode(struct engine *e, const float *img, int N, int H, int W, float *mean);
/* z [N, C, h, w] fed straight to post_quant_conv (no ÷ scaling) -> img [N, 3, h·s, w·s]. */
sd_status engine_vae_decode(struct engine *e, const float *z, int N, int h, int w, float *img);
/* How far decoded image a is from b (n floats each, as engine_vae_decode writes them, in
 * [-1, 1]), in the 8-bit pixels engine_generate makes of them: the largest difference in
 * levels, the PSNR in dB over all n values (infinite when equal), and the largest
 * difference of the floats themselves.  (Tiled against untiled decode: tests, sdxld bench.) */
struct engine_pixel_error { int max_abs; double psnr_db, max_abs_float; };
void engine_pixel_error(const float *a, const float *b, size_t n, struct engine_pixel_error *out);

/* Gradients of L = Σ out ⊙ dout through the UNet (docs/conformance.md `unet
 * --backward`): writes out, dx [N,C,h,w], dctx [N,L,cross], dpooled [N,P] (any may be
 * NULL), then calls each() once per UNet parameter with its gradient (host memory, valid
 * during the call), in declaration order, under its diffusers name.  recompute: block-level
 * recomputation instead of keeping every activation (same gradients, less memory). */
typedef void (*engine_grad_fn)(void *ud, const char *name, int ndim, const int64_t *shape, const float *grad);
sd_status engine_unet_backward(struct engine *e, const float *x, const float *t, const float *ctx,
                               const float *pooled, const float *time_ids, int N, int h, int w,
                               const float *dout, float *out, float *dx, float *dctx, float *dpooled,
                               int recompute, engine_grad_fn each, void *ud);

/* Swap the served UNet for another file, in diffusers names or the original layout
 * (same config; NULL = the model's own UNet: the folder's, or the single file's),
 * with a LoRA file merged in when lora_path is non-NULL (lora_scale 0 = 1); on failure
 * the old one stays, and *failed (when not NULL) names the input at fault: "generator"
 * or "lora". */
sd_status engine_load_unet(struct engine *e, const char *unet_path, const char *lora_path, float lora_scale,
                           const char **failed);

/* ---- models by name (src/engine_models.c): what a models folder holds ----
 *
 * engine_model_probe says what the file or folder at path is from its headers alone (no
 * tensor is read; safetensors and torch files are opened as engine_load would open them):
 *   diffusers   a folder with model_index.json (its components' weight headers);
 *   checkpoint  one file in the original (SGM) layout: UNet, VAE and both text encoders;
 *   unet        a UNet-only file (the DMD2 generator), diffusers or original key layout;
 *   lora        an adapter file (model/lora.h's key names);
 *   error       anything else, or what does not open: `error` says why.
 * file_bytes: the bytes on disk (a folder: its regular files, no link followed under a
 * confined root).  resident_bytes: an estimate of the weights a loaded model holds, with
 * the GEMM weights (tensors of 2 or more dimensions but the text encoders' position
 * tables) stored in weights_dtype ("auto": the precision the files hold, as engine_load
 * decides it) and every other tensor in f32; 0 for unet and lora entries (they load into the served model).  Runs on any
 * thread (fs.h's confinement of the caller applies). */
enum engine_model_kind {
    ENGINE_MODEL_ERROR, ENGINE_MODEL_DIFFUSERS, ENGINE_MODEL_CHECKPOINT, ENGINE_MODEL_UNET,
    ENGINE_MODEL_LORA,
};
const char *engine_model_kind_name(enum engine_model_kind k);  /* "error", "diffusers", ... */
struct engine_model_probe {
    enum engine_model_kind kind;
    uint64_t file_bytes;
    uint64_t resident_bytes;
    int sdxl_base;           /* checkpoint: its shapes are SDXL base's (shipped configs fit) */
    char error[320];
};
void engine_model_probe(const char *path, const char *weights_dtype, struct engine_model_probe *out);

#endif
