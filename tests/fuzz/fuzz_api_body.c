/* fuzz_api_body.c — libFuzzer harness: any bytes as the request body of a JSON route, through
 * the parsers the handlers call (server/api.h, "the request parsers"): the body as http.c
 * reads it (api_parse_body), then the route's validation.  The first byte picks the route:
 *   0 POST /v1/generate            3 POST /sdapi/v1/options (and the model-load paths)
 *   1 POST /v1/images/generations  4 POST /v1/models/load (and its paths under data_root)
 *   2 POST /sdapi/v1/txt2img       5 POST /v1/train
 * No model is loaded: the daemon context carries the built-in model's description (what the
 * worker would copy from the engine), and data_root is a scratch folder with a few files,
 * folders and an outward symlink (fuzz_daemon.h).  What a parser accepts must hold the bounds the API
 * promises (docs/api.md); a request that breaks them, an error without a status or message,
 * a crash, a leak or UB are findings.  FUZZ_API_PRINT=1 prints each verdict. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api.h"
#include "fuzz_daemon.h"
#include "training.h"

static struct sdxld D;

/* What any accepted generation request must be (docs/api.md). */
static void check_gen(const struct gen_request *g) {
    const struct sdxld_config *c = &D.cfg;
    int ok = g->prompt && g->n >= 1 && g->n <= c->max_n &&
             g->params.width >= D.size_multiple && g->params.width <= c->max_width &&
             g->params.width % D.size_multiple == 0 &&
             g->params.height >= D.size_multiple && g->params.height <= c->max_height &&
             g->params.height % D.size_multiple == 0 &&
             g->params.nsteps >= 1 && g->params.nsteps <= API_MAX_STEPS &&
             g->seed <= (uint64_t)API_SEED_MAX - (uint64_t)(g->n - 1) &&
             g->quality >= 0 && g->quality <= 100;
    for (int i = 0; ok && i < g->params.nsteps; i++)
        ok = g->params.timesteps[i] >= 0 && g->params.timesteps[i] <= 999 &&
             (i == 0 || g->params.timesteps[i] < g->params.timesteps[i - 1]);
    if (!ok) {
        fprintf(stderr, "accepted a request out of bounds: n %d, %dx%d, %d steps, seed %llu\n", g->n,
                g->params.width, g->params.height, g->params.nsteps, (unsigned long long)g->seed);
        abort();
    }
}

static void check_error(const struct api_error *e) {
    if (!e->http || !e->code || !e->msg[0]) {
        fprintf(stderr, "an error without a status, code or message\n");
        abort();
    }
}

static int parse_gen(int route, json_t *body, struct api_error *e) {
    struct gen_request g = { 0 };
    int rc = route == 0 ? api_parse_generate_request(&D, body, &g, e)
           : route == 1 ? api_parse_openai_request(&D, body, &g, e)
                        : api_parse_txt2img_request(&D, body, &g, e);
    if (!rc) check_gen(&g);
    free(g.prompt);
    free(g.ignored);
    return rc;
}

static int parse_load(int route, json_t *body, struct api_error *e) {
    json_t *gen = NULL, *lora = NULL, *model = NULL;
    float scale = 1.0f;
    int to_own = 0;
    char real_root[PATH_MAX], p[PATH_MAX], pl[PATH_MAX];
    if (route == 3 ? api_parse_a1111_options(&D, body, &gen, &to_own, e)
                   : api_parse_load_request(body, &gen, &lora, &scale, &model, e))
        return -1;
    if (model) return 0;   /* a models_dir name: resolved by the catalog (the fuzzer's daemon has none) */
    if (!(scale > 0 && scale <= 10)) abort();
    if (route == 3 && (!gen || to_own)) return 0;
    if (api_load_paths(&D, gen, route == 3 ? "sd_model_checkpoint" : "generator", lora, real_root, p,
                       pl, e))
        return -1;
    /* what resolves is a regular file strictly inside data_root */
    size_t n = strlen(real_root);
    struct stat st;
    const char *got[2] = { gen ? p : NULL, lora ? pl : NULL };
    for (int i = 0; i < 2; i++)
        if (got[i] && (strncmp(got[i], real_root, n) || got[i][n] != '/' || stat(got[i], &st) ||
                       !S_ISREG(st.st_mode))) {
            fprintf(stderr, "a model-load path resolved outside data_root: %s\n", got[i]);
            abort();
        }
    return 0;
}

static int parse_train(json_t *body, struct api_error *e) {
    struct train_request t = { 0 };
    int rc = api_parse_train_request(&D, body, &t, e);
    if (!rc && (!t.teacher || !t.out || !t.root || !t.echo || t.steps < 1)) abort();
    train_request_free(&t);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready, print;
    if (!ready) {
        fuzz_daemon_init(&D, "api");
        print = getenv("FUZZ_API_PRINT") != NULL;
        ready = 1;
    }
    if (size < 1) return 0;
    int route = data[0] % 6;
    struct api_error e = { 0 };
    json_t *body = NULL;
    int rc = api_parse_body((const char *)data + 1, size - 1, &body, &e);
    if (!rc) {
        rc = route <= 2 ? parse_gen(route, body, &e) : route <= 4 ? parse_load(route, body, &e)
                                                                   : parse_train(body, &e);
        json_decref(body);
    }
    if (rc) check_error(&e);
    if (print) fprintf(stderr, "route %d: %s\n", route, rc ? e.msg : "accepted");
    sd_clear_error();
    return 0;
}
