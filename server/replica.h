/* replica.h — the replica name (the `replica` option) and the job ids that carry it.
 *
 * Several daemons behind one proxy (docs/deploy.md, "Replicas behind nginx") each get a
 * name, and every job and training id a daemon makes starts with it: `r1-gen_…`,
 * `r1-train_…` (jobs.c, job_alloc).  The proxy sends `/v1/jobs/{id}` and `/v1/train/{id}`
 * (events and images included) to the replica the id names; a daemon asked for another
 * replica's id answers 404 naming that replica instead of a bare "no job".
 *
 * A name is 1 to REPLICA_NAME_MAX characters of a-z, 0-9 and '-', starting and ending with
 * a letter or digit: safe in a URL, a Prometheus label and an nginx map pattern.  The kind
 * part of an id (`gen_`, `train_`, `load_` + hex) has no '-', so the name is what precedes
 * the id's last '-'.
 *
 * Depends on nothing else (unit-tested alone, tests/test_replica.c). */
#ifndef SD_SERVER_REPLICA_H
#define SD_SERVER_REPLICA_H

#include <stddef.h>

#define REPLICA_NAME_MAX 24
#define REPLICA_STR_(x) #x
#define REPLICA_STR(x) REPLICA_STR_(x)
#define REPLICA_NAME_MAX_TEXT REPLICA_STR(REPLICA_NAME_MAX)   /* "24", for help texts */

/* 0 if name is a valid replica name or "" (no replica); else -1 with a message naming the
 * `replica` option in err. */
int replica_name_check(const char *name, char *err, size_t errlen);

/* The replica a job id names ("NAME-kind_hex"): copies NAME into out (at least
 * REPLICA_NAME_MAX + 1 bytes) and returns 1; 0 when the id names none (no '-', or what
 * precedes the last '-' is not a valid name). */
int replica_of_id(const char *id, char *out, size_t outlen);

#endif
