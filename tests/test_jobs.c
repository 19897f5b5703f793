/* test_jobs.c — the job table's memory bounds (server/jobs.c), with no worker and no
 * HTTP: 3,000 submit-then-cancel jobs with 60 kB prompts stay within retained_jobs_mb
 * and retained_jobs_max (the oldest finished jobs are evicted, their ids forgotten),
 * and new work is refused (SUBMIT_TABLE_FULL) only when live jobs alone fill the table. */
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
    char first[JOB_ID_LEN + 1] = "", last[JOB_ID_LEN + 1] = "";
    int submitted = 0, within = 1;
    struct metrics_gauges g;
    for (int i = 0; i < 3000; i++) {
        struct job *j = new_gen(js, 60000, 'a' + i % 26);
        int pos;
        if (!j || jobs_submit(js, j, &pos, NULL) != SUBMIT_OK) { if (j) jobs_unref(js, j); break; }
        submitted++;
        if (!i) memcpy(first, j->id, sizeof first);
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
    metrics_free(m);
    return done_testing();
}
