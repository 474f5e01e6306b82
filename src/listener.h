/* listener.h -- listening sockets on the event loop: accept, and pause when out of fds. */
#ifndef LISTENER_H
#define LISTENER_H

#include <ev.h>
#include <stdbool.h>

#include "net.h"

struct metrics_listener;

struct listener {
    ev_io io;
    ev_timer pause; /* accepting again after running out of file descriptors */
    int fd;
    bool listen_in_worker; /* fd is only bound: each worker listens on a socket of its own */
    bool tls;              /* accepted connections begin with a TLS handshake */
    char name[160];      /* the bound address, e.g. "127.0.0.1:9090" or "tls:127.0.0.1:9443" */
    char unix_path[108]; /* removed on close */
    struct metrics_listener *counts; /* its accepted and open connections */
    void (*on_accept)(struct listener *l, int fd, const struct sockaddr *peer,
                      socklen_t peer_len);
    struct listener *next;
};

void listener_init(struct ev_loop *loop);

/* Listens on addr (written as text in the error message). Returns the listener, or NULL with
 * "listen TEXT: cause" in err. for_workers: the caller is the --workers parent, which never
 * accepts: TCP addresses are only bound, and nothing is watched until
 * listener_start_in_worker. */
struct listener *listener_open(const char *text, const struct net_addr *addr,
                               void (*on_accept)(struct listener *l, int fd,
                                                 const struct sockaddr *peer, socklen_t peer_len),
                               bool for_workers, char *err, size_t err_size);

/* In a worker just forked from the parent: accepts on l from now on. */
int listener_start_in_worker(struct listener *l, char *err, size_t err_size);

void listener_close(struct listener *l);

#endif
