/* timesteps.h — a sampler's list of timesteps, as users write it: parsed from a flag
 * ("999,749,499,249") or a JSON array, and checked — 1..max entries, each in [0, T),
 * strictly decreasing.  The one place these rules live (the CLI, /v1/generate, the
 * training options and the engine all use it). */
#ifndef SD_TIMESTEPS_H
#define SD_TIMESTEPS_H

#include <jansson.h>
#include <stddef.h>

/* NULL when ts[0..n) is a valid list for a schedule of T steps with at most max entries,
 * else why not, written into why (what: the name to use, e.g. "timesteps"). */
const char *timesteps_check(const int *ts, int n, int max, int T, const char *what, char *why, size_t wn);
/* "999,749,499,249" into ts (at most max); the count, or -1 with why filled.  T <= 0:
 * the syntax only (the caller checks the values later, e.g. engine_check_params). */
int timesteps_parse(const char *text, int *ts, int max, int T, const char *what, char *why, size_t wn);
/* A JSON array of integers into ts; the count, or -1 with why filled. */
int timesteps_from_json(const json_t *v, int *ts, int max, int T, const char *what, char *why, size_t wn);

#endif
