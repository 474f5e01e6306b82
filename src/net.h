/* net.h -- plain socket helpers: listen addresses, listening sockets, address text.
 *
 * No Lua and no event loop here. Functions return -1 and leave errno (or a getaddrinfo code)
 * for errors.c to translate. */
#ifndef NET_H
#define NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

enum net_kind { NET_TCP, NET_UDP, NET_UNIX };

struct net_addr {
    enum net_kind kind;
    bool tls;                               /* "tls:" before a TCP or unix address */
    char host[256];                         /* TCP: numeric address or name; "" = any IPv4 */
    char port[8];                           /* TCP: "0".."65535" */
    char path[sizeof(struct sockaddr_un){0}.sun_path]; /* UNIX */
};

/* Parses "HOST:PORT", "[IPv6]:PORT", "*:PORT", "unix:/path", any of the first three after
 * "udp:", or any but the udp ones after "tls:". Returns 0, or -1 with *why set to a phrase for the usage message. */
int net_parse_addr(const char *text, struct net_addr *addr, const char **why);

/* net_parse_addr with the one message for a bad address, whether it came from --listen or the
 * script: "bad listen address 'TEXT': why" in err. Returns 0 or -1. */
int net_check_listen(const char *text, struct net_addr *addr, char *err, size_t size);

/* Opens a non-blocking listening socket (for NET_UDP, a bound datagram socket). Returns the fd, or -1 with errno set, or with *gai_error
 * set (non-zero) when the host did not resolve. A unix socket file left by a dead server (nobody
 * accepts on it) is replaced; a live one gives EADDRINUSE. */
int net_listen(const struct net_addr *addr, int backlog, int *gai_error);

/* For --workers: binds a TCP addr with SO_REUSEPORT but does not listen, so that the parent holds
 * the port (and its errors show at start) while every worker listens on a socket of its own
 * beside it (net_listen_beside) and the kernel spreads connections across the workers. */
int net_bind_shared(const struct net_addr *addr, int *gai_error);
int net_listen_beside(int bound_fd, int backlog);

/* Formats an address as "127.0.0.1:9090", "[::1]:9090" or "unix:/path". */
void net_format(const struct sockaddr *sa, socklen_t len, char *out, size_t size);

/* Splits an address into host text and port (-1 for unix sockets). Returns 0 or -1. */
int net_host_port(const struct sockaddr *sa, socklen_t len, char *host, size_t size, int *port);

/* The text of a socket's own address, e.g. "127.0.0.1:9090"; "?" when it has none. */
void net_local_address(int fd, char *out, size_t size);

void net_set_nodelay(int fd);

/* Bytes written to a stream socket that its peer has not taken yet (still in our send queue:
 * unsent, or for TCP unacknowledged). Returns 0 when it cannot tell. */
size_t net_unacked(int fd);

#endif
