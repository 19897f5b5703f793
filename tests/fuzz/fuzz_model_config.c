/* fuzz_model_config.c — libFuzzer harness: any bytes as a model's config.json, read by the
 * four config readers (src/model/config.c: UNet, VAE, CLIP, scheduler), every dimension of
 * a model comes from these. */
#include <stdint.h>

#include "model/config.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("mconf", data, size);
    if (!path) return 0;
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
