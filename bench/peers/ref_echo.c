/* ref_echo.c -- the benchmark's reference server: a minimal single-threaded echo server in C on
 * libev, with no Lua. Every read goes into one shared buffer and is written straight back; only
 * what the socket does not take is copied aside, and then reading pauses until a write watcher
 * has drained it. A connection costs one small struct while idle.
 *
 * Line echo over a byte stream sends the same bytes back, so the line workload uses this server
 * unchanged. Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
 *
 * Usage: ref_echo [--listen HOST:PORT]   (default 127.0.0.1:0, port 0 picks a free port)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"

struct conn {
    ev_io reader;
    ev_io writer;
    char *pending; /* bytes the socket did not take: pending[off, len) */
    size_t off, len;
};

#define conn_of(w, member) ((struct conn *)(void *)((char *)(w) - offsetof(struct conn, member)))

static char buffer[65536];

static void conn_close(struct ev_loop *loop, struct conn *c)
{
    ev_io_stop(loop, &c->reader);
    ev_io_stop(loop, &c->writer);
    close(c->reader.fd);
    free(c->pending);
    free(c);
}

/* Sends data; keeps what the socket does not take and waits for writability. */
static void echo(struct ev_loop *loop, struct conn *c, const char *data, size_t len)
{
    ssize_t n = send(c->reader.fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(loop, c);
        return;
    }
    size_t sent = n < 0 ? 0 : (size_t)n;
    if (sent == len)
        return;
    c->pending = malloc(len - sent);
    if (c->pending == NULL) {
        conn_close(loop, c);
        return;
    }
    memcpy(c->pending, data + sent, len - sent);
    c->off = 0;
    c->len = len - sent;
    ev_io_stop(loop, &c->reader);
    ev_io_start(loop, &c->writer);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = conn_of(w, reader);
    ssize_t n = recv(w->fd, buffer, sizeof buffer, 0);
    if (n > 0)
        echo(loop, c, buffer, (size_t)n);
    else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        conn_close(loop, c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = conn_of(w, writer);
    ssize_t n = send(w->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(loop, c);
        return;
    }
    if (n > 0)
        c->off += (size_t)n;
    if (c->off < c->len)
        return;
    free(c->pending);
    c->pending = NULL;
    ev_io_stop(loop, &c->writer);
    ev_io_start(loop, &c->reader);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    int fd;
    while ((fd = peer_accept(w->fd)) >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        ev_io_init(&c->reader, on_readable, fd, EV_READ);
        ev_io_init(&c->writer, on_writable, fd, EV_WRITE);
        ev_io_start(loop, &c->reader);
    }
}

int main(int argc, char **argv)
{
    const char *spec = "127.0.0.1:0";
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        spec = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: ref_echo [--listen HOST:PORT]\n");
        return 2;
    }
    int fd = peer_listen("ref_echo", spec);
    if (fd < 0)
        return 1;
    peer_run(fd, on_accept);
    return 0;
}
