/* serve.c — `sdxld serve`: options, lifecycle, signals, systemd notification, and the
 * --single-request developer mode.
 *
 * Lifecycle (a new-style daemon: no fork, logs on stderr, Type=notify):
 *   1. options: defaults < config file < --flags; any error exits 78 (EX_CONFIG) so
 *      systemd does not restart-loop on a typo;
 *   2. HTTP starts first, so /healthz answers and /readyz says 503 while loading;
 *   3. the worker thread loads the model and runs a warm-up generation; then READY=1;
 *   4. SIGTERM/SIGINT: STOPPING=1, stop accepting jobs (503), stop a training run at
 *      its next iteration with a final checkpoint, let queued and running generation
 *      jobs finish for up to shutdown_timeout_s, cancel what is left (every waiting
 *      client gets an answer, every job a final state, each cancellation a log line),
 *      close HTTP, exit 0.  A second signal cancels at once.
 *   5. SIGHUP re-reads the token files (logs go to stderr/journald: nothing to reopen).
 * The main thread sleeps in poll() on a signal self-pipe and an eventfd through which
 * the worker wakes it (ready, fatal error). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "cli.h"
#include "cli_util.h"
#include "daemon.h"
#include "http.h"
#include "jobs.h"
#include "metrics.h"

#define HTTP_GRACE_MS 3000

/* ---- options ---- */

static void usage_hint(void) {
    fprintf(stderr, "sdxld serve --help lists the options\n");
}

int serve_parse_args(int argc, char **argv, struct sdxld_config *cfg, struct serve_opts *o) {
    char err[CFG_STR_MAX + 256];
    memset(o, 0, sizeof *o);
    config_defaults(cfg);
    /* First pass: modes and the config file (flags override the file wherever they are). */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) o->help = 1;
        else if (!strcmp(a, "--check-config")) o->check_config = 1;
        else if (!strcmp(a, "--print-config")) o->print_config = 1;
        else if (!strcmp(a, "--config") || !strcmp(a, "--single-request")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sdxld serve: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "--config")) o->config_file = argv[++i];
            else o->single_request = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) o->config_file = a + 9;
        else if (!strncmp(a, "--single-request=", 17)) o->single_request = a + 17;
    }
    if (o->help) {
        config_print_help(stdout, cli_default_model());
        return 0;
    }
    if (o->print_config) {
        config_print_file(stdout);
        return 0;
    }
    if (o->config_file && config_load_file(cfg, o->config_file, err, sizeof err)) {
        fprintf(stderr, "sdxld serve: invalid configuration: %s\n", err);
        return SDXLD_EXIT_CONFIG;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check-config") || !strcmp(a, "--print-config") ||
            !strncmp(a, "--config=", 9) || !strncmp(a, "--single-request=", 17))
            continue;
        if (!strcmp(a, "--config") || !strcmp(a, "--single-request")) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "sdxld serve: unexpected argument '%s'\n", a);
            usage_hint();
            return 2;
        }
        char name[64];
        const char *value = NULL, *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, a + 2, nl);
        name[nl] = 0;
        for (char *c = name; *c; c++)
            if (*c == '-') *c = '_';   /* --max-batch works like --max_batch */
        int kind = config_is_option(name);
        if (!kind) {
            fprintf(stderr, "sdxld serve: unknown option '%s'\n", a);
            usage_hint();
            return 2;
        }
        if (eq) value = eq + 1;
        else if (i + 1 < argc && (kind == 2 || strncmp(argv[i + 1], "--", 2))) value = argv[++i];
        else if (kind == 1) value = "true";   /* a bare boolean flag */
        else {
            fprintf(stderr, "sdxld serve: --%s needs a value\n", name);
            return 2;
        }
        if (config_set(cfg, name, value, CFG_SRC_FLAG, err, sizeof err)) {
            fprintf(stderr, "sdxld serve: invalid configuration: %s\n", err);
            return SDXLD_EXIT_CONFIG;
        }
    }
    if (!cfg->model[0])   /* empty: the built-in model shipped with sdxld */
        snprintf(cfg->model, sizeof cfg->model, "%s", cli_default_model());
    if (config_check(cfg, err, sizeof err)) {
        fprintf(stderr, "sdxld serve: invalid configuration: %s\n", err);
        return SDXLD_EXIT_CONFIG;
    }
    return -1;
}

/* ---- --single-request ---- */

/* Send the raw request in path to the daemon and copy the raw response to stdout.
 * The response ends at Content-Length, at the last chunk, or when the server closes. */
static int single_request(struct http *h, const char *path) {
    char *req = NULL;
    size_t len = 0;
    if (sd_read_file(path, 64u << 20, &req, &len) != SD_OK) {
        LOG_E("--single-request: %s", sd_last_error());
        return 1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)http_port(h)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        LOG_E("--single-request: connect: %s", strerror(errno));
        if (fd >= 0) close(fd);
        sd_free(req);
        return 1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break;   /* the server may answer (413) before reading everything */
        off += (size_t)n;
    }
    sd_free(req);
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap + 1);
    double deadline = sd_now_ms() + 600e3;
    while (buf && sd_now_ms() < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0) continue;
        if (got == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
        buf[got] = 0;
        char *hend = strstr(buf, "\r\n\r\n");
        if (!hend) continue;
        size_t hlen = (size_t)(hend + 4 - buf);
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < hend) {
            if (got >= hlen + strtoull(cl + 17, NULL, 10)) break;
        } else if (strcasestr(buf, "\r\ntransfer-encoding: chunked") &&
                   got >= 5 && !memcmp(buf + got - 5, "0\r\n\r\n", 5)) {
            break;
        } else if (!strncmp(buf + 9, "204", 3) || !strncmp(buf + 9, "304", 3)) {
            break;
        }
    }
    close(fd);
    if (buf) fwrite(buf, 1, got, stdout);
    fflush(stdout);
    free(buf);
    return got ? 0 : 1;
}

/* ---- the daemon ---- */

/* Signals: handlers write the signal number to a pipe the main thread polls (the
 * self-pipe trick).  Not signalfd, because that needs the signals blocked in every
 * thread, and libraries (OpenBLAS) start threads before main runs. */
static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(sig_pipe[1], &b, 1);
    (void)n;
    errno = saved;
}

static int install_signals(void) {
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK)) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
        sigaction(SIGHUP, &sa, NULL))
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void restore_signals(void) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    for (int i = 0; i < 2; i++)
        if (sig_pipe[i] >= 0) {
            close(sig_pipe[i]);
            sig_pipe[i] = -1;
        }
}

/* A signal while serving: SIGHUP reloads the token files; the first SIGTERM/SIGINT
 * drains (queued and running jobs get shutdown_timeout_s; a training run stops after a
 * final checkpoint), a second one cancels what is left.  1 when the loop must end now. */
static int on_signal_byte(struct sdxld *d, unsigned char signo, int *draining, double *drain_deadline) {
    char err[CFG_STR_MAX + 256];
    if (signo == SIGHUP) {
        if (auth_reload(d->auth, err, sizeof err)) LOG_E("SIGHUP: token reload failed, keeping the old tokens: %s", err);
        else LOG_I("SIGHUP: token files reloaded");
        return 0;
    }
    if (*draining) {
        LOG_W("second %s: cancelling the remaining jobs now", strsignal(signo));
        jobs_cancel_all(d->jobs, "shutting_down", 503, "the daemon is shutting down");
        return 1;
    }
    sdxld_notify("STOPPING=1");
    *draining = 1;
    atomic_store(&d->phase, PHASE_DRAINING);
    jobs_set_accepting(d->jobs, 0);
    /* A training run would keep the daemon busy for hours: it stops now, after a final
     * checkpoint, within the same bound. */
    jobs_stop_training(d->jobs, "shutting_down", 503, "the daemon is shutting down; the run stopped after a "
                       "final checkpoint (continue it with \"resume\")");
    *drain_deadline = sd_now_ms() + d->cfg.shutdown_timeout_s * 1e3;
    sdxld_status(d, "%s: draining (up to %d s for queued and running jobs)", strsignal(signo),
                 d->cfg.shutdown_timeout_s);
    return 0;
}

/* The metrics (one row per route) and the job table; -1 when out of memory. */
static int make_tables(struct sdxld *d) {
    static const char *methods[64], *patterns[64];
    for (int i = 0; i < sdxld_nroutes && i < 64; i++) {
        methods[i] = sdxld_routes[i].method;
        patterns[i] = sdxld_routes[i].pattern;
    }
    d->metrics = metrics_new(sdxld_nroutes, methods, patterns);
    d->jobs = d->metrics ? jobs_new(&d->cfg, d->metrics) : NULL;
    return d->jobs ? 0 : -1;
}

static int run(struct sdxld *d, const struct serve_opts *o) {
    int rc = 0;
    char err[CFG_STR_MAX + 256];
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (install_signals() || d->wake_fd < 0) {
        LOG_E("signal pipe / eventfd: %s", strerror(errno));
        rc = 1;
        goto out;
    }

    if (make_tables(d)) {
        LOG_E("out of memory");
        rc = 1;
        goto out;
    }
    int config_error = 0;
    if (!http_start(d, &config_error, err, sizeof err)) {
        LOG_E("%s", err);
        rc = config_error ? SDXLD_EXIT_CONFIG : 1;
        goto out;
    }
    LOG_I("sdxld " SDXLD_VERSION " listening on http://%s (auth %s%s%s)", http_address(d->http),
          auth_enabled(d->auth) ? "on" : "off", d->cfg.replica[0] ? ", replica " : "", d->cfg.replica);
    if (worker_start(d)) {
        LOG_E("cannot start the worker threads");
        rc = 1;
        goto stop;
    }

    int ready_seen = 0, draining = 0, cancelled = 0;
    double drain_deadline = 0;
    for (;;) {
        int fatal = atomic_load(&d->fatal_exit);
        if (fatal) {
            rc = fatal;
            LOG_E("stopping after a fatal error (exit status %d)", rc);
            break;
        }
        if (!ready_seen && atomic_load(&d->phase) == PHASE_READY) {
            ready_seen = 1;
            if (o->single_request) {
                rc = single_request(d->http, o->single_request);
                break;
            }
            sdxld_notify("READY=1");
            char model[256];
            pthread_mutex_lock(&d->info_lock);
            snprintf(model, sizeof model, "%s", d->info.model_name);
            pthread_mutex_unlock(&d->info_lock);
            sdxld_status(d, "ready: serving %s (%s) on http://%s", model, d->backend,
                         http_address(d->http));
        }
        if (draining && (!jobs_busy(d->jobs) || sd_now_ms() > drain_deadline)) break;
        struct pollfd p[2] = { { sig_pipe[0], POLLIN, 0 }, { d->wake_fd, POLLIN, 0 } };
        int n = poll(p, 2, draining ? 50 : -1);
        if (n < 0 && errno != EINTR) {
            LOG_E("poll: %s", strerror(errno));
            rc = 1;
            break;
        }
        if (p[1].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(d->wake_fd, &v, sizeof v);
            (void)r;
        }
        unsigned char signo;
        if ((p[0].revents & POLLIN) && read(sig_pipe[0], &signo, 1) == 1 &&
            on_signal_byte(d, signo, &draining, &drain_deadline)) {
            cancelled = 1;
            break;
        }
    }
    if (!draining) sdxld_notify("STOPPING=1");
    atomic_store(&d->phase, PHASE_DRAINING);
    jobs_set_accepting(d->jobs, 0);
    if (!cancelled && jobs_busy(d->jobs))
        jobs_cancel_all(d->jobs, "shutting_down", 503,
                        rc ? "the daemon is stopping after a fatal error"
                           : "the daemon is shutting down (shutdown_timeout_s passed)");
    jobs_stop(d->jobs);
    worker_join(d);
    if (!rc && atomic_load(&d->fatal_exit)) rc = atomic_load(&d->fatal_exit);
stop:
    if (d->worker) {   /* worker_start failed half-way */
        jobs_cancel_all(d->jobs, "shutting_down", 503, "the daemon is shutting down");
        jobs_stop(d->jobs);
        worker_join(d);
    }
    http_stop(d->http, HTTP_GRACE_MS);
    atomic_store(&d->phase, PHASE_STOPPED);
    LOG_I("stopped (exit status %d)", rc);
out:
    jobs_free(d->jobs);
    metrics_free(d->metrics);
    restore_signals();
    if (d->wake_fd >= 0) close(d->wake_fd);
    return rc;
}

int serve_main(int argc, char **argv) {
    struct sdxld *d = calloc(1, sizeof *d);
    struct serve_opts o;
    if (!d) return 1;
    d->wake_fd = -1;
    int rc = serve_parse_args(argc, argv, &d->cfg, &o);
    if (rc >= 0) {
        free(d);
        return rc;
    }
    enum sd_log_level lvl;
    if (!sd_log_level_parse(d->cfg.log_level, &lvl)) sd_log_set_level(lvl);
    if (o.check_config) {
        json_t *j = config_to_json(&d->cfg);
        char *s = json_dumps(json_object_get(j, "options"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
        free(d);
        return 0;
    }
    if (o.single_request) {
        /* Developer mode: a private port, no warm-up, and an incomplete request (fuzzer
         * input often is one) times out quickly.  Waiting for a job does not count as
         * idle, so generation is not cut short. */
        snprintf(d->cfg.listen, sizeof d->cfg.listen, "127.0.0.1:0");
        d->cfg.warmup = 0;
        if (d->cfg.http_timeout_s > 2) d->cfg.http_timeout_s = 2;
        if (d->cfg.http_head_timeout_s > 2) d->cfg.http_head_timeout_s = 2;
        if (d->cfg.http_body_timeout_s > 2) d->cfg.http_body_timeout_s = 2;
    }
    char err[CFG_STR_MAX + 256];
    d->auth = auth_new(d->cfg.api_token_file, d->cfg.admin_token_file, err, sizeof err);
    if (!d->auth) {
        fprintf(stderr, "sdxld serve: invalid configuration: %s\n", err);
        free(d);
        return SDXLD_EXIT_CONFIG;
    }
    pthread_mutex_init(&d->info_lock, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    d->start_time = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    atomic_init(&d->phase, PHASE_STARTING);
    atomic_init(&d->fatal_exit, 0);
    rc = run(d, &o);
    auth_free(d->auth);
    pthread_mutex_destroy(&d->info_lock);
    free(d);
    return rc;
}
