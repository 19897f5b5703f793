/* test_checkpoint.c — checkpoint retention and the free-space check (checkpoint.c):
 * the space decision with its margin and message; a save that would not fit fails naming
 * the folder and sizes and leaves the previous checkpoint and `latest` intact; retention
 * keeps the newest N checkpoint-NNNNNNN folders, never the one just written, and leaves
 * names that only look like checkpoints alone. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "core/fs.h"
#include "train/checkpoint.h"

static int is_dir(const char *run, const char *name) {
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", run, name);
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

static sd_status save(const char *run, struct backend *be, const struct weight_table *t, int step, int keep) {
    struct ckpt_state s = { step, 1, 2, 3, "{\"steps\": 9}", keep };
    return ckpt_save(run, be, t, NULL, &s, NULL, 0);
}

int main(void) {
    char run[256], p[600];
    snprintf(run, sizeof run, "/tmp/sdxld-ckpt-XXXXXX");
    struct backend *be;
    if (!mkdtemp(run) || backend_create(&be, "cpu", 1)) return 1;

    /* the decision */
    ok(ckpt_space_check("run/checkpoint-0000001", 100 << 20, 200 << 20) == SD_OK, "room to spare: saved");
    ok(ckpt_space_check("run/checkpoint-0000001", 100 << 20, (100 << 20) + (10 << 20)) == SD_ERR_IO,
       "free space within the 16 MiB margin: refused");
    ok(ckpt_space_check("run/checkpoint-0000001", 1000ull << 20, 1040ull << 20) == SD_ERR_IO,
       "free space within the 5%% margin of a large checkpoint: refused");
    const char *m = sd_last_error();
    ok(m && strstr(m, "run/checkpoint-0000001") && strstr(m, "1000.0 MiB") && strstr(m, "1040.0 MiB"),
       "the message names the folder and both sizes (%s)", m ? m : "");
    ok(ckpt_space_check("x", 100, 50) == SD_ERR_IO, "less free than needed: refused");

    /* a save that does not fit */
    struct weight_table t;
    struct arena ar;
    float *w;
    wt_init(&t);
    wt_add(&t, &w, WT_INIT_ONE, 0, 2, (int64_t[]){ 8, 8 }, "w");
    if (wt_alloc(&t, &ar, be) || wt_init_random(&t, be, 1)) return 1;
    ok(save(run, be, &t, 1, 0) == SD_OK, "a first checkpoint is written");
    ckpt_test_set_extra_bytes(1ull << 62);
    sd_status st = save(run, be, &t, 2, 0);
    m = sd_last_error();
    ok(st == SD_ERR_IO && m && strstr(m, "checkpoint-0000002") && strstr(m, "not enough disk space"),
       "a checkpoint larger than the free space fails naming its folder (%s)", m ? m : "");
    ckpt_test_set_extra_bytes(0);
    ok(!is_dir(run, "checkpoint-0000002") && !is_dir(run, "checkpoint-0000002.tmp"), "... writing nothing");
    ok(ckpt_latest(run, p, sizeof p) == SD_OK && strstr(p, "checkpoint-0000001") && is_dir(run, "checkpoint-0000001"),
       "... and the previous checkpoint stays, named by latest");
    char *cfg = NULL;
    ok(ckpt_latest_config(run, &cfg) == SD_OK && cfg && !strcmp(cfg, "{\"steps\":9}"),
       "the stored configuration reads back (%s)", cfg ? cfg : "");
    sd_free(cfg);

    /* retention */
    const char *decoys[] = { "checkpoint-123", "checkpoint-00000010", "checkpoint-000000x", "checkpoint-0000001.tmp" };
    for (int i = 0; i < 4; i++) { snprintf(p, sizeof p, "%s/%s", run, decoys[i]); mkdir(p, 0755); }
    for (int s = 2; s <= 5; s++) ok(save(run, be, &t, s, 2) == SD_OK, "checkpoint %d with keep 2", s);
    ok(!is_dir(run, "checkpoint-0000001") && !is_dir(run, "checkpoint-0000002") && !is_dir(run, "checkpoint-0000003")
       && is_dir(run, "checkpoint-0000004") && is_dir(run, "checkpoint-0000005"), "keep 2 leaves the newest two");
    int decoys_left = 1;
    for (int i = 0; i < 4; i++) decoys_left &= is_dir(run, decoys[i]);
    ok(decoys_left, "folders not named checkpoint-NNNNNNN are left alone");
    ok(save(run, be, &t, 3, 1) == SD_OK && is_dir(run, "checkpoint-0000003") && !is_dir(run, "checkpoint-0000004")
       && is_dir(run, "checkpoint-0000005"), "the checkpoint just written is kept even when older ones are newer");
    ok(ckpt_prune(run, 0, -1) == SD_OK && is_dir(run, "checkpoint-0000003"), "keep 0 removes nothing");

    arena_free(&ar);
    wt_free(&t);
    backend_destroy(be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", run);
    if (system(cmd)) diag("could not remove %s", run);
    return done_testing();
}
