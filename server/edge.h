/* edge.h — the daemon's HTTP edge: it accepts connections itself, checks each request
 * head strictly on the raw bytes (server/edge_head.h) under a deadline, limits
 * connections per client address, and only then hands the connection to
 * libmicrohttpd (MHD_add_connection); it also bounds how long a request body may take.
 *
 * Life of a connection:
 *   accepted → HEAD: its bytes are peeked at (MSG_PEEK, so they stay in the socket for
 *   libmicrohttpd) until the head is complete, at most http_head_timeout_s after the
 *   accept; an invalid head is answered here (400/431/501/505 in the API's JSON error
 *   shape, then LINGER: the rest is read and dropped for a moment so the answer is not
 *   destroyed by a TCP reset) and closed;
 *   → MHD: handed over; until the request's body is complete (edge_body_done) it must
 *   arrive within http_body_timeout_s of the hand-over, or the watcher shuts the socket
 *   down; the connection leaves the edge's books when libmicrohttpd reports it closed.
 *
 * Every response carries "Connection: close" (server/http.c), so each connection
 * carries exactly one request and every request passes through here: keep-alive would
 * let a second request on the same connection skip the check.
 *
 * Threading: one accept thread (epoll); edge_notify_connection and edge_body_done run on
 * libmicrohttpd's threads, edge_watch on the HTTP watcher thread.  A connection's fd is
 * used outside the accept thread only under the edge lock, which the CLOSED
 * notification also takes, and libmicrohttpd closes the fd only after that
 * notification: the watcher can never shut down a reused fd. */
#ifndef SD_SERVER_EDGE_H
#define SD_SERVER_EDGE_H

#include <microhttpd.h>
#include <stddef.h>

struct metrics;
struct ratelog;

struct edge_limits {
    int max_connections;       /* all connections, any state; beyond it accept() waits */
    int max_per_address;       /* 0 = no limit; beyond it: 429 and close */
    int head_timeout_s;
    int body_timeout_s;
};

struct edge;

/* Bind and listen on addr ("HOST:PORT", "[V6]:PORT"), non-blocking; the bound address
 * goes to bound (port included, useful with port 0).  The fd, or -1 with a message in
 * err (*config_error set when the address itself is invalid). */
int edge_listen(const char *addr, char *bound, size_t boundlen, int *port, int *config_error,
                char *err, size_t errlen);
/* The edge takes over listen_fd (a bound, listening, non-blocking socket) once started. */
struct edge *edge_new(int listen_fd, const struct edge_limits *lim, struct metrics *m,
                      struct ratelog *rl);
/* Start accepting and handing connections to mhd.  0, or -1 (thread or epoll failed). */
int edge_start(struct edge *e, struct MHD_Daemon *mhd);
/* Stop accepting: the accept thread ends, the listening socket and the connections not
 * yet handed over are closed.  Handed-over connections go on. */
void edge_stop(struct edge *e);
/* After MHD_stop_daemon (and edge_stop). */
void edge_free(struct edge *e);

/* MHD_OPTION_NOTIFY_CONNECTION callback (cls = the edge). */
void edge_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);
/* The request on c has its whole body: its body deadline no longer applies. */
void edge_body_done(struct edge *e, struct MHD_Connection *c);
/* Watcher: shut down connections whose body is past its deadline. */
void edge_watch(struct edge *e, double now_ms);
/* Connections handed to libmicrohttpd and not closed yet. */
int edge_in_mhd(struct edge *e);

#endif
