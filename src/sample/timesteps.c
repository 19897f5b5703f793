/* timesteps.c — see timesteps.h. */
#include "timesteps.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

const char *timesteps_check(const int *ts, int n, int max, int T, const char *what, char *why, size_t wn) {
    if (n < 1 || n > max) {
        snprintf(why, wn, "%s: needs 1..%d entries, got %d", what, max, n);
        return why;
    }
    for (int i = 0; i < n; i++) {
        if (ts[i] < 0 || ts[i] >= T) {
            snprintf(why, wn, "%s: %d is out of range 0..%d", what, ts[i], T - 1);
            return why;
        }
        if (i && ts[i] >= ts[i - 1]) {
            snprintf(why, wn, "%s: must be strictly decreasing (%d after %d)", what, ts[i], ts[i - 1]);
            return why;
        }
    }
    return NULL;
}

int timesteps_parse(const char *text, int *ts, int max, int T, const char *what, char *why, size_t wn) {
    int n = 0;
    for (const char *s = text; *s; n++) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || (*end && *end != ',') || (*end == ',' && !end[1]) || errno || n == max) {
            snprintf(why, wn, n == max ? "%s: '%s' has more than %d entries"
                                       : "%s: '%s' is not a list like 999,749,499,249", what, text, max);
            return -1;
        }
        if (T > 0 && (v < 0 || v >= T)) {
            snprintf(why, wn, "%s: %lld is out of range 0..%d", what, v, T - 1);
            return -1;
        }
        ts[n] = v < INT_MIN ? INT_MIN : v > INT_MAX ? INT_MAX : (int)v;
        s = *end ? end + 1 : end;
    }
    if (T <= 0) return n;
    return timesteps_check(ts, n, max, T, what, why, wn) ? -1 : n;
}

int timesteps_from_json(const json_t *v, int *ts, int max, int T, const char *what, char *why, size_t wn) {
    if (!json_is_array(v)) {
        snprintf(why, wn, "%s: expected an array of integers", what);
        return -1;
    }
    size_t n = json_array_size(v);
    if (n < 1 || n > (size_t)max) {
        snprintf(why, wn, "%s: needs 1..%d entries, got %zu", what, max, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(v, i);
        if (!json_is_integer(x)) {
            snprintf(why, wn, "%s: expected an array of integers", what);
            return -1;
        }
        json_int_t t = json_integer_value(x);
        if (t < 0 || t >= T) {
            snprintf(why, wn, "%s: %lld is out of range 0..%d", what, (long long)t, T - 1);
            return -1;
        }
        ts[i] = (int)t;
    }
    return timesteps_check(ts, (int)n, max, T, what, why, wn) ? -1 : (int)n;
}
