/* listener.c -- accepting connections; see listener.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "container.h"
#include "errors.h"
#include "listener.h"
#include "luasock.h"
#include "metrics_core.h"

#define BACKLOG 511
#define ACCEPTS_PER_WAKEUP 64
#define PAUSE_SECONDS 0.1

static struct ev_loop *loop;

static void on_connection(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    struct listener *l = container_of(w, struct listener, io);
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            l->on_accept(l, fd, (struct sockaddr *)&peer, peer_len);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
            continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            metrics_core.refused[MR_EMFILE]++;
            /* Waiting for a connection to close beats spinning on a listener we cannot serve. */
            luasock_log(LUASOCK_LOG_WARN, "accept on %s: %s (%s); pausing accepts for %.1f s",
                        l->name, errors_string(errno), errors_name(errno), PAUSE_SECONDS);
            ev_io_stop(loop, &l->io);
            ev_timer_set(&l->pause, PAUSE_SECONDS, 0);
            ev_timer_start(loop, &l->pause);
            return;
        default:
            luasock_log(LUASOCK_LOG_WARN, "accept on %s: %s (%s)", l->name,
                        errors_string(errno), errors_name(errno));
            return;
        }
    }
}

static void on_pause_end(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    struct listener *l = container_of(w, struct listener, pause);
    ev_io_start(loop, &l->io);
}

struct listener *listener_open(const char *text, const struct net_addr *addr,
                               void (*on_accept)(struct listener *l, int fd,
                                                 const struct sockaddr *peer, socklen_t peer_len),
                               bool for_workers, char *err, size_t err_size)
{
    int gai_error;
    bool own_socket_per_worker = for_workers && addr->kind == NET_TCP;
    int fd = own_socket_per_worker ? net_bind_shared(addr, &gai_error)
                                   : net_listen(addr, BACKLOG, &gai_error);
    if (fd < 0) {
        snprintf(err, err_size, "listen %s: %s", text,
                 gai_error ? errors_gai_string(gai_error) : errors_string(errno));
        return NULL;
    }
    struct listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        close(fd);
        snprintf(err, err_size, "listen %s: %s", text, ERR_NO_MEMORY);
        return NULL;
    }
    l->fd = fd;
    l->listen_in_worker = own_socket_per_worker;
    l->on_accept = on_accept;
    l->tls = addr->tls;
    net_local_address(fd, l->name, sizeof l->name);
    if (l->tls) {
        memmove(l->name + 4, l->name, sizeof l->name - 4);
        memcpy(l->name, "tls:", 4);
        l->name[sizeof l->name - 1] = '\0';
    }
    l->counts = metrics_listener(l->name); /* NULL when out of memory: not counted */
    if (addr->kind == NET_UNIX)
        snprintf(l->unix_path, sizeof l->unix_path, "%s", addr->path);
    ev_io_init(&l->io, on_connection, fd, EV_READ);
    ev_init(&l->pause, on_pause_end);
    if (!for_workers)
        ev_io_start(loop, &l->io);
    return l;
}

int listener_start_in_worker(struct listener *l, char *err, size_t err_size)
{
    /* The unix socket's file belongs to the parent, which outlives this worker. */
    l->unix_path[0] = '\0';
    if (l->listen_in_worker) {
        int fd = net_listen_beside(l->fd, BACKLOG);
        if (fd < 0) {
            snprintf(err, err_size, "listen %s: %s", l->name, errors_string(errno));
            return -1;
        }
        close(l->fd);
        l->fd = fd;
        l->listen_in_worker = false;
        ev_io_set(&l->io, fd, EV_READ);
    }
    ev_io_start(loop, &l->io);
    return 0;
}

void listener_close(struct listener *l)
{
    ev_io_stop(loop, &l->io);
    ev_timer_stop(loop, &l->pause);
    close(l->fd);
    if (l->unix_path[0] != '\0')
        unlink(l->unix_path);
    free(l);
}

void listener_init(struct ev_loop *l)
{
    loop = l;
}
