/* engine_lora.c — the rules of a generation's LoRA adapter set (engine.h, gen_params.lora):
 * names, scales, the canonical order, where a name's file is.  They need no engine, so the
 * daemon's HTTP threads validate requests with the same functions the worker runs; the
 * adapters themselves are applied by model/lora_rt.c from model/lora_cache.c's cache
 * (engine.c, lora_activate). */
#include <math.h>
#include <string.h>

#include "engine.h"
#include "model/lora_cache.h"

_Static_assert(ENGINE_LORA_NAME_MAX == LORA_CACHE_NAME_MAX, "one bound on LoRA names");

static sd_status lora_scale_check(const char *name, float scale) {
    if (!isfinite(scale) || fabsf(scale) > ENGINE_LORA_SCALE_MAX)
        return sd_fail(SD_ERR_INVALID, "lora: '%s': scale %g is outside [-%g, %g]", name, (double)scale,
                       (double)ENGINE_LORA_SCALE_MAX, (double)ENGINE_LORA_SCALE_MAX);
    return SD_OK;
}

sd_status engine_lora_add(struct gen_params *p, const char *name, float scale) {
    if (!lora_name_ok(name))
        return sd_fail(SD_ERR_INVALID, "lora: '%.80s' is not a plain name (1 to %d bytes, no '/' or '\\', not "
                       "starting with '.')", name, ENGINE_LORA_NAME_MAX - 1);
    SD_TRY(lora_scale_check(name, scale));
    int n = 0;
    for (; n < ENGINE_LORA_MAX && p->lora[n].name[0]; n++)
        if (!strcmp(p->lora[n].name, name)) return sd_fail(SD_ERR_INVALID, "lora: '%s' is given twice", name);
    if (scale == 0) return SD_OK;   /* changes nothing: not part of the set */
    if (n == ENGINE_LORA_MAX) return sd_fail(SD_ERR_INVALID, "lora: at most %d adapters per generation", ENGINE_LORA_MAX);
    int i = n;
    for (; i > 0 && strcmp(p->lora[i - 1].name, name) > 0; i--) p->lora[i] = p->lora[i - 1];
    memset(&p->lora[i], 0, sizeof p->lora[i]);
    memcpy(p->lora[i].name, name, strlen(name) + 1);   /* lora_name_ok: it fits */
    p->lora[i].scale = scale;
    return SD_OK;
}

sd_status engine_lora_path(const char *dir, const char *name, char *out, size_t n) {
    return lora_find_file(dir, name, out, n);
}

sd_status engine_lora_check(const struct gen_params *p) {
    for (int i = 0; i < ENGINE_LORA_MAX; i++) {
        if (!p->lora[i].name[0]) {
            for (int k = i + 1; k < ENGINE_LORA_MAX; k++)
                if (p->lora[k].name[0]) return sd_fail(SD_ERR_INVALID, "lora: an unused entry before a used one");
            break;
        }
        if (memchr(p->lora[i].name, 0, ENGINE_LORA_NAME_MAX) == NULL) return sd_fail(SD_ERR_INVALID, "lora: name too long");
        SD_TRY(lora_scale_check(p->lora[i].name, p->lora[i].scale));
    }
    return SD_OK;
}
