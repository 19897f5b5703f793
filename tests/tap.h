/* tap.h — TAP-style test helpers: ok(), is_close(), done_testing().  One test file per
 * module; a file may #include the .c it tests to reach its statics. */
#ifndef SD_TAP_H
#define SD_TAP_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_fail;

static inline int ok_at(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static inline int ok_at(int cond, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", cond ? "ok" : "not ok", ++tap_n);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!cond) { tap_fail++; printf("#   failed at %s:%d\n", file, line); }
    fflush(stdout);
    return cond;
}
#define ok(cond, ...) ok_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define diag(...) (printf("# "), printf(__VA_ARGS__), printf("\n"))

static inline int done_testing(void) {
    printf("1..%d\n", tap_n);
    if (tap_fail) printf("# %d of %d failed\n", tap_fail, tap_n);
    return tap_fail ? 1 : 0;
}

/* max|a-b| / max|b|: the tolerance measure of docs/conformance.md. */
static inline double rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;           /* NaN propagates as failure */
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

#endif
