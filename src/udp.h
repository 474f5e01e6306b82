/* udp.h -- UDP sockets: the engine under luasock.udp() (ludp.c) and the server's udp: listeners.
 *
 * The struct is the body of the Lua userdata, with its read watcher embedded. Datagrams are read
 * into one shared buffer: a UDP socket keeps no buffer of its own. */
#ifndef UDP_H
#define UDP_H

#include <ev.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "net.h"
#include "task.h"

#define UDP_MT "luasock.udp"
#define UDP_MAX_DATAGRAM 65536

struct udp;

/* A listener's callback, for every datagram that arrives on it. Returns NULL, or why it dropped
 * the datagram without handling it (a static string, "1000 datagram handlers are running ..."):
 * udp.c counts those drops and logs them at most once a second per listener. */
typedef const char *(*udp_datagram_cb)(struct udp *u, const char *data, size_t len,
                                       const struct sockaddr *from, socklen_t from_len);

struct udp {
    ev_io rio;
    struct task_waiters reader;
    double timeout; /* below 0: none */
    int fd;         /* -1 until first use */
    int datagram_ref; /* listeners: the registry slot of the script's datagram callback */
    udp_datagram_cb on_datagram;
    struct udp *next_listener;
    unsigned long dropped;    /* listeners: datagrams dropped since the last line that said so */
    const char *dropped_why;  /* ... and why the last of them was */
};

void udp_init(struct ev_loop *loop);

/* Pushes a new UDP socket userdata that owns fd (-1: none yet, made on first use). */
struct udp *udp_new(lua_State *L, int fd);

/* Gives u a socket in family (IPv4 or IPv6) if it has none. Returns 0, or -1 with errno. */
int udp_ensure_socket(struct udp *u, int family);

/* Raises "what: udp socket ADDRESS is a listener: why" if u is a udp: listener's socket. Its
 * datagrams belong to the script's datagram function, and it serves every peer: a reader on it
 * would take datagrams meant for others, and closing or connecting it would end the listener
 * for all of them. Handlers reach it as peer.socket, to answer with sendto. */
void udp_refuse_listener(struct udp *u, lua_State *L, const char *what, const char *why);

/* receive (data) or receivefrom (data, host, port) of at most max bytes: pushes the results, or
 * suspends the calling task until a datagram arrives (nil, "timeout" after u->timeout). Raises
 * "what cannot wait ..." when it would have to wait and cannot, and for a listener's socket. */
int udp_receive(struct udp *u, lua_State *L, size_t max, bool want_from, const char *what);

/* Closes the socket (a receiver waiting on it gets nil, "closed"); u stays usable as unbound. */
void udp_close(struct udp *u);

/* Binds addr and pushes its socket, which calls on_datagram for every datagram. Returns 0, or -1
 * with errno or *gai_error. for_workers: the --workers parent never reads; the workers it forks
 * share the socket and each reads from it after udp_start_listeners_in_worker. */
int udp_listen(lua_State *L, const struct net_addr *addr, udp_datagram_cb on_datagram,
               bool for_workers, int *gai_error);

void udp_start_listeners_in_worker(void);

#endif
