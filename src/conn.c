/* conn.c -- connection buffers, watchers and closing; see conn.h.
 *
 * Reads: a receive first tries the input buffer, then reads the socket if it may hold more, and
 * only then waits. The watcher keeps watching for reads while a handler keeps reading, so a loop
 * of receive/send costs no epoll_ctl; it stops the first time it fires with nobody reading.
 * An event callback only finds out, in C, that the read can complete; the reader's results are
 * built when it runs again (task.h), so data is copied into Lua on the reader's own thread and
 * under its own limits.
 *
 * A read owns the progress it saves (the line search position, the object framer): anything
 * that consumes or frees the input buffer drops that progress (take_input, drop_input).
 *
 * Writes: send only appends to the output buffer and puts the connection on the flush list.
 * conn_flush_all runs when the loop is about to wait, so all writes of one iteration leave in one
 * send(2). What the socket does not take is written once the watcher sees the socket writable.
 *
 * Posted output has two limits, shaped like Redis's client-output-buffer-limit: a peer whose
 * queue passes max_queue is dropped at once, and one whose queue stays above soft_queue for
 * soft_queue_seconds is dropped then. The connections above their soft mark are on one list,
 * checked by one timer, so the rest pay nothing for it. conn:drain lets a handler wait for a
 * queue to go down instead (flood control).
 *
 * Callbacks resume a task as their very last step: the task may close the connection, after
 * which the garbage collector may free it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "container.h"
#include "conn.h"
#include "errors.h"
#include "log.h"
#include "metrics_core.h"
#include "luasock.h"
#include "net.h"
#include "peers.h"
#include "task.h"
#include "tls.h"

/* How long a closed connection keeps reading (and dropping) input while it waits for the
 * peer's FIN; closing with unread input would make the kernel send RST, which can destroy the
 * reply the peer has not read yet. */
#define LINGER_SECONDS 2.0

struct conn_settings conn_defaults = {
    .max_line = 8192, /* a quadratic pattern over a line stays under 0.5 s (docs/security.md) */
    .max_all = 1048576,
    .max_receive = 16777216,
    .high_water = 65536,
    .max_queue = 262144,
    .soft_queue = 65536,
    .max_object = CODEC_DEFAULT_MAX_SIZE,
    .max_object_items = CODEC_DEFAULT_MAX_ITEMS,
    .soft_queue_seconds = 10,
    .read_timeout = 60,
    .send_timeout = 60,
};

double conn_first_byte_timeout = -1;

/* The settings a connection starts with are shared (copy on write: conn_own_settings) by the
 * connections made while conn_defaults stays the same, instead of a copy in each: 88 bytes less
 * per connection (measured: 2.38 -> 2.28 KiB RSS per idle echo connection at 10,000). A block
 * lives while a connection, or current_settings, holds it. */
struct shared_settings {
    struct conn_settings set;
    unsigned refs;
};

static struct shared_settings *current_settings; /* conn_defaults as of the last conn_new */
/* What a connection whose __gc has run points to: it never changes and is never freed. */
static struct shared_settings released_settings = {.refs = 1};
/* Where settings changed on such a connection go: it is closed for good, so they have no
 * effect, and a copy of its own would leak, as its __gc (which frees it) has already run. */
static struct conn_settings discarded_settings;

void (*conn_on_close)(lua_State *L, const char *reason);
bool conn_access_log;
bool conn_access_log_always;
void (*conn_on_secured)(struct conn *c);

static struct ev_loop *loop;
static lua_State *main_L;
static struct conn *open_head;
static struct conn *flush_head;
static struct conn *soft_head; /* above soft_queue: see soft_list_add */
static ev_timer soft_timer;
/* Closed connections whose on_close hook has not started, oldest first: one job starts them. */
static struct conn *hooks_head, *hooks_tail;
static struct task_job hooks_job;
static size_t open_count;
static uint64_t last_id;

/* What the connection's one ev_io watches for now: EV_READ, EV_WRITE, both or neither. One
 * watcher for both directions instead of one each: 48 bytes less per connection (measured: 2.24
 * -> 2.19 KiB RSS per idle echo connection at 10,000). Changing what it watches restarts it,
 * which libev turns into one epoll_ctl at its next iteration, as it did for a second watcher. */
static int watching(const struct conn *c)
{
    return ev_is_active(&c->io) ? c->io.events & (EV_READ | EV_WRITE) : 0;
}

static void watch(struct conn *c, int events)
{
    if (watching(c) == events)
        return;
    ev_io_stop(loop, &c->io);
    ev_io_modify(&c->io, events);
    if (events != 0)
        ev_io_start(loop, &c->io);
}

/* Checked here, inline: on the echo's path the watcher already watches for what it is told to
 * (a call to watch each time cost 32 instructions per message, cachegrind). */
static inline void watch_start(struct conn *c, int events)
{
    if ((watching(c) & events) != events)
        watch(c, watching(c) | events);
}

static inline void watch_stop(struct conn *c, int events)
{
    if (watching(c) & events)
        watch(c, watching(c) & ~events);
}

static void flush_list_add(struct conn *c)
{
    c->flush_listed = true;
    c->flush_prev = NULL;
    c->flush_next = flush_head;
    if (flush_head != NULL)
        flush_head->flush_prev = c;
    flush_head = c;
}

static void flush_list_remove(struct conn *c)
{
    if (!c->flush_listed)
        return;
    c->flush_listed = false;
    if (c->flush_prev != NULL)
        c->flush_prev->flush_next = c->flush_next;
    else
        flush_head = c->flush_next;
    if (c->flush_next != NULL)
        c->flush_next->flush_prev = c->flush_prev;
}

/* The queue went above soft_queue: the clock starts. The timer is moved earlier when this
 * connection's time runs out before the time it is set for. */
static void soft_list_add(struct conn *c)
{
    double seconds = c->set->soft_queue_seconds;
    c->soft_since = ev_now(loop);
    c->soft_prev = NULL;
    c->soft_next = soft_head;
    if (soft_head != NULL)
        soft_head->soft_prev = c;
    soft_head = c;
    if (ev_is_active(&soft_timer) && ev_timer_remaining(loop, &soft_timer) <= seconds)
        return;
    ev_timer_stop(loop, &soft_timer);
    ev_timer_set(&soft_timer, seconds, 0);
    ev_timer_start(loop, &soft_timer);
}

/* The queue is at or below soft_queue again, or the connection closes. The timer is left to
 * find out that it has less to do. */
static void soft_list_remove(struct conn *c)
{
    if (c->soft_since == 0)
        return;
    c->soft_since = 0;
    if (c->soft_prev != NULL)
        c->soft_prev->soft_next = c->soft_next;
    else
        soft_head = c->soft_next;
    if (c->soft_next != NULL)
        c->soft_next->soft_prev = c->soft_prev;
}

static void open_list_remove(struct conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        open_head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
}

void conn_describe(struct conn *c, char *out, size_t size)
{
    char peer[128];
    net_format(&c->peer.sa, c->peer_len, peer, sizeof peer);
    snprintf(out, size, "conn %llu from %s", (unsigned long long)c->id, peer);
}

/* Sets a deadline (rdeadline or wdeadline) timeout seconds from now, and starts (or shortens)
 * the connection's one timer so that it fires no later than that. The timer is not stopped when
 * the operation completes early: its callback compares the deadlines with the clock and re-arms
 * itself for the earliest one still pending, which is cheaper than a heap update per operation.
 * One timer for both directions instead of one each: 48 bytes less per connection (measured:
 * 2.28 -> 2.24 KiB RSS per idle echo connection at 10,000). */
static void arm(struct conn *c, ev_tstamp *deadline, double timeout)
{
    if (!(timeout >= 0 && timeout <= TASK_MAX_TIMEOUT)) {
        *deadline = 0;
        return;
    }
    ev_tstamp now = ev_now(loop);
    *deadline = now + timeout;
    if (timeout_active(&c->timer) && c->timer.at - now <= timeout)
        return;
    timeout_start(&c->timer, timeout);
}

static void drop_framer(struct conn *c)
{
    object_scanner_free(c->scanner);
    c->scanner = NULL;
}

/* Forgets what the current read found out about the bytes in the buffer. */
static void forget_progress(struct conn *c)
{
    c->read_epoch++;
    c->searched = 0;
    c->answer_found = false;
    drop_framer(c);
}

/* Consumes n bytes of input; the saved progress of a read was about the bytes before. */
static void take_input(struct conn *c, size_t n)
{
    c->read_timed_out = false;
    if (n == 0)
        return;
    buf_consume(&c->in, n);
    forget_progress(c);
}

static void drop_input(struct conn *c)
{
    buf_free(&c->in);
    forget_progress(c);
}

/* A closed connection stays anchored until its on_close hook has its connection in hand, and
 * while its handler runs (the task in it shares the anchor). */
static void release_anchor(struct conn *c)
{
    if (c->hook_pending || c->ref == LUA_NOREF || c->task.ref != LUA_NOREF)
        return;
    luaL_unref(main_L, LUA_REGISTRYINDEX, c->ref);
    c->ref = LUA_NOREF;
}

/* The access log line, or at debug why it closed. A handler that gives up on a silent peer
 * closes the connection itself ("closed"), but the operator's answer is that it timed out. */
static void log_closed(struct conn *c)
{
    enum luasock_log_level level = conn_access_log ? LUASOCK_LOG_INFO : LUASOCK_LOG_DEBUG;
    if (!log_wants(level))
        return;
    char peer[128];
    net_format(&c->peer.sa, c->peer_len, peer, sizeof peer);
    bool gave_up = c->read_timed_out && strcmp(c->close_reason, ERR_CLOSED) == 0;
    log_conn(level, c->id, peer, "conn %llu %s closed (%s) after %.1f s, in %llu B, out %llu B",
             (unsigned long long)c->id, peer, gave_up ? ERR_TIMEOUT : c->close_reason,
             ev_now(loop) - c->opened,
             (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
}

static void close_fd(struct conn *c)
{
    task_disown(&c->res);
    watch(c, 0);
    timeout_stop(&c->timer);
    flush_list_remove(c);
    open_list_remove(c);
    open_count--;
    metrics_core.bytes_in += c->bytes_in;
    metrics_core.bytes_out += c->bytes_out;
    if (c->counted != NULL) {
        c->counted->open--;
        metrics_core.closed[metrics_close_reason(c->close_reason)]++;
        c->counted = NULL;
    }
    if (c->peer_counted)
        peers_release(&c->peer.sa);
    c->peer_counted = false;
    log_closed(c);
    if (c->tls != NULL) {
        SSL_free(c->tls->ssl);
        SSL_CTX_free(c->tls->ctx);
        c->tls->ssl = NULL;
        c->tls->ctx = NULL;
        c->tls->handshaking = false;
    }
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
    buf_free(&c->out);
    /* A woken reader still takes what was read so far as its partial result. */
    if (!c->reading)
        drop_input(c);
    release_anchor(c);
}

/* A read copies bytes out of the input buffer with its first allocation, and consumes them
 * after its last one. Any allocation may run a __gc metamethod, and one that consumes input of
 * this connection meanwhile (a read, a close) makes what the read found stale: the read then
 * raises rather than consume bytes that are no longer the ones it copied. */
static void check_epoch(struct conn *c, lua_State *L, unsigned epoch)
{
    if (c->read_epoch != epoch)
        luaL_error(L, "conn %I was read or closed by a __gc metamethod in the middle of a read",
                   (lua_Integer)c->id);
}

/* Failed reads return what had been read so far, and it is consumed, as in LuaSocket. */
static int push_failure(struct conn *c, lua_State *L, const char *err)
{
    /* Half an object is of no use, and leaving it buffered keeps the stream in step. */
    if (c->req.kind == READ_OBJECT) {
        c->read_timed_out = strcmp(err, ERR_TIMEOUT) == 0;
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    unsigned epoch = c->read_epoch;
    size_t len = buf_len(&c->in);
    lua_pushlstring(L, buf_head(&c->in), len);
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_rotate(L, -3, 2);
    check_epoch(c, L, epoch);
    take_input(c, len);
    c->read_timed_out = strcmp(err, ERR_TIMEOUT) == 0;
    return 3;
}

static void leave_open_state(struct conn *c, const char *reason)
{
    c->state = CONN_CLOSING;
    c->shut_wr = true;
    c->close_reason = reason;
    soft_list_remove(c);
    task_wake_all(&c->reader, reason);
    task_wake_all(&c->writer, reason);
    task_wake_all(&c->drainers, reason);
    /* A TLS client that never completed its handshake was never seen by a handler. */
    if (conn_on_close == NULL || (c->tls != NULL && c->tls->accepting))
        return;
    c->hook_pending = true;
    c->hook_next = NULL;
    if (hooks_tail != NULL)
        hooks_tail->hook_next = c;
    else
        hooks_head = c;
    hooks_tail = c;
    task_defer(&hooks_job);
}

/* Closes at once, dropping queued output: after a reset, a timeout or a write error. */
static void conn_abort(struct conn *c, const char *err)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_OPEN)
        leave_open_state(c, err);
    close_fd(c);
}

static void close_gracefully(struct conn *c, const char *reason);

static void fail(struct conn *c, const char *op, int err)
{
    if (err == EPROTO && c->tls != NULL && c->tls->error[0] != '\0') {
        luasock_log(LUASOCK_LOG_DEBUG, "conn %llu: %s: %s", (unsigned long long)c->id, op,
                    c->tls->error);
        conn_abort(c, c->tls->error);
        return;
    }
    luasock_log(LUASOCK_LOG_DEBUG, "conn %llu: %s: %s (%s)", (unsigned long long)c->id, op,
                errors_string(err), errors_name(err));
    conn_abort(c, errors_string(err));
}

/* The TLS halves of receive_some and send_some are kept out of line, and fill (called from two
 * places) is inlined into read_more: with GCC's own choices, the plaintext echo took 39 more
 * instructions per message than before TLS (cachegrind, bench/run --instructions). */
#define OUT_OF_LINE __attribute__((noinline))
#define IN_LINE inline __attribute__((always_inline))

/* A record layer read: as receive_some. */
static OUT_OF_LINE ssize_t receive_tls(struct conn *c, char *room, size_t space)
{
    size_t got = 0;
    switch (tls_read(c->tls, room, space, &got)) {
    case TLS_OK:
        c->bytes_in += got;
        return (ssize_t)got;
    case TLS_CLOSED:
        return 0;
    case TLS_WANT_WRITE: /* a TLS 1.3 key update to answer: on_writable reads again */
        c->tls->read_wants_write = true;
        watch_start(c, EV_WRITE);
        errno = EAGAIN;
        return -1;
    case TLS_WANT_READ:
        errno = EAGAIN;
        return -1;
    case TLS_FAILED:
        break;
    }
    errno = EPROTO;
    return -1;
}

/* recv(2), or once TLS is up a record layer read: bytes, 0 at the end of the stream, or -1 with
 * errno (EAGAIN; EPROTO for a TLS failure, explained in c->tls->error). */
static IN_LINE ssize_t receive_some(struct conn *c, char *room, size_t space)
{
    if (c->tls != NULL && c->tls->secured)
        return receive_tls(c, room, space);
    ssize_t n;
    do
        n = recv(c->fd, room, space, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->bytes_in += (size_t)n;
    return n;
}

/* A record layer write: as send_some. */
static OUT_OF_LINE ssize_t send_tls(struct conn *c, const char *data, size_t len)
{
    size_t wrote = 0;
    switch (tls_write(c->tls, data, len, &wrote)) {
    case TLS_OK:
        c->bytes_out += wrote;
        return (ssize_t)wrote;
    case TLS_WANT_READ:
        c->tls->write_wants_read = true;
        watch_start(c, EV_READ);
        errno = EAGAIN;
        return -1;
    case TLS_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case TLS_CLOSED:
        errno = EPIPE;
        return -1;
    case TLS_FAILED:
        break;
    }
    errno = EPROTO;
    return -1;
}

/* send(2), or once TLS is up a record layer write; as receive_some. */
static IN_LINE ssize_t send_some(struct conn *c, const char *data, size_t len)
{
    if (c->tls != NULL && c->tls->secured)
        return send_tls(c, data, len);
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n > 0)
        c->bytes_out += (size_t)n;
    return n;
}

/* fill: the input buffer may not grow (buf.h, max_buffers). */
#define OVER_BUDGET (-1)

/* How much room to make before reading: enough for a good gulp, but no more than a count read
 * still lacks, so that a buffer filling up to N bytes does not double past N for its last few. */
static size_t read_room(const struct conn *c)
{
    size_t room = BUF_CHUNK / 4, len = buf_len(&c->in);
    if (c->req.kind == READ_COUNT && c->req.count > len && c->req.count - len < room)
        room = c->req.count - len;
    return room;
}

/* Reads once into the input buffer. Returns 0 when bytes or end of stream arrived, EAGAIN when
 * there was nothing, OVER_BUDGET, or the errno of a failure. */
static IN_LINE int fill(struct conn *c)
{
    char *room = buf_reserve(&c->in, read_room(c));
    if (room == NULL)
        return errno == ENOBUFS ? OVER_BUDGET : ENOMEM;
    size_t space = c->in.cap - c->in.end;
    ssize_t n = receive_some(c, room, space);
    if (n > 0) {
        buf_commit(&c->in, (size_t)n);
        c->heard_from = true;
        /* A short read means the kernel had no more: skip the read that would say EAGAIN. The
         * socket does not signal records that OpenSSL has already taken in. */
        c->readable = (size_t)n == space ||
                      (c->tls != NULL && c->tls->secured && tls_pending(c->tls));
        return 0;
    }
    int err = n == 0 ? 0 : errno;
    if (buf_len(&c->in) == 0)
        buf_free(&c->in);
    c->readable = false;
    if (n == 0) {
        c->eof = true;
        return 0;
    }
    return err == EWOULDBLOCK ? EAGAIN : err;
}

/* The prefix string lives on the reader's stack, whatever a nested read does to c->prefix. */
static void push_data(struct conn *c, lua_State *L, size_t len)
{
    const char *prefix = c->prefix;
    size_t prefix_len = c->prefix_len;
    lua_pushlstring(L, buf_head(&c->in), len);
    if (prefix_len > 0) {
        lua_pushlstring(L, prefix, prefix_len);
        lua_rotate(L, -2, 1);
        lua_concat(L, 2);
    }
}

/* Drops the rest of an over-long line or record. Returns true once its delimiter is gone. Out of
 * line, so that scan_pattern saves no registers for this rare case: 9 fewer instructions per
 * echoed message and per pipelined line (cachegrind). */
static OUT_OF_LINE bool skip_rest(struct conn *c)
{
    bool found;
    take_input(c, read_skip(&c->req, buf_head(&c->in), buf_len(&c->in), &found));
    if (found)
        c->skipping = false;
    return found;
}

/* Where the pattern's answer is in the buffer (c->answer): READ_MORE until it is there. Once
 * found, it stays found until the buffer is consumed, so the reader that an event callback
 * resumes does not look for it again. */
static enum read_status scan_pattern(struct conn *c)
{
    if (c->answer_found)
        return (enum read_status)c->answer_status;
    if (c->skipping && !skip_rest(c))
        return READ_MORE;
    enum read_status status = read_scan(&c->req, buf_head(&c->in), buf_len(&c->in), c->eof,
                                        &c->searched, &c->answer);
    c->answer_status = (unsigned char)status;
    c->answer_found = status != READ_MORE;
    return status;
}

/* How far the object read has got. The framer keeps its progress between arrivals, and its
 * answer once it has one, so asking again costs nothing. */
static enum codec_status scan_object(struct conn *c, size_t *frame_len, const char **err)
{
    bool json = c->set->object_codec == OBJECT_JSON;
    struct codec_limits limits = {json ? c->set->max_line : c->set->max_object,
                                  CODEC_DEFAULT_MAX_DEPTH, c->set->max_object_items};
    /* The scanner lives only while a value is incomplete: idle connections do not pay for it. */
    if (c->scanner == NULL && (c->scanner = object_scanner_new(c->set->object_codec)) == NULL) {
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    return object_scan(c->scanner, buf_head(&c->in), buf_len(&c->in), &limits, frame_len, err);
}

/* Whether the current read can return now, with data or an error. */
static bool answer_ready(struct conn *c)
{
    if (c->state != CONN_OPEN || c->eof)
        return true;
    if (c->req.kind == READ_OBJECT) {
        size_t frame_len;
        const char *err;
        return scan_object(c, &frame_len, &err) != CODEC_MORE;
    }
    return scan_pattern(c) != READ_MORE;
}

/* The read needs more buffer than the process has left (max_buffers): this connection is closed,
 * the others keep theirs. Its input is dropped, not handed to the reader as its partial result:
 * that would only move the memory into Lua. */
static void over_budget(struct conn *c)
{
    luasock_log(LUASOCK_LOG_WARN, "conn %llu: closed: its input (%zu bytes) cannot grow: the "
                "buffers of all connections hold %zu bytes (max_buffers %zu)",
                (unsigned long long)c->id, buf_len(&c->in), buf_in_use(), buf_budget());
    drop_input(c);
    close_gracefully(c, ERR_NO_BUFFERS);
}

/* Reads the socket into the buffer until the current read can return, or the socket has
 * nothing more. Pure C: event callbacks use it to decide whether to resume the reader. */
static bool read_more(struct conn *c)
{
    for (;;) {
        int err = fill(c);
        if (err == EAGAIN)
            return false;
        if (err == OVER_BUDGET) {
            over_budget(c);
            return true;
        }
        if (err != 0) {
            fail(c, "read", err);
            return true;
        }
        if (answer_ready(c))
            return true;
        if (!c->readable)
            return false;
    }
}

static int push_too_long(struct conn *c, lua_State *L, struct read_span span)
{
    unsigned epoch = c->read_epoch;
    bool all = c->req.kind == READ_ALL;
    lua_pushlstring(L, buf_head(&c->in), span.len);
    lua_pushnil(L);
    lua_pushstring(L, all ? ERR_TOO_LARGE : ERR_LINE_TOO_LONG);
    lua_rotate(L, -3, 2);
    check_epoch(c, L, epoch);
    take_input(c, span.consumed);
    if (all)
        close_gracefully(c, ERR_TOO_LARGE);
    else
        c->skipping = span.skip_rest;
    return 3;
}

/* Takes what a pattern asks for from the buffer: returns the number of results pushed, or 0
 * when it is not there (end of stream). Pushing comes before consuming, so a memory error
 * loses no input. */
static int take_pattern(struct conn *c, lua_State *L)
{
    unsigned epoch = c->read_epoch;
    enum read_status status = scan_pattern(c);
    struct read_span answer = c->answer; /* a nested read may scan for its own */
    switch (status) {
    case READ_DONE:
        push_data(c, L, answer.len);
        check_epoch(c, L, epoch);
        take_input(c, answer.consumed);
        return 1;
    case READ_TOO_LONG:
        return push_too_long(c, L, answer);
    case READ_MORE:
        break;
    }
    return 0;
}

/* Takes one value from the buffer, decoding it on the reader's own thread. Bytes that are not
 * one close the connection: MessagePack and pickle can never be resynced. A JSON line that is
 * not JSON is skipped instead when the script asked for that (json_errors = "return"). */
static int take_object(struct conn *c, lua_State *L)
{
    size_t frame_len;
    const char *err;
    bool recoverable = false;
    enum codec_status status = scan_object(c, &frame_len, &err);
    if (status == CODEC_MORE)
        return 0;
    if (status == CODEC_OK) {
        /* Decoded from a copy: decoding allocates, so a __gc metamethod may change the buffer
         * under it. The value stays buffered until it has decoded. */
        unsigned epoch = c->read_epoch;
        const char *frame = lua_pushlstring(L, buf_head(&c->in), frame_len);
        status = object_decode(L, c->set->object_codec, frame, frame_len, c->set->exact_objects,
                               &err, &recoverable);
        check_epoch(c, L, epoch);
        lua_remove(L, status == CODEC_OK ? -2 : -1);
        if (status == CODEC_OK || (recoverable && c->set->keep_bad_json)) {
            take_input(c, frame_len);
            if (status == CODEC_OK)
                return 1;
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
    }
    drop_framer(c);
    lua_pushnil(L);
    lua_pushstring(L, err);
    luasock_log(LUASOCK_LOG_INFO, "conn %llu: bad object from the peer: %s",
                (unsigned long long)c->id, err);
    close_gracefully(c, err);
    return 2;
}

/* The current read's results, or -1 when they are not there yet (they are once read_more
 * said so). */
static int take(struct conn *c, lua_State *L)
{
    if (c->state != CONN_OPEN)
        return push_failure(c, L, c->close_reason);
    int n = c->req.kind == READ_OBJECT ? take_object(c, L) : take_pattern(c, L);
    if (n > 0)
        return n;
    return c->eof ? push_failure(c, L, ERR_CLOSED) : -1;
}

static int wait_read(struct conn *c, lua_State *L);

static int read_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct conn *c = (struct conn *)ctx;
    const char *failure = task_failure(L);
    c->reading = false;
    if (failure != NULL)
        return push_failure(c, L, failure);
    /* Resumed by on_readable, which found the answer there. */
    int n = take(c, L);
    return n >= 0 ? n : wait_read(c, L);
}

/* Suspends the reader (it can wait) until the read can complete, fails or times out. */
static int wait_read(struct conn *c, lua_State *L)
{
    c->reading = true;
    watch_start(c, EV_READ);
    double timeout = c->set->read_timeout;
    if (!c->heard_from && conn_first_byte_timeout >= 0 &&
        (timeout < 0 || conn_first_byte_timeout < timeout))
        timeout = conn_first_byte_timeout;
    arm(c, &c->rdeadline, timeout);
    return task_wait(L, &c->reader, -1, read_resumed, (lua_KContext)c);
}

int conn_read(struct conn *c, lua_State *L, const char *what)
{
    if (c->state != CONN_OPEN)
        return push_failure(c, L, ERR_CLOSED);
    /* The count may come from the peer (a length prefix): refused before a byte is buffered.
     * Nothing is consumed, so the stream stays in step. */
    if (c->req.kind == READ_COUNT && c->req.count > c->set->max_receive) {
        lua_pushnil(L);
        lua_pushstring(L, ERR_TOO_LARGE);
        lua_pushliteral(L, "");
        return 3;
    }
    c->searched = 0;
    c->answer_found = false;
    if (c->req.kind != READ_LINE && c->req.kind != READ_UNTIL)
        c->skipping = false;
    /* An empty buffer answers nothing but a count of 0 (and end of stream): skip looking. */
    bool look = buf_len(&c->in) > 0 || c->eof || (c->req.kind == READ_COUNT && c->req.count == 0);
    int n = look ? take(c, L) : -1;
    if (n < 0 && c->readable && read_more(c))
        n = take(c, L);
    if (n >= 0)
        return n;
    if (c->set->read_timeout == 0)
        return push_failure(c, L, ERR_TIMEOUT);
    task_check_wait(L, what);
    return wait_read(c, L);
}

static void linger_drain(struct conn *c)
{
    static char discard[65536];
    ssize_t n;
    while ((n = read(c->fd, discard, sizeof discard)) > 0)
        c->bytes_in += (size_t)n; /* dropped, but received */
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        close_fd(c);
}

static void write_and_settle(struct conn *c);

/* Accepted connections whose handshake failed: one line at info per HANDSHAKE_REPORT_SECONDS
 * (with how many failed since the last), every one at debug, so that a flood of scanners or of
 * plaintext clients cannot fill the log. */
#define HANDSHAKE_REPORT_SECONDS 10.0

static void log_handshake_failure(struct conn *c)
{
    static ev_tstamp quiet_until;
    static unsigned long unreported;
    char peer[128];
    net_format(&c->peer.sa, c->peer_len, peer, sizeof peer);
    const char *why = c->tls->error;
    if (strncmp(why, "tls: ", 5) == 0)
        why += 5;
    ev_tstamp now = ev_now(loop);
    if (now < quiet_until) {
        unreported++;
        luasock_log(LUASOCK_LOG_DEBUG, "conn %llu %s: tls handshake failed: %s",
                    (unsigned long long)c->id, peer, why);
        return;
    }
    if (unreported > 0)
        luasock_log(LUASOCK_LOG_INFO, "conn %llu %s: tls handshake failed: %s (and %lu more "
                    "since the last report, logged at debug)", (unsigned long long)c->id, peer,
                    why, unreported);
    else
        luasock_log(LUASOCK_LOG_INFO, "conn %llu %s: tls handshake failed: %s",
                    (unsigned long long)c->id, peer, why);
    unreported = 0;
    quiet_until = now + HANDSHAKE_REPORT_SECONDS;
}

/* c->tls->error says why. A task waiting in starttls is woken with it. */
static void handshake_failed(struct conn *c)
{
    c->tls->handshaking = false;
    c->tls->broken = true;
    if (c->tls->accepting)
        log_handshake_failure(c);
    conn_abort(c, c->tls->error);
}

static void handshake_done(struct conn *c)
{
    struct conn_tls *t = c->tls;
    t->handshaking = false;
    t->secured = true;
    c->readable = true; /* the peer's first data may have come with its last handshake record */
    watch(c, 0);
    if (buf_len(&c->out) > 0)
        conn_queued(c);
    if (t->accepting) {
        t->accepting = false;
        conn_on_secured(c);
    } else {
        task_resume_first(&c->writer, NULL);
    }
}

/* starttls: what was queued before it goes out in plaintext, ahead of the handshake. Returns 0,
 * EAGAIN, or the errno of a failure. */
static int send_plaintext_left(struct conn *c)
{
    struct conn_tls *t = c->tls;
    while (t->plain_left > 0) {
        ssize_t n = send(c->fd, buf_head(&c->out), t->plain_left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EWOULDBLOCK ? EAGAIN : errno;
        buf_consume(&c->out, (size_t)n);
        t->plain_left -= (size_t)n;
        c->bytes_out += (size_t)n;
    }
    return 0;
}

/* Takes the handshake as far as the socket allows, and watches the socket it waits for. */
/* The largest record a ClientHello may come in, with its header: bigger is not TLS. */
#define TLS_MAX_RECORD (5 + 16384 + 2048)

/* Whether the client's first record is all in the input buffer (or what is there is not a
 * handshake record, for OpenSSL to refuse). An SSL that has begun a handshake holds about 40 KiB
 * of buffers: a connection that sends nothing, or trickles its ClientHello, costs only its own
 * input buffer until then. Returns 1 (ready), 0 (wait) or -1 (failed, error set). */
static int first_record_in(struct conn *c)
{
    int err = fill(c);
    if (err == EAGAIN)
        return 0;
    if (err == OVER_BUDGET || (err == 0 && c->eof)) {
        snprintf(c->tls->error, sizeof c->tls->error, "%s",
                 c->eof ? "tls: the peer closed the connection during the handshake"
                        : ERR_NO_BUFFERS);
        return -1;
    }
    if (err != 0) {
        snprintf(c->tls->error, sizeof c->tls->error, "%s", errors_string(err));
        return -1;
    }
    const unsigned char *head = (const unsigned char *)buf_head(&c->in);
    size_t len = buf_len(&c->in);
    if (head[0] != 0x16)
        return 1;
    if (len < 5)
        return 0;
    size_t record = 5 + ((size_t)head[3] << 8 | head[4]);
    return len >= record || record > TLS_MAX_RECORD ? 1 : 0;
}

/* An accepted connection's SSL, once its first record is in: it reads that from a copy. */
static bool make_server_ssl(struct conn *c)
{
    struct conn_tls *t = c->tls;
    int ready = first_record_in(c);
    if (ready <= 0) {
        if (ready < 0)
            handshake_failed(c);
        return false;
    }
    t->ssl = tls_new_with_input(t->ctx, c->fd, buf_head(&c->in), buf_len(&c->in));
    SSL_CTX_free(t->ctx);
    t->ctx = NULL;
    drop_input(c);
    if (t->ssl == NULL) {
        snprintf(t->error, sizeof t->error, "tls: %s", ERR_NO_MEMORY);
        handshake_failed(c);
        return false;
    }
    return true;
}

static void handshake_step(struct conn *c)
{
    struct conn_tls *t = c->tls;
    if (t->ssl == NULL && !make_server_ssl(c))
        return;
    int err = send_plaintext_left(c);
    if (err == EAGAIN) {
        watch_start(c, EV_WRITE);
        return;
    }
    if (err != 0) {
        snprintf(t->error, sizeof t->error, "%s", errors_string(err));
        handshake_failed(c);
        return;
    }
    enum tls_status status;
    while ((status = tls_handshake(t)) == TLS_WANT_READ && tls_read_socket(t->ssl, c->fd))
        ;
    switch (status) {
    case TLS_OK:
        tls_read_socket(t->ssl, c->fd);
        handshake_done(c);
        return;
    case TLS_WANT_READ:
        watch(c, EV_READ);
        return;
    case TLS_WANT_WRITE:
        watch_start(c, EV_WRITE);
        return;
    case TLS_CLOSED:
    case TLS_FAILED:
        handshake_failed(c);
        return;
    }
}

static struct conn_tls *new_tls(struct conn *c, SSL *ssl)
{
    struct conn_tls *t = calloc(1, sizeof *t);
    if (t == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    t->ssl = ssl;
    t->handshaking = true;
    c->tls = t;
    return t;
}

int conn_accept_tls(struct conn *c, SSL_CTX *ctx)
{
    struct conn_tls *t = new_tls(c, NULL);
    if (t == NULL)
        return -1;
    t->accepting = true;
    SSL_CTX_up_ref(ctx);
    t->ctx = ctx;
    double timeout = conn_first_byte_timeout >= 0 ? conn_first_byte_timeout : c->set->read_timeout;
    arm(c, &c->rdeadline, timeout);
    watch_start(c, EV_READ);
    return 0;
}

static int starttls_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct conn *c = (struct conn *)ctx;
    const char *failure = task_failure(L);
    if (failure == NULL) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (strcmp(failure, ERR_TIMEOUT) == 0 && c->state == CONN_OPEN) {
        snprintf(c->tls->error, sizeof c->tls->error, "tls handshake timeout");
        c->tls->handshaking = false;
        c->tls->broken = true;
        conn_abort(c, c->tls->error);
        failure = c->tls->error;
    }
    lua_pushnil(L);
    lua_pushstring(L, failure);
    return 2;
}

int conn_handshake(struct conn *c, lua_State *L, SSL *ssl, double timeout)
{
    struct conn_tls *t = new_tls(c, ssl);
    if (t == NULL) {
        conn_abort(c, ERR_NO_MEMORY);
        lua_pushnil(L);
        lua_pushstring(L, ERR_NO_MEMORY);
        return 2;
    }
    t->plain_left = buf_len(&c->out);
    c->rdeadline = 0; /* the read timer must not take the handshake for a read */
    flush_list_remove(c);
    handshake_step(c);
    if (!t->handshaking) {
        if (t->secured) {
            lua_pushboolean(L, 1);
            return 1;
        }
        lua_pushnil(L);
        lua_pushstring(L, t->error);
        return 2;
    }
    return task_wait(L, &c->writer, timeout, starttls_resumed, (lua_KContext)c);
}

/* A parked connection became readable: fine if that was only TLS's own records (a late
 * session ticket); anything else (data, the end, an error) means it cannot be reused. */
static void parked_readable(struct conn *c)
{
    int err = fill(c);
    if (err == EAGAIN && buf_len(&c->in) == 0)
        return;
    conn_abort(c, ERR_CLOSED);
}

/* The socket is readable. May resume a task, as its last step. Inlined into on_io, where libev
 * used to call it directly. */
static IN_LINE void on_readable(struct conn *c)
{
    c->readable = true;
    if (c->state == CONN_CLOSING) {
        linger_drain(c);
        return;
    }
    if (c->parked) {
        parked_readable(c);
        return;
    }
    if (c->tls != NULL) {
        if (c->tls->handshaking) {
            handshake_step(c);
            return;
        }
        if (c->tls->write_wants_read) {
            c->tls->write_wants_read = false;
            write_and_settle(c);
            if (c->state != CONN_OPEN)
                return;
        }
    }
    if (task_waiters_empty(&c->reader)) {
        if (c->tls == NULL || !c->tls->write_wants_read)
            watch_stop(c, EV_READ);
        return;
    }
    /* A read error closes c and wakes the reader on its own. */
    if (read_more(c))
        task_resume_first(&c->reader, NULL);
}

/* Whether rdeadline is the deadline of something that waits: a read, a parked connection's idle
 * time, or an accepted TLS connection's handshake. */
static bool read_deadline_counts(struct conn *c)
{
    if (c->parked || (c->tls != NULL && c->tls->handshaking))
        return true;
    return !task_waiters_empty(&c->reader);
}

/* rdeadline has passed. */
static void read_timed_out(struct conn *c)
{
    if (c->parked) {
        conn_close(c);
    } else if (c->tls != NULL && c->tls->handshaking) {
        snprintf(c->tls->error, sizeof c->tls->error, "tls handshake timeout");
        handshake_failed(c);
    } else {
        task_resume_first(&c->reader, ERR_TIMEOUT);
    }
}

/* A closing connection's timer is its send timeout while output is left, then its linger time. */
static void closing_timed_out(struct conn *c)
{
    if (buf_len(&c->out) > 0) {
        luasock_log(LUASOCK_LOG_INFO, "conn %llu: closed with %zu bytes undelivered: send timeout",
                    (unsigned long long)c->id, buf_len(&c->out));
        conn_abort(c, ERR_TIMEOUT);
        return;
    }
    close_fd(c); /* the peer never sent its FIN */
}

/* A waiting send whose deadline has passed aborts the connection (its reader, if any, is woken
 * with "timeout" too); a read whose deadline has passed ends in a timeout. The timer is set again
 * for the deadline still pending, before the reader is resumed (as the last step). */
static void on_timer(struct timeout *w)
{
    struct conn *c = container_of(w, struct conn, timer);
    if (c->state == CONN_CLOSING) {
        closing_timed_out(c);
        return;
    }
    ev_tstamp now = ev_now(loop);
    ev_tstamp rdeadline = read_deadline_counts(c) ? c->rdeadline : 0;
    ev_tstamp wdeadline = task_waiters_empty(&c->writer) ? 0 : c->wdeadline;
    if (wdeadline != 0 && wdeadline <= now) {
        conn_abort(c, ERR_TIMEOUT);
        return;
    }
    bool read_due = rdeadline != 0 && rdeadline <= now;
    ev_tstamp next = read_due ? 0 : rdeadline;
    if (wdeadline != 0 && (next == 0 || wdeadline < next))
        next = wdeadline;
    if (next != 0)
        timeout_start(&c->timer, next - now);
    if (read_due)
        read_timed_out(c);
}

/* No more output: TLS says so first with its close_notify, then TCP with its FIN. */
static void send_fin(struct conn *c)
{
    if (c->tls != NULL)
        tls_close_notify(c->tls);
    shutdown(c->fd, SHUT_WR);
}

/* Output is delivered: finish a shutdown or a close that was waiting for it. */
static void drained(struct conn *c)
{
    watch_stop(c, EV_WRITE);
    if (c->state == CONN_OPEN) {
        if (c->shut_wr)
            send_fin(c);
        return;
    }
    timeout_stop(&c->timer);
    if (c->eof) {
        close_fd(c);
        return;
    }
    send_fin(c);
    if (!c->reading)
        drop_input(c);
    watch_start(c, EV_READ);
    timeout_start(&c->timer, LINGER_SECONDS);
}

/* Sends what is queued. Returns 0 (all of it sent, or the socket is full) or an errno. */
static int write_out(struct conn *c)
{
    while (buf_len(&c->out) > 0) {
        size_t len = buf_len(&c->out);
        ssize_t n = send_some(c, buf_head(&c->out), len);
        if (n >= 0) {
            buf_consume(&c->out, (size_t)n);
            /* The socket is full; a second try would only say EAGAIN. A TLS write may stop
             * after each record. */
            if ((size_t)n < len && c->tls == NULL)
                return 0;
        } else if (errno != EINTR) {
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
        }
    }
    return 0;
}

/* After a write of written bytes: keeps what tells how much the peer took since its queue began
 * to back up (see peer_reads), and stops the soft_queue clock once the queue is back at or below
 * the mark. */
static void note_written(struct conn *c, size_t written)
{
    size_t left = buf_len(&c->out);
    if (left == 0) {
        c->backlogged = false;
    } else if (!c->backlogged) {
        c->backlogged = true;
        c->backlog_sent = 0;
        c->backlog_unacked = net_unacked(c->fd);
    } else {
        c->backlog_sent += written;
    }
    if (left <= c->set->soft_queue)
        soft_list_remove(c);
}

/* Writes, lets the waiting senders and drainers go on once the queue is below their marks, and
 * settles a close or shutdown that waited for the output. Never runs Lua code. */
static void write_and_settle(struct conn *c)
{
    if (c->tls != NULL && c->tls->handshaking)
        return; /* the handshake sends what is queued once it is done */
    size_t before = buf_len(&c->out);
    int err = write_out(c);
    if (err != 0) {
        fail(c, "write", err);
        return;
    }
    note_written(c, before - buf_len(&c->out));
    if (!task_waiters_empty(&c->writer) && buf_len(&c->out) <= c->set->high_water)
        task_wake_all(&c->writer, NULL);
    /* Drainers whose own mark is lower wait again (drain_mark is the highest of them). */
    if (!task_waiters_empty(&c->drainers) && buf_len(&c->out) <= c->drain_mark) {
        c->drain_mark = 0;
        task_wake_all(&c->drainers, NULL);
    }
    if (buf_len(&c->out) == 0)
        drained(c);
    else if (c->tls == NULL || !c->tls->write_wants_read)
        watch_start(c, EV_WRITE);
}

/* The connect finished: the waiting task gets the connection, or nil and the error. */
static void connected(struct conn *c, int err)
{
    watch_stop(c, EV_WRITE);
    if (err != 0) {
        close_fd(c);
        task_resume_first(&c->writer, errors_string(err));
        return;
    }
    c->state = CONN_OPEN;
    task_resume_first(&c->writer, NULL);
}

/* The socket is writable. Returns true if c can still be used: false once a task may have
 * been resumed (then as the last step), or the step took care of reading too. */
static bool on_writable(struct conn *c)
{
    if (c->tls != NULL && c->state == CONN_OPEN) {
        if (c->tls->handshaking) {
            handshake_step(c);
            return false;
        }
        if (c->tls->read_wants_write) {
            c->tls->read_wants_write = false;
            if (buf_len(&c->out) == 0)
                watch_stop(c, EV_WRITE);
            on_readable(c);
            return false;
        }
    }
    if (c->state != CONN_CONNECTING) {
        write_and_settle(c);
        return true;
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    connected(c, err);
    return false;
}

/* Writing first, since it never runs Lua code; then reading, if c still watches for it. */
static void on_io(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    struct conn *c = container_of(w, struct conn, io);
    if ((revents & EV_WRITE) && !on_writable(c))
        return;
    if ((revents & EV_READ) && (watching(c) & EV_READ))
        on_readable(c);
}

static int connect_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct conn *c = (struct conn *)ctx;
    const char *failure = task_failure(L);
    if (failure == NULL) {
        conn_push(L, c);
        return 1;
    }
    if (c->state == CONN_CONNECTING)
        close_fd(c); /* timed out */
    lua_pushnil(L);
    lua_pushstring(L, failure);
    return 2;
}

int conn_wait_connect(struct conn *c, lua_State *L, double timeout)
{
    c->state = CONN_CONNECTING;
    watch_start(c, EV_WRITE);
    return task_wait(L, &c->writer, timeout, connect_resumed, (lua_KContext)c);
}

/* Bytes were added to the output buffer: have them flushed when the loop is about to wait.
 * While the watcher watches for writing, the socket is full and it will write them. */
void conn_queued(struct conn *c)
{
    if (!c->flush_listed && !(watching(c) & EV_WRITE))
        flush_list_add(c);
}

int conn_queue_object(struct conn *c, lua_State *L, int idx, const char **err)
{
    struct codec_limits limits = {.max_size = c->set->max_object,
                                  .max_depth = CODEC_DEFAULT_MAX_DEPTH};
    if (object_encode(L, c->set->object_codec, idx, &c->out, &limits, err) != CODEC_OK)
        return -1;
    conn_queued(c);
    return 0;
}

void conn_set_object_codec(struct conn *c, lua_State *L, enum object_codec codec)
{
    struct conn_settings *set = conn_own_settings(c, L);
    if (set->object_codec != codec)
        drop_framer(c);
    set->object_codec = codec;
}

static int send_resumed(lua_State *L, int status, lua_KContext accepted)
{
    (void)status;
    const char *failure = task_failure(L);
    if (failure != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, failure);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)accepted);
    return 1;
}

int conn_after_send(struct conn *c, lua_State *L, size_t before, const char *what)
{
    size_t accepted = buf_len(&c->out) - before;
    if (buf_len(&c->out) <= c->set->high_water) {
        lua_pushinteger(L, (lua_Integer)accepted);
        return 1;
    }
    bool busy = !task_waiters_empty(&c->writer);
    if (busy || !task_can_wait(L)) {
        buf_truncate(&c->out, before);
        if (busy)
            return luaL_error(L, "conn %I: another coroutine is already waiting to send",
                              (lua_Integer)c->id);
        task_check_wait(L, what);
    }
    arm(c, &c->wdeadline, c->set->send_timeout);
    return task_wait(L, &c->writer, -1, send_resumed, (lua_KContext)accepted);
}

void conn_flush_all(void)
{
    struct conn *c;
    while ((c = flush_head) != NULL) {
        flush_list_remove(c);
        write_and_settle(c);
    }
}

/* Queued output is still delivered; then the socket is shut down and closed. */
static void close_gracefully(struct conn *c, const char *reason)
{
    if (c->state != CONN_OPEN)
        return;
    leave_open_state(c, reason);
    /* What was queued for a handshake that did not complete must never leave in plaintext. */
    if (c->tls != NULL && !c->tls->secured)
        buf_free(&c->out);
    watch_stop(c, EV_READ);
    timeout_stop(&c->timer);
    if (buf_len(&c->out) == 0) {
        drained(c);
        return;
    }
    if (c->set->send_timeout >= 0)
        timeout_start(&c->timer, c->set->send_timeout);
}

void conn_close(struct conn *c)
{
    close_gracefully(c, ERR_CLOSED);
}

void conn_shutdown(struct conn *c, int how)
{
    if (how != SHUT_WR) {
        shutdown(c->fd, SHUT_RD);
        c->eof = true;
        drop_input(c);
    }
    if (how != SHUT_RD) {
        c->shut_wr = true;
        if (buf_len(&c->out) == 0)
            send_fin(c);
    }
}

/* A peer is "not reading" when it took next to nothing since its queue began to back up: at most
 * what its kernel may still take in on its own (a chunk's worth, as seen on loopback). What it
 * took is asked of the kernel: the socket is written to only once a good part of its send
 * buffer is free, which a slow reader may take seconds to free, so counting the bytes written
 * alone would call it a non-reader. */
static bool peer_reads(const struct conn *c)
{
    return c->backlogged && c->backlog_unacked + c->backlog_sent > net_unacked(c->fd) + BUF_CHUNK;
}

int conn_check_queue(struct conn *c)
{
    size_t queued = buf_len(&c->out);
    if (queued > c->set->soft_queue && c->soft_since == 0 && c->set->soft_queue_seconds >= 0)
        soft_list_add(c);
    if (queued <= c->set->max_queue)
        return 0;
    unsigned long long id = c->id;
    if (!c->backlogged) /* the last write took everything: this is one burst */
        luasock_log(LUASOCK_LOG_WARN, "conn %llu: disconnected: %zu bytes queued at once, over "
                    "max_queue %zu, before the peer could take them", id, queued,
                    c->set->max_queue);
    else if (peer_reads(c))
        luasock_log(LUASOCK_LOG_WARN, "conn %llu: disconnected: the peer is reading too slowly: "
                    "%zu bytes queued, over max_queue %zu", id, queued, c->set->max_queue);
    else
        luasock_log(LUASOCK_LOG_WARN, "conn %llu: disconnected: the peer is not reading and %zu "
                    "bytes are queued (max_queue %zu)", id, queued, c->set->max_queue);
    conn_abort(c, ERR_OVERFLOW);
    return -1;
}

/* Drops the connections whose queue has stayed above soft_queue for soft_queue_seconds, and
 * sets the timer for the next one whose time will run out. */
static void on_soft_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    ev_tstamp now = ev_now(loop), next = 0;
    struct conn *c, *following;
    for (c = soft_head; c != NULL; c = following) {
        following = c->soft_next;
        ev_tstamp deadline = c->soft_since + c->set->soft_queue_seconds;
        if (buf_len(&c->out) <= c->set->soft_queue) {
            soft_list_remove(c); /* the mark was raised with setoption */
        } else if (deadline <= now) {
            luasock_log(LUASOCK_LOG_WARN, "conn %llu: disconnected: the peer is %s: %zu bytes "
                        "queued for more than %g s (soft_queue %zu)", (unsigned long long)c->id,
                        peer_reads(c) ? "reading too slowly" : "not reading", buf_len(&c->out),
                        c->set->soft_queue_seconds, c->set->soft_queue);
            conn_abort(c, ERR_OVERFLOW);
        } else if (next == 0 || deadline < next) {
            next = deadline;
        }
    }
    if (next != 0) {
        ev_timer_set(w, next - now, 0);
        ev_timer_start(loop, w);
    }
}

int conn_wait_drain(struct conn *c, lua_State *L, size_t mark, double timeout, lua_KFunction k)
{
    if (mark > c->drain_mark || task_waiters_empty(&c->drainers))
        c->drain_mark = mark;
    return task_wait(L, &c->drainers, timeout, k, (lua_KContext)c);
}

const char *conn_park(struct conn *c, double timeout)
{
    if (c->state != CONN_OPEN || c->eof || c->shut_wr)
        return ERR_CLOSED;
    if (!c->outgoing)
        return "not an outgoing connection";
    if (c->reading || !task_waiters_empty(&c->writer) || !task_waiters_empty(&c->drainers))
        return "connection in use by another coroutine";
    if (c->tls != NULL && !c->tls->secured)
        return "tls handshake in progress";
    if (buf_len(&c->in) > 0)
        return "unread data in buffer";
    c->parked = true;
    task_disown(&c->res);
    arm(c, &c->rdeadline, timeout);
    watch_start(c, EV_READ);
    return NULL;
}

bool conn_unpark(struct conn *c, struct task *t)
{
    if (!c->parked || c->state != CONN_OPEN)
        return false;
    c->parked = false;
    c->reused++;
    c->rdeadline = 0;
    task_own(t, &c->res);
    return true;
}

void conn_push(lua_State *L, struct conn *c)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
}

void conn_interrupt_waits(const char *err)
{
    /* Reads from clients only: the outgoing connections (to Redis, to an upstream) are what the
     * handlers may need to finish their work and say goodbye. A drain would wait for a peer's
     * pace, maybe past the grace period. */
    for (struct conn *c = open_head; c != NULL; c = c->next) {
        if (!c->outgoing)
            task_wake_first(&c->reader, err);
        task_wake_all(&c->drainers, err);
    }
}

void conn_finish_closing(void)
{
    for (;;) {
        struct conn *c = open_head;
        while (c != NULL && c->state != CONN_CLOSING)
            c = c->next;
        if (c == NULL)
            return;
        ev_run(loop, EVRUN_ONCE);
    }
}

void conn_close_all(void)
{
    conn_on_close = NULL; /* shutting down: nothing would run the hooks */
    while (open_head != NULL)
        conn_abort(open_head, ERR_CLOSED);
    ev_timer_stop(loop, &soft_timer);
}

size_t conn_count(void)
{
    return open_count;
}

void conn_add_open_bytes(uint64_t *in, uint64_t *out)
{
    for (struct conn *c = open_head; c != NULL; c = c->next) {
        *in += c->bytes_in;
        *out += c->bytes_out;
    }
}

/* Starts the on_close hooks of the connections that closed since the last step. With each
 * connection in hand on the main thread's stack, its anchor can go; then its hook. Should one
 * raise (out of memory), the job runs again for the others on the next step. */
static void run_close_hooks(lua_State *L, struct task_job *job)
{
    struct conn *c;
    while ((c = hooks_head) != NULL) {
        hooks_head = c->hook_next;
        if (hooks_head == NULL)
            hooks_tail = NULL;
        else
            task_defer(job);
        c->hook_pending = false;
        conn_push(L, c);
        if (c->state == CONN_CLOSED)
            release_anchor(c);
        if (conn_on_close != NULL)
            conn_on_close(L, c->close_reason);
        lua_pop(L, 1);
    }
}

static void resource_close(struct task_resource *r)
{
    conn_close(container_of(r, struct conn, res));
}

static void resource_describe(struct task_resource *r, char *out, size_t size)
{
    conn_describe(container_of(r, struct conn, res), out, size);
}

static void resource_task_ended(struct task_resource *r)
{
    struct conn *c = container_of(r, struct conn, res);
    if (c->state == CONN_CLOSED)
        release_anchor(c);
}

static const struct task_resource_ops resource_ops = {resource_close, resource_describe,
                                                      resource_task_ended};

static struct shared_settings *settings_of(const struct conn *c)
{
    return container_of(c->set, struct shared_settings, set);
}

static void settings_drop(struct shared_settings *s)
{
    if (s != &released_settings && --s->refs == 0)
        free(s);
}

/* A block holding a copy of set, held once; raises (out of memory) on L. */
static struct shared_settings *settings_copy(lua_State *L, const struct conn_settings *set)
{
    struct shared_settings *s = malloc(sizeof *s);
    if (s == NULL)
        luaL_error(L, "%s", ERR_NO_MEMORY);
    s->set = *set;
    s->refs = 1;
    return s;
}

/* The block new connections share, made again after conn_defaults has changed (a reload). */
static struct shared_settings *new_settings(lua_State *L)
{
    if (current_settings == NULL ||
        memcmp(&current_settings->set, &conn_defaults, sizeof conn_defaults) != 0) {
        struct shared_settings *s = settings_copy(L, &conn_defaults);
        if (current_settings != NULL)
            settings_drop(current_settings);
        current_settings = s;
    }
    return current_settings;
}

struct conn_settings *conn_own_settings(struct conn *c, lua_State *L)
{
    struct shared_settings *s = settings_of(c);
    if (s == &released_settings) {
        discarded_settings = s->set;
        return &discarded_settings;
    }
    if (s->refs != 1) {
        struct shared_settings *own = settings_copy(L, c->set);
        settings_drop(s);
        c->set = &own->set;
        s = own;
    }
    return &s->set;
}

struct conn *conn_new(lua_State *L)
{
    struct shared_settings *set = new_settings(L);
    struct conn *c = lua_newuserdatauv(L, sizeof *c, CONN_UV_COUNT);
    *c = (struct conn){.mark = CONN_MARK, .fd = -1, .ref = LUA_NOREF, .state = CONN_CLOSED,
                       .set = &released_settings.set, .close_reason = ERR_CLOSED,
                       .task.ref = LUA_NOREF};
    luaL_setmetatable(L, CONN_MT);
    lua_pushvalue(L, -1);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->res.ops = &resource_ops;
    set->refs++;
    c->set = &set->set;
    return c;
}

struct task *conn_new_handler(lua_State *L, struct conn *c)
{
    return task_new_in(L, &c->task, -1, c->ref, CONN_UV_THREAD, CONN_UV_DELIVERY, 1, &c->res);
}

void conn_attach(struct conn *c, int fd, const struct sockaddr *peer, socklen_t peer_len)
{
    c->fd = fd;
    c->state = CONN_OPEN;
    c->readable = true;
    c->id = ++last_id;
    c->opened = ev_now(loop);
    /* Unix peers are nearly always unnamed, and a path would not fit: keep the family only. */
    c->peer_len = peer->sa_family == AF_UNIX ? sizeof(sa_family_t)
                  : peer_len < sizeof c->peer ? peer_len : sizeof c->peer;
    memcpy(&c->peer, peer, c->peer_len);
    ev_io_init(&c->io, on_io, fd, 0);
    timeout_init(&c->timer, on_timer);
    c->next = open_head;
    if (open_head != NULL)
        open_head->prev = c;
    open_head = c;
    open_count++;
}

void conn_discard(struct conn *c)
{
    release_anchor(c);
}

void conn_release(struct conn *c)
{
    settings_drop(settings_of(c));
    c->set = &released_settings.set;
    buf_free(&c->in);
    buf_free(&c->out);
    drop_framer(c);
    if (c->tls != NULL) {
        SSL_free(c->tls->ssl);
        SSL_CTX_free(c->tls->ctx);
        free(c->tls);
        c->tls = NULL;
    }
}

void conn_init(struct ev_loop *l, lua_State *L)
{
    loop = l;
    main_L = L;
    hooks_job = (struct task_job){.run = run_close_hooks, .what = "on_close"};
    ev_init(&soft_timer, on_soft_timer);
    released_settings.set = conn_defaults;
}
