/* status.c — status names, the thread-local error message, panics.
 * The message buffer is per thread so concurrent HTTP threads and the worker never
 * overwrite each other's explanation. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static _Thread_local char err_msg[1024];

const char *sd_status_name(sd_status st) {
    switch (st) {
    case SD_OK: return "ok";
    case SD_ERR_IO: return "io_error";
    case SD_ERR_FORMAT: return "bad_format";
    case SD_ERR_SHAPE: return "bad_shape";
    case SD_ERR_NOMEM: return "out_of_memory";
    case SD_ERR_INVALID: return "invalid_argument";
    case SD_ERR_NOTFOUND: return "not_found";
    case SD_ERR_UNSUPPORTED: return "unsupported";
    case SD_ERR_CUDA: return "device_error";
    case SD_ERR_CANCELLED: return "cancelled";
    case SD_ERR_NUMERIC: return "non_finite";
    }
    return "unknown";
}

sd_status sd_fail(sd_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return st;
}

sd_status sd_wrap(sd_status st, const char *fmt, ...) {
    char prefix[512], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%s: %s", prefix, old[0] ? old : sd_status_name(st));
    return st;
}

const char *sd_last_error(void) { return err_msg[0] ? err_msg : "no error message"; }
void sd_clear_error(void) { err_msg[0] = 0; }

void sd_panic_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "sdxld: BUG at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
