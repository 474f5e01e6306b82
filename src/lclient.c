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
#include "lresult.h"
#include "lclient.h"
#include "net.h"
#include "resolver.h"
#include "task.h"

struct lookup {
    struct task *t;
    ev_timer timer;
    bool calling;   /* the answer came before resolver_lookup returned */
    bool answered;
    bool abandoned; /* timed out: the late answer only frees the lookup */
    int nresults;
};

#define loop EV_DEFAULT

/* Pushes the addresses as a list of strings, IPv6 and IPv4 in c-ares's order. */
static void push_addresses(lua_State *L, struct ares_addrinfo *result)
{
    lua_newtable(L);
    int n = 0;
    for (struct ares_addrinfo_node *node = result->nodes; node != NULL; node = node->ai_next) {
        char host[NI_MAXHOST];
        int port;
        if (net_host_port(node->ai_addr, node->ai_addrlen, host, sizeof host, &port) == 0) {
            lua_pushstring(L, host);
            lua_rawseti(L, -2, ++n);
        }
    }
}

static void on_answer(void *ud, int status, struct ares_addrinfo *result)
{
    struct lookup *lookup = ud;
    ev_timer_stop(loop, &lookup->timer);
    if (lookup->abandoned || status == ARES_EDESTRUCTION) {
        free(lookup); /* nobody waits any more, or the server is exiting */
        return;
    }
    lua_State *co = task_stack(lookup->t);
    int n = 1;
    if (status == ARES_SUCCESS)
        push_addresses(co, result);
    else
        n = push_error(co, errors_ares_string(status));
    lookup->answered = true;
    lookup->nresults = n;
    if (!lookup->calling) {
        struct task *t = lookup->t;
        free(lookup);
        task_wake(t, n); /* c-ares is still inside its own processing: no resume from here */
    }
}

static void on_lookup_timeout(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct lookup *lookup = w->data;
    lookup->abandoned = true;
    lua_State *co = task_stack(lookup->t);
    task_resume(lookup->t, push_error(co, ERR_TIMEOUT));
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

static double number_option(lua_State *L, int opts, const char *name, double fallback)
{
    if (lua_isnoneornil(L, opts))
        return fallback;
    lua_getfield(L, opts, name);
    double value = luaL_optnumber(L, -1, fallback);
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
    double timeout = number_option(L, 2, "timeout", -1);
    struct task *t = task_check(L, "luasock.resolve");
    int literal = address_family(host);
    if (literal != AF_UNSPEC) {
        if (family != AF_UNSPEC && family != literal)
            return push_error(L, errors_ares_string(ARES_ENOTFOUND));
        lua_createtable(L, 1, 0);
        lua_pushstring(L, host);
        lua_rawseti(L, -2, 1);
        return 1;
    }

    struct lookup *lookup = calloc(1, sizeof *lookup);
    if (lookup == NULL)
        return push_error(L, ERR_NO_MEMORY);
    lookup->t = t;
    lookup->calling = true;
    ev_init(&lookup->timer, on_lookup_timeout);
    lookup->timer.data = lookup;
    resolver_lookup(host, family, on_answer, lookup);
    lookup->calling = false;
    if (lookup->answered) {
        int n = lookup->nresults;
        free(lookup);
        return n;
    }
    if (timeout >= 0) {
        ev_timer_set(&lookup->timer, timeout, 0);
        ev_timer_start(loop, &lookup->timer);
    }
    return task_suspend(L);
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

/* luasock.core.connect_address(ip, port, timeout, bind) -> conn | nil, err */
static int luasock_connect_address(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, -1);
    const char *bind_host = luaL_optstring(L, 4, NULL);
    luaL_argcheck(L, port > 0 && port <= 65535, 2, "port must be 1 to 65535");
    task_check(L, "luasock.connect");

    char service[8];
    snprintf(service, sizeof service, "%d", (int)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *addr;
    if (getaddrinfo(host, service, &hints, &addr) != 0)
        return luaL_argerror(L, 1, "not a numeric address");
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = -1;
    if (fd >= 0 && (bind_host == NULL || bind_local(fd, bind_host, addr->ai_family) == 0))
        rc = connect(fd, addr->ai_addr, addr->ai_addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(addr);
        return push_error(L, errors_string(err));
    }
    net_set_nodelay(fd);
    struct conn *c = conn_new(L, fd, addr->ai_addr, addr->ai_addrlen);
    freeaddrinfo(addr);
    if (rc == 0) {
        conn_own(c, task_current(L));
        return 1;
    }
    return conn_wait_connect(c, L, timeout);
}

static const luaL_Reg functions[] = {
    {"resolve", luasock_resolve},
    {"set_nameservers", luasock_set_nameservers},
    {"connect_address", luasock_connect_address},
    {NULL, NULL},
};

void lclient_open(lua_State *L)
{
    luaL_setfuncs(L, functions, 0);
}
