/* peer.h -- what the benchmark's C servers (ref_echo, ref_chat, ref_tls_echo, lua_floor) share:
 * their listening socket, accepting connections, and a loop that SIGTERM or SIGINT stops. */
#ifndef PEER_H
#define PEER_H

#include <ev.h>

#define PEER_BACKLOG 511 /* as luasock's listener */

/* Raises RLIMIT_NOFILE to its hard limit (the idle workloads hold 10,000 connections), opens the
 * listening socket for "HOST:PORT" (IPv4) and prints "listening on HOST:PORT" with the port it
 * got on stderr. Returns the socket, or -1 (said on stderr after name, which later messages use
 * too). */
int peer_listen(const char *name, const char *spec);

/* A new connection on listen_fd, non-blocking and with TCP_NODELAY, or -1 when there is none now
 * (a failure other than running out of pending connections is said on stderr). */
int peer_accept(int listen_fd);

/* Runs the default loop, with on_accept called when listen_fd is readable, until SIGTERM or
 * SIGINT; then closes listen_fd. */
void peer_run(int listen_fd, void (*on_accept)(struct ev_loop *loop, ev_io *w, int revents));

#endif
