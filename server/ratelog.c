/* ratelog.c — rate-limited repeated log lines (see ratelog.h).
 *
 * A fixed table of kinds, searched linearly: it holds at most RATELOG_KEYS entries and a
 * lookup happens once per logged-or-suppressed line, far below the cost of the line. */
#include "ratelog.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct kind {
    char key[RATELOG_KEY_MAX];
    double window_ms;          /* when the current interval began */
    long suppressed;
};

struct ratelog {
    pthread_mutex_t lock;
    double interval_ms;
    int n;
    struct kind k[RATELOG_KEYS];
};

struct ratelog *ratelog_new(double interval_ms) {
    struct ratelog *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    pthread_mutex_init(&rl->lock, NULL);
    rl->interval_ms = interval_ms;
    return rl;
}

void ratelog_free(struct ratelog *rl) {
    if (!rl) return;
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

/* The kind for key, created if there is room; NULL when the table is full.  A kind with
 * nothing pending whose interval is long over may be reused. */
static struct kind *find(struct ratelog *rl, const char *key, double now_ms) {
    int spare = -1;
    for (int i = 0; i < rl->n; i++) {
        if (!strcmp(rl->k[i].key, key)) return &rl->k[i];
        if (spare < 0 && !rl->k[i].suppressed && now_ms - rl->k[i].window_ms >= rl->interval_ms)
            spare = i;
    }
    if (rl->n < RATELOG_KEYS) spare = rl->n++;
    if (spare < 0) return NULL;
    struct kind *k = &rl->k[spare];
    memset(k, 0, sizeof *k);
    memcpy(k->key, key, strlen(key) + 1);   /* key fits: ratelog_allow truncated it */
    k->window_ms = now_ms - rl->interval_ms;   /* the first line goes out */
    return k;
}

int ratelog_allow(struct ratelog *rl, const char *key, double now_ms, long *suppressed) {
    *suppressed = 0;
    if (!rl || rl->interval_ms <= 0) return 1;
    char k[RATELOG_KEY_MAX];
    size_t n = strnlen(key, sizeof k - 1);   /* as stored: long keys compare truncated */
    memcpy(k, key, n);
    k[n] = 0;
    pthread_mutex_lock(&rl->lock);
    struct kind *kd = find(rl, k, now_ms);
    int allow = 1;
    if (kd) {
        if (now_ms - kd->window_ms >= rl->interval_ms) {
            *suppressed = kd->suppressed;
            kd->suppressed = 0;
            kd->window_ms = now_ms;
        } else {
            kd->suppressed++;
            allow = 0;
        }
    }
    pthread_mutex_unlock(&rl->lock);
    return allow;
}

void ratelog_flush(struct ratelog *rl, double now_ms, int all,
                   void (*fn)(void *cls, const char *key, long n, double seconds), void *cls) {
    if (!rl || rl->interval_ms <= 0) return;
    struct { char key[RATELOG_KEY_MAX]; long n; double s; } out[RATELOG_KEYS];
    int nout = 0;
    pthread_mutex_lock(&rl->lock);
    for (int i = 0; i < rl->n; i++) {
        struct kind *k = &rl->k[i];
        if (!k->suppressed || (!all && now_ms - k->window_ms < rl->interval_ms)) continue;
        memcpy(out[nout].key, k->key, sizeof k->key);
        out[nout].n = k->suppressed;
        out[nout].s = (now_ms - k->window_ms) / 1e3;
        nout++;
        k->suppressed = 0;
        k->window_ms = now_ms;
    }
    pthread_mutex_unlock(&rl->lock);
    for (int i = 0; i < nout; i++) fn(cls, out[i].key, out[i].n, out[i].s);   /* logs unlocked */
}
