/* peer.c -- the benchmark's C servers' listening socket, accept and loop; see peer.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"

static const char *peer_name = "peer";

int peer_listen(const char *name, const char *spec)
{
    peer_name = name;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char host[64];
    const char *colon = strrchr(spec, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host) {
        fprintf(stderr, "%s: --listen %s: not HOST:PORT\n", name, spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "%s: --listen %s: not an IPv4 address\n", name, spec);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    socklen_t len = sizeof sa;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, PEER_BACKLOG) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        fprintf(stderr, "%s: listen %s: %s\n", name, spec, strerror(errno));
        return -1;
    }
    fprintf(stderr, "listening on %s:%d\n", host, ntohs(sa.sin_port));
    return fd;
}

int peer_accept(int listen_fd)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int on = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
            return fd;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN)
            fprintf(stderr, "%s: accept: %s\n", peer_name, strerror(errno));
        return -1;
    }
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

void peer_run(int listen_fd, void (*on_accept)(struct ev_loop *loop, ev_io *w, int revents))
{
    struct ev_loop *loop = EV_DEFAULT;
    ev_io acceptor;
    ev_signal on_term, on_int;
    ev_io_init(&acceptor, on_accept, listen_fd, EV_READ);
    ev_io_start(loop, &acceptor);
    ev_signal_init(&on_term, on_stop, SIGTERM);
    ev_signal_init(&on_int, on_stop, SIGINT);
    ev_signal_start(loop, &on_term);
    ev_signal_start(loop, &on_int);
    ev_run(loop, 0);
    close(listen_fd);
}
