/* config.c — the option table and everything derived from it (redis's standardConfig).
 *
 * Each row names an option, its type, bounds, default (as text, so the default goes
 * through the same parser as a user's value), flags, the struct field it fills and a
 * one-line help.  The config file, the command line, --help, the example config file
 * and GET /v1/config all walk this table; adding an option is adding a row here and a
 * field in struct sdxld_config.
 *
 * File syntax: `name = value` per line; blank lines and lines starting with '#' are
 * ignored; a value may be double-quoted ("a b", with \" and \\ escapes) to keep
 * surrounding spaces or to write an empty string.  There are no inline comments,
 * because '#' is legal in paths.  An option set twice in one file is an error: the
 * second one is almost always a forgotten edit. */
#include "config.h"
#include "cors.h"
#include "engine.h"
#include "replica.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum cfg_type { CFG_T_STR, CFG_T_INT, CFG_T_BOOL, CFG_T_ENUM };

#define CFG_SECRET   1u   /* masked in GET /v1/config */
#define CFG_BUILTIN  2u   /* empty = the built-in model (serve.c puts its path in at start) */

/* What an empty CFG_BUILTIN option means, in --help (with the path this binary resolves)
 * and in the config file (without: the file is the same on every machine). */
#define BUILTIN_TEXT "\"\" = the built-in model"
#define BUILTIN_WHERE "models/shapes-small of the installation or source tree (docs/deploy.md), or $SDXLD_MODEL; --check-config and GET /v1/config show its path"

struct cfg_option {
    const char *name;
    enum cfg_type type;
    long min, max;          /* CFG_T_INT bounds, inclusive */
    const char *dflt;       /* the default, as it would be written in the file */
    const char *choices;    /* CFG_T_ENUM: "a|b|c" */
    unsigned flags;
    size_t off, size;       /* field in struct sdxld_config */
    const char *help;
};

#define FIELD(f) offsetof(struct sdxld_config, f), sizeof(((struct sdxld_config *)0)->f)
#define CFG_STR(n, d, fl, f, h)        { n, CFG_T_STR, 0, 0, d, NULL, fl, FIELD(f), h }
#define CFG_INT(n, lo, hi, d, fl, f, h) { n, CFG_T_INT, lo, hi, #d, NULL, fl, FIELD(f), h }
#define CFG_BOOL(n, d, fl, f, h)       { n, CFG_T_BOOL, 0, 1, d, NULL, fl, FIELD(f), h }
#define CFG_ENUM(n, ch, d, fl, f, h)   { n, CFG_T_ENUM, 0, 0, d, ch, fl, FIELD(f), h }
#define CFG_TEXT_(x) #x
#define CFG_TEXT(x) CFG_TEXT_(x)    /* a number from a header, for a help text */

static const struct cfg_option options[] = {
    /*        name                default / bounds                          field */
    CFG_STR ("listen", "127.0.0.1:8080", 0, listen,
             "address to listen on: HOST:PORT or [IPV6]:PORT (port 0 picks a free one)"),
    CFG_STR ("replica", "", 0, replica,
             "this daemon's name among several behind one proxy (docs/deploy.md): 1 to " REPLICA_NAME_MAX_TEXT " of a-z, 0-9 and '-'; it starts every job and training id (r1-gen_...) so the proxy can route an id to its replica, labels every /metrics series and is shown by /healthz and /readyz; empty = none"),
    CFG_STR ("model", "", CFG_BUILTIN, model,
             "model folder in diffusers layout (unet/, vae/, text_encoder*/, tokenizer*/), or one checkpoint file in the original layout (safetensors or torch)"),
    CFG_STR ("model_config", "", 0, model_config,
             "for a single-file model: the folder of its configs (unet/, vae/, text_encoder/, text_encoder_2/ config.json); empty = the shipped SDXL-base ones when the file's shapes are SDXL base's"),
    CFG_STR ("tokenizers", "", 0, tokenizers,
             "for a single-file model: a folder with tokenizer/ and tokenizer_2/; empty = model_config's, else the built-in model's"),
    CFG_STR ("unet", "", 0, unet,
             "optional separate UNet safetensors file (the DMD2 generator) replacing the folder's"),
    CFG_STR ("models_dir", "", 0, models_dir,
             "folder of models served by name (docs/api.md, Models): diffusers folders, single-file checkpoints, UNet-only generators and LoRA files (NAME.safetensors, or under loras/), told apart by their contents; GET /v1/models lists it, POST /v1/models/load {\"model\": NAME} and a request's \"model\" switch to one; read confined to the folder, no link followed; empty = only the served model"),
    CFG_INT ("model_memory_mb", 0, 1 << 30, 0, 0, model_memory_mb,
             "memory budget for model weights when switching models by name: a model whose estimated weights exceed it is refused (400); when the new and the old model together exceed it, the old one is freed before the new one loads (and loaded again if the new one fails); 0 = 3/4 of the physical memory"),
    CFG_ENUM("backend", "auto|cpu|cuda", "auto", 0, backend,
             "compute backend; auto uses cuda when it loads and falls back to cpu"),
    CFG_ENUM("weights_dtype", "auto|f32|f16|bf16", "auto", 0, weights_dtype,
             "precision the GEMM weights are kept in: auto = as the files store them (an fp16 release stays fp16, half the memory of f32, same images); bf16 = computed with the CPU's bf16 dot products (AVX512-BF16/AMX), fastest, within 2e-2; f32 = the exact reference mode; the CUDA backend takes f32 only for now"),
    CFG_INT ("threads", 0, 1024, 0, 0, threads,
             "CPU threads for the cpu backend (0 = all cores)"),
    CFG_INT ("vae_tile", 0, ENGINE_VAE_TILE_MAX, 0, 0, vae_tile,
             "tiled VAE decode: 0 = off; else images whose latent is wider or taller than this many latent pixels (8 pixels each for SDXL; at least " CFG_TEXT(ENGINE_VAE_TILE_MIN) ") are decoded in tiles of that size overlapping by a quarter, blended across the overlap, so the decode's activation memory is one tile's (tiles of 64: about a 512x512 decode) at any image size; the pixels differ somewhat from the untiled decode (docs/benchmarks.md, \"Tiled VAE decode\"); images within one tile are unchanged"),
    CFG_INT ("lora_cache_mb", 1, 1 << 20, 1024, 0, lora_cache_mb,
             "memory for the LoRA adapters requests name, kept loaded (fp32) so switching adapters between requests reads no file; beyond it the least recently used are dropped, and a request whose adapters alone exceed it fails"),
    CFG_INT ("http_threads", 1, 64, 2, 0, http_threads,
             "HTTP event-loop threads (connections waiting for images hold no thread)"),
    CFG_INT ("max_connections", 4, 65536, 1024, 0, max_connections,
             "concurrent HTTP connections, waiting ones included"),
    CFG_INT ("http_timeout_s", 1, 3600, 60, 0, http_timeout_s,
             "idle HTTP connections are closed after this many seconds"),
    /* the HTTP edge (server/edge.h) */
    CFG_INT ("http_head_timeout_s", 1, 3600, 10, 0, http_head_timeout_s,
             "a request's head (request line and headers) must arrive within this many seconds of the connection, or the connection gets 408 and is closed"),
    CFG_INT ("http_body_timeout_s", 1, 86400, 60, 0, http_body_timeout_s,
             "a request's body must arrive within this many seconds after its head, or the connection is closed"),
    CFG_INT ("max_connections_per_address", 0, 65536, 256, 0, max_connections_per_address,
             "concurrent connections from one client address, beyond which it gets 429 (0 = no limit); behind a proxy every client has the proxy's address: raise it to max_connections there"),
    CFG_INT ("log_repeat_interval_s", 0, 3600, 10, 0, log_repeat_interval_s,
             "repeated refusals (429, 503, requests the HTTP edge rejects) are logged once per interval and kind, with a count of the lines left out (0 = log every one)"),
    CFG_INT ("max_batch", 1, 64, 4, 0, max_batch,
             "images per engine call; compatible jobs (same size and timesteps) share one"),
    CFG_INT ("batch_window_ms", 0, 10000, 20, 0, batch_window_ms,
             "how long the oldest queued job waits for companions to fill a batch"),
    CFG_INT ("queue_max", 1, 100000, 64, 0, queue_max,
             "jobs waiting in the queue; beyond it requests get 429 with Retry-After"),
    CFG_INT ("max_n", 1, 64, 4, 0, max_n,
             "images per request (n)"),
    CFG_INT ("max_width", 8, 8192, 1536, 0, max_width,
             "largest image width in pixels a request may ask for"),
    CFG_INT ("max_height", 8, 8192, 1536, 0, max_height,
             "largest image height in pixels a request may ask for"),
    CFG_INT ("default_width", 0, 8192, 0, 0, default_width,
             "image width when a request gives none; 0 = the model's native size (1024 for SDXL)"),
    CFG_INT ("default_height", 0, 8192, 0, 0, default_height,
             "image height when a request gives none; 0 = the model's native size (1024 for SDXL)"),
    CFG_INT ("default_steps", 1, 4, 4, 0, default_steps,
             "sampler steps when a request gives neither steps nor timesteps (4 for DMD2, 1 for a 1-step generator)"),
    CFG_INT ("result_ttl_s", 1, 604800, 600, 0, result_ttl_s,
             "finished jobs and their images are kept this many seconds"),
    CFG_INT ("result_max_mb", 1, 1048576, 1024, 0, result_max_mb,
             "cap on kept image bytes; the oldest finished results are dropped first"),
    CFG_INT ("retained_jobs_max", 16, 10000000, 10000, 0, retained_jobs_max,
             "cap on jobs kept in memory; the oldest finished ones are evicted first, and new work is 429 only when live jobs fill it"),
    CFG_INT ("retained_jobs_mb", 1, 1048576, 256, 0, retained_jobs_mb,
             "cap on the memory of kept jobs (prompts and progress events included), evicted like retained_jobs_max"),
    CFG_INT ("encode_threads", 1, 64, 2, 0, encode_threads,
             "threads encoding the images (PNG, JPEG, WebP), so the worker goes straight on to the next batch"),
    CFG_INT ("shutdown_timeout_s", 0, 3600, 30, 0, shutdown_timeout_s,
             "on SIGTERM, queued and running jobs get this long to finish before they are cancelled"),
    CFG_BOOL("warmup", "true", 0, warmup,
             "run one generation at the default size before reporting ready"),
    CFG_STR ("api_token_file", "", 0, api_token_file,
             "file of bearer tokens (one per line) for generation and jobs; empty = no auth"),
    CFG_STR ("admin_token_file", "", 0, admin_token_file,
             "file of bearer tokens for admin endpoints (training, model loading)"),
    CFG_STR ("data_root", "/var/lib/sdxld", 0, data_root,
             "folder that training and model paths in requests are resolved under"),
    CFG_INT ("train_memory_mb", 0, 1 << 30, 0, 0, train_memory_mb,
             "training runs whose memory estimate exceeds this many MiB are refused (400); 0 = 3/4 of the physical memory"),
    CFG_INT ("train_max_iteration_s", 1, 86400, 30, 0, train_max_iteration_s,
             "training runs whose estimated iteration time exceeds this many seconds are refused (400): a generation waits for at most one iteration"),
    CFG_STR ("public_url", "", 0, public_url,
             "the daemon's base URL as clients reach it (e.g. https://images.example.com or https://example.com/sdxld), used for the absolute image URLs of OpenAI response_format url answers; empty = http://HOST from the request's Host header (or X-Forwarded-Proto and X-Forwarded-Host with trust_proxy)"),
    CFG_BOOL("trust_proxy", "false", 0, trust_proxy,
             "build absolute URLs from the X-Forwarded-Proto and X-Forwarded-Host headers; set it only behind a proxy that sets (or strips) them, since clients can send them too"),
    CFG_STR ("cors_origins", "", 0, cors_origins,
             "browser origins allowed to call the API from another site (CORS), comma-separated, e.g. https://app.example.com,http://localhost:3000; * = any origin; empty = none (browsers then refuse cross-origin calls)"),
    CFG_ENUM("log_level", "debug|info|warn|error", "info", 0, log_level,
             "log verbosity on stderr"),
    CFG_INT ("debug_train_pass_sleep_ms", 0, 60000, 0, 0, debug_train_pass_sleep_ms,
             "testing only: sleep this long before every UNet pass of training (a slow box)"),
};

#define NOPTIONS ((int)(sizeof options / sizeof options[0]))
_Static_assert(sizeof options / sizeof options[0] <= sizeof ((struct sdxld_config *)0)->source,
               "struct sdxld_config.source is too small for the option table");

static const struct cfg_option *find_option(const char *name) {
    for (int i = 0; i < NOPTIONS; i++)
        if (!strcmp(options[i].name, name)) return &options[i];
    return NULL;
}

int config_is_option(const char *name) {
    const struct cfg_option *o = find_option(name);
    if (!o) return 0;
    return o->type == CFG_T_BOOL ? 1 : 2;
}

static int choice_ok(const char *choices, const char *v) {
    size_t vl = strlen(v);
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == vl && !strncmp(p, v, l)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}


/* Store text value v into the option's field. */
static int option_set(struct sdxld_config *c, const struct cfg_option *o, const char *v,
                      char *err, size_t errlen) {
    char *field = (char *)c + o->off;
    switch (o->type) {
    case CFG_T_STR:
    case CFG_T_ENUM:
        if (o->type == CFG_T_ENUM && !choice_ok(o->choices, v)) {
            snprintf(err, errlen, "%s: '%s' is not one of %s", o->name, v, o->choices);
            return -1;
        }
        if (strlen(v) >= o->size) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", o->name, o->size - 1);
            return -1;
        }
        memcpy(field, v, strlen(v) + 1);
        return 0;
    case CFG_T_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno) {
            snprintf(err, errlen, "%s: '%s' is not an integer", o->name, v);
            return -1;
        }
        if (x < o->min || x > o->max) {
            snprintf(err, errlen, "%s: %ld is out of range %ld..%ld", o->name, x, o->min, o->max);
            return -1;
        }
        *(int *)field = (int)x;
        return 0;
    }
    case CFG_T_BOOL:
        if (sd_parse_bool(v, (int *)field)) {
            snprintf(err, errlen, "%s: '%s' is not a boolean (true/false)", o->name, v);
            return -1;
        }
        return 0;
    }
    return -1;
}

void config_defaults(struct sdxld_config *c) {
    char err[256];
    memset(c, 0, sizeof *c);
    for (int i = 0; i < NOPTIONS; i++) {
        /* A default that does not parse is a bug in the table. */
        if (option_set(c, &options[i], options[i].dflt, err, sizeof err)) {
            fprintf(stderr, "sdxld: bad default in option table: %s\n", err);
            abort();
        }
        c->source[i] = CFG_SRC_DEFAULT;
    }
}

int config_set(struct sdxld_config *c, const char *name, const char *value,
               enum cfg_source src, char *err, size_t errlen) {
    const struct cfg_option *o = find_option(name);
    if (!o) {
        snprintf(err, errlen, "unknown option '%s' (sdxld serve --help lists them)", name);
        return -1;
    }
    if (option_set(c, o, value, err, errlen)) return -1;
    c->source[o - options] = (unsigned char)src;
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* Unquote "..." in place; -1 on a malformed quoted value. */
static int unquote(char *v) {
    size_t n = strlen(v);
    if (n == 0 || v[0] != '"') return 0;
    if (n < 2 || v[n - 1] != '"') return -1;
    char *w = v;
    for (size_t i = 1; i < n - 1; i++) {
        if (v[i] == '\\') {
            if (i + 1 >= n - 1 || (v[i + 1] != '"' && v[i + 1] != '\\')) return -1;
            i++;
        } else if (v[i] == '"') {
            return -1;
        }
        *w++ = v[i];
    }
    *w = 0;
    return 0;
}

int config_load_file(struct sdxld_config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char seen[NOPTIONS];
    memset(seen, 0, sizeof seen);
    char line[4 * CFG_STR_MAX], msg[CFG_STR_MAX + 256];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'name = value', got '%.60s'", path, lineno, s);
            rc = -1;
            break;
        }
        *eq = 0;
        char *name = trim(s), *value = trim(eq + 1);
        if (unquote(value)) {
            snprintf(err, errlen, "%s:%d: %s: malformed quoted value", path, lineno, name);
            rc = -1;
            break;
        }
        const struct cfg_option *o = find_option(name);
        if (o && seen[o - options]) {
            snprintf(err, errlen, "%s:%d: %s is set twice", path, lineno, name);
            rc = -1;
            break;
        }
        if (config_set(c, name, value, CFG_SRC_FILE, msg, sizeof msg)) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
        seen[o - options] = 1;
    }
    if (!rc && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* public_url: http(s)://host[:port][/path], no query, fragment, space or control byte. */
static int public_url_check(const char *u, char *err, size_t errlen) {
    size_t skip = !strncmp(u, "http://", 7) ? 7 : !strncmp(u, "https://", 8) ? 8 : 0;
    int bad = !skip || !u[skip] || u[skip] == '/';
    for (const unsigned char *p = (const unsigned char *)u; *p && !bad; p++)
        bad = *p <= 0x20 || *p >= 0x7f || *p == '?' || *p == '#' || *p == '"' || *p == '\\';
    if (bad) snprintf(err, errlen, "public_url: '%.200s' is not an http:// or https:// URL with "
                      "a host (and optionally a path; no query, fragment or spaces)", u);
    return bad ? -1 : 0;
}

int config_check(const struct sdxld_config *c, char *err, size_t errlen) {
    if (!c->listen[0]) {
        snprintf(err, errlen, "listen: empty address");
        return -1;
    }
    if (!c->model[0]) {
        snprintf(err, errlen, "model: empty path");
        return -1;
    }
    const struct { const char *name; int v; } mult8[] = {
        { "max_width", c->max_width }, { "max_height", c->max_height },
        { "default_width", c->default_width }, { "default_height", c->default_height },
    };
    for (size_t i = 0; i < sizeof mult8 / sizeof mult8[0]; i++)
        if (mult8[i].v % 8) {
            snprintf(err, errlen, "%s: %d is not a multiple of 8", mult8[i].name, mult8[i].v);
            return -1;
        }
    if (c->default_width && c->default_width > c->max_width) {
        snprintf(err, errlen, "default_width: %d is above max_width %d",
                 c->default_width, c->max_width);
        return -1;
    }
    if (c->default_height && c->default_height > c->max_height) {
        snprintf(err, errlen, "default_height: %d is above max_height %d",
                 c->default_height, c->max_height);
        return -1;
    }
    if (replica_name_check(c->replica, err, errlen)) return -1;
    if (c->public_url[0] && public_url_check(c->public_url, err, errlen)) return -1;
    struct cors cors;
    if (cors_parse(&cors, c->cors_origins, err, errlen)) return -1;
    return 0;
}

static const char *type_text(const struct cfg_option *o, char *buf, size_t n) {
    switch (o->type) {
    case CFG_T_STR: return "string";
    case CFG_T_BOOL: return "true|false";
    case CFG_T_ENUM: return o->choices;
    case CFG_T_INT: snprintf(buf, n, "integer %ld..%ld", o->min, o->max); return buf;
    }
    return "?";
}

void config_print_help(FILE *f, const char *builtin_model) {
    char buf[64];
    fprintf(f,
        "usage: sdxld serve [--config FILE] [--OPTION VALUE ...]\n"
        "\n"
        "Serve the image generator over HTTP (see docs/daemon.md).\n"
        "\n"
        "  --config FILE          read options from FILE (name = value lines; see conf/sdxld.conf);\n"
        "                         flags given after it override the file\n"
        "  --check-config         validate the configuration, print the effective values, exit\n"
        "  --print-config         print an example config file with every option at its default\n"
        "  --single-request FILE  developer mode: start, send the raw HTTP request in FILE to\n"
        "                         the daemon, print the raw response, exit (for fuzzers)\n"
        "  --help                 this text\n"
        "\n"
        "Options (in the config file as `name = value`, on the command line as --name VALUE):\n\n");
    for (int i = 0; i < NOPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        fprintf(f, "  --%-20s %s\n", o->name, o->help);
        if (o->flags & CFG_BUILTIN)
            fprintf(f, "  %-22s (%s; default: " BUILTIN_TEXT ", here %s)\n", "", type_text(o, buf, sizeof buf),
                    builtin_model);
        else
            fprintf(f, "  %-22s (%s; default: %s)\n", "", type_text(o, buf, sizeof buf),
                    o->dflt[0] ? o->dflt : "\"\"");
    }
    fprintf(f, "\nExit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a runtime failure,\n"
               "2 on a usage error, %d on an invalid configuration.\n", SDXLD_EXIT_CONFIG);
}

/* Write s as a '#' comment wrapped at ~88 columns. */
static void print_comment(FILE *f, const char *s) {
    const int width = 86;
    while (*s) {
        int n = (int)strlen(s);
        if (n > width) {
            n = width;
            while (n > 0 && s[n] != ' ') n--;
            if (n == 0) n = width;
        }
        fprintf(f, "# %.*s\n", n, s);
        s += n;
        while (*s == ' ') s++;
    }
}

void config_print_file(FILE *f) {
    char buf[64];
    fprintf(f,
        "# sdxld.conf — configuration of `sdxld serve`.\n"
        "#\n"
        "# Every option is listed with its default value.  Syntax: `name = value`; lines\n"
        "# starting with '#' are comments; quote a value (\"...\") to keep spaces or write \"\".\n"
        "# Any option can also be given on the command line as --name VALUE, which wins\n"
        "# over this file.  `sdxld serve --print-config` regenerates this file and\n"
        "# `sdxld serve --config FILE --check-config` validates one.\n");
    for (int i = 0; i < NOPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        fprintf(f, "\n");
        print_comment(f, o->help);
        if (o->flags & CFG_BUILTIN)
            print_comment(f, "(" BUILTIN_TEXT ": " BUILTIN_WHERE ")");
        fprintf(f, "# (%s)\n", type_text(o, buf, sizeof buf));
        if (o->type == CFG_T_STR && !o->dflt[0]) fprintf(f, "%s = \"\"\n", o->name);
        else fprintf(f, "%s = %s\n", o->name, o->dflt);
    }
}

json_t *config_to_json(const struct sdxld_config *c) {
    static const char *src_names[] = { "default", "file", "flag" };
    json_t *vals = json_object(), *srcs = json_object();
    for (int i = 0; i < NOPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        const char *field = (const char *)c + o->off;
        json_t *v;
        if (o->flags & CFG_SECRET) {
            v = json_string(field[0] ? "********" : "");
        } else switch (o->type) {
        case CFG_T_INT: v = json_integer(*(const int *)field); break;
        case CFG_T_BOOL: v = json_boolean(*(const int *)field); break;
        default: v = json_string(field); break;
        }
        if (!v) v = json_string("(not valid UTF-8)");
        json_object_set_new(vals, o->name, v);
        json_object_set_new(srcs, o->name, json_string(src_names[c->source[i] % 3]));
    }
    return json_pack("{s:o, s:o}", "options", vals, "sources", srcs);
}
