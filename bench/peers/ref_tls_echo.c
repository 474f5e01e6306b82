/* ref_tls_echo.c -- the TLS benchmark's reference server: ref_echo.c's echo over TLS, in C on
 * libev and OpenSSL, with no Lua. One ev_io per connection, non-blocking SSL on the socket:
 * OpenSSL runs the handshake inside the first SSL_read calls, every decrypted chunk goes into one
 * shared buffer and is written straight back with SSL_write, and only what the socket does not
 * take is copied aside (reading pauses until it has gone). The watcher waits for whatever the
 * pending call wants, readable or writable (a write can want input, a read output).
 *
 * Tuned as a careful C server would be: read-ahead (one recv(2) takes every record the socket
 * has; SSL_has_pending says when to read again without the socket), released buffers while a
 * connection is idle (SSL_MODE_RELEASE_BUFFERS, as nginx does), no server-side session cache
 * (TLS 1.3 resumption uses the stateless tickets OpenSSL sends by default). TLS 1.2 and 1.3.
 * Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
 *
 * Usage: ref_tls_echo --cert FILE --key FILE [--listen HOST:PORT]   (default 127.0.0.1:0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"

struct conn {
    ev_io io;
    SSL *ssl;
    char *pending; /* bytes SSL_write has not taken yet: pending[off, len) */
    size_t off, len;
};

static char buffer[65536];
static SSL_CTX *ctx;

static void conn_close(struct ev_loop *loop, struct conn *c)
{
    ev_io_stop(loop, &c->io);
    SSL_free(c->ssl);
    close(c->io.fd);
    free(c->pending);
    free(c);
}

static void watch(struct ev_loop *loop, struct conn *c, int events)
{
    if (c->io.events == events)
        return;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(loop, &c->io);
}

/* Waits for what the SSL call that returned rc wants; returns 0 (and closes) on anything
 * else: an error, or the peer's close_notify or EOF. */
static int wait_for(struct ev_loop *loop, struct conn *c, int rc)
{
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        watch(loop, c, err == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
        return 1;
    }
    ERR_clear_error();
    conn_close(loop, c);
    return 0;
}

/* SSL_writes data until all of it went or OpenSSL waits for the socket (the watcher then
 * waits with it). Returns how much went, or -1 when the connection closed. */
static long write_some(struct ev_loop *loop, struct conn *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        int n = SSL_write(c->ssl, data + done, (int)(len - done));
        if (n <= 0)
            return wait_for(loop, c, n) ? (long)done : -1;
        done += (size_t)n;
    }
    return (long)done;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = (struct conn *)(void *)w;
    if (c->pending != NULL) {
        long n = write_some(loop, c, c->pending + c->off, c->len - c->off);
        if (n < 0)
            return;
        c->off += (size_t)n;
        if (c->off < c->len)
            return;
        free(c->pending);
        c->pending = NULL;
    }
    for (;;) {
        int n = SSL_read(c->ssl, buffer, sizeof buffer);
        if (n <= 0) {
            wait_for(loop, c, n);
            return;
        }
        long sent = write_some(loop, c, buffer, (size_t)n);
        if (sent < 0)
            return;
        if (sent < n) {
            c->pending = malloc((size_t)(n - sent));
            if (c->pending == NULL) {
                conn_close(loop, c);
                return;
            }
            memcpy(c->pending, buffer + sent, (size_t)(n - sent));
            c->off = 0;
            c->len = (size_t)(n - sent);
            return;
        }
        if (!SSL_has_pending(c->ssl)) {
            watch(loop, c, EV_READ);
            return;
        }
    }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    int fd;
    while ((fd = peer_accept(w->fd)) >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        SSL *ssl = c != NULL ? SSL_new(ctx) : NULL;
        if (ssl == NULL || !SSL_set_fd(ssl, fd)) {
            SSL_free(ssl);
            free(c);
            close(fd);
            continue;
        }
        SSL_set_accept_state(ssl);
        c->ssl = ssl;
        ev_io_init(&c->io, on_io, fd, EV_READ);
        ev_io_start(loop, &c->io);
    }
}

static int make_context(const char *cert, const char *key)
{
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "ref_tls_echo: %s / %s: %s\n", cert, key,
                ERR_error_string(ERR_get_error(), NULL));
        return -1;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec = "127.0.0.1:0", *cert = NULL, *key = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            spec = argv[i + 1];
        else if (strcmp(argv[i], "--cert") == 0)
            cert = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key = argv[i + 1];
        else
            cert = NULL;
    }
    if (argc % 2 == 0 || cert == NULL || key == NULL) {
        fprintf(stderr, "usage: ref_tls_echo --cert FILE --key FILE [--listen HOST:PORT]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (make_context(cert, key) < 0)
        return 1;
    int fd = peer_listen("ref_tls_echo", spec);
    if (fd < 0)
        return 1;
    peer_run(fd, on_accept);
    SSL_CTX_free(ctx);
    return 0;
}
