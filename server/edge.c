/* edge.c — accept, check, limit, hand over (see edge.h for the life of a connection).
 *
 * Why the daemon accepts connections itself: libmicrohttpd 0.9.75 has no deadline for a
 * request's head (its idle timeout restarts with every byte), so 80 clients sending a
 * byte a second held every slot of max_connections = 64; and its parser loses what
 * follows a NUL.  Peeking (MSG_PEEK) leaves the bytes in the socket, so a connection
 * that passes is handed over untouched and libmicrohttpd parses it as if it had
 * accepted it.  The sockets are edge-triggered in epoll: a peek does not drain the
 * buffer, so level-triggered readiness would fire forever; each new segment is one
 * event.
 *
 * Books.  Every connection the edge accepted has a record, indexed by fd, until it is
 * closed: the global count (accept pauses at max_connections and resumes when a
 * connection closes, as libmicrohttpd itself does), the count per client address, and
 * for handed-over ones the body deadline.  A record leaves the books in the CLOSED
 * notification, which libmicrohttpd sends before it closes the fd.  Should
 * libmicrohttpd drop a connection it never started (out of memory), the record stays
 * until accept() returns the same fd number again, which proves the old one closed.
 *
 * Refusals (per-address limit, invalid heads, head deadline) are logged through the
 * rate limiter, so a client hammering the daemon costs one line per interval. */
#include "edge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "edge_head.h"
#include "metrics.h"
#include "ratelog.h"

#define HEAD_MAX 16384          /* request head bytes peeked at; a longer head is 431 */
#define LINGER_MS 2000          /* after an answer from the edge: read and drop this long */
#define DRAIN_MAX (256u << 10)  /* bytes read and dropped before an answer from the edge */
#define ADDR_BUCKETS 1024
#define ACCEPT_RETRY_MS 100     /* out of fds: retry accept() after this long */

enum conn_state { CS_HEAD, CS_LINGER, CS_MHD };

struct addr_count {
    unsigned char key[17];      /* family (4 or 6), then the address bytes */
    int n;
    struct addr_count *next;
};

struct conn {
    int fd;
    enum conn_state state;      /* written under the lock */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct addr_count *ac;      /* NULL without a per-address limit */
    double deadline_ms;         /* HEAD: the whole head; LINGER: close; MHD: the body */
    size_t scan_pos;            /* edge_head_scan's resume point */
    int started, body_done, shut;   /* MHD state, under the lock */
    struct conn *prev, *next;   /* the HEAD or LINGER list, oldest first (accept thread) */
};

struct conn_list { struct conn *first, *last; };

struct edge {
    struct edge_limits lim;
    struct metrics *m;
    struct ratelog *rl;
    struct MHD_Daemon *mhd;
    int listen_fd, ep, wake_fd;
    pthread_t thread;
    int thread_started;
    atomic_int stop;

    pthread_mutex_t lock;       /* the books: */
    struct conn **by_fd;
    int cap;
    struct addr_count *buckets[ADDR_BUCKETS];
    int total, in_mhd;
    int paused;                 /* the listening socket is out of epoll */
    double retry_ms;            /* accept() failed for want of fds: not before this */

    /* accept thread only */
    struct conn_list heads, lingers;
    char buf[HEAD_MAX];
};

static char listen_tag, wake_tag;   /* epoll data for the two non-connection fds */

static const char *addr_text(const struct sockaddr_storage *ss, char *buf, size_t n) {
    snprintf(buf, n, "?");
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)n);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)n);
    return buf;
}

/* A refusal's log line, at most one per kind and interval (server/ratelog.h).  A bad
 * client is info; the daemon running out of something is a warning. */
static void log_refusal(struct edge *e, int warn, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_refusal(struct edge *e, int warn, const char *kind, const char *fmt, ...) {
    long suppressed;
    if (!ratelog_allow(e->rl, kind, sd_now_ms(), &suppressed)) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char more[64] = "";
    if (suppressed) snprintf(more, sizeof more, " (+%ld similar lines suppressed)", suppressed);
    sd_log(warn ? SD_LOG_WARN : SD_LOG_INFO, "%s%s", msg, more);
}

/* ---- the books (lock held) ---- */

static unsigned addr_hash(const unsigned char *k) {
    unsigned h = 2166136261u;
    for (int i = 0; i < 17; i++) h = (h ^ k[i]) * 16777619u;
    return h % ADDR_BUCKETS;
}

static struct addr_count *addr_get_locked(struct edge *e, const struct sockaddr_storage *ss) {
    unsigned char key[17] = { 0 };
    if (ss->ss_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
    unsigned h = addr_hash(key);
    for (struct addr_count *a = e->buckets[h]; a; a = a->next)
        if (!memcmp(a->key, key, sizeof key)) return a;
    struct addr_count *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    memcpy(a->key, key, sizeof key);
    a->next = e->buckets[h];
    e->buckets[h] = a;
    return a;
}

static void addr_put_locked(struct edge *e, struct addr_count *a) {
    if (--a->n > 0) return;
    struct addr_count **p = &e->buckets[addr_hash(a->key)];
    while (*p != a) p = &(*p)->next;
    *p = a->next;
    free(a);
}

static int table_put_locked(struct edge *e, struct conn *c) {
    if (c->fd >= e->cap) {
        int cap = e->cap ? e->cap : 256;
        while (cap <= c->fd) cap *= 2;
        struct conn **t = realloc(e->by_fd, (size_t)cap * sizeof *t);
        if (!t) return -1;
        memset(t + e->cap, 0, (size_t)(cap - e->cap) * sizeof *t);
        e->by_fd = t;
        e->cap = cap;
    }
    e->by_fd[c->fd] = c;
    return 0;
}

/* Take c off the books (it is closed, or about to be, by whoever calls this). */
static void forget_locked(struct edge *e, struct conn *c) {
    if (c->fd < e->cap && e->by_fd[c->fd] == c) e->by_fd[c->fd] = NULL;
    if (c->ac) addr_put_locked(e, c->ac);
    c->ac = NULL;
    if (c->state == CS_MHD) e->in_mhd--;
    e->total--;
    if (e->paused && e->total < e->lim.max_connections) {
        uint64_t one = 1;
        ssize_t n = write(e->wake_fd, &one, sizeof one);   /* the accept thread resumes */
        (void)n;
    }
}

/* ---- the accept thread's lists ---- */

static void list_push(struct conn_list *l, struct conn *c) {
    c->next = NULL;
    c->prev = l->last;
    if (l->last) l->last->next = c; else l->first = c;
    l->last = c;
}

static void list_remove(struct conn_list *l, struct conn *c) {
    if (c->prev) c->prev->next = c->next; else l->first = c->next;
    if (c->next) c->next->prev = c->prev; else l->last = c->prev;
    c->prev = c->next = NULL;
}

static void conn_close(struct edge *e, struct conn *c) {
    list_remove(c->state == CS_HEAD ? &e->heads : &e->lingers, c);
    epoll_ctl(e->ep, EPOLL_CTL_DEL, c->fd, NULL);
    pthread_mutex_lock(&e->lock);
    forget_locked(e, c);
    pthread_mutex_unlock(&e->lock);
    close(c->fd);
    free(c);
}

/* ---- answers from the edge ---- */

static const char *reason(unsigned status) {
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Read and drop what the client has sent so far, so closing does not reset the
 * connection (a reset can destroy the answer before the client reads it). */
static void drain(struct edge *e, int fd) {
    size_t total = 0;
    ssize_t n;
    while (total < DRAIN_MAX && (n = recv(fd, e->buf, sizeof e->buf, MSG_DONTWAIT)) > 0)
        total += (size_t)n;
}

/* Send a JSON error in the API's shape ({"error": {"code", "message"}}) and end the
 * sending side.  Best effort: the socket is non-blocking and the answer small. */
static void answer(struct edge *e, int fd, unsigned status, const char *code, const char *msg) {
    drain(e, fd);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char out[1024];
    int n = snprintf(out, sizeof out, "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n%sContent-Length: %zu\r\n"
                     "\r\n%s\n", status, reason(status),
                     status == 429 ? "Retry-After: 1\r\n" : "",
                     body ? strlen(body) + 1 : 3, body ? body : "{}");
    free(body);
    if (n > 0 && (size_t)n < sizeof out) {
        ssize_t s = send(fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)s;
    }
    shutdown(fd, SHUT_WR);
    metrics_request(e->m, -1, status);
}

/* An invalid head: answer, then linger until the client closes or LINGER_MS pass. */
static void reject(struct edge *e, struct conn *c, const struct edge_verdict *v) {
    char ip[64], kind[64];
    answer(e, c->fd, v->status, v->code, v->message);
    snprintf(kind, sizeof kind, "HTTP edge %u %s", v->status, v->code);
    log_refusal(e, 0, kind, "HTTP edge: %u %s from %s: %s", v->status, v->code,
                addr_text(&c->addr, ip, sizeof ip), v->message);
    list_remove(&e->heads, c);
    pthread_mutex_lock(&e->lock);
    c->state = CS_LINGER;
    pthread_mutex_unlock(&e->lock);
    c->deadline_ms = sd_now_ms() + LINGER_MS;
    list_push(&e->lingers, c);
}

/* ---- the accept thread ---- */

static void handoff(struct edge *e, struct conn *c) {
    epoll_ctl(e->ep, EPOLL_CTL_DEL, c->fd, NULL);
    list_remove(&e->heads, c);
    struct sockaddr_storage ss = c->addr;   /* c may be gone once libmicrohttpd has it */
    socklen_t sl = c->addrlen;
    int fd = c->fd;
    pthread_mutex_lock(&e->lock);
    c->state = CS_MHD;
    c->deadline_ms = sd_now_ms() + e->lim.body_timeout_s * 1e3;
    e->in_mhd++;
    pthread_mutex_unlock(&e->lock);
    if (MHD_add_connection(e->mhd, fd, (struct sockaddr *)&ss, sl) == MHD_YES) return;
    /* Refused (out of memory): libmicrohttpd closed the socket without starting it, so
     * no notification comes and the watcher never touches the fd (started is 0). */
    int err = errno;
    pthread_mutex_lock(&e->lock);
    forget_locked(e, c);
    pthread_mutex_unlock(&e->lock);
    free(c);
    log_refusal(e, 1, "HTTP edge: libmicrohttpd refused", "HTTP edge: libmicrohttpd refused a connection: %s",
                strerror(err));
}

static void on_head_bytes(struct edge *e, struct conn *c, unsigned events) {
    ssize_t n = recv(c->fd, e->buf, sizeof e->buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        conn_close(e, c);   /* the client left before finishing its head */
        return;
    }
    if (n < 0) return;
    size_t head_len = 0;
    struct edge_verdict v;
    memset(&v, 0, sizeof v);
    switch (edge_head_scan(e->buf, (size_t)n, &c->scan_pos, &head_len, &v)) {
    case EDGE_SCAN_MORE:
        if ((size_t)n == sizeof e->buf) {
            v.status = 431;
            v.code = "headers_too_large";
            snprintf(v.message, sizeof v.message, "the request head is larger than %d bytes",
                     HEAD_MAX);
            reject(e, c, &v);
        } else if (events & (EPOLLRDHUP | EPOLLHUP)) {
            conn_close(e, c);
        }
        return;
    case EDGE_SCAN_BAD:
        reject(e, c, &v);
        return;
    case EDGE_SCAN_DONE:
        edge_head_check(e->buf, head_len, &v);
        if (v.status) reject(e, c, &v);
        else handoff(e, c);
        return;
    }
}

static void on_linger_bytes(struct edge *e, struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, e->buf, sizeof e->buf, MSG_DONTWAIT);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        conn_close(e, c);   /* EOF or error: the client has read the answer or left */
        return;
    }
}

/* Over the per-address limit: 429 and close at once (no linger: this address already
 * holds its share of the daemon). */
static void refuse_address(struct edge *e, int fd, const struct sockaddr_storage *ss) {
    char ip[64], msg[160];
    snprintf(msg, sizeof msg, "too many connections from %s (max_connections_per_address is %d)",
             addr_text(ss, ip, sizeof ip), e->lim.max_per_address);
    answer(e, fd, 429, "too_many_connections", msg);
    close(fd);
    log_refusal(e, 0, "HTTP edge 429 per address", "HTTP edge: 429 %s", msg);
}

static void pause_accept_locked(struct edge *e) {
    if (e->paused) return;
    e->paused = 1;
    epoll_ctl(e->ep, EPOLL_CTL_DEL, e->listen_fd, NULL);
}

static void admit(struct edge *e, int fd, const struct sockaddr_storage *ss, socklen_t sl) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->addr = *ss;
    c->addrlen = sl;
    c->state = CS_HEAD;
    c->deadline_ms = sd_now_ms() + e->lim.head_timeout_s * 1e3;
    int over = 0, oom = 0;
    pthread_mutex_lock(&e->lock);
    struct conn *stale = fd < e->cap ? e->by_fd[fd] : NULL;
    if (stale) {   /* libmicrohttpd dropped it unannounced: accept() just reused its fd */
        forget_locked(e, stale);
        free(stale);
    }
    if (e->lim.max_per_address > 0) {
        c->ac = addr_get_locked(e, ss);
        if (!c->ac) oom = 1;
        else if (c->ac->n >= e->lim.max_per_address) over = 1;
    }
    if (!over && !oom && table_put_locked(e, c)) oom = 1;
    if (!over && !oom) {
        if (c->ac) c->ac->n++;
        e->total++;
        if (e->total >= e->lim.max_connections) pause_accept_locked(e);
    } else if (c->ac && c->ac->n == 0) {
        c->ac->n = 1;
        addr_put_locked(e, c->ac);   /* created for nothing: drop it */
    }
    pthread_mutex_unlock(&e->lock);
    if (over || oom) {
        if (over) refuse_address(e, fd, ss);
        else close(fd);
        free(c);
        return;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
    list_push(&e->heads, c);
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev)) {
        conn_close(e, c);
        return;
    }
    on_head_bytes(e, c, 0);   /* the head may be there already */
}

static void accept_ready(struct edge *e) {
    for (int i = 0; i < 256; i++) {   /* then let the other events have a turn */
        pthread_mutex_lock(&e->lock);
        int paused = e->paused;
        pthread_mutex_unlock(&e->lock);
        if (paused) return;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(e->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admit(e, fd, &ss, sl);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            log_refusal(e, 1, "HTTP edge accept failed", "HTTP edge: accept: %s (retrying)", strerror(errno));
            pthread_mutex_lock(&e->lock);
            e->retry_ms = sd_now_ms() + ACCEPT_RETRY_MS;
            pause_accept_locked(e);
            pthread_mutex_unlock(&e->lock);
        }
        return;
    }
}

/* Heads past their deadline get 408 and are closed; lingering answers end. */
static void expire(struct edge *e, double now) {
    while (e->heads.first && e->heads.first->deadline_ms <= now) {
        struct conn *c = e->heads.first;
        char ip[64], msg[128];
        snprintf(msg, sizeof msg, "the request head did not arrive within %d s "
                 "(http_head_timeout_s)", e->lim.head_timeout_s);
        answer(e, c->fd, 408, "request_timeout", msg);
        log_refusal(e, 0, "HTTP edge 408 request_timeout", "HTTP edge: 408 from %s: %s", addr_text(&c->addr, ip, sizeof ip),
                    msg);
        conn_close(e, c);
    }
    while (e->lingers.first && e->lingers.first->deadline_ms <= now)
        conn_close(e, e->lingers.first);
}

static int next_timeout_ms(struct edge *e, double now) {
    double t = now + 1000;
    if (e->heads.first && e->heads.first->deadline_ms < t) t = e->heads.first->deadline_ms;
    if (e->lingers.first && e->lingers.first->deadline_ms < t) t = e->lingers.first->deadline_ms;
    pthread_mutex_lock(&e->lock);
    if (e->paused && e->retry_ms > now && e->retry_ms < t) t = e->retry_ms;
    pthread_mutex_unlock(&e->lock);
    return t <= now ? 0 : (int)(t - now) + 1;
}

static void maybe_resume(struct edge *e, double now) {
    pthread_mutex_lock(&e->lock);
    if (e->paused && e->total < e->lim.max_connections && now >= e->retry_ms) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &listen_tag };
        if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->listen_fd, &ev) == 0) e->paused = 0;
    }
    pthread_mutex_unlock(&e->lock);
}

static void *accept_main(void *arg) {
    struct edge *e = arg;
    struct epoll_event ev[64];
    while (!atomic_load(&e->stop)) {
        double now = sd_now_ms();
        expire(e, now);
        maybe_resume(e, now);
        int n = epoll_wait(e->ep, ev, 64, next_timeout_ms(e, now));
        for (int i = 0; i < n && !atomic_load(&e->stop); i++) {
            void *p = ev[i].data.ptr;
            if (p == &listen_tag) {
                accept_ready(e);
            } else if (p == &wake_tag) {
                uint64_t v;
                ssize_t r = read(e->wake_fd, &v, sizeof v);
                (void)r;
            } else {
                struct conn *c = p;
                if (c->state == CS_HEAD) on_head_bytes(e, c, ev[i].events);
                else on_linger_bytes(e, c);
            }
        }
    }
    return NULL;
}

/* ---- public ---- */

/* Split "host:port" / "[v6]:port".  -1 if malformed. */
static int split_address(const char *addr, char *host, size_t hn, char *port, size_t pn) {
    const char *colon;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') return -1;
        if ((size_t)(close - addr - 1) >= hn) return -1;
        memcpy(host, addr + 1, (size_t)(close - addr - 1));
        host[close - addr - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hn) return -1;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = 0;
        if (strchr(host, ':')) return -1;   /* bare IPv6 needs brackets */
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) >= pn) return -1;
    for (const char *c = p; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    if (atol(p) > 65535) return -1;
    snprintf(port, pn, "%s", p);
    return 0;
}

int edge_listen(const char *addr, char *bound, size_t boundlen, int *port, int *config_error,
                char *err, size_t errlen) {
    char host[256], serv[16];
    if (split_address(addr, host, sizeof host, serv, sizeof serv)) {
        *config_error = 1;
        snprintf(err, errlen, "listen: '%s' is not HOST:PORT or [IPV6]:PORT", addr);
        return -1;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res = NULL;
    int gai = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, serv, &hints, &res);
    if (gai) {
        *config_error = 1;
        snprintf(err, errlen, "listen: cannot resolve '%s': %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) { saved = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "listen: cannot bind %s: %s", addr, strerror(saved));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        *port = ntohs(s4->sin_port);
        snprintf(bound, boundlen, "%s:%d", ip, *port);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        *port = ntohs(s6->sin6_port);
        snprintf(bound, boundlen, "[%s]:%d", ip, *port);
    }
    return fd;
}


struct edge *edge_new(int listen_fd, const struct edge_limits *lim, struct metrics *m,
                      struct ratelog *rl) {
    struct edge *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->lim = *lim;
    e->m = m;
    e->rl = rl;
    e->listen_fd = listen_fd;
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&e->lock, NULL);
    atomic_init(&e->stop, 0);
    struct epoll_event l = { .events = EPOLLIN, .data.ptr = &listen_tag };
    struct epoll_event w = { .events = EPOLLIN, .data.ptr = &wake_tag };
    if (e->ep < 0 || e->wake_fd < 0 || epoll_ctl(e->ep, EPOLL_CTL_ADD, listen_fd, &l) ||
        epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake_fd, &w)) {
        e->listen_fd = -1;   /* still the caller's */
        edge_free(e);
        return NULL;
    }
    return e;
}

int edge_start(struct edge *e, struct MHD_Daemon *mhd) {
    e->mhd = mhd;
    if (pthread_create(&e->thread, NULL, accept_main, e)) return -1;
    e->thread_started = 1;
    return 0;
}

void edge_stop(struct edge *e) {
    if (!e || !e->thread_started) return;
    atomic_store(&e->stop, 1);
    uint64_t one = 1;
    ssize_t n = write(e->wake_fd, &one, sizeof one);
    (void)n;
    pthread_join(e->thread, NULL);
    e->thread_started = 0;
    while (e->heads.first) conn_close(e, e->heads.first);
    while (e->lingers.first) conn_close(e, e->lingers.first);
    pthread_mutex_lock(&e->lock);
    e->paused = 0;   /* nobody to wake any more */
    pthread_mutex_unlock(&e->lock);
    epoll_ctl(e->ep, EPOLL_CTL_DEL, e->listen_fd, NULL);
    close(e->listen_fd);
    e->listen_fd = -1;
}

void edge_free(struct edge *e) {
    if (!e) return;
    edge_stop(e);
    if (e->listen_fd >= 0) close(e->listen_fd);
    for (int fd = 0; fd < e->cap; fd++)
        free(e->by_fd[fd]);   /* handed over and never started: libmicrohttpd closed them */
    free(e->by_fd);
    for (int b = 0; b < ADDR_BUCKETS; b++)
        for (struct addr_count *a = e->buckets[b], *nx; a; a = nx) {
            nx = a->next;
            free(a);
        }
    if (e->ep >= 0) close(e->ep);
    if (e->wake_fd >= 0) close(e->wake_fd);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

void edge_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe) {
    struct edge *e = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci) return;
        int fd = ci->connect_fd;
        pthread_mutex_lock(&e->lock);
        struct conn *k = fd >= 0 && fd < e->cap ? e->by_fd[fd] : NULL;
        if (k && k->state == CS_MHD) {
            k->started = 1;
            *socket_context = k;
        }
        pthread_mutex_unlock(&e->lock);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn *k = *socket_context;
        if (!k) return;
        *socket_context = NULL;
        pthread_mutex_lock(&e->lock);
        forget_locked(e, k);   /* before libmicrohttpd closes the fd */
        pthread_mutex_unlock(&e->lock);
        free(k);
    }
}

void edge_body_done(struct edge *e, struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn *k = ci ? ci->socket_context : NULL;
    if (!k) return;
    pthread_mutex_lock(&e->lock);
    k->body_done = 1;
    pthread_mutex_unlock(&e->lock);
}

void edge_watch(struct edge *e, double now_ms) {
    int nshut = 0;
    char ip[64] = "";
    pthread_mutex_lock(&e->lock);
    for (int fd = 0; fd < e->cap; fd++) {
        struct conn *k = e->by_fd[fd];
        if (!k || k->state != CS_MHD || !k->started || k->body_done || k->shut ||
            now_ms < k->deadline_ms)
            continue;
        shutdown(k->fd, SHUT_RDWR);   /* libmicrohttpd sees the end and closes it */
        k->shut = 1;
        if (!nshut++) addr_text(&k->addr, ip, sizeof ip);
    }
    pthread_mutex_unlock(&e->lock);
    if (nshut)
        log_refusal(e, 0, "HTTP edge body deadline", "HTTP edge: closed %d connection(s) (first from %s) "
                    "whose request body took longer than %d s (http_body_timeout_s)", nshut, ip,
                    e->lim.body_timeout_s);
}

int edge_in_mhd(struct edge *e) {
    pthread_mutex_lock(&e->lock);
    int n = e->in_mhd;
    pthread_mutex_unlock(&e->lock);
    return n;
}
