/* ludp.c -- the Lua side of UDP: luasock.udp() and its methods, and the datagram(data, peer)
 * callback of udp: listeners. The sockets themselves are udp.c's. */
#include <errno.h>
#include <lauxlib.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"
#include "errors.h"
#include "lresult.h"
#include "ludp.h"
#include "metrics_core.h"
#include "task.h"
#include "udp.h"

#define PEER_MT "luasock.udp_peer"
/* Why a listener's socket (peer.socket) cannot be closed, connected or bound again. */
#define SERVES_EVERY_PEER "it serves every peer until the server stops"

static size_t datagram_tasks; /* alive */
static size_t max_datagram_tasks = LUDP_DEFAULT_MAX_TASKS;
static char busy[80]; /* why a datagram is dropped there */

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

static int receive(lua_State *L, bool want_from)
{
    struct udp *u = toudp(L);
    lua_Integer max = luaL_optinteger(L, 2, UDP_MAX_DATAGRAM);
    luaL_argcheck(L, max >= 1, 2, "must be at least 1");
    if (u->fd < 0)
        return push_error(L, want_from ? "not bound: sendto or setsockname first"
                                       : "not connected: setpeername first");
    return udp_receive(u, L, (size_t)max, want_from,
                       want_from ? "udp:receivefrom" : "udp:receive");
}

static int udp_receivefrom(lua_State *L)
{
    return receive(L, true);
}

static int udp_receive_method(lua_State *L)
{
    return receive(L, false);
}

static int send_to(lua_State *L, struct udp *u, const char *data, size_t len,
                   const struct sockaddr *to, socklen_t to_len)
{
    if (udp_ensure_socket(u, to != NULL ? to->sa_family : AF_INET) < 0)
        return push_error(L, errors_string(errno));
    ssize_t n;
    do
        n = sendto(u->fd, data, len, 0, to, to_len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, errors_string(errno));
    metrics_core.udp_out++;
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
    udp_refuse_listener(u, L, peer ? "udp:setpeername" : "udp:setsockname", SERVES_EVERY_PEER);
    struct sockaddr_storage ss;
    socklen_t len;
    address_arg(L, 2, &ss, &len);
    if (udp_ensure_socket(u, ss.ss_family) < 0)
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
    u->timeout = task_opttimeout(L, 2, "udp:settimeout");
    lua_pushboolean(L, 1);
    return 1;
}

static int udp_close_method(lua_State *L)
{
    struct udp *u = toudp(L);
    udp_refuse_listener(u, L, "udp:close", SERVES_EVERY_PEER);
    udp_close(u);
    lua_pushboolean(L, 1);
    return 1;
}

static int udp_tostring(lua_State *L)
{
    lua_pushfstring(L, "udp socket (fd %d)", toudp(L)->fd);
    return 1;
}

/* luasock.udp() -> an unbound UDP socket */
static int luasock_udp(lua_State *L)
{
    udp_new(L, -1)->timeout = conn_defaults.read_timeout;
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

struct arrival {
    struct udp *socket;
    const char *data;
    size_t len;
    const struct sockaddr *from;
    socklen_t from_len;
    struct task *task; /* made for it, to run once the protected step is over */
};

/* Makes the task that runs datagram(data, peer); protected (task_protected). */
static int new_datagram_task(lua_State *L)
{
    struct arrival *a = lua_touserdata(L, 1);
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, a->socket->datagram_ref) != LUA_TFUNCTION)
        return 0; /* a reload removed the callback: the datagram is dropped */
    lua_pushlstring(L, a->data, a->len);
    lua_pushlightuserdata(L, a->socket);
    lua_rawget(L, LUA_REGISTRYINDEX); /* the socket's userdata, anchored by ludp_listen */
    push_peer(L, -1, a->from, a->from_len);
    lua_remove(L, -2);
    a->task = task_new(L, 2, 0, NULL);
    return 0;
}

/* Datagrams are cheap to send and their sources can be spoofed: beyond max_datagram_tasks
 * alive at once, each is dropped before anything is allocated for it, so that UDP cannot take
 * the memory of the TCP handlers. */
static const char *on_datagram(struct udp *u, const char *data, size_t len,
                               const struct sockaddr *from, socklen_t from_len)
{
    if (datagram_tasks >= max_datagram_tasks)
        return busy;
    struct arrival a = {u, data, len, from, from_len, NULL};
    if (task_protected(new_datagram_task, &a, "datagram dropped") == 0 && a.task != NULL) {
        task_tally(a.task, &datagram_tasks);
        task_run(a.task);
    }
    return NULL;
}

void ludp_set_max_tasks(size_t max)
{
    max_datagram_tasks = max;
    snprintf(busy, sizeof busy, "%zu datagram handlers are running (max_datagram_tasks)", max);
}

int ludp_listen(lua_State *L, const char *text, const struct net_addr *addr, int datagram_ref,
                bool for_workers, char *name, size_t name_size, char *err, size_t err_size)
{
    int gai_error = 0;
    if (udp_listen(L, addr, on_datagram, for_workers, &gai_error) < 0) {
        snprintf(err, err_size, "listen %s: %s", text,
                 gai_error ? errors_gai_string(gai_error) : errors_string(errno));
        return -1;
    }
    struct udp *u = lua_touserdata(L, -1);
    u->datagram_ref = datagram_ref;
    u->timeout = conn_defaults.read_timeout;
    lua_pushlightuserdata(L, u);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    char bound[150];
    net_local_address(u->fd, bound, sizeof bound);
    snprintf(name, name_size, "udp:%s", bound);
    return 0;
}

static int udp_gc(lua_State *L)
{
    udp_close(toudp(L));
    return 0;
}

static const luaL_Reg methods[] = {
    {"sendto", udp_sendto},
    {"receivefrom", udp_receivefrom},
    {"send", udp_send},
    {"receive", udp_receive_method},
    {"setpeername", udp_setpeername},
    {"setsockname", udp_setsockname},
    {"getsockname", udp_getsockname},
    {"settimeout", udp_settimeout},
    {"close", udp_close_method},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", NULL},
    {"__gc", udp_gc},
    {"__close", udp_close_method},
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
    ludp_set_max_tasks(LUDP_DEFAULT_MAX_TASKS);
}
