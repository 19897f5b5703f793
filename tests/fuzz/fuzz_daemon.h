/* fuzz_daemon.h — the daemon context of the harnesses that run the daemon's request code
 * without a model (fuzz_api_body.c, fuzz_http.c): the default configuration, the built-in
 * model as the worker describes it once loaded, and data_root a scratch folder
 * (/tmp/sdxld-fuzz-TAG-PID, removed at exit) holding a UNet-named file, an adapter file, a
 * dataset folder, a teacher-shaped folder, a runs folder with a run to resume (runs/old: its
 * latest checkpoint's state.json only) and a symlink out to /etc. */
#ifndef SD_FUZZ_DAEMON_H
#define SD_FUZZ_DAEMON_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_util.h"
#include "daemon.h"

static char fuzz_root[128];

static inline void fuzz_put_file(const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", fuzz_root, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static inline void fuzz_remove_root(void) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_root);
    if (system(cmd)) { /* best effort */ }
}

static inline void fuzz_daemon_init(struct sdxld *d, const char *tag) {
    snprintf(fuzz_root, sizeof fuzz_root, "/tmp/sdxld-fuzz-%s-%d", tag, (int)getpid());
    const char *dirs[] = { "", "/runs", "/runs/old", "/runs/old/step-10", "/data", "/teacher",
                           "/teacher/unet", "/models" };
    char p[256];
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(p, sizeof p, "%s%s", fuzz_root, dirs[i]);
        mkdir(p, 0700);
    }
    fuzz_put_file("gen.safetensors", "not weights");
    fuzz_put_file("models/lora.safetensors", "not weights");
    fuzz_put_file("data/captions.txt", "a.png\ta red circle\n");
    fuzz_put_file("runs/old/latest", "step-10\n");   /* a run to resume (its options only) */
    fuzz_put_file("runs/old/step-10/state.json", "{\"step\": 10, \"config\": {\"real_data\": \"shapes\", "
                  "\"steps\": 100, \"batch\": 1, \"resolution\": 64, \"lr_generator\": 1e-05}}");
    snprintf(p, sizeof p, "%s/outside", fuzz_root);
    if (symlink("/etc", p)) { /* already there */ }
    atexit(fuzz_remove_root);

    config_defaults(&d->cfg);
    /* the source tree's built-in model (run.sh runs from the repository root), else the
     * installed one */
    char *model = realpath("models/shapes-small", NULL);
    snprintf(d->cfg.model, sizeof d->cfg.model, "%s", model ? model : cli_default_model());
    free(model);
    snprintf(d->cfg.data_root, sizeof d->cfg.data_root, "%s", fuzz_root);
    pthread_mutex_init(&d->info_lock, NULL);
    atomic_init(&d->phase, PHASE_READY);
    atomic_init(&d->fatal_exit, 0);
    d->wake_fd = -1;
    /* models/shapes-small as the worker describes it after load: 64x64 native, sizes in
     * multiples of 16 (VAE scale 4 x 2^(3 UNet levels - 1)); served with a separate UNet */
    d->have_info = 1;
    snprintf(d->info.model_name, sizeof d->info.model_name, "shapes-small:gen.safetensors");
    snprintf(d->generator, sizeof d->generator, "%s/gen.safetensors", fuzz_root);
    snprintf(d->backend, sizeof d->backend, "cpu");
    d->info.default_width = d->info.default_height = 64;
    d->info.size_multiple = 16;
    d->size_multiple = 16;
    d->native_width = d->native_height = 64;
    d->default_width = d->default_height = 64;
}

#endif
