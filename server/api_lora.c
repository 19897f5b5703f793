/* api_lora.c — the LoRA adapters a generation request asks for (docs/api.md, "LoRA per
 * request"), the one parser every generation route uses:
 *
 *   "lora": [{"name": "N", "scale": 0.8}, ...]   POST /v1/generate, the OpenAI generations
 *                                                route (an extra field), A1111 txt2img
 *   <lora:N:0.8> or <lora:N> in the prompt       A1111 txt2img: taken out of the prompt
 *                                                text as A1111 does
 *
 * Each adapter goes into the request's gen_params through engine_lora_add (names, scales,
 * duplicates and the count are the engine's rules, written once), and its file must exist
 * under models_dir now (engine_lora_path, looked up confined to models_dir as the worker
 * will be, so a link is refused here as there), so an unknown name is a 400 before it
 * takes a queue slot.  The worker reads the file (once: the engine caches adapters). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* Is LoRA `name` a file under models_dir?  Checked through a confinement to models_dir,
 * as the worker reads it (src/core/fs.h). */
static int lora_exists(struct sdxld *d, const char *field, const char *name, struct api_error *e) {
    if (!d->cfg.models_dir[0])
        return api_fail(e, field, "%s: '%s': this daemon has no models_dir to find LoRA files in", field, name);
    struct sd_root root;
    if (sd_root_open(&root, d->cfg.models_dir, 0))
        return api_fail(e, field, "%s: '%s': models_dir is not accessible", field, name);
    const struct sd_root *rs[1] = { &root };
    char path[PATH_MAX];
    sd_fs_confine(rs, 1);
    sd_status st = engine_lora_path(root.path, name, path, sizeof path);
    sd_fs_confine(NULL, 0);
    sd_root_close(&root);
    if (st == SD_OK) return 0;
    if (st == SD_ERR_NOTFOUND)
        return api_fail(e, field, "%s: no LoRA named '%s' (models_dir holds neither %s.safetensors nor "
                        "loras/%s.safetensors)", field, name, name, name);
    return api_fail(e, field, "%s", sd_last_error());
}

/* Add one adapter to p: the engine's rules, then the file. */
static int add_one(struct sdxld *d, const char *field, const char *name, double scale, struct gen_params *p,
                   struct api_error *e) {
    if (engine_lora_add(p, name, (float)scale) != SD_OK)
        return strcmp(field, "prompt") ? api_fail(e, field, "%s", sd_last_error())
                                       : api_fail(e, field, "prompt: <lora:%s>: %s", name, sd_last_error());
    return lora_exists(d, field, name, e);
}

int api_parse_lora(struct sdxld *d, json_t *v, struct gen_params *p, struct api_error *e) {
    if (!json_is_array(v))
        return api_fail(e, "lora", "lora: expected a list of {\"name\", \"scale\"}, got %s", sd_json_kind(v));
    if (json_array_size(v) > ENGINE_LORA_MAX)
        return api_fail(e, "lora", "lora: %zu adapters; at most %d per request", json_array_size(v), ENGINE_LORA_MAX);
    size_t i;
    json_t *o;
    json_array_foreach(v, i, o) {
        static const char *const known[] = { "name", "scale", NULL };
        json_t *n = json_object_get(o, "name"), *s = json_object_get(o, "scale");
        if (!json_is_object(o))
            return api_fail(e, "lora", "lora[%zu]: expected an object {\"name\", \"scale\"}, got %s", i, sd_json_kind(o));
        if (api_check_unknown(o, known, e)) {
            char why[sizeof e->msg];
            memcpy(why, e->msg, sizeof why);
            return api_fail(e, "lora", "lora[%zu]: %s", i, why);
        }
        if (!json_is_string(n))
            return api_fail(e, "lora", "lora[%zu].name: expected a string, got %s", i, n ? sd_json_kind(n) : "nothing");
        if (s && !json_is_number(s))
            return api_fail(e, "lora", "lora[%zu].scale: expected a number, got %s", i, sd_json_kind(s));
        if (add_one(d, "lora", json_string_value(n), s ? json_number_value(s) : 1.0, p, e)) return -1;
    }
    return 0;
}

/* One tag's inside ("N" or "N:S") into name and *scale. */
static int tag_parse(const char *in, size_t len, char *name, size_t cap, double *scale, struct api_error *e) {
    const char *colon = memchr(in, ':', len);
    size_t nl = colon ? (size_t)(colon - in) : len;
    *scale = 1.0;
    if (nl >= cap) return api_fail(e, "prompt", "prompt: <lora:%.*s...>: the name is too long", 40, in);
    memcpy(name, in, nl);
    name[nl] = 0;
    if (!colon) return 0;
    char num[32], *end;
    size_t sl = len - nl - 1;
    if (sl == 0 || sl >= sizeof num || memchr(colon + 1, ':', sl))
        return api_fail(e, "prompt", "prompt: <lora:%s:...>: expected one number after the name (<lora:NAME:SCALE>)",
                        name);
    memcpy(num, colon + 1, sl);
    num[sl] = 0;
    errno = 0;
    *scale = strtod(num, &end);
    if (*end || errno || !isfinite(*scale))
        return api_fail(e, "prompt", "prompt: <lora:%s:%s>: the scale is not a number", name, num);
    return 0;
}

int api_prompt_lora(struct sdxld *d, char *prompt, struct gen_params *p, struct api_error *e) {
    static const char open[] = "<lora:";
    char *s = prompt;
    while ((s = strstr(s, open))) {
        char *in = s + sizeof open - 1, *close = strchr(in, '>');
        if (!close) return api_fail(e, "prompt", "prompt: '<lora:' without its closing '>'");
        char name[ENGINE_LORA_NAME_MAX + 1];
        double scale;
        if (tag_parse(in, (size_t)(close - in), name, sizeof name, &scale, e) ||
            add_one(d, "prompt", name, scale, p, e))
            return -1;
        memmove(s, close + 1, strlen(close + 1) + 1);   /* the tag leaves the prompt */
    }
    return 0;
}
