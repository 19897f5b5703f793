/* test_ratelog.c — rate-limited log lines (server/ratelog.c) with a fake clock: the
 * first line of a kind goes out, the rest of the interval is counted, the count rides
 * on the next line or a flush, kinds are independent, and nothing is ever lost (every
 * line is either logged or counted exactly once). */
#include "ratelog.h"
#include "tap.h"

static long flushed;
static int nflush;

static void on_flush(void *cls, const char *key, long n, double seconds) {
    (void)cls; (void)key; (void)seconds;
    flushed += n;
    nflush++;
}

int main(void) {
    struct ratelog *rl = ratelog_new(1000);
    long sup;
    ok(ratelog_allow(rl, "a", 0, &sup) && sup == 0, "the first line of a kind is logged");
    int allowed = 0;
    for (int i = 1; i <= 99; i++) allowed += ratelog_allow(rl, "a", i * 5.0, &sup);
    ok(allowed == 0, "the next 99 within the interval are suppressed");
    ok(ratelog_allow(rl, "b", 500, &sup) && sup == 0, "another kind is independent");
    ok(ratelog_allow(rl, "a", 1000, &sup) && sup == 99, "after the interval: logged, carrying 99 (%ld)", sup);
    ok(!ratelog_allow(rl, "a", 1500, &sup), "then suppressed again");
    ratelog_flush(rl, 1600, 0, on_flush, NULL);
    ok(nflush == 0, "a flush before the interval has passed reports nothing");
    ratelog_flush(rl, 2000, 0, on_flush, NULL);
    ok(nflush == 1 && flushed == 1, "a flush after it reports the 1 left out");
    ok(!ratelog_allow(rl, "a", 2500, &sup), "a flush starts a new interval");
    ratelog_flush(rl, 2600, 1, on_flush, NULL);
    ok(nflush == 2 && flushed == 2, "a final flush reports everything pending");

    /* Accounting: over a long run, logged + counted == lines offered, and at most one
     * line (logged or summary) per interval. */
    long offered = 0, logged = 0, carried = 0;
    flushed = 0;
    nflush = 0;
    for (int t = 10000; t < 20000; t += 3) {
        offered++;
        if (ratelog_allow(rl, "c", t, &sup)) { logged++; carried += sup; }
        if (t % 250 == 0) ratelog_flush(rl, t, 0, on_flush, NULL);
    }
    ratelog_flush(rl, 20000, 1, on_flush, NULL);
    ok(logged + carried + flushed == offered, "no line lost: %ld logged + %ld carried + %ld flushed == %ld",
       logged, carried, flushed, offered);
    ok(logged + nflush <= 10 + 1, "about one line per interval (%ld logged, %d summaries over 10 s)",
       logged, nflush);

    /* A full table: new kinds are logged unlimited rather than dropped. */
    char key[32];
    for (int i = 0; i < RATELOG_KEYS + 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ratelog_allow(rl, key, 30000, &sup);
        ratelog_allow(rl, key, 30001, &sup);   /* one pending per kind: none reusable */
    }
    ok(ratelog_allow(rl, "overflow", 30002, &sup) && ratelog_allow(rl, "overflow", 30003, &sup),
       "with the table full, a new kind is never suppressed");
    ratelog_free(rl);

    struct ratelog *off = ratelog_new(0);
    ok(ratelog_allow(off, "x", 0, &sup) && ratelog_allow(off, "x", 1, &sup), "interval 0: nothing suppressed");
    ratelog_free(off);
    return done_testing();
}
