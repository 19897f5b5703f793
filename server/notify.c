/* notify.c — the daemon's voice to its supervisor, shared by the main thread (serve.c)
 * and the worker (worker.c) without either calling into the other: systemd notifications
 * (READY=1, STOPPING=1, STATUS=...), status lines, and waking the main loop. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#ifdef SD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon.h"

void sdxld_notify(const char *state) {
#ifdef SD_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

void sdxld_status(struct sdxld *d, const char *fmt, ...) {
    (void)d;
    char msg[512], line[540];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LOG_I("%s", msg);
    snprintf(line, sizeof line, "STATUS=%s", msg);
    sdxld_notify(line);
}

void sdxld_wake_main(struct sdxld *d) {
    uint64_t one = 1;
    ssize_t n = write(d->wake_fd, &one, sizeof one);
    (void)n;   /* EAGAIN: the counter is already non-zero, the main thread will wake */
}

