/* main.c — sdxld entry point: dispatch to `serve` or one of the offline subcommands.
 * Only main and the daemon's worker ever exit the process. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    { "serve",    serve_main,   "run the HTTP daemon" },
    { "generate", cli_generate, "make images from prompts (DMD2 sampler)" },
    { "encode",   cli_encode,   "conformance: tokenizers + text encoders" },
    { "unet",     cli_unet,     "conformance: one UNet evaluation" },
    { "vae",      cli_vae,      "conformance: VAE encoder mean / decoder" },
    { "convert",  cli_convert,  "rewrite a model: diffusers folder <-> single file, dtype" },
    { "init",     cli_init,     "write a model folder with freshly initialised weights" },
    { "bench",    cli_bench,    "time each pipeline stage" },
    { "train-vae", cli_train_vae, "the same as `train vae`" },
    { "eval-shapes", cli_eval_shapes, "attribute accuracy + MMD of a shapes model on the fixed prompt set" },
    { "eval-cond", cli_eval_cond, "how much a denoiser uses its text: eps-MSE with own / other / null captions" },
    { "train",    cli_train,    "train vae | teacher | dmd2: a VAE, a diffusion teacher, DMD2 distillation of a 4-step generator" },
    { "train-teacher", cli_train_teacher, "the same as `train teacher`" },
};

static void usage(FILE *f) {
    fprintf(f, "usage: sdxld COMMAND [options]   (sdxld COMMAND --help for its options)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("sdxld %s\n", SDXLD_VERSION); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sdxld: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
