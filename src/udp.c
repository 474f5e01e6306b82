/* udp.c -- UDP sockets and udp: listeners; see udp.h.
 *
 * A socket is created on first use, in the family of the first address it meets. A receiver
 * that has to wait is resumed when the socket becomes readable and reads the datagram itself,
 * on its own thread. */
#include <errno.h>
#include <lauxlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "container.h"
#include "errors.h"
#include "lresult.h"
#include "luasock.h"
#include "metrics_core.h"
#include "udp.h"

#define DATAGRAMS_PER_WAKEUP 64

static struct ev_loop *loop;
static char datagram[UDP_MAX_DATAGRAM];
static struct udp *listeners;
/* Drops are logged once their second is over, with their count: a flood of them must not
 * flood the log too. */
static ev_timer drops_timer;

int udp_ensure_socket(struct udp *u, int family)
{
    if (u->fd >= 0)
        return 0;
    u->fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0)
        return -1;
    ev_io_set(&u->rio, u->fd, EV_READ);
    return 0;
}

/* Reads one datagram and pushes it (and its sender, for receivefrom). Returns the number of
 * values pushed, or -1 when nothing has arrived. */
static int try_receive(struct udp *u, lua_State *L, size_t max, bool want_from)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ssize_t n;
    do
        n = recvfrom(u->fd, datagram, sizeof datagram, 0, (struct sockaddr *)&ss, &len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : push_error(L, errors_string(errno));
    metrics_core.udp_in++;
    lua_pushlstring(L, datagram, (size_t)n < max ? (size_t)n : max);
    if (!want_from)
        return 1;
    return 1 + push_host_port(L, (struct sockaddr *)&ss, len);
}

static int wait_receive(struct udp *u, lua_State *L, size_t max, bool want_from);

/* The receive's size and kind travel in the wait's context: max is at most a datagram. */
static int receive_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct udp *u = lua_touserdata(L, 1);
    size_t max = (size_t)ctx >> 1;
    bool want_from = ctx & 1;
    const char *failure = task_failure(L);
    if (failure != NULL)
        return push_error(L, failure);
    int n = try_receive(u, L, max, want_from);
    return n >= 0 ? n : wait_receive(u, L, max, want_from);
}

static int wait_receive(struct udp *u, lua_State *L, size_t max, bool want_from)
{
    ev_io_start(loop, &u->rio);
    lua_KContext ctx = (lua_KContext)(max << 1 | want_from);
    return task_wait(L, &u->reader, u->timeout, receive_resumed, ctx);
}

void udp_refuse_listener(struct udp *u, lua_State *L, const char *what, const char *why)
{
    if (u->on_datagram == NULL)
        return;
    char name[150];
    net_local_address(u->fd, name, sizeof name);
    luaL_error(L, "%s: udp socket %s is a listener: %s", what, name, why);
}

int udp_receive(struct udp *u, lua_State *L, size_t max, bool want_from, const char *what)
{
    udp_refuse_listener(u, L, what, "its datagrams go to the script's datagram function");
    if (max > UDP_MAX_DATAGRAM)
        max = UDP_MAX_DATAGRAM;
    if (!task_waiters_empty(&u->reader))
        return luaL_error(L, "another coroutine is already receiving on this socket");
    int n = try_receive(u, L, max, want_from);
    if (n >= 0)
        return n;
    if (u->timeout == 0)
        return push_error(L, ERR_TIMEOUT);
    task_check_wait(L, what);
    return wait_receive(u, L, max, want_from);
}

static void on_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct udp *u = container_of(w, struct udp, rio);
    if (!task_resume_first(&u->reader, NULL))
        ev_io_stop(loop, w);
}

void udp_close(struct udp *u)
{
    ev_io_stop(loop, &u->rio);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    task_wake_all(&u->reader, ERR_CLOSED);
}

struct udp *udp_new(lua_State *L, int fd)
{
    struct udp *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = (struct udp){.fd = fd, .timeout = -1, .datagram_ref = LUA_NOREF};
    luaL_setmetatable(L, UDP_MT);
    ev_io_init(&u->rio, on_readable, fd, EV_READ);
    return u;
}

static void log_drops(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    for (struct udp *u = listeners; u != NULL; u = u->next_listener) {
        if (u->dropped == 0)
            continue;
        char name[150];
        net_local_address(u->fd, name, sizeof name);
        luasock_log(LUASOCK_LOG_WARN, "udp %s: dropped %lu datagram%s: %s", name, u->dropped,
                    u->dropped == 1 ? "" : "s", u->dropped_why);
        u->dropped = 0;
    }
}

static void count_drop(struct udp *u, const char *why)
{
    u->dropped++;
    u->dropped_why = why;
    if (!ev_is_active(&drops_timer)) {
        ev_timer_set(&drops_timer, 1, 0);
        ev_timer_start(loop, &drops_timer);
    }
}

static void on_listener_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct udp *u = container_of(w, struct udp, rio);
    for (int i = 0; i < DATAGRAMS_PER_WAKEUP; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ssize_t n = recvfrom(u->fd, datagram, sizeof datagram, 0, (struct sockaddr *)&ss, &len);
        if (n < 0)
            return;
        metrics_core.udp_in++;
        const char *dropped = u->on_datagram(u, datagram, (size_t)n, (struct sockaddr *)&ss, len);
        if (dropped != NULL)
            count_drop(u, dropped);
    }
}

int udp_listen(lua_State *L, const struct net_addr *addr, udp_datagram_cb on_datagram,
               bool for_workers, int *gai_error)
{
    struct udp *u = udp_new(L, -1);
    int fd = net_listen(addr, 0, gai_error);
    if (fd < 0) {
        lua_pop(L, 1);
        return -1;
    }
    u->fd = fd;
    u->on_datagram = on_datagram;
    ev_io_init(&u->rio, on_listener_readable, fd, EV_READ);
    u->next_listener = listeners;
    listeners = u;
    if (!for_workers)
        ev_io_start(loop, &u->rio);
    return 0;
}

void udp_start_listeners_in_worker(void)
{
    for (struct udp *u = listeners; u != NULL; u = u->next_listener)
        ev_io_start(loop, &u->rio);
}

void udp_init(struct ev_loop *l)
{
    loop = l;
    ev_init(&drops_timer, log_drops);
}
