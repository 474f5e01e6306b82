/* lclient.c -- the client side of luasock: name resolution and outgoing connections.
 *
 * luasock.resolve asks c-ares and suspends the caller until the answer or its timeout.
 * luasock.core.connect_address connects to one numeric address; luasock.connect (in
 * scripts/luasock/init.lua) resolves a name and tries its addresses in turn with it. */
#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "errors.h"
#include "lconn.h"
#include "lresult.h"
#include "lclient.h"
#include "ltls.h"
#include "net.h"
#include "resolver.h"
#include "task.h"

#define LOOKUP_MT "luasock.lookup"

/* A name lookup, as a userdata on the resolving coroutine's stack: the answer is kept here in C
 * until that coroutine runs again and turns it into Lua values. */
struct lookup {
    struct task_waiters waiter;
    struct query *query; /* in flight with c-ares, or NULL */
    bool answered;
    int status;          /* ARES_* once answered */
    char *addresses;     /* count NUL-terminated strings, one after another */
    int count;
};

/* What c-ares holds until its callback, which always comes (with ARES_EDESTRUCTION at exit):
 * it outlives a lookup that timed out or was collected. */
struct query {
    struct lookup *lookup; /* NULL once nobody waits for the answer */
};

/* Keeps the addresses as text, IPv6 and IPv4 in c-ares's order. Returns an ARES_* status. */
static int keep_addresses(struct lookup *lookup, struct ares_addrinfo *result)
{
    size_t size = 0;
    for (struct ares_addrinfo_node *node = result->nodes; node != NULL; node = node->ai_next)
        size += NI_MAXHOST;
    if (size > 0 && (lookup->addresses = malloc(size)) == NULL)
        return ARES_ENOMEM;
    size_t used = 0;
    for (struct ares_addrinfo_node *node = result->nodes; node != NULL; node = node->ai_next) {
        int port;
        if (net_host_port(node->ai_addr, node->ai_addrlen, lookup->addresses + used,
                          NI_MAXHOST, &port) == 0) {
            used += strlen(lookup->addresses + used) + 1;
            lookup->count++;
        }
    }
    return ARES_SUCCESS;
}

/* Called inside c-ares's own processing: no Lua here, and the waiter runs on the next step. */
static void on_answer(void *ud, int status, struct ares_addrinfo *result)
{
    struct query *query = ud;
    struct lookup *lookup = query->lookup;
    free(query);
    if (lookup == NULL)
        return;
    lookup->query = NULL;
    lookup->answered = true;
    lookup->status = status == ARES_SUCCESS ? keep_addresses(lookup, result) : status;
    task_wake_first(&lookup->waiter, NULL);
}

static int lookup_gc(lua_State *L)
{
    struct lookup *lookup = luaL_checkudata(L, 1, LOOKUP_MT);
    if (lookup->query != NULL)
        lookup->query->lookup = NULL;
    free(lookup->addresses);
    lookup->addresses = NULL;
    return 0;
}

/* Pushes the addresses as a list of strings, or nil and the error. */
static int push_answer(lua_State *L, struct lookup *lookup)
{
    if (lookup->status != ARES_SUCCESS)
        return push_error(L, errors_ares_string(lookup->status));
    lua_createtable(L, lookup->count, 0);
    const char *address = lookup->addresses;
    for (int i = 1; i <= lookup->count; i++) {
        lua_pushstring(L, address);
        lua_rawseti(L, -2, i);
        address += strlen(address) + 1;
    }
    return 1;
}

static int resolve_resumed(lua_State *L, int status, lua_KContext lookup_index)
{
    (void)status;
    const char *failure = task_failure(L);
    if (failure != NULL)
        return push_error(L, failure);
    return push_answer(L, lua_touserdata(L, (int)lookup_index));
}

static int family_option(lua_State *L, int opts)
{
    static const char *const names[] = {"any", "inet", "inet6", NULL};
    static const int families[] = {AF_UNSPEC, AF_INET, AF_INET6};
    if (lua_isnoneornil(L, opts))
        return AF_UNSPEC;
    lua_getfield(L, opts, "family");
    int family = families[luaL_checkoption(L, -1, "any", names)];
    lua_pop(L, 1);
    return family;
}

static double timeout_option(lua_State *L, int opts, const char *what, double fallback)
{
    if (lua_isnoneornil(L, opts))
        return fallback;
    if (lua_getfield(L, opts, "timeout") == LUA_TNIL) {
        lua_pop(L, 1);
        return fallback;
    }
    double value = task_opttimeout(L, -1, what);
    lua_pop(L, 1);
    return value;
}

/* The family of an IP address in text, or AF_UNSPEC for a name. c-ares 1.18 would send an
 * address to the name servers as if it were a name, so addresses never go to it. */
static int address_family(const char *host)
{
    unsigned char bytes[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, bytes) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, host, bytes) == 1)
        return AF_INET6;
    return AF_UNSPEC;
}

/* luasock.resolve(host [, {family = "inet"|"inet6", timeout = s}]) -> {address, ...} */
static int luasock_resolve(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    int family = family_option(L, 2);
    double timeout = timeout_option(L, 2, "luasock.resolve", -1);
    int literal = address_family(host);
    if (literal != AF_UNSPEC) {
        if (family != AF_UNSPEC && family != literal)
            return push_error(L, errors_ares_string(ARES_ENOTFOUND));
        lua_createtable(L, 1, 0);
        lua_pushstring(L, host);
        lua_rawseti(L, -2, 1);
        return 1;
    }

    task_check_wait(L, "luasock.resolve");
    struct lookup *lookup = lua_newuserdatauv(L, sizeof *lookup, 0);
    *lookup = (struct lookup){0};
    luaL_setmetatable(L, LOOKUP_MT);
    struct query *query = malloc(sizeof *query);
    if (query == NULL)
        return push_error(L, ERR_NO_MEMORY);
    query->lookup = lookup;
    lookup->query = query;
    resolver_lookup(host, family, on_answer, query);
    if (lookup->answered) /* from /etc/hosts, before resolver_lookup returned */
        return push_answer(L, lookup);
    return task_wait(L, &lookup->waiter, timeout, resolve_resumed, lua_gettop(L));
}

/* luasock.set_nameservers("127.0.0.1:5353,[::1]:53"): ask these instead of resolv.conf's. */
static int luasock_set_nameservers(lua_State *L)
{
    int status = resolver_set_servers(luaL_checkstring(L, 1));
    if (status != ARES_SUCCESS)
        return push_error(L, errors_ares_string(status));
    lua_pushboolean(L, 1);
    return 1;
}

static int bind_local(int fd, const char *host, int family)
{
    struct addrinfo hints = {.ai_family = family, .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *found;
    if (getaddrinfo(host, "0", &hints, &found) != 0) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    int rc = bind(fd, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    return rc;
}

/* Where connect_address connects: a numeric IP address and port, or "unix:/path" (the port is
 * then ignored). Returns false when host is neither. */
static bool connect_target(const char *host, lua_Integer port, struct sockaddr_storage *to,
                           socklen_t *len)
{
    if (strncmp(host, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)to;
        if (host[5] == '\0' || strlen(host + 5) >= sizeof sun->sun_path)
            return false;
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, host + 5);
        *len = sizeof *sun;
        return true;
    }
    if (port <= 0 || port > 65535)
        return false;
    char service[8];
    snprintf(service, sizeof service, "%d", (int)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *addr;
    if (getaddrinfo(host, service, &hints, &addr) != 0)
        return false;
    memcpy(to, addr->ai_addr, addr->ai_addrlen);
    *len = addr->ai_addrlen;
    freeaddrinfo(addr);
    return true;
}

/* luasock.core.connect_address(address, port, timeout, bind, pool) -> conn | nil, err. address
 * is a numeric IP address or "unix:/path". The connection object comes first, so that nothing
 * acquired afterwards (the socket) is left behind by a raise; it keeps its pool's name as its
 * user value (no allocation). */
static int luasock_connect_address(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    double timeout = task_opttimeout(L, 3, "luasock.connect");
    const char *bind_host = luaL_optstring(L, 4, NULL);
    luaL_checkstring(L, 5);
    struct sockaddr_storage to = {0};
    socklen_t to_len;
    if (!connect_target(host, port, &to, &to_len))
        return luaL_argerror(L, 1, "not a numeric address and port 1 to 65535, or unix:/path");
    struct task *t = task_check_wait(L, "luasock.connect");
    struct conn *c = conn_new(L);
    lua_pushvalue(L, 5);
    lua_setiuservalue(L, -2, CONN_UV_POOL);
    int family = to.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = -1;
    if (fd >= 0 && (bind_host == NULL || family == AF_UNIX || bind_local(fd, bind_host, family) == 0))
        rc = connect(fd, (struct sockaddr *)&to, to_len);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        conn_discard(c);
        return push_error(L, errors_string(err));
    }
    if (family != AF_UNIX)
        net_set_nodelay(fd);
    conn_attach(c, fd, (struct sockaddr *)&to, to_len);
    c->outgoing = true;
    c->heard_from = true; /* we speak first: no first-byte timeout on our reads */
    task_own(t, &c->res);
    if (rc == 0)
        return 1;
    return conn_wait_connect(c, L, timeout);
}

/* luasock.core.park(conn, timeout) -> true | nil, err: conn:setkeepalive's half in C. */
static int luasock_park(lua_State *L)
{
    struct conn *c = lconn_check(L);
    double timeout = task_opttimeout(L, 2, "conn:setkeepalive");
    const char *err = conn_park(c, timeout);
    if (err != NULL)
        return push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* luasock.core.unpark(conn) -> true, or false when it closed while it was parked. */
static int luasock_unpark(lua_State *L)
{
    struct conn *c = lconn_check(L);
    struct task *t = task_current(L);
    if (t == NULL)
        return luaL_error(L, "luasock.connect must be called from a handler or a task");
    lua_pushboolean(L, conn_unpark(c, t));
    return 1;
}

/* luasock.core.parked(conn) -> whether conn waits in a pool, still open. */
static int luasock_parked(lua_State *L)
{
    struct conn *c = lconn_check(L);
    lua_pushboolean(L, c->parked && c->state == CONN_OPEN);
    return 1;
}

/* luasock.core.interrupt(conn) -> whether a coroutine was waiting in conn:receive. It returns
 * nil, "interrupted" and its partial input on the next loop step, as after a timeout: for a
 * client library (luasock.redis) whose reader coroutine must let go of a connection it parks. */
static int luasock_interrupt(lua_State *L)
{
    struct conn *c = lconn_check(L);
    lua_pushboolean(L, task_wake_first(&c->reader, "interrupted"));
    return 1;
}

/* luasock.core.pool_name(conn) -> the name of the pool it was made for, or nil (accepted). */
static int luasock_pool_name(lua_State *L)
{
    if (lconn_check(L)->outgoing)
        lua_getiuservalue(L, 1, CONN_UV_POOL);
    else
        lua_pushnil(L); /* the user value is its handler's (CONN_UV_DELIVERY) */
    return 1;
}

/* conn:reused() -> how many times a pool handed conn out again. */
static int conn_reused(lua_State *L)
{
    lua_pushinteger(L, lconn_check(L)->reused);
    return 1;
}

/* luasock.core.conn_methods() -> the table of connection methods, for those written in Lua. */
static int luasock_conn_methods(lua_State *L)
{
    luaL_getmetatable(L, CONN_MT);
    lua_getfield(L, -1, "__index");
    return 1;
}

static const luaL_Reg functions[] = {
    {"resolve", luasock_resolve},
    {"set_nameservers", luasock_set_nameservers},
    {"connect_address", luasock_connect_address},
    {"check_tls", ltls_check_client_options},
    {"park", luasock_park},
    {"unpark", luasock_unpark},
    {"parked", luasock_parked},
    {"interrupt", luasock_interrupt},
    {"pool_name", luasock_pool_name},
    {"reused", conn_reused},
    {"conn_methods", luasock_conn_methods},
    {NULL, NULL},
};

void lclient_open(lua_State *L)
{
    luaL_newmetatable(L, LOOKUP_MT);
    lua_pushcfunction(L, lookup_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
