/* test_cancel.c — cancelling a generation in the middle of a pass (engine.h gen_hooks):
 * the cancel poll runs between the blocks of every UNet and VAE pass, not only between
 * sampler steps, so a batch nobody wants stops within one block's work (at 1536x1536 one
 * step of a batch takes minutes on a CPU); the engine serves the next call with the
 * same pixels as before.  The tiny model, 64x64, two images, four steps.  Deterministic:
 * the hooks count polls and steps, no clock is read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "engine.h"

struct counts {
    int polls, steps;             /* calls so far */
    int polls_at_step[5];         /* polls before step k's progress call */
    int cancel_at_poll;           /* > 0: the poll of that number cancels */
    int cancel_after_last_step;   /* the first poll after the last step's progress cancels */
    int total;
};

static int on_progress(void *ud, int step, int total) {
    struct counts *c = ud;
    c->steps++;
    c->total = total;
    if (step >= 1 && step <= 4) c->polls_at_step[step] = c->polls;
    return 0;   /* progress never cancels here: only the poll may */
}

static int on_poll(void *ud) {
    struct counts *c = ud;
    c->polls++;
    if (c->cancel_at_poll && c->polls == c->cancel_at_poll) return 1;
    return c->cancel_after_last_step && c->total && c->steps == c->total;
}

static sd_status generate(struct engine *e, uint8_t *rgb, struct counts *c) {
    struct gen_params p = { .width = 64, .height = 64, .nsteps = 4 };
    engine_default_timesteps(p.nsteps, p.timesteps);
    struct gen_item items[2] = { { .prompt = "a red circle", .seed = 7 },
                                 { .prompt = "a blue square", .seed = 8 } };
    const struct gen_hooks h = { on_progress, on_poll, c };
    return engine_generate(e, &p, items, 2, rgb, NULL, c ? &h : NULL, NULL);
}

int main(void) {
    const char *env = getenv("SDXLD_TEST_DATA");
    char model[600];
    snprintf(model, sizeof model, "%s/tiny-sdxl-a", env ? env : "tests/data");
    struct engine *e;
    struct engine_config ec = { .model_dir = model, .threads = 1 };
    sd_status st = engine_load(&e, &ec);
    if (!ok(st == SD_OK, "the tiny model loads%s%s", st ? ": " : "", st ? sd_last_error() : ""))
        return done_testing();
    const size_t bytes = 2 * 64 * 64 * 3;
    uint8_t *ref = malloc(bytes), *rgb = malloc(bytes);
    ok(generate(e, ref, NULL) == SD_OK, "a generation without hooks");

    struct counts all = { 0 };
    ok(generate(e, rgb, &all) == SD_OK && !memcmp(rgb, ref, bytes), "hooks that never cancel change no pixel");
    const int *at = all.polls_at_step;
    ok(all.steps == 4 && at[1] > 1 && at[2] - at[1] == at[1] && at[4] - at[3] == at[1],
       "polled %d times inside every UNet pass, not once per step (%d steps)", at[1], all.steps);
    ok(all.polls > at[4], "the VAE decode is polled too (%d polls after the last step)", all.polls - at[4]);

    struct counts mid = { .cancel_at_poll = at[1] / 2 };
    st = generate(e, rgb, &mid);
    ok(st == SD_ERR_CANCELLED && mid.steps == 0 && mid.polls == mid.cancel_at_poll,
       "a cancel in the middle of the first UNet pass stops it there: %s, %d steps, %d polls",
       sd_status_name(st), mid.steps, mid.polls);

    struct counts vae = { .cancel_after_last_step = 1 };
    st = generate(e, rgb, &vae);
    ok(st == SD_ERR_CANCELLED && vae.steps == 4 && vae.polls == at[4] + 1,
       "a cancel after the last step stops the VAE decode at its first block: %s, %d polls",
       sd_status_name(st), vae.polls);

    memset(rgb, 0, bytes);
    ok(generate(e, rgb, NULL) == SD_OK && !memcmp(rgb, ref, bytes),
       "after two cancelled calls the engine makes the same pixels again");
    engine_free(e);
    free(ref);
    free(rgb);
    return done_testing();
}
