/* ludp.c -- UDP sockets: luasock.udp() for clients, and udp: listeners whose datagrams go to the
 * script's datagram(data, peer) callback.
 *
 * Datagrams are read into one shared buffer: a UDP socket keeps no buffer of its own. A socket is
 * created on first use, in the family of the first address it meets (IPv4 or IPv6). */
#include <errno.h>
#include <lauxlib.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "container.h"
#include "errors.h"
#include "lresult.h"
#include "ludp.h"
#include "task.h"

#define UDP_MT "luasock.udp"
#define PEER_MT "luasock.udp_peer"
#define DEFAULT_MAX_DATAGRAM 65536
#define DATAGRAMS_PER_WAKEUP 64

struct udp {
    ev_io rio;
    ev_timer timer;
    struct task *reader;
    size_t reader_max;
    bool reader_wants_from; /* receivefrom (data, host, port) rather than receive (data) */
    double timeout;         /* below 0: none */
    ev_tstamp deadline;
    int fd;
    int datagram_ref; /* listeners: the script's callback */
    struct udp *next_listener;
};

#define loop EV_DEFAULT

static char datagram[65536];
static struct udp *listeners;

static struct udp *toudp(lua_State *L)
{
    return luaL_checkudata(L, 1, UDP_MT);
}

/* An IP address and port to a sockaddr. Names would need the resolver: use luasock.resolve. */
static int to_sockaddr(const char *host, lua_Integer port, struct sockaddr_storage *ss,
                       socklen_t *len)
{
    char service[8];
    snprintf(service, sizeof service, "%d", (int)port);
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *found;
    if (port < 0 || port > 65535 || getaddrinfo(host, service, &hints, &found) != 0)
        return -1;
    memcpy(ss, found->ai_addr, found->ai_addrlen);
    *len = found->ai_addrlen;
    freeaddrinfo(found);
    return 0;
}

static int address_arg(lua_State *L, int host_arg, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host = luaL_checkstring(L, host_arg);
    lua_Integer port = luaL_checkinteger(L, host_arg + 1);
    if (to_sockaddr(host, port, ss, len) < 0)
        return luaL_error(L, "bad address '%s' port %d: expected an IP address (resolve names "
                             "with luasock.resolve) and a port from 0 to 65535", host, (int)port);
    return 0;
}

static int ensure_socket(struct udp *u, int family)
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
    lua_pushlstring(L, datagram, (size_t)n < max ? (size_t)n : max);
    if (!want_from)
        return 1;
    return 1 + push_host_port(L, (struct sockaddr *)&ss, len);
}

static void on_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct udp *u = container_of(w, struct udp, rio);
    struct task *t = u->reader;
    if (t == NULL) {
        ev_io_stop(loop, w);
        return;
    }
    int n = try_receive(u, task_stack(t), u->reader_max, u->reader_wants_from);
    if (n < 0)
        return;
    u->reader = NULL;
    task_resume(t, n);
}

static void on_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct udp *u = container_of(w, struct udp, timer);
    struct task *t = u->reader;
    if (t == NULL)
        return;
    u->reader = NULL;
    ev_io_stop(loop, &u->rio);
    task_resume(t, push_error(task_stack(t), ERR_TIMEOUT));
}

static int receive(lua_State *L, bool want_from)
{
    struct udp *u = toudp(L);
    lua_Integer max = luaL_optinteger(L, 2, DEFAULT_MAX_DATAGRAM);
    luaL_argcheck(L, max >= 1, 2, "must be at least 1");
    if (u->fd < 0)
        return push_error(L, want_from ? "not bound: sendto or setsockname first"
                                       : "not connected: setpeername first");
    if (u->reader != NULL)
        return luaL_error(L, "another coroutine is already receiving on this socket");
    int n = try_receive(u, L, (size_t)max, want_from);
    if (n >= 0)
        return n;
    struct task *t = task_check(L, want_from ? "receivefrom" : "receive");
    if (u->timeout == 0)
        return push_error(L, ERR_TIMEOUT);
    u->reader = t;
    u->reader_max = (size_t)max;
    u->reader_wants_from = want_from;
    ev_io_start(loop, &u->rio);
    ev_timer_stop(loop, &u->timer);
    if (u->timeout > 0) {
        ev_timer_set(&u->timer, u->timeout, 0);
        ev_timer_start(loop, &u->timer);
    }
    return task_suspend(L);
}

static int udp_receivefrom(lua_State *L)
{
    return receive(L, true);
}

static int udp_receive(lua_State *L)
{
    return receive(L, false);
}

static int send_to(lua_State *L, struct udp *u, const char *data, size_t len,
                   const struct sockaddr *to, socklen_t to_len)
{
    if (ensure_socket(u, to != NULL ? to->sa_family : AF_INET) < 0)
        return push_error(L, errors_string(errno));
    ssize_t n;
    do
        n = sendto(u->fd, data, len, 0, to, to_len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, errors_string(errno));
    lua_pushinteger(L, n);
    return 1;
}

static int udp_sendto(lua_State *L)
{
    struct udp *u = toudp(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    struct sockaddr_storage ss;
    socklen_t ss_len;
    address_arg(L, 3, &ss, &ss_len);
    return send_to(L, u, data, len, (struct sockaddr *)&ss, ss_len);
}

static int udp_send(lua_State *L)
{
    struct udp *u = toudp(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (u->fd < 0)
        return push_error(L, "not connected: setpeername first");
    return send_to(L, u, data, len, NULL, 0);
}

/* setpeername(host, port) or setsockname(host, port): connect or bind. */
static int attach(lua_State *L, bool peer)
{
    struct udp *u = toudp(L);
    struct sockaddr_storage ss;
    socklen_t len;
    address_arg(L, 2, &ss, &len);
    if (ensure_socket(u, ss.ss_family) < 0)
        return push_error(L, errors_string(errno));
    int rc = peer ? connect(u->fd, (struct sockaddr *)&ss, len)
                  : bind(u->fd, (struct sockaddr *)&ss, len);
    if (rc < 0)
        return push_error(L, errors_string(errno));
    lua_pushboolean(L, 1);
    return 1;
}

static int udp_setpeername(lua_State *L)
{
    return attach(L, true);
}

static int udp_setsockname(lua_State *L)
{
    return attach(L, false);
}

static int udp_getsockname(lua_State *L)
{
    struct udp *u = toudp(L);
    if (u->fd < 0)
        return push_error(L, "not bound");
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(u->fd, (struct sockaddr *)&ss, &len) < 0)
        return push_error(L, errors_string(errno));
    return push_host_port(L, (struct sockaddr *)&ss, len);
}

static int udp_settimeout(lua_State *L)
{
    struct udp *u = toudp(L);
    u->timeout = lua_isnoneornil(L, 2) || lua_toboolean(L, 2) == 0 ? -1 : luaL_checknumber(L, 2);
    if (u->timeout < 0)
        u->timeout = -1;
    lua_pushboolean(L, 1);
    return 1;
}

static void udp_release(struct udp *u)
{
    ev_io_stop(loop, &u->rio);
    ev_timer_stop(loop, &u->timer);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

static int udp_close(lua_State *L)
{
    struct udp *u = toudp(L);
    struct task *t = u->reader;
    udp_release(u);
    if (t != NULL) {
        u->reader = NULL;
        task_wake(t, push_error(task_stack(t), ERR_CLOSED));
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int udp_gc(lua_State *L)
{
    udp_release(toudp(L));
    return 0;
}

static int udp_tostring(lua_State *L)
{
    lua_pushfstring(L, "udp socket (fd %d)", toudp(L)->fd);
    return 1;
}

static struct udp *new_udp(lua_State *L, int fd)
{
    struct udp *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = (struct udp){.fd = fd, .timeout = conn_defaults.read_timeout, .datagram_ref = LUA_NOREF};
    luaL_setmetatable(L, UDP_MT);
    ev_io_init(&u->rio, on_readable, fd, EV_READ);
    ev_init(&u->timer, on_timer);
    return u;
}

/* luasock.udp() -> an unbound UDP socket */
static int luasock_udp(lua_State *L)
{
    new_udp(L, -1);
    return 1;
}

/* peer:reply(data): answers a datagram from the socket it arrived on. */
static int peer_reply(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_getfield(L, 1, "socket");
    struct udp *u = luaL_checkudata(L, -1, UDP_MT);
    lua_getfield(L, 1, "host");
    lua_getfield(L, 1, "port");
    struct sockaddr_storage ss;
    socklen_t ss_len;
    address_arg(L, lua_gettop(L) - 1, &ss, &ss_len);
    return send_to(L, u, data, len, (struct sockaddr *)&ss, ss_len);
}

/* Pushes {host =, port =, socket =} with reply(), for the datagram callback. */
static void push_peer(lua_State *L, int socket_index, const struct sockaddr *sa, socklen_t len)
{
    char host[NI_MAXHOST];
    int port;
    socket_index = lua_absindex(L, socket_index);
    net_host_port(sa, len, host, sizeof host, &port);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    lua_pushvalue(L, socket_index);
    lua_setfield(L, -2, "socket");
    luaL_setmetatable(L, PEER_MT);
}

static void on_datagram(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct udp *u = container_of(w, struct udp, rio);
    lua_State *L = task_main_state();
    for (int i = 0; i < DATAGRAMS_PER_WAKEUP; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ssize_t n = recvfrom(u->fd, datagram, sizeof datagram, 0, (struct sockaddr *)&ss, &len);
        if (n < 0)
            return;
        if (lua_rawgeti(L, LUA_REGISTRYINDEX, u->datagram_ref) != LUA_TFUNCTION) {
            lua_pop(L, 1); /* a reload removed the callback: the datagram is dropped */
            continue;
        }
        lua_pushlstring(L, datagram, (size_t)n);
        lua_pushlightuserdata(L, u);
        lua_rawget(L, LUA_REGISTRYINDEX); /* the socket's userdata, anchored by ludp_listen */
        push_peer(L, -1, (struct sockaddr *)&ss, len);
        lua_remove(L, -2);
        task_resume(task_new(L, 2, 0), 2);
    }
}

int ludp_listen(lua_State *L, const char *text, const struct net_addr *addr, int datagram_ref,
                bool for_workers, char *name, size_t name_size, char *err, size_t err_size)
{
    int gai_error;
    int fd = net_listen(addr, 0, &gai_error);
    if (fd < 0) {
        snprintf(err, err_size, "listen %s: %s", text,
                 gai_error ? errors_gai_string(gai_error) : errors_string(errno));
        return -1;
    }
    struct udp *u = new_udp(L, fd);
    u->datagram_ref = datagram_ref;
    ev_set_cb(&u->rio, on_datagram);
    u->next_listener = listeners;
    listeners = u;
    if (!for_workers)
        ev_io_start(loop, &u->rio);
    lua_pushlightuserdata(L, u);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    char bound[150];
    net_local_address(fd, bound, sizeof bound);
    snprintf(name, name_size, "udp:%s", bound);
    return 0;
}

void ludp_start_listeners_in_worker(void)
{
    for (struct udp *u = listeners; u != NULL; u = u->next_listener)
        if (u->fd >= 0) /* a script may have closed it through peer.socket */
            ev_io_start(loop, &u->rio);
}

static const luaL_Reg methods[] = {
    {"sendto", udp_sendto},
    {"receivefrom", udp_receivefrom},
    {"send", udp_send},
    {"receive", udp_receive},
    {"setpeername", udp_setpeername},
    {"setsockname", udp_setsockname},
    {"getsockname", udp_getsockname},
    {"settimeout", udp_settimeout},
    {"close", udp_close},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", NULL},
    {"__gc", udp_gc},
    {"__close", udp_close},
    {"__tostring", udp_tostring},
    {NULL, NULL},
};

void ludp_open(lua_State *L)
{
    luaL_newmetatable(L, UDP_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newmetatable(L, PEER_MT);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, peer_reply);
    lua_setfield(L, -2, "reply");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, luasock_udp);
    lua_setfield(L, -2, "udp");
}
