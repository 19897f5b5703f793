/* test_batching.c — the worker's scheduling policy (server/batching.c), driven by a
 * fake clock: jobs are structs on the stack, time is a number the test advances.  No
 * threads, no sleeps, no job table.
 *
 * Covers: compatible jobs batched up to max_batch (and sliced past it); the batch window
 * (a batch waits for companions until the head's window closes and no longer, a full
 * batch goes at once); different sizes, step lists, models or LoRA adapter sets never
 * share a batch; cancelled
 * jobs are never batched and never count as companions; the order between kinds
 * (generations before the next training iteration, loads between batches, stops); and a
 * simulated worker serving generations while a training run steps. */
#include "batching.h"
#include "tap.h"

#define NJOBS 16

static struct job pool[NJOBS];
static int npool;

static struct gen_params params(int w, int h, int nsteps) {
    static const int ts[4][4] = { { 399 }, { 999, 499 }, { 999, 666, 333 },
                                  { 999, 749, 499, 249 } };
    struct gen_params p;
    memset(&p, 0, sizeof p);   /* as the HTTP layer builds them: unused entries zero */
    p.width = w;
    p.height = h;
    p.nsteps = nsteps;
    memcpy(p.timesteps, ts[nsteps - 1], sizeof ts[0]);
    return p;
}

static struct job *job(struct gen_params p, int n, double t_submit_ms) {
    struct job *j = &pool[npool++];
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "gen_%d", npool - 1);
    j->kind = JOB_GENERATE;
    j->status = JOB_QUEUED;
    j->req.n = n;
    j->req.params = p;
    j->t_submit_ms = t_submit_ms;
    return j;
}

/* Link jobs into a queue in this order; returns the head. */
static struct job *queue(int n, struct job **js) {
    for (int i = 0; i < n; i++) {
        js[i]->q_prev = i ? js[i - 1] : NULL;
        js[i]->q_next = i + 1 < n ? js[i + 1] : NULL;
    }
    return n ? js[0] : NULL;
}
#define QUEUE(...) queue((int)(sizeof (struct job *[]){ __VA_ARGS__ } / sizeof(struct job *)), \
                         (struct job *[]){ __VA_ARGS__ })

/* What jobs_work.c does with a batch, minus references and events: dispatch the slices,
 * make their jobs running, drop fully dispatched jobs from the queue. */
static struct job *take(struct job *head, const struct batch *b) {
    for (int i = 0; i < b->nslices; i++) {
        b->s[i].job->dispatched += b->s[i].count;
        b->s[i].job->status = JOB_RUNNING;
    }
    struct job *h = NULL, *tail = NULL;
    for (struct job *q = head, *nx; q; q = nx) {
        nx = q->q_next;
        q->q_next = NULL;
        if (q->dispatched == q->req.n) continue;
        q->q_prev = tail;
        if (tail) tail->q_next = q; else h = q;
        tail = q;
    }
    return h;
}

static int has_slice(const struct batch *b, const struct job *j, int first, int count) {
    for (int i = 0; i < b->nslices; i++)
        if (b->s[i].job == j) return b->s[i].first == first && b->s[i].count == count;
    return 0;
}

static int in_batch(const struct batch *b, const struct job *j) {
    for (int i = 0; i < b->nslices; i++)
        if (b->s[i].job == j) return 1;
    return 0;
}

static enum sched_action next(const struct sched_policy *p, struct sched_state s, double now,
                              double *wait_until) {
    struct sched_decision d = sched_next(p, &s, now);
    if (wait_until) *wait_until = d.wait_until_ms;
    return d.action;
}

static enum sched_action next_gen(const struct sched_policy *p, struct job *q, double now,
                                  double *wait_until) {
    return next(p, (struct sched_state){ .queue = q }, now, wait_until);
}

static void test_same_size(void) {
    const struct sched_policy p = { .max_batch = 4, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4);
    static struct batch b;
    double until;
    npool = 0;
    struct job *j[6];
    for (int i = 0; i < 6; i++) j[i] = job(a, 1, 0);
    struct job *q = QUEUE(j[0], j[1], j[2], j[3], j[4], j[5]);
    ok(next_gen(&p, q, 0, NULL) == SCHED_ACT_BATCH, "6 same-size jobs at t=0: a full batch goes at once");
    ok(sched_fill_batch(&p, q, &b) == 4 && b.nslices == 4, "the batch takes max_batch = 4 images");
    ok(has_slice(&b, j[0], 0, 1) && has_slice(&b, j[1], 0, 1) && has_slice(&b, j[2], 0, 1) &&
       has_slice(&b, j[3], 0, 1) && b.s[0].job == j[0], "the four oldest, head first");
    ok(sched_compatible(&b.params, &a), "the batch has the head's parameters");
    q = take(q, &b);
    ok(next_gen(&p, q, 0, &until) == SCHED_ACT_WAIT && until == 20,
       "the 2 left wait for companions until the head's window closes (t=20)");
    ok(next_gen(&p, q, 20, NULL) == SCHED_ACT_BATCH, "at t=20 they go");
    ok(sched_fill_batch(&p, q, &b) == 2 && has_slice(&b, j[4], 0, 1) && has_slice(&b, j[5], 0, 1),
       "the second batch: the 2 left");
    q = take(q, &b);
    ok(q == NULL && sched_fill_batch(&p, q, &b) == 0 && b.nslices == 0, "queue empty: nothing to fill");

    /* Slices: n = 3 + 3 with max_batch 4. */
    npool = 0;
    struct job *x = job(a, 3, 0), *y = job(a, 3, 1);
    q = QUEUE(x, y);
    ok(sched_fill_batch(&p, q, &b) == 4 && has_slice(&b, x, 0, 3) && has_slice(&b, y, 0, 1),
       "n=3 + n=3: the second job is sliced (3 + 1)");
    q = take(q, &b);
    ok(q == y && y->dispatched == 1, "the sliced job stays at the head");
    ok(next_gen(&p, q, 1, &until) == SCHED_ACT_WAIT && until == 21,
       "its rest waits out its own window (t=21)");
    ok(sched_fill_batch(&p, q, &b) == 2 && has_slice(&b, y, 1, 2), "then its images 1..2");

    /* A job larger than max_batch runs in slices, in order. */
    npool = 0;
    struct job *big = job(a, 10, 0);
    q = QUEUE(big);
    int firsts[3], counts[3], k = 0;
    ok(next_gen(&p, q, 0, NULL) == SCHED_ACT_BATCH, "n=10, max_batch 4: the first slice is full");
    while (q && k < 3) {
        sched_fill_batch(&p, q, &b);
        firsts[k] = b.s[0].first;
        counts[k++] = b.s[0].count;
        q = take(q, &b);
        if (k == 1) ok(next_gen(&p, q, 0, NULL) == SCHED_ACT_BATCH, "so is the second (6 left)");
        if (k == 2) ok(next_gen(&p, q, 0, &until) == SCHED_ACT_WAIT && until == 20,
                       "the last 2 wait out the job's window like any other head");
    }
    ok(k == 3 && !q && firsts[0] == 0 && counts[0] == 4 && firsts[1] == 4 && counts[1] == 4 &&
       firsts[2] == 8 && counts[2] == 2, "n=10: slices 0+4, 4+4, 8+2");
}

static void test_window(void) {
    const struct sched_policy p = { .max_batch = 4, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4), other = params(768, 512, 4);
    static struct batch b;
    double until;
    npool = 0;
    struct job *h = job(a, 1, 100);
    struct job *q = QUEUE(h);
    ok(next_gen(&p, q, 100, &until) == SCHED_ACT_WAIT && until == 120,
       "a lone job waits for companions until t=submit+window");
    ok(next_gen(&p, q, 119.999, &until) == SCHED_ACT_WAIT && until == 120, "still at t=119.999");
    ok(next_gen(&p, q, 120, NULL) == SCHED_ACT_BATCH, "at t=120 the window closed: it goes alone");
    ok(next_gen(&p, q, 5000, NULL) == SCHED_ACT_BATCH, "and no later than that (t=5000)");

    struct job *c = job(a, 1, 110);
    q = QUEUE(h, c);
    ok(next_gen(&p, q, 110, &until) == SCHED_ACT_WAIT && until == 120,
       "a companion arriving at t=110 does not extend the head's window");
    ok(sched_fill_batch(&p, q, &b) == 2 && in_batch(&b, h) && in_batch(&b, c),
       "at the window's close both go together");

    struct job *c2 = job(a, 2, 105);
    q = QUEUE(h, c, c2);
    ok(next_gen(&p, q, 110, NULL) == SCHED_ACT_BATCH, "4 compatible images: the full batch goes "
       "at once (t=110, before the window closes)");

    npool = 0;
    h = job(a, 1, 100);
    struct job *o1 = job(other, 3, 100);
    q = QUEUE(h, o1);
    ok(next_gen(&p, q, 100, &until) == SCHED_ACT_WAIT && until == 120,
       "incompatible images do not fill the head's batch");
    ok(sched_companions(&p, q) == 1, "companions: the head's 1 image only");

    const struct sched_policy p0 = { .max_batch = 4, .batch_window_ms = 0 };
    ok(next_gen(&p0, q, 100, NULL) == SCHED_ACT_BATCH, "batch_window_ms 0: nobody waits");
    ok(next(&p, (struct sched_state){ .queue = q, .stopping = 1 }, 100, NULL) == SCHED_ACT_BATCH,
       "draining: nobody waits");
    const struct sched_policy p1 = { .max_batch = 1, .batch_window_ms = 20 };
    ok(next_gen(&p1, q, 100, NULL) == SCHED_ACT_BATCH, "max_batch 1: one image is a full batch");
}

static void test_never_mixed(void) {
    const struct sched_policy p = { .max_batch = 8, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4);
    struct gen_params ts = a;
    ts.timesteps[3] = 200;                      /* same size and step count, other steps */
    static struct batch b;
    npool = 0;
    struct job *head = job(a, 1, 0);
    struct job *wide = job(params(768, 512, 4), 1, 1);
    struct job *tall = job(params(512, 768, 4), 1, 2);
    struct job *steps = job(ts, 1, 3);
    struct job *two = job(params(512, 512, 2), 1, 4);
    struct job *same = job(a, 2, 5);
    struct job *q = QUEUE(head, wide, tall, steps, two, same);
    ok(sched_companions(&p, q) == 3, "companions: the head and the one compatible job (3 images)");
    ok(sched_fill_batch(&p, q, &b) == 3 && b.nslices == 2 && has_slice(&b, head, 0, 1) &&
       has_slice(&b, same, 0, 2), "the batch: the head and the same-parameter job behind four "
       "incompatible ones");
    ok(!in_batch(&b, wide) && !in_batch(&b, tall), "other sizes are not in it");
    ok(!in_batch(&b, steps) && !in_batch(&b, two), "other step lists are not in it");
    ok(!sched_compatible(&a, &ts) && !sched_compatible(&a, &two->req.params) &&
       !sched_compatible(&a, &wide->req.params), "sched_compatible says so too");
    q = take(q, &b);
    struct job *order[4] = { wide, tall, steps, two };
    int alone = 1;
    for (int i = 0; i < 4; i++) {
        sched_fill_batch(&p, q, &b);
        alone &= b.nslices == 1 && b.s[0].job == order[i] &&
                 sched_compatible(&b.params, &order[i]->req.params);
        q = take(q, &b);
    }
    ok(alone && !q, "each of the four then runs alone, in submission order");
}

/* LoRA adapter sets (gen_params.lora, engine_lora_add): requests with different sets never
 * share a batch; the same set named in another order does. */
static void test_lora_sets(void) {
    const struct sched_policy p = { .max_batch = 8, .batch_window_ms = 20 };
    struct gen_params none = params(512, 512, 4), a = none, b = none, ab = none, ba = none, a5 = none;
    engine_lora_add(&a, "a", 0.8f);
    engine_lora_add(&b, "b", 1.0f);
    engine_lora_add(&ab, "a", 0.8f);
    engine_lora_add(&ab, "b", 1.0f);
    engine_lora_add(&ba, "b", 1.0f);
    engine_lora_add(&ba, "a", 0.8f);
    engine_lora_add(&a5, "a", 0.5f);
    ok(sched_compatible(&ab, &ba) && !sched_compatible(&a, &ab) && !sched_compatible(&a, &a5) &&
       !sched_compatible(&none, &a), "sets compare equal in any order, and differ by an adapter or a scale");
    static struct batch bt;
    npool = 0;
    struct job *j1 = job(a, 1, 0), *j2 = job(b, 1, 1), *j3 = job(none, 1, 2), *j4 = job(ab, 1, 3);
    struct job *j5 = job(a, 2, 4), *j6 = job(ba, 1, 5), *j7 = job(a5, 1, 6);
    struct job *q = QUEUE(j1, j2, j3, j4, j5, j6, j7);
    ok(sched_fill_batch(&p, q, &bt) == 3 && bt.nslices == 2 && in_batch(&bt, j1) && in_batch(&bt, j5),
       "the first batch: the two jobs with lora a × 0.8, nothing else");
    q = take(q, &bt);
    const struct job *want[4][2] = { { j2, NULL }, { j3, NULL }, { j4, j6 }, { j7, NULL } };
    int each = 1;
    for (int i = 0; i < 4; i++) {
        sched_fill_batch(&p, q, &bt);
        each &= bt.nslices == (want[i][1] ? 2 : 1) && bt.s[0].job == want[i][0] &&
                (!want[i][1] || bt.s[1].job == want[i][1]);
        q = take(q, &bt);
    }
    ok(each && !q, "then b, no adapter, a+b with b+a together, a × 0.5: one batch per set");
}

/* Models by name (server/models.h): jobs for different models never share a batch, even
 * with equal parameters; jobs for one model (the same path, whether named or stamped with
 * the default) do. */
static void test_models_never_mixed(void) {
    const struct sched_policy p = { .max_batch = 8, .batch_window_ms = 20 };
    const struct gen_params a = params(64, 64, 4);
    char ma[] = "/m/tiny-a", mb[] = "/m/tiny-b", ma2[] = "/m/tiny-a";
    static struct batch b;
    npool = 0;
    struct job *j1 = job(a, 1, 0), *j2 = job(a, 2, 1), *j3 = job(a, 1, 2), *j4 = job(a, 1, 3);
    j1->req.model = ma;
    j2->req.model = mb;
    j3->req.model = ma2;   /* another string, the same model */
    j4->req.model = mb;
    struct job *q = QUEUE(j1, j2, j3, j4);
    ok(sched_companions(&p, q) == 2, "companions: the head's model only (2 images)");
    ok(sched_fill_batch(&p, q, &b) == 2 && b.nslices == 2 && has_slice(&b, j1, 0, 1) &&
       has_slice(&b, j3, 0, 1), "the batch: tiny-a's jobs, past the tiny-b job between them");
    q = take(q, &b);
    ok(sched_fill_batch(&p, q, &b) == 3 && has_slice(&b, j2, 0, 2) && has_slice(&b, j4, 0, 1),
       "then tiny-b's, together");
}

/* img2img: requests of one strength share a batch (each item brings its own init image
 * and mask to the engine), other strengths and txt2img do not. */
static void test_strength(void) {
    const struct sched_policy p = { .max_batch = 8, .batch_window_ms = 20 };
    struct gen_params txt = params(512, 512, 4), half = txt, half2 = txt, most = txt;
    half.strength = half2.strength = 0.5f;
    most.strength = 0.75f;
    static struct batch b;
    npool = 0;
    struct job *h = job(half, 1, 0), *t = job(txt, 1, 1), *m = job(most, 1, 2), *h2 = job(half2, 2, 3);
    struct job *q = QUEUE(h, t, m, h2);
    ok(sched_fill_batch(&p, q, &b) == 3 && b.nslices == 2 && has_slice(&b, h, 0, 1) && has_slice(&b, h2, 0, 2),
       "img2img at strength 0.5: the two jobs of that strength share the batch");
    ok(!in_batch(&b, t) && !in_batch(&b, m) && !sched_compatible(&half, &txt) && !sched_compatible(&half, &most),
       "txt2img and strength 0.75 are not in it");
}

static void test_cancelled(void) {
    const struct sched_policy p = { .max_batch = 4, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4);
    static struct batch b;
    double until;
    npool = 0;
    struct job *c1 = job(a, 1, 0), *l1 = job(a, 1, 50), *c2 = job(a, 1, 51),
               *f = job(a, 1, 52), *l2 = job(a, 1, 53);
    c1->status = JOB_CANCELLED;
    c2->status = JOB_CANCELLED;
    f->status = JOB_FAILED;
    struct job *q = QUEUE(c1, l1, c2, f, l2);
    ok(sched_head(q) == l1, "the head is the oldest live job");
    ok(sched_companions(&p, q) == 2, "cancelled and failed jobs do not count as companions");
    ok(next_gen(&p, q, 60, &until) == SCHED_ACT_WAIT && until == 70,
       "the window runs from the live head's submission (t=50), not the cancelled one's");
    ok(sched_fill_batch(&p, q, &b) == 2 && has_slice(&b, l1, 0, 1) && has_slice(&b, l2, 0, 1),
       "the batch holds the two live jobs");
    ok(!in_batch(&b, c1) && !in_batch(&b, c2) && !in_batch(&b, f), "no cancelled or failed job");

    /* A job cancelled after its first slice went does not hold a model load back. */
    npool = 0;
    struct job *sliced = job(a, 8, 0);
    sliced->dispatched = 4;
    sliced->status = JOB_CANCELLED;
    q = QUEUE(sliced);
    ok(next(&p, (struct sched_state){ .queue = q, .load_waiting = 1 }, 0, NULL) == SCHED_ACT_LOAD,
       "a cancelled sliced job neither blocks a load ...");
    ok(next_gen(&p, q, 100, &until) == SCHED_ACT_WAIT && isinf(until) &&
       sched_fill_batch(&p, q, &b) == 0, "... nor makes a batch: only cancelled jobs, nothing to do");
}

static void test_order(void) {
    const struct sched_policy p = { .max_batch = 4, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4);
    double until;
    npool = 0;
    struct job *g = job(a, 1, 100);
    struct job *q = QUEUE(g);
    ok(next(&p, (struct sched_state){ .training = 1 }, 0, NULL) == SCHED_ACT_TRAIN_STEP,
       "training, no generation: the next iteration");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1 }, 120, NULL) == SCHED_ACT_BATCH,
       "training and a generation past its window: the generation first");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1 }, 105, &until) == SCHED_ACT_WAIT &&
       until == 120, "within the window the worker waits for it; training does not step meanwhile");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1, .training_ending = 1 }, 120, NULL)
       == SCHED_ACT_TRAIN_STOP, "a run asked to stop ends before the batch");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1, .train_waiting = 1 }, 120, NULL)
       == SCHED_ACT_BATCH, "queued training waits behind generations");
    ok(next(&p, (struct sched_state){ .training = 1, .train_waiting = 1 }, 120, NULL)
       == SCHED_ACT_TRAIN_STEP, "one run at a time: the next training job waits for this one");
    ok(next(&p, (struct sched_state){ .train_waiting = 1 }, 120, NULL) == SCHED_ACT_TRAIN_START,
       "idle: the next training job starts");
    ok(next(&p, (struct sched_state){ .queue = q, .load_waiting = 1, .training = 1 }, 120, NULL)
       == SCHED_ACT_LOAD, "a model load goes first, between batches");
    struct job *s8 = job(a, 8, 100);
    s8->dispatched = 4;
    struct job *q2 = QUEUE(s8);
    ok(next(&p, (struct sched_state){ .queue = q2, .load_waiting = 1 }, 100, NULL) == SCHED_ACT_BATCH,
       "... but not between the slices of one job");
    ok(next(&p, (struct sched_state){ .queue = q, .load_waiting = 1, .stop_now = 1, .training = 1 },
            120, NULL) == SCHED_ACT_STOP, "a forced stop beats everything");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1, .stopping = 1 }, 100, NULL)
       == SCHED_ACT_BATCH, "draining: queued generations are still served (no window) ...");
    ok(next(&p, (struct sched_state){ .training = 1, .stopping = 1 }, 100, NULL) == SCHED_ACT_TRAIN_STOP,
       "... then the run stops");
    ok(next(&p, (struct sched_state){ .train_waiting = 1, .stopping = 1 }, 100, NULL) == SCHED_ACT_STOP,
       "draining: a queued training job is not started");
    ok(next(&p, (struct sched_state){ .queue = NULL }, 100, &until) == SCHED_ACT_WAIT && isinf(until),
       "nothing to do: wait until woken");
    /* between the UNet passes of an iteration */
    const struct sched_state mid = { .queue = q, .training = 1, .mid_iteration = 1 };
    ok(next(&p, mid, 120, NULL) == SCHED_ACT_BATCH, "mid-iteration: a due generation runs between passes");
    ok(next(&p, mid, 105, &until) == SCHED_ACT_WAIT && until == 120, "... one in its window is waited for");
    ok(next(&p, (struct sched_state){ .training = 1, .mid_iteration = 1, .load_waiting = 1, .train_waiting = 1 },
            120, NULL) == SCHED_ACT_TRAIN_STEP, "... loads and training starts wait for the iteration's end");
    ok(next(&p, (struct sched_state){ .queue = q, .training = 1, .mid_iteration = 1, .load_waiting = 1 }, 120, NULL)
       == SCHED_ACT_BATCH, "... and do not hold back a generation");
    ok(next(&p, (struct sched_state){ .training = 1, .mid_iteration = 1, .training_ending = 1 }, 120, NULL)
       == SCHED_ACT_TRAIN_STOP, "... a stop (DELETE) reaches the run before the next pass");
    ok(next(&p, (struct sched_state){ .training = 1, .mid_iteration = 1, .stopping = 1 }, 120, NULL)
       == SCHED_ACT_TRAIN_STOP, "... and so does draining (SIGTERM)");
    ok(next(&p, (struct sched_state){ .training = 1, .mid_iteration = 1, .stop_now = 1 }, 120, NULL)
       == SCHED_ACT_STOP, "... a forced stop aborts it");
}

/* A worker with a training run and generations arriving: iterations take 100 ms, batches
 * 30 ms; the worker follows sched_next and sleeps to the deadline or the next arrival. */
static void test_simulated_worker(void) {
    const struct sched_policy p = { .max_batch = 4, .batch_window_ms = 20 };
    const struct gen_params a = params(512, 512, 4);
    static const double arrive[] = { 5, 140, 145, 430, 440, 450, 460 };
    enum { N = sizeof arrive / sizeof arrive[0] };
    static struct batch b;
    struct job *g[N];
    double served[N];
    npool = 0;
    for (int i = 0; i < N; i++) g[i] = job(a, 1, arrive[i]), served[i] = -1;
    struct job *q = NULL, *tail = NULL;
    int next_arrival = 0, iterations = 0, iter_while_waiting = 0, batches = 0, full_at_460 = 0;
    double now = 0;
    while (now < 1000) {
        while (next_arrival < N && arrive[next_arrival] <= now) {
            struct job *j = g[next_arrival++];
            j->q_prev = tail;
            if (tail) tail->q_next = j; else q = j;
            tail = j;
        }
        struct sched_decision d = sched_next(&p, &(struct sched_state){ .queue = q, .training = 1 }, now);
        if (d.action == SCHED_ACT_TRAIN_STEP) {
            if (sched_head(q)) iter_while_waiting++;
            iterations++;
            now += 100;
        } else if (d.action == SCHED_ACT_BATCH) {
            sched_fill_batch(&p, q, &b);
            for (int i = 0; i < b.nslices; i++) served[b.s[i].job - pool] = now;
            if (now == 460 && b.images == 4) full_at_460 = 1;
            q = take(q, &b);
            for (tail = q; tail && tail->q_next; tail = tail->q_next) {}
            batches++;
            now += 30;
        } else if (d.action == SCHED_ACT_WAIT) {
            double t = next_arrival < N ? arrive[next_arrival] : INFINITY;
            now = d.wait_until_ms < t ? d.wait_until_ms : t;
        } else {
            break;
        }
    }
    int all = 1;
    for (int i = 0; i < N; i++) all &= served[i] >= arrive[i];
    ok(all, "every generation is served");
    ok(iter_while_waiting == 0, "no training iteration starts while a generation waits");
    ok(served[0] == 100, "a generation arriving mid-iteration is served when it ends (t=100)");
    ok(served[1] == 230 && served[2] == 230,
       "two arriving during one iteration share one batch when it ends (t=230)");
    ok(full_at_460, "four arriving during two iterations go as one full batch (t=460)");
    ok(iterations == 10 && batches == 3, "training steps between batches (%d iterations, "
       "%d batches)", iterations, batches);
}

int main(void) {
    test_same_size();
    test_window();
    test_never_mixed();
    test_lora_sets();
    test_models_never_mixed();
    test_strength();
    test_cancelled();
    test_order();
    test_simulated_worker();
    return done_testing();
}
