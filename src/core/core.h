/* core.h — status codes, error messages, logging, assertions.
 *
 * Every fallible function in src/ returns an sd_status and, on failure, leaves a
 * human-readable message naming the offending thing in a thread-local buffer
 * (sd_last_error()).  Thread-local so the daemon's HTTP threads and its worker never
 * see each other's messages.  Bugs are not statuses: SD_ASSERT aborts with file:line.
 * Library code never calls exit(). */
#ifndef SD_CORE_H
#define SD_CORE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SD_OK = 0,
    SD_ERR_IO,          /* file or socket I/O failed */
    SD_ERR_FORMAT,      /* a file is malformed (safetensors, json, png) */
    SD_ERR_SHAPE,       /* a tensor has the wrong shape */
    SD_ERR_NOMEM,       /* allocation failed (host or device) */
    SD_ERR_INVALID,     /* a caller-supplied argument is out of range */
    SD_ERR_NOTFOUND,    /* a named thing (tensor, file, key) is missing */
    SD_ERR_UNSUPPORTED, /* valid but not implemented (dtype, block type) */
    SD_ERR_CUDA,        /* device failure */
    SD_ERR_CANCELLED,   /* the caller asked to stop */
    SD_ERR_NUMERIC,     /* a value is NaN or infinite (weights, latents) */
} sd_status;

const char *sd_status_name(sd_status st);

/* Record a message for the current thread and return st (so: return sd_fail(...)). */
sd_status sd_fail(sd_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "prefix: " (adds context on the way up). */
sd_status sd_wrap(sd_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *sd_last_error(void);
void sd_clear_error(void);

#define SD_TRY(expr) do { sd_status st__ = (expr); if (st__ != SD_OK) return st__; } while (0)

/* Bugs: abort with file:line. */
void sd_panic_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define SD_PANIC(...) sd_panic_at(__FILE__, __LINE__, __VA_ARGS__)
#define SD_ASSERT(c) do { if (!(c)) sd_panic_at(__FILE__, __LINE__, "assertion failed: %s", #c); } while (0)

/* Logging: leveled lines on stderr ("sdxld[pid] I 12:00:00.123 message").  The level is
 * process-wide, like a daemon's verbosity. */
enum sd_log_level { SD_LOG_DEBUG, SD_LOG_INFO, SD_LOG_WARN, SD_LOG_ERROR };
void sd_log_set_level(enum sd_log_level lvl);
int sd_log_level_parse(const char *s, enum sd_log_level *out); /* 0 on success */
void sd_log(enum sd_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_D(...) sd_log(SD_LOG_DEBUG, __VA_ARGS__)
#define LOG_I(...) sd_log(SD_LOG_INFO, __VA_ARGS__)
#define LOG_W(...) sd_log(SD_LOG_WARN, __VA_ARGS__)
#define LOG_E(...) sd_log(SD_LOG_ERROR, __VA_ARGS__)

/* Checked host allocation: NULL plus an SD_ERR_NOMEM message on failure.  Every host
 * allocation in src/ goes through these, so tests can fail the Nth one (sd_fault_arm_alloc below). */
void *sd_malloc(size_t n);
void *sd_calloc(size_t n, size_t size);
void *sd_realloc(void *p, size_t n);
/* Return the heap's free memory to the system (glibc malloc_trim; a no-op elsewhere):
 * after loading, and when a backend gives back its scratch. */
void sd_heap_trim(void);
void sd_free(void *p);
char *sd_strdup(const char *s);

/* Fault injection for tests: fail the nth sd_malloc/calloc/realloc from now (1-based);
 * 0 disarms.  Returns live host bytes allocated through sd_malloc. */
void sd_fault_arm_alloc(long nth);
size_t sd_alloc_live_bytes(void);
size_t sd_alloc_calls(void);          /* allocations attempted so far (to size a fault sweep) */
/* Optional allocations: between sd_alloc_optional(1) and (0) this thread's allocations are
 * ones the caller does without when they fail (e.g. an arena coalescing its blocks).  They
 * stay fault-injection points; sd_fault_hit_optional() tells a sweep that the armed failure
 * fell on one, so an operation that then succeeds swallowed nothing. */
void sd_alloc_optional(int on);
int sd_fault_hit_optional(void);

/* Monotonic time in milliseconds. */
double sd_now_ms(void);

/* Read a whole file (NUL-terminated); *len excludes the NUL.  max_bytes bounds it. */
sd_status sd_read_file(const char *path, size_t max_bytes, char **data, size_t *len);
/* Join a directory and a relative name into a fresh string. */
char *sd_path_join(const char *dir, const char *name);
/* A boolean as people write it in flags and config files: true/yes/on/1, false/no/off/0
 * (any case); 0 on success, -1 otherwise. */
int sd_parse_bool(const char *s, int *out);

#endif
