/* cli_convert.c — `sdxld convert`: the command line of engine_convert (src/convert.c):
 * any model sdxld reads into a diffusers folder, a UNet file or an original-layout single
 * file, in a chosen dtype. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "engine.h"

int cli_convert(int argc, char **argv) {
    struct engine_convert c = { 0 };
    const char *to = NULL, *tok_dir = NULL;
    c.dtype = DT_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            printf("sdxld convert (--model DIR|FILE [--config DIR] [--tokenizers DIR] | --unet FILE --config DIR)\n"
                   "              --to diffusers|single-file --out PATH [--dtype f32|f16|bf16]\n"
                   "A whole model (a diffusers folder, or a single-file checkpoint in the original layout with\n"
                   "its configs from --config, by default the shipped SDXL-base ones when its shapes are SDXL's)\n"
                   "becomes a diffusers folder or one original-layout .safetensors; a UNet file (--unet, either\n"
                   "naming, UNet config in DIR/unet/config.json) becomes a diffusers-named UNet file or a\n"
                   "model.diffusion_model.* file.  Default dtype f16.\n");
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) c.model = v;
        else if (!strcmp(a, "--unet")) c.unet_file = v;
        else if (!strcmp(a, "--config")) c.config_dir = v;
        else if (!strcmp(a, "--tokenizers")) tok_dir = v;
        else if (!strcmp(a, "--to")) to = v;
        else if (!strcmp(a, "--out")) c.out = v;
        else if (!strcmp(a, "--dtype")) {
            char up[8] = { 0 };
            for (int k = 0; k < 7 && v[k]; k++) up[k] = (char)(v[k] >= 'a' && v[k] <= 'z' ? v[k] - 32 : v[k]);
            if (sd_dtype_parse(up, &c.dtype) || c.dtype == DT_I64) { fprintf(stderr, "sdxld convert: --dtype f32, f16 or bf16\n"); return 2; }
        } else { fprintf(stderr, "sdxld convert: unknown option '%s'\n", a); return 2; }
    }
    if (!to || !c.out || (!c.model == !c.unet_file) || (strcmp(to, "diffusers") && strcmp(to, "single-file"))) {
        fprintf(stderr, "sdxld convert: need one of --model/--unet, --to diffusers|single-file and --out (see --help)\n");
        return 2;
    }
    c.to_single = !strcmp(to, "single-file");
    struct engine_config ec = { .model_dir = c.model, .config_dir = c.config_dir, .tokenizer_dir = tok_dir };
    if (c.model && cli_model_defaults(&ec)) return cli_fail("convert");
    c.config_dir = ec.config_dir;
    tok_dir = ec.tokenizer_dir;
    if (c.unet_file && !c.config_dir) { fprintf(stderr, "sdxld convert: --unet needs --config DIR (with unet/config.json)\n"); return 2; }
    c.tokenizer_dir = tok_dir;
    if (engine_convert(&c)) return cli_fail("convert");
    printf("%s\n", c.out);
    return 0;
}
