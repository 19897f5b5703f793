/* test_jobs.c — the job table's memory bounds (server/jobs.c), with no worker and no
 * HTTP: 3,000 submit-then-cancel jobs with 60 kB prompts stay within retained_jobs_mb
 * and retained_jobs_max (the oldest finished jobs are evicted, their ids forgotten),
 * and new work is refused (SUBMIT_TABLE_FULL) only when live jobs alone fill the table;
 * an id that left the table says why in its 404 (evicted by which bound, or expired). */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jobs.h"
#include "metrics.h"
#include "tap.h"

static struct job *new_gen(struct jobs *js, size_t prompt_len, char fill) {
    struct gen_request g = { 0 };
    g.prompt = malloc(prompt_len + 1);
    memset(g.prompt, fill, prompt_len);
    g.prompt[prompt_len] = 0;
    g.n = 1;
    g.params.width = g.params.height = 64;
    g.params.nsteps = 4;
    return job_new_generate(js, &g);
}

/* Each way out of the table answers 404 with its own reason: evicted by the job-count
 * bound, expired after result_ttl_s, or unknown. */
static void test_gone_reasons(struct metrics *m) {
    struct sdxld_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.queue_max = 100;
    cfg.retained_jobs_max = 4;
    cfg.retained_jobs_mb = 64;
    cfg.result_ttl_s = 600;
    cfg.result_max_mb = 64;
    cfg.max_batch = 4;
    struct jobs *js = jobs_new(&cfg, m);
    char ids[6][JOB_ID_LEN + 1], why[256];
    for (int i = 0; i < 6; i++) {
        struct job *j = new_gen(js, 10, 'a');
        int pos;
        ok(jobs_submit(js, j, &pos, NULL) == SUBMIT_OK, "small job %d accepted", i);
        memcpy(ids[i], j->id, sizeof ids[i]);
        jobs_cancel(js, j, "cancelled", 200, "client cancelled");
        jobs_unref(js, j);
    }
    jobs_gone_why(js, ids[0], why, sizeof why);
    ok(strstr(why, "retained_jobs_max (4 jobs)") != NULL, "evicted for the job count: %s", why);
    cfg.result_ttl_s = -1;   /* every finished job is past its TTL now, whatever the clock says */
    jobs_housekeep(js);
    jobs_gone_why(js, ids[5], why, sizeof why);
    ok(strstr(why, "more than result_ttl_s") && !strstr(why, "retained"), "expired after the TTL: %s", why);
    jobs_gone_why(js, ids[0], why, sizeof why);
    ok(strstr(why, "retained_jobs_max") != NULL, "an earlier eviction keeps its own reason");
    jobs_gone_why(js, "gen_00000000000000000000", why, sizeof why);
    ok(strstr(why, "unknown") != NULL, "an id never seen: %s", why);
    jobs_free(js);
}

int main(void) {
    struct sdxld_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.queue_max = 100000;
    cfg.retained_jobs_max = 500;
    cfg.retained_jobs_mb = 8;
    cfg.result_ttl_s = 600;
    cfg.result_max_mb = 64;
    cfg.max_batch = 4;
    struct metrics *m = metrics_new(0, NULL, NULL);
    struct jobs *js = jobs_new(&cfg, m);
    if (!ok(js != NULL, "a job table")) return done_testing();
    const size_t cap = (size_t)cfg.retained_jobs_mb << 20;
    char first[JOB_ID_LEN + 1] = "", last[JOB_ID_LEN + 1] = "", late[JOB_ID_LEN + 1] = "";
    int submitted = 0, within = 1;
    struct metrics_gauges g;
    for (int i = 0; i < 3000; i++) {
        struct job *j = new_gen(js, 60000, 'a' + i % 26);
        int pos;
        if (!j || jobs_submit(js, j, &pos, NULL) != SUBMIT_OK) { if (j) jobs_unref(js, j); break; }
        submitted++;
        if (!i) memcpy(first, j->id, sizeof first);
        if (i == 2500) memcpy(late, j->id, sizeof late);
        memcpy(last, j->id, sizeof last);
        jobs_cancel(js, j, "cancelled", 200, "client cancelled");
        jobs_unref(js, j);
        jobs_gauges(js, &g);
        within &= g.retained_jobs_bytes <= cap && g.retained_jobs <= cfg.retained_jobs_max;
    }
    jobs_gauges(js, &g);
    ok(submitted == 3000, "3,000 submit-and-cancel jobs with 60 kB prompts are all accepted (%d)", submitted);
    ok(within, "the table never exceeded %d MiB or %d jobs (now %zu bytes, %ld jobs)", cfg.retained_jobs_mb,
       cfg.retained_jobs_max, g.retained_jobs_bytes, g.retained_jobs);
    ok(g.jobs_evicted == 3000 - g.retained_jobs && g.jobs_evicted > 2800, "the oldest finished ones were evicted (%lld)",
       g.jobs_evicted);
    struct job *f = jobs_find(js, first), *l = jobs_find(js, last);
    ok(!f && l, "the first job's id is forgotten, the last one is kept");
    if (l) jobs_unref(js, l);
    char why[256];
    jobs_gone_why(js, late, why, sizeof why);
    ok(strstr(why, "retained_jobs_mb (8 MiB)") && !strstr(why, " ago"), "a recently evicted job's 404 says "
       "the memory bound evicted it (not the TTL): %s", why);
    jobs_gone_why(js, first, why, sizeof why);
    ok(strstr(why, "unknown") != NULL, "the reasons are remembered for the last 1024 only: the first is unknown");

    /* live jobs fill it: then, and only then, new work is refused */
    int live = 0;
    enum submit_result r = SUBMIT_OK;
    struct job *keep[600];
    while (live < 600) {
        struct job *j = new_gen(js, 60000, 'x');
        int pos;
        r = jobs_submit(js, j, &pos, NULL);
        if (r != SUBMIT_OK) { jobs_unref(js, j); break; }
        keep[live++] = j;
    }
    jobs_gauges(js, &g);
    ok(r == SUBMIT_TABLE_FULL && g.retained_jobs == live && g.retained_jobs_bytes <= cap &&
       g.retained_jobs_bytes + 60000 > cap, "live jobs fill the table: refused at %d live jobs, every finished one "
       "evicted (%ld kept, %zu bytes)", live, g.retained_jobs, g.retained_jobs_bytes);
    jobs_cancel(js, keep[0], "cancelled", 200, "client cancelled");
    struct job *j = new_gen(js, 60000, 'y');
    int pos;
    ok(jobs_submit(js, j, &pos, NULL) == SUBMIT_OK, "one finishes: the next is accepted again");
    jobs_unref(js, j);
    for (int i = 0; i < live; i++) jobs_unref(js, keep[i]);
    jobs_cancel_all(js, "shutting_down", 503, "end of test");
    jobs_free(js);
    test_gone_reasons(m);
    metrics_free(m);
    return done_testing();
}
