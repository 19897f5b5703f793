/* ratelog.h — repeated log lines, rate-limited: the first line of a kind goes out, the
 * next ones within the interval are counted instead, and the count goes out with the
 * next line of that kind or, if none comes, as a summary line.
 *
 * Why: a client that retries 429s and 503s without backoff made the daemon write a WARN
 * and an access line per refusal (256k lines in 32 s), drowning the journal.  A "kind"
 * is a short key built from bounded parts (route pattern, status, error code), so the
 * table stays small; when it is full, lines of new kinds are logged unlimited.
 *
 * Time is passed in (monotonic ms), so tests/test_ratelog.c drives it with a fake clock.
 * Threading: every function may be called from any thread (one mutex). */
#ifndef SD_SERVER_RATELOG_H
#define SD_SERVER_RATELOG_H

#define RATELOG_KEYS 128
#define RATELOG_KEY_MAX 96

struct ratelog;

/* interval_ms <= 0: nothing is ever suppressed. */
struct ratelog *ratelog_new(double interval_ms);
void ratelog_free(struct ratelog *rl);

/* May a line of this kind be logged now?  1: yes, and *suppressed is the number of lines
 * of the kind left out since the last one logged (to append to this one); 0: no, it was
 * counted. */
int ratelog_allow(struct ratelog *rl, const char *key, double now_ms, long *suppressed);

/* Kinds whose interval has passed with lines left out: fn(cls, key, count, seconds)
 * for each, which then starts a new interval.  all: every kind with a count, whatever
 * its interval (at shutdown). */
void ratelog_flush(struct ratelog *rl, double now_ms, int all,
                   void (*fn)(void *cls, const char *key, long n, double seconds), void *cls);

#endif
