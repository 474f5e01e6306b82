/* net.c -- socket helpers; see net.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net.h"

static int parse_port(const char *text, char *out, size_t size)
{
    char *end;
    /* Digits only: strtol would also take " 80", "+80" and "-0". */
    if (strspn(text, "0123456789") != strlen(text) || *text == '\0' || strlen(text) >= size)
        return -1;
    long port = strtol(text, &end, 10);
    if (port < 0 || port > 65535)
        return -1;
    snprintf(out, size, "%ld", port);
    return 0;
}

int net_parse_addr(const char *text, struct net_addr *addr, const char **why)
{
    memset(addr, 0, sizeof *addr);
    if (strncmp(text, "tls:", 4) == 0) {
        text += 4;
        addr->tls = true;
        if (strncmp(text, "udp:", 4) == 0) {
            *why = "tls is for streams: there is no tls:udp:";
            return -1;
        }
    }
    if (strncmp(text, "unix:", 5) == 0) {
        addr->kind = NET_UNIX;
        if (text[5] == '\0' || strlen(text + 5) >= sizeof addr->path) {
            *why = text[5] == '\0' ? "unix socket path is empty" : "unix socket path is too long";
            return -1;
        }
        strcpy(addr->path, text + 5);
        return 0;
    }

    addr->kind = NET_TCP;
    if (strncmp(text, "udp:", 4) == 0) {
        addr->kind = NET_UDP;
        text += 4;
    }
    const char *colon;
    const char *host = text;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            *why = "expected [IPv6]:PORT";
            return -1;
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
        if (host_len == 0) {
            *why = "expected an IPv6 address inside [ ]";
            return -1;
        }
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL) {
            *why = "expected HOST:PORT, [IPv6]:PORT or unix:/path";
            return -1;
        }
        host_len = (size_t)(colon - text);
    }
    if (host_len >= sizeof addr->host) {
        *why = "host name is too long";
        return -1;
    }
    if (!(host_len == 1 && host[0] == '*'))
        memcpy(addr->host, host, host_len);
    if (parse_port(colon + 1, addr->port, sizeof addr->port) < 0) {
        *why = "port must be a number from 0 to 65535";
        return -1;
    }
    return 0;
}

int net_check_listen(const char *text, struct net_addr *addr, char *err, size_t size)
{
    const char *why;
    if (net_parse_addr(text, addr, &why) == 0)
        return 0;
    snprintf(err, size, "bad listen address '%s': %s", text, why);
    return -1;
}

static int socket_for(int family, int type)
{
    return socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static int close_keeping_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int bind_socket(const struct sockaddr *sa, socklen_t len, int type, bool reuseport)
{
    int fd = socket_for(sa->sa_family, type);
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    /* So that [::]:P and 0.0.0.0:P can be listened on side by side. */
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (bind(fd, sa, len) < 0)
        return close_keeping_errno(fd);
    return fd;
}

/* backlog < 0 binds without listening. */
static int listen_inet(const struct net_addr *addr, int backlog, bool reuseport, int *gai_error)
{
    int type = addr->kind == NET_UDP ? SOCK_DGRAM : SOCK_STREAM;
    struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *found;
    if (addr->host[0] == '\0')
        hints.ai_family = AF_INET;
    *gai_error = getaddrinfo(addr->host[0] ? addr->host : NULL, addr->port, &hints, &found);
    if (*gai_error != 0)
        return -1;
    int fd = bind_socket(found->ai_addr, found->ai_addrlen, type, reuseport);
    if (fd >= 0 && type == SOCK_STREAM && backlog >= 0 && listen(fd, backlog) < 0)
        fd = close_keeping_errno(fd);
    freeaddrinfo(found);
    return fd;
}

/* A unix socket file stays behind when its server dies. It is stale if nobody accepts on it. */
static int stale_unix_socket(const struct sockaddr_un *sun)
{
    struct stat st;
    if (stat(sun->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return 0;
    int stale = connect(probe, (const struct sockaddr *)sun, sizeof *sun) < 0 &&
                errno == ECONNREFUSED;
    close(probe);
    return stale;
}

static int listen_unix(const struct net_addr *addr, int backlog)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, addr->path);
    int fd = socket_for(AF_UNIX, SOCK_STREAM);
    if (fd < 0)
        return -1;
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    if (rc < 0 && errno == EADDRINUSE && stale_unix_socket(&sun)) {
        unlink(sun.sun_path);
        rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    }
    if (rc < 0 || listen(fd, backlog) < 0)
        return close_keeping_errno(fd);
    return fd;
}

int net_listen(const struct net_addr *addr, int backlog, int *gai_error)
{
    *gai_error = 0;
    return addr->kind == NET_UNIX ? listen_unix(addr, backlog)
                                  : listen_inet(addr, backlog, false, gai_error);
}

int net_bind_shared(const struct net_addr *addr, int *gai_error)
{
    /* SO_REUSEPORT would also let us join the group of another server on the port: bind once
     * without it, so that a port in use is refused as it is without --workers (and port 0 gets
     * its free port), then take that address again with it. */
    int probe = listen_inet(addr, -1, false, gai_error);
    if (probe < 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int rc = getsockname(probe, (struct sockaddr *)&ss, &len);
    close(probe);
    return rc < 0 ? -1 : bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, true);
}

int net_listen_beside(int bound_fd, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(bound_fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    int fd = bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, true);
    if (fd >= 0 && listen(fd, backlog) < 0)
        fd = close_keeping_errno(fd);
    return fd;
}

int net_host_port(const struct sockaddr *sa, socklen_t len, char *host, size_t size, int *port)
{
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t path_len = len > offsetof(struct sockaddr_un, sun_path)
                              ? strnlen(sun->sun_path, len - offsetof(struct sockaddr_un, sun_path))
                              : 0;
        snprintf(host, size, "unix%s%.*s", path_len ? ":" : "", (int)path_len, sun->sun_path);
        *port = -1;
        return 0;
    }
    char service[8];
    if (getnameinfo(sa, len, host, (socklen_t)size, service, sizeof service,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    *port = atoi(service);
    return 0;
}

void net_format(const struct sockaddr *sa, socklen_t len, char *out, size_t size)
{
    char host[NI_MAXHOST];
    int port;
    if (net_host_port(sa, len, host, sizeof host, &port) < 0)
        snprintf(out, size, "?");
    else if (port < 0)
        snprintf(out, size, "%s", host);
    else if (sa->sa_family == AF_INET6)
        snprintf(out, size, "[%s]:%d", host, port);
    else
        snprintf(out, size, "%s:%d", host, port);
}

void net_local_address(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        snprintf(out, size, "?");
    else
        net_format((struct sockaddr *)&ss, len, out, size);
}

void net_set_nodelay(int fd)
{
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

size_t net_unacked(int fd)
{
    int queued = 0;
    if (ioctl(fd, SIOCOUTQ, &queued) < 0 || queued < 0)
        return 0;
    return (size_t)queued;
}
