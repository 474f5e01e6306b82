/* listener.h -- listening sockets on the event loop: accept, and pause when out of fds. */
#ifndef LISTENER_H
#define LISTENER_H

#include <ev.h>

#include "net.h"

struct listener {
    ev_io io;
    ev_timer pause; /* accepting again after running out of file descriptors */
    int fd;
    char name[160];      /* the bound address, e.g. "127.0.0.1:9090" */
    char unix_path[108]; /* removed on close */
    void (*on_accept)(int fd, const struct sockaddr *peer, socklen_t peer_len);
    struct listener *next;
};

/* Listens on addr (written as text in the error message). Returns the listener, or NULL with
 * "listen TEXT: cause" in err. */
struct listener *listener_open(struct ev_loop *loop, const char *text, const struct net_addr *addr,
                               void (*on_accept)(int fd, const struct sockaddr *peer,
                                                 socklen_t peer_len),
                               char *err, size_t err_size);

void listener_close(struct ev_loop *loop, struct listener *l);

#endif
