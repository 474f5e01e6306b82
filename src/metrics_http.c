/* metrics_http.c -- the --metrics endpoint; see metrics_http.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "container.h"
#include "errors.h"
#include "metrics_http.h"
#include "net.h"

struct client {
    ev_io io;
    ev_timer timer;
    int fd;
    size_t len;   /* of request */
    char *answer; /* once the request is read */
    size_t answer_len, sent;
    bool lingering; /* answered: reading until the client closes */
    struct client *prev, *next;
    char request[METRICS_HTTP_MAX_REQUEST];
};

static struct ev_loop *loop;
static ev_io listen_io;
static int listen_fd = -1;
static void (*write_metrics)(FILE *out);
static struct client *clients;
static int client_count;

static void drop(struct client *c)
{
    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->timer);
    close(c->fd);
    free(c->answer);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    client_count--;
    free(c);
}

static void on_timeout(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    drop(container_of(w, struct client, timer));
}

/* The answer is out: closing now with unread bytes (a request too large) would reset the
 * connection and lose the answer, so the client's end is awaited, within the time limit. */
static void linger(struct client *c)
{
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ);
    ev_io_start(loop, &c->io);
}

/* Writes what is left of the answer; lingers once it is all out, drops c if the peer is gone. */
static void send_rest(struct client *c)
{
    while (c->sent < c->answer_len) {
        ssize_t n = send(c->fd, c->answer + c->sent, c->answer_len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            drop(c);
            return;
        }
        c->sent += (size_t)n;
    }
    linger(c);
}

static void answer(struct client *c, const char *status, const char *type, const char *body,
                   size_t body_len, bool head)
{
    FILE *out = open_memstream(&c->answer, &c->answer_len);
    if (out == NULL) {
        drop(c);
        return;
    }
    fprintf(out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n", status, type, body_len);
    if (!head)
        fwrite(body, 1, body_len, out);
    if (fclose(out) != 0) {
        drop(c);
        return;
    }
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(loop, &c->io);
    send_rest(c);
}

static void answer_text(struct client *c, const char *status, const char *body, bool head)
{
    answer(c, status, "text/plain; charset=utf-8", body, strlen(body), head);
}

static void answer_metrics(struct client *c, bool head)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL) {
        drop(c);
        return;
    }
    write_metrics(out);
    if (fclose(out) != 0) {
        free(text);
        drop(c);
        return;
    }
    answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, len, head);
    free(text);
}

/* The request line of a complete request: "METHOD PATH HTTP/1.x". */
static void respond(struct client *c)
{
    char method[16], target[256], version[16];
    if (sscanf(c->request, "%15s %255s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        answer_text(c, "400 Bad Request", "bad request\n", false);
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        answer_text(c, "405 Method Not Allowed", "only GET and HEAD\n", false);
        return;
    }
    target[strcspn(target, "?")] = '\0';
    if (strcmp(target, "/metrics") == 0)
        answer_metrics(c, head);
    else if (strcmp(target, "/healthz") == 0)
        answer_text(c, "200 OK", "ok\n", head);
    else
        answer_text(c, "404 Not Found", "not found: try /metrics or /healthz\n", head);
}

static bool complete(const struct client *c)
{
    return strstr(c->request, "\r\n\r\n") != NULL || strstr(c->request, "\n\n") != NULL;
}

static void on_client(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct client *c = container_of(w, struct client, io);
    if (c->lingering) {
        char discard[512];
        ssize_t n = recv(c->fd, discard, sizeof discard, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            drop(c);
        return;
    }
    if (c->answer != NULL) {
        send_rest(c);
        return;
    }
    size_t room = sizeof c->request - 1 - c->len;
    ssize_t n = recv(c->fd, c->request + c->len, room, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        drop(c);
        return;
    }
    c->len += (size_t)n;
    c->request[c->len] = '\0';
    if (complete(c))
        respond(c);
    else if (c->len == sizeof c->request - 1)
        answer_text(c, "431 Request Header Fields Too Large", "request too large\n", false);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct client *c = client_count < METRICS_HTTP_MAX_CLIENTS ? malloc(sizeof *c) : NULL;
    if (c == NULL) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->len = 0;
    c->request[0] = '\0';
    c->answer = NULL;
    c->answer_len = c->sent = 0;
    c->lingering = false;
    c->prev = NULL;
    c->next = clients;
    if (clients != NULL)
        clients->prev = c;
    clients = c;
    client_count++;
    ev_io_init(&c->io, on_client, fd, EV_READ);
    ev_io_start(loop, &c->io);
    ev_timer_init(&c->timer, on_timeout, METRICS_HTTP_TIMEOUT, 0);
    ev_timer_start(loop, &c->timer);
}

int metrics_http_open(struct ev_loop *l, const char *text, void (*write)(FILE *out),
                      char *name, size_t name_size, char *err, size_t err_size)
{
    struct net_addr addr;
    char why[512];
    if (net_check_listen(text, &addr, why, sizeof why) < 0) {
        snprintf(err, err_size, "metrics: %s", why);
        return -1;
    }
    if (addr.kind != NET_TCP || addr.tls) {
        snprintf(err, err_size, "metrics %s: give a plain HOST:PORT", text);
        return -1;
    }
    int gai_error;
    int fd = net_listen(&addr, 64, &gai_error);
    if (fd < 0) {
        snprintf(err, err_size, "metrics %s: %s", text,
                 gai_error ? errors_gai_string(gai_error) : errors_string(errno));
        return -1;
    }
    loop = l;
    write_metrics = write;
    listen_fd = fd;
    net_local_address(fd, name, name_size);
    ev_io_init(&listen_io, on_accept, fd, EV_READ);
    ev_io_start(loop, &listen_io);
    return 0;
}

void metrics_http_close(void)
{
    if (listen_fd < 0)
        return;
    ev_io_stop(loop, &listen_io);
    close(listen_fd);
    listen_fd = -1;
    while (clients != NULL)
        drop(clients);
}
