/* fuzz_model_config.c — libFuzzer harness: any bytes as a model's config.json, read by the
 * four config readers (src/model/config.c: UNet, VAE, CLIP, scheduler), every dimension of
 * a model comes from these. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/sdxld-fuzz-mconf-%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct unet_config u;
    struct vae_config v;
    struct clip_config c;
    struct sched_config s;
    unet_config_load(&u, path);
    vae_config_load(&v, path);
    clip_config_load(&c, path);
    sched_config_load(&s, path);
    sd_clear_error();
    return 0;
}
