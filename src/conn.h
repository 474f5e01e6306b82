/* conn.h -- a TCP or unix stream connection: its buffers, watchers and life cycle.
 *
 * The struct is the body of the Lua userdata that handlers see, with the libev watchers embedded
 * in it, so an event needs no allocation. A connection is anchored in the registry from its
 * creation until it is closed, its on_close hook has started and its handler (whose task is part
 * of it) has ended, so it cannot be collected while the loop still watches it. The Lua methods
 * are in lconn.c; this file is the engine underneath them. Tasks wait in it only through task.c's
 * waiters lists. */
#ifndef CONN_H
#define CONN_H

#include <ev.h>
#include <lua.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "objects.h"
#include "reader.h"
#include "task.h"
#include "timeouts.h"

struct conn_tls;
struct metrics_listener;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

#define CONN_MT "luasock.conn"
#define CONN_MARK 0x6c7561736f636b43ULL /* "luasockC": see toconn in lconn.c */

/* Settings every new connection starts with (the script can change them). A timeout below 0
 * means none. */
struct conn_settings {
    size_t max_line;
    size_t max_all;
    size_t max_receive; /* receive(N): largest N; a larger one is refused before any read */
    size_t high_water;
    size_t max_queue; /* post: close a peer that lets more than this pile up */
    size_t soft_queue; /* post: close a peer whose queue stays above this for soft_queue_seconds */
    size_t max_object; /* receive_object: largest MessagePack value accepted */
    size_t max_object_items; /* ... and most values in it (codec_limits.max_items) */
    double soft_queue_seconds; /* below 0: no soft limit */
    double read_timeout;
    double send_timeout;
    enum object_codec object_codec; /* what receive_object and send_object speak */
    bool exact_objects;             /* decode so that values re-encode exactly (lvalues.h) */
    bool keep_bad_json;             /* json_errors = "return": invalid JSON keeps the conn */
};

extern struct conn_settings conn_defaults;

/* How long an accepted connection may stay silent before its first byte: a read waiting for it
 * times out sooner than read_timeout. Below 0: no such limit. */
extern double conn_first_byte_timeout;

/* Logs every closed connection at info: its reason, how long it lasted and its bytes (the
 * script's access_log, applied at each load), or always (--access-log). */
extern bool conn_access_log;
extern bool conn_access_log_always;

struct conn;

/* Runs the script's on_close(conn, reason) hook (script.c), or NULL for none. It is called once,
 * after an open connection started closing for whatever reason ("closed" when the handler ended
 * or called close, else the error), with the connection's userdata on top of L: from the loop's
 * protected step on the main thread, never in the middle of the handler that closed it. */
extern void (*conn_on_close)(lua_State *L, const char *reason);

/* Starts the handler of an accepted TLS connection once its handshake has completed (server.c),
 * from an event callback. */
extern void (*conn_on_secured)(struct conn *c);

enum conn_state {
    CONN_CONNECTING, /* outgoing, waiting for the connect to complete */
    CONN_OPEN,
    CONN_CLOSING, /* closed by us: delivering queued output, then waiting for the peer's FIN */
    CONN_CLOSED   /* socket closed */
};

struct conn {
    uint64_t mark; /* CONN_MARK */
    ev_io io; /* for reading, writing or both: see watching in conn.c */
    struct timeout timer; /* rdeadline and wdeadline; closing: the send timeout, then linger */
    struct buf in, out;
    struct task_waiters reader, writer; /* the writer waits for a connect, or for the queue to drain */
    struct task_waiters drainers; /* conn:drain callers, from any task */
    size_t drain_mark;         /* wake the drainers once the queue is at or below this */
    struct read_req req;       /* what the current read asks for */
    const char *prefix;        /* receive's prefix argument, alive on the reader's stack */
    size_t prefix_len;
    size_t searched;           /* see read_scan; progress of the current read */
    struct read_span answer;   /* where the current read's answer is, once answer_found */
    ev_tstamp rdeadline, wdeadline; /* 0: none */
    ev_tstamp soft_since;      /* when the queue went above soft_queue (0: it is not) */
    size_t backlog_sent;       /* bytes written since the queue began to back up */
    size_t backlog_unacked;    /* what the peer had not taken of the socket's bytes then */
    /* Shared with the other connections made since the same load of the script; changed only
     * through conn_own_settings (copy on write). */
    const struct conn_settings *set;
    /* Kept from accept or connect: getpeername fails once both directions are shut down, and
     * the log line of a late handler error still has to say who it was. */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    socklen_t peer_len;
    uint64_t id;
    uint64_t bytes_in, bytes_out; /* counted per read and write, for the access log */
    ev_tstamp opened;             /* when it got its socket */
    int fd;
    int ref;
    unsigned read_epoch;      /* changes whenever input is consumed or dropped */
    unsigned reused;          /* times conn_unpark handed it out again */
    const char *close_reason; /* why it left the open state */
    bool eof;          /* the peer will send nothing more */
    bool heard_from;   /* the peer has sent something (outgoing: we spoke first) */
    bool peer_counted; /* counted by peers_admit, for --max-connections-per-ip */
    bool readable;     /* the socket may have unread bytes; read before waiting */
    bool skipping;     /* dropping the rest of an over-long line */
    bool shut_wr;      /* no more sends: shutdown("send") or closing */
    bool reading;      /* a read waits, or was woken and has not returned yet: it owns in */
    bool answer_found;
    unsigned char answer_status; /* enum read_status, once answer_found */
    bool hook_pending; /* its on_close hook has not started yet (conn.c's hooks list) */
    bool outgoing;     /* made by luasock.connect */
    bool flush_listed;
    bool backlogged;   /* the last write left bytes queued */
    bool parked;       /* idle in a keep-alive pool (conn_park), owned by no task */
    bool read_timed_out; /* the last read ended in a timeout (the access log's reason) */
    unsigned char state; /* enum conn_state: a byte, so that the flags above fill 16 */
    struct conn *flush_prev, *flush_next;
    struct conn *soft_prev, *soft_next; /* the connections above soft_queue (soft_since) */
    struct conn *prev, *next; /* all open connections */
    struct object_scanner *scanner; /* receive_object: how far an incomplete value was scanned */
    struct conn_tls *tls;        /* NULL: plaintext */
    struct metrics_listener *counted; /* accepted: its listener's figures (metrics_core.h) */
    struct task_resource res;    /* owned by the task it serves, or that connected it */
    struct conn *hook_next;
    /* An accepted connection's handler (conn_new_handler): in the connection's userdata instead
     * of one of its own, 72 bytes less per connection (measured: 2.19 -> 2.11 KiB RSS per idle
     * echo connection at 10,000). */
    struct task task;
};

/* The connection userdata's user values: the name of the keep-alive pool an outgoing connection
 * belongs to, or for an accepted one a value handed to its handler (task_wake_first_with); and
 * its handler's thread. */
enum { CONN_UV_POOL = 1, CONN_UV_DELIVERY = 1, CONN_UV_THREAD, CONN_UV_COUNT = CONN_UV_THREAD };

/* The loop, and the main thread (for registry references from event callbacks). */
void conn_init(struct ev_loop *loop, lua_State *L);

/* Pushes a new connection userdata that owns no socket yet, anchored so that it lives while it
 * is open. Raises (out of memory) before anything is acquired: create it before the socket. Its
 * one user value is the name of the keep-alive pool it belongs to (outgoing ones). */
struct conn *conn_new(lua_State *L);

/* Makes the task of c's handler, as task_new with the function below c (at the top of L) and c
 * as its one argument. Raises (out of memory) before anything is registered. */
struct task *conn_new_handler(lua_State *L, struct conn *c);

/* Gives the connection its connected socket fd. Cannot raise. */
void conn_attach(struct conn *c, int fd, const struct sockaddr *peer, socklen_t peer_len);

/* Lets go of a connection that never got a socket. */
void conn_discard(struct conn *c);

/* Frees what a connection that is being collected still holds (its __gc). */
void conn_release(struct conn *c);

/* For a socket whose non-blocking connect is in progress: suspends the calling task (checked
 * with task_check_wait) until c is connected (resumed with c) or has failed or timed out
 * (resumed with nil, err; c is then closed). */
int conn_wait_connect(struct conn *c, lua_State *L, double timeout);

/* An accepted connection on a TLS listener: runs the server side of the handshake with ctx,
 * within first_byte_timeout, before any handler; conn_on_secured follows, or a failure closes c
 * (logged). Its SSL is made when the first bytes arrive: a connection that sends nothing costs
 * no TLS buffers. Returns -1 when out of memory. */
int conn_accept_tls(struct conn *c, SSL_CTX *ctx);

/* conn:starttls and luasock.connect's tls: suspends the calling task (checked with
 * task_check_wait) while the handshake on ssl (owned from now on) runs, after what was queued
 * before has gone out in plaintext; it then gets true, or nil and the error with c closed. */
int conn_handshake(struct conn *c, lua_State *L, SSL *ssl, double timeout);

/* conn:setkeepalive: c waits idle, owned by no task, until conn_unpark; it is closed if the peer
 * sends anything or closes, or after timeout seconds (below 0: none). Returns NULL, or why c
 * cannot be kept ("unread data in buffer", ...). */
const char *conn_park(struct conn *c, double timeout);

/* Takes a parked c for task t (which then owns it). Returns false if c closed meanwhile. */
bool conn_unpark(struct conn *c, struct task *t);

/* "conn 12 from 127.0.0.1:5555", for log lines. */
void conn_describe(struct conn *c, char *out, size_t size);

/* Completes c->req (set by the caller, with c->reading false): pushes the results (data, or
 * nil, err, partial) on L and returns their count, or suspends the calling task until it can
 * (raising "what cannot wait ..." when it cannot wait). */
int conn_read(struct conn *c, lua_State *L, const char *what);

/* Bytes were appended to c->out: has them sent with the next flush. */
void conn_queued(struct conn *c);

/* Queues the MessagePack encoding of the Lua value at idx. Returns 0, or -1 with *err and
 * nothing queued. */
int conn_queue_object(struct conn *c, lua_State *L, int idx, const char **err);

/* The settings of c alone, to change: copied from the shared ones the first time. Raises (out of
 * memory) before anything changes. */
struct conn_settings *conn_own_settings(struct conn *c, lua_State *L);

/* Switches what receive_object and send_object speak; a value half-scanned in the old codec is
 * scanned again in the new one. Raises as conn_own_settings. */
void conn_set_object_codec(struct conn *c, lua_State *L, enum object_codec codec);

/* After a send queued its bytes (the queue held before bytes until then): pushes how many it
 * accepted and returns 1, or suspends the sender until the queue is below the high-water mark.
 * A sender that cannot wait (see task_check_wait; or another one waits already) takes its bytes
 * back and raises. */
int conn_after_send(struct conn *c, lua_State *L, size_t before, const char *what);

/* post: after queueing, closes the connection if its peer has let more than max_queue bytes pile
 * up, and starts the soft_queue clock if it has let more than soft_queue. Returns 0, or -1 when
 * it closed it. */
int conn_check_queue(struct conn *c);

/* conn:drain: suspends the calling task (checked with task_check_wait) until c's queue is at or
 * below mark, c closes (resumed with the reason), or timeout seconds pass (below 0: no limit).
 * k then runs as for task_wait; it checks the queue again, and may wait again. */
int conn_wait_drain(struct conn *c, lua_State *L, size_t mark, double timeout, lua_KFunction k);

/* Pushes the connection's userdata (it must not be closed yet). */
void conn_push(lua_State *L, struct conn *c);

/* Closes gracefully: queued output is delivered first. Waiting coroutines get "closed". */
void conn_close(struct conn *c);

/* how: SHUT_RD, SHUT_WR or SHUT_RDWR. A send shutdown waits for queued output. */
void conn_shutdown(struct conn *c, int how);

/* Writes out everything queued in this loop iteration: one system call per connection. */
void conn_flush_all(void);

/* Wakes every coroutine waiting to read from an accepted connection, or to see any connection
 * drain, with nil, err (at the start of a graceful shutdown); the connections stay open, so
 * handlers can still say goodbye. */
void conn_interrupt_waits(const char *err);

/* Runs the loop until every connection that was closing has finished: its queued output
 * delivered (or its send timeout passed) and the peer's end seen (or the linger time passed). For
 * `luasock run`, whose script may end right after conn:close(). */
void conn_finish_closing(void);

/* Closes every connection at once (at exit). */
void conn_close_all(void);

size_t conn_count(void);

/* Adds the bytes received and sent so far by the open connections to *in and *out. */
void conn_add_open_bytes(uint64_t *in, uint64_t *out);

#endif
