/* cli_util.h — small helpers shared by the offline subcommands: option matching,
 * reading tensors by name from a safetensors input with shape checks, prompts files. */
#ifndef SD_CLI_UTIL_H
#define SD_CLI_UTIL_H

#include "engine.h"

/* argv[*i] is opt: take its value (advancing *i) or print an error. */
const char *cli_value(int argc, char **argv, int *i);
/* The engine options every model-loading subcommand takes (--model, --config,
 * --tokenizers, --unet, --lora, --lora-scale, --backend, --threads, --weights-dtype,
 * --vae-tile): a = argv[i], v its value.  1 when a is one of them, 0 when it is not, -1
 * (the message printed) when its number does not parse: --threads and --vae-tile take a
 * whole number >= 0, --lora-scale a finite one (the engine checks their ranges). */
int cli_engine_opt(struct engine_config *ec, const char *a, const char *v);
#define CLI_ENGINE_USAGE "[--backend cpu|cuda] [--threads N] [--weights-dtype auto|f32|f16|bf16] [--vae-tile N]"
/* Read tensor `name` as fp32 (fresh sd_malloc) with ndim dims; shape out; required or NULL. */
float *cli_tensor(const struct st_file *f, const char *name, int ndim, int64_t *shape, int required);
/* A JSON array of strings (or a file with one). */
int cli_read_prompts(const char *path, char ***prompts, int *n);
void cli_free_prompts(char **prompts, int n);
int cli_fail(const char *what);
/* A single-file --model without --config: the shipped conf/models/sdxl-base configs
 * when the file's shapes are SDXL base's (else an error asking for --config); tokenizers
 * from the built-in model when the config folder has none.  0, or -1 with a message. */
int cli_model_defaults(struct engine_config *ec);
/* The built-in model folder used when no --model is given. */
const char *cli_default_model(void);  /* prints "sdxld: what: last error", returns 1 */

#endif
