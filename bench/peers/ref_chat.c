/* ref_chat.c -- the benchmark's reference chat server: a minimal single-threaded chat room in C
 * on libev, with no Lua, for bench/run's chat workload. It speaks examples/chat.lua's protocol as
 * far as that workload uses it: a new member gets "* welcome to the chat, guestN!", everyone
 * else "* guestN joined", and every non-empty line a member sends is said to everyone else as
 * "<guestN> line". No commands, no leave announcements.
 *
 * Output is queued per member and sent once per loop iteration (an ev_prepare watcher runs just
 * before the loop waits), so the lines of several senders reach a member in one send(2), as
 * luasock's conn:post() does. A member with more than 256 KiB queued is dropped, like chat.lua's
 * default max_queue; one that sends a line over 1024 bytes is dropped too (chat.lua answers
 * "line too long"), which the workload never does. Prints "listening on HOST:PORT" on stderr;
 * SIGTERM or SIGINT stop it.
 *
 * Usage: ref_chat [--listen HOST:PORT]   (default 127.0.0.1:0, port 0 picks a free port)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer.h"

#define MAX_LINE 1024
#define MAX_QUEUE 262144
#define NICK_SIZE 24

struct member {
    ev_io reader;
    ev_io writer;               /* on while the socket does not take what is queued */
    struct member *prev, *next; /* the room, a circle through `room` */
    struct member *next_dirty;  /* the members with output to send this iteration */
    bool dirty, gone;           /* gone: dropped while dirty, freed by the flush */
    bool over;                  /* over MAX_QUEUE (or out of memory): the flush drops it */
    char nick[NICK_SIZE];
    char in[MAX_LINE];          /* an unfinished line: in[0, in_len) */
    size_t in_len;
    char *out;                  /* queued output: out[out_off, out_len) */
    size_t out_off, out_len, out_cap;
};

#define member_of(w, field) \
    ((struct member *)(void *)((char *)(w) - offsetof(struct member, field)))

static struct member room = {.prev = &room, .next = &room};
static struct member *dirty;
static unsigned long guests;
static char buffer[65536];

static void drop(struct ev_loop *loop, struct member *m)
{
    m->prev->next = m->next;
    m->next->prev = m->prev;
    ev_io_stop(loop, &m->reader);
    ev_io_stop(loop, &m->writer);
    close(m->reader.fd);
    if (m->dirty) {
        m->gone = true;
        return;
    }
    free(m->out);
    free(m);
}

/* Makes room for len more bytes of output; false when there is none. */
static bool reserve(struct member *m, size_t len)
{
    size_t pending = m->out_len - m->out_off;
    if (pending + len > MAX_QUEUE)
        return false;
    if (m->out_len + len <= m->out_cap)
        return true;
    memmove(m->out, m->out + m->out_off, pending);
    m->out_off = 0;
    m->out_len = pending;
    if (pending + len <= m->out_cap)
        return true;
    size_t cap = m->out_cap ? m->out_cap : 4096;
    while (cap < pending + len)
        cap *= 2;
    char *out = realloc(m->out, cap);
    if (out == NULL)
        return false;
    m->out = out;
    m->out_cap = cap;
    return true;
}

/* Queues bytes for m; the flush before the loop waits sends them. */
static void queue(struct member *m, const char *data, size_t len)
{
    if (m->over)
        return;
    if (reserve(m, len)) {
        memcpy(m->out + m->out_len, data, len);
        m->out_len += len;
    } else {
        m->over = true;
    }
    /* While the writer is on it sends; the flush must still see a member over the limit. */
    if (!m->dirty && (!ev_is_active(&m->writer) || m->over)) {
        m->dirty = true;
        m->next_dirty = dirty;
        dirty = m;
    }
}

static void broadcast(const struct member *from, const char *data, size_t len)
{
    for (struct member *m = room.next; m != &room; m = m->next)
        if (m != from)
            queue(m, data, len);
}

/* Sends what m has queued; starts the writer for what the socket does not take. */
static void send_queued(struct ev_loop *loop, struct member *m)
{
    ssize_t n = send(m->reader.fd, m->out + m->out_off, m->out_len - m->out_off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        drop(loop, m);
        return;
    }
    if (n > 0)
        m->out_off += (size_t)n;
    if (m->out_off == m->out_len) {
        m->out_off = m->out_len = 0;
        ev_io_stop(loop, &m->writer);
    } else {
        ev_io_start(loop, &m->writer);
    }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    while (dirty != NULL) {
        struct member *m = dirty;
        dirty = m->next_dirty;
        m->dirty = false;
        if (m->gone) {
            free(m->out);
            free(m);
        } else if (m->over) {
            drop(loop, m);
        } else if (!ev_is_active(&m->writer)) {
            send_queued(loop, m);
        }
    }
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    send_queued(loop, member_of(w, writer));
}

/* Says each complete line in data to everyone else; keeps an unfinished one in m->in. */
static void said(struct member *m, const char *data, size_t len)
{
    char line[NICK_SIZE + MAX_LINE + 4];
    size_t prefix = (size_t)snprintf(line, sizeof line, "<%s> ", m->nick);
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl != NULL ? (size_t)(nl - data) : len;
        if (m->in_len + take > MAX_LINE) {
            m->in_len = MAX_LINE + 1; /* the caller drops m */
            return;
        }
        memcpy(m->in + m->in_len, data, take);
        m->in_len += take;
        if (nl == NULL)
            return;
        if (m->in_len > 0) {
            memcpy(line + prefix, m->in, m->in_len);
            line[prefix + m->in_len] = '\n';
            broadcast(m, line, prefix + m->in_len + 1);
        }
        m->in_len = 0;
        data += take + 1;
        len -= take + 1;
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct member *m = member_of(w, reader);
    ssize_t n = recv(w->fd, buffer, sizeof buffer, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        said(m, buffer, (size_t)n);
    if (n <= 0 || m->in_len > MAX_LINE)
        drop(loop, m);
}

static void join(struct ev_loop *loop, int fd)
{
    struct member *m = calloc(1, sizeof *m);
    if (m == NULL) {
        close(fd);
        return;
    }
    char text[NICK_SIZE + 40];
    snprintf(m->nick, sizeof m->nick, "guest%lu", ++guests);
    ev_io_init(&m->reader, on_readable, fd, EV_READ);
    ev_io_init(&m->writer, on_writable, fd, EV_WRITE);
    queue(m, text, (size_t)snprintf(text, sizeof text, "* welcome to the chat, %s!\n", m->nick));
    broadcast(m, text, (size_t)snprintf(text, sizeof text, "* %s joined\n", m->nick));
    m->prev = room.prev;
    m->next = &room;
    room.prev->next = m;
    room.prev = m;
    ev_io_start(loop, &m->reader);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    int fd;
    while ((fd = peer_accept(w->fd)) >= 0)
        join(loop, fd);
}

int main(int argc, char **argv)
{
    const char *spec = "127.0.0.1:0";
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        spec = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: ref_chat [--listen HOST:PORT]\n");
        return 2;
    }
    int fd = peer_listen("ref_chat", spec);
    if (fd < 0)
        return 1;
    ev_prepare flusher;
    ev_prepare_init(&flusher, on_prepare);
    ev_prepare_start(EV_DEFAULT, &flusher);
    peer_run(fd, on_accept);
    return 0;
}
