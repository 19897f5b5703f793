/* config.h — the daemon's options: one static table (config.c) drives the config file
 * parser, the --flags, `sdxld serve --help`, `--print-config` (the shipped
 * conf/sdxld.conf) and GET /v1/config, so an option cannot exist in one place and not
 * in another.
 *
 * Threading: the config is filled once by serve_main before any thread starts and is
 * read-only afterwards. */
#ifndef SD_SERVER_CONFIG_H
#define SD_SERVER_CONFIG_H

#include <stdio.h>
#include <jansson.h>

/* Exit status for a bad configuration (sysexits.h EX_CONFIG); systemd's
 * RestartPreventExitStatus= lists it so a typo does not become a restart loop. */
#define SDXLD_EXIT_CONFIG 78

#define CFG_STR_MAX 1024

struct sdxld_config {
    char listen[CFG_STR_MAX];           /* host:port, [v6]:port */
    char replica[64];                   /* this daemon's name behind a proxy ("" = none;
                                           replica.h: checked by config_check) */
    char model[CFG_STR_MAX];            /* diffusers model folder */
    char unet[CFG_STR_MAX];             /* optional separate UNet file ("" = none) */
    char model_config[CFG_STR_MAX];     /* a single-file model's config folder ("" = by its shapes) */
    char tokenizers[CFG_STR_MAX];       /* a single-file model's tokenizer folder ("" = default) */
    char models_dir[CFG_STR_MAX];       /* models served by name ("" = none; server/models.h) */
    int model_memory_mb;                /* weights budget for a switch (0 = 3/4 of the RAM) */
    char backend[16];                   /* auto | cpu | cuda */
    char weights_dtype[8];              /* auto | f32 | f16 | bf16 */
    int threads;                        /* engine CPU threads, 0 = all cores */
    int vae_tile;                       /* tiled VAE decode: tile in latent pixels, 0 = off */
    int lora_cache_mb;                  /* run-time LoRA adapters kept loaded */
    int http_threads;                   /* libmicrohttpd event-loop threads */
    int max_connections;
    int http_timeout_s;                 /* idle keep-alive connections are closed */
    /* the HTTP edge (server/edge.h) */
    int http_head_timeout_s;            /* the whole request head, from accept */
    int http_body_timeout_s;            /* the request body, from the end of the head */
    int max_connections_per_address;    /* 0 = no limit */
    int log_repeat_interval_s;          /* repeated refusals: one line per interval */
    int max_batch;                      /* images per engine call */
    int batch_window_ms;                /* how long the head job waits for companions */
    int queue_max;                      /* queued jobs before 429 */
    int max_n;                          /* images per request */
    int max_width, max_height;
    int default_width, default_height;
    int default_steps;
    int result_ttl_s;                   /* finished jobs (and images) kept this long */
    int result_max_mb;                  /* cap on retained image bytes */
    int retained_jobs_max;              /* cap on jobs kept (live and finished) */
    int retained_jobs_mb;               /* cap on their memory (prompts, event logs) */
    int encode_threads;                 /* image encoders beside the worker */
    int shutdown_timeout_s;             /* SIGTERM: finish queued work for this long */
    int warmup;                         /* bool: one generation before READY=1 */
    char api_token_file[CFG_STR_MAX];
    char admin_token_file[CFG_STR_MAX];
    char data_root[CFG_STR_MAX];
    int train_memory_mb;                /* admission: a run's memory estimate at most this */
    int train_max_iteration_s;          /* admission: a run's iteration estimate at most this */
    char public_url[CFG_STR_MAX];       /* base of absolute image URLs ("" = from the request) */
    int trust_proxy;                    /* bool: honour X-Forwarded-Proto/-Host */
    char cors_origins[CFG_STR_MAX];     /* browser origins allowed (CORS), "" = none */
    char log_level[16];                 /* debug | info | warn | error */
    int debug_train_pass_sleep_ms;      /* tests: every training pass takes this much longer */

    unsigned char source[48];           /* enum cfg_source, per table row */
};

enum cfg_source { CFG_SRC_DEFAULT, CFG_SRC_FILE, CFG_SRC_FLAG };

/* Fill every option with its default. */
void config_defaults(struct sdxld_config *c);
/* Read a config file ("name = value" lines, # comments).  0 on success; otherwise -1
 * with a message naming file:line and the option in err. */
int config_load_file(struct sdxld_config *c, const char *path, char *err, size_t errlen);
/* Set one option from text (a --flag); 0 or -1 with a message in err. */
int config_set(struct sdxld_config *c, const char *name, const char *value,
               enum cfg_source src, char *err, size_t errlen);
/* Cross-option checks (defaults within bounds, multiples of 8); 0 or -1 + err. */
int config_check(const struct sdxld_config *c, char *err, size_t errlen);
/* Is name an option (for the flag parser)?  Returns 1 for a bool option, 2 for the
 * others, 0 for unknown. */
int config_is_option(const char *name);

/* `sdxld serve --help`: the options with type, bounds, default and help; builtin_model is
 * the path an empty `model` stands for (cli_default_model()). */
void config_print_help(FILE *f, const char *builtin_model);
/* The example config file: every option, its help as a comment, its default. */
void config_print_file(FILE *f);
/* Effective values as a JSON object (secrets masked) with where each came from. */
json_t *config_to_json(const struct sdxld_config *c);

#endif
