/* fuzz_http.c — libFuzzer harness: any bytes as one whole HTTP connection to the daemon's
 * HTTP stack, in process: the edge (accept, the strict head check, per-address books), then
 * libmicrohttpd and http.c (routing, auth, content type, body limits, the body parse) and the
 * route's handler, as `sdxld serve` runs them (http_start), on a loopback port.
 *
 * The daemon has no worker and no model (fuzz_daemon.h: the built-in model's description),
 * an API token ("fuzz-api-token-0123") and an admin token ("fuzz-admin-token-0123"), and its
 * job table does not accept work (as while draining): a request that passes validation is
 * answered 503 instead of waiting for a worker that never comes, so each input is answered
 * at once.  Per input: connect, send the bytes, half-close, and read until the daemon closes
 * (every response carries Connection: close), at most 30 s: the daemon here has 1 s head,
 * body and idle deadlines, so only a hang comes near that, even on a loaded machine.  A
 * crash, UB, a leak or such a hang is a finding.  The daemon's threads make runs not quite
 * deterministic.  FUZZ_HTTP_PRINT=1 prints each answer. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "fuzz_daemon.h"
#include "http.h"
#include "jobs.h"
#include "metrics.h"

static struct sdxld D;

static void init(void) {
    fuzz_daemon_init(&D, "http");
    fuzz_put_file("api.token", "fuzz-api-token-0123\n");
    fuzz_put_file("admin.token", "fuzz-admin-token-0123\n");
    char p[256];
    snprintf(p, sizeof p, "%s/api.token", fuzz_root);
    chmod(p, 0600);
    snprintf(p, sizeof p, "%s/admin.token", fuzz_root);
    chmod(p, 0600);
    snprintf(D.cfg.listen, sizeof D.cfg.listen, "127.0.0.1:0");
    snprintf(D.cfg.api_token_file, sizeof D.cfg.api_token_file, "%s/api.token", fuzz_root);
    snprintf(D.cfg.admin_token_file, sizeof D.cfg.admin_token_file, "%s/admin.token", fuzz_root);
    snprintf(D.cfg.log_level, sizeof D.cfg.log_level, "error");
    D.cfg.http_threads = 1;
    D.cfg.http_head_timeout_s = D.cfg.http_body_timeout_s = D.cfg.http_timeout_s = 1;
    sd_log_set_level(SD_LOG_ERROR);
    char err[CFG_STR_MAX + 256];
    static const char *methods[64], *patterns[64];
    for (int i = 0; i < sdxld_nroutes && i < 64; i++) {
        methods[i] = sdxld_routes[i].method;
        patterns[i] = sdxld_routes[i].pattern;
    }
    int config_error;
    if (!(D.auth = auth_new(D.cfg.api_token_file, D.cfg.admin_token_file, err, sizeof err)) ||
        !(D.metrics = metrics_new(sdxld_nroutes, methods, patterns)) ||
        !(D.jobs = jobs_new(&D.cfg, D.metrics)) || !http_start(&D, &config_error, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: cannot start the daemon's HTTP stack: %s\n", err);
        abort();
    }
    jobs_set_accepting(D.jobs, 0);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One connection: the bytes sent (as far as the daemon reads them), then the answer read
 * until the daemon closes.  The answer's length, or -1 when the daemon kept it open. */
static long exchange(const uint8_t *data, size_t size, char *answer, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)http_port(D.http)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (errno == ECONNREFUSED) {   /* the listening socket is gone */
            fprintf(stderr, "the daemon stopped listening\n");
            abort();
        }
        if (fd >= 0) close(fd);
        return 0;   /* out of descriptors or ports here: not this input's doing */
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t off = 0, got = 0;
    long rc = -1;
    if (!size) shutdown(fd, SHUT_WR);
    for (double deadline = now_ms() + 30000; now_ms() < deadline;) {
        struct pollfd p = { fd, (short)(POLLIN | (off < size ? POLLOUT : 0)), 0 };
        if (poll(&p, 1, 100) <= 0) continue;
        if (off < size && (p.revents & POLLOUT)) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0 && (off += (size_t)n) == size) shutdown(fd, SHUT_WR);
            if (n < 0 && errno != EAGAIN) off = size;   /* the daemon closed: read its answer */
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, answer + got, cap - 1 - got, 0);
            if (n > 0 && (got += (size_t)n) < cap - 1) continue;
            if (n < 0 && errno == EAGAIN) continue;
            rc = (long)got;   /* closed (or reset), or the answer filled the buffer */
            break;
        }
    }
    close(fd);
    answer[got] = 0;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready, print;
    static char answer[1 << 16];
    if (!ready) {
        init();
        print = getenv("FUZZ_HTTP_PRINT") != NULL;
        ready = 1;
    }
    long n = exchange(data, size, answer, sizeof answer);
    if (print) fprintf(stderr, "---- %ld bytes\n%.400s\n", n, answer);
    if (n < 0) {
        fprintf(stderr, "the daemon kept the connection open for 30 s after the request\n");
        abort();
    }
    return 0;
}
