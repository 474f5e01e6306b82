/* lresult.h -- the shapes Lua-facing functions return: an expected failure as nil and a short
 * message, an address as host and port. Shared by the Lua-facing files and udp.c. */
#ifndef LRESULT_H
#define LRESULT_H

#include <lua.h>

#include "net.h"

static inline int push_error(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* Pushes host and port (nil for unix sockets), or nil and "bad address". */
static inline int push_host_port(lua_State *L, const struct sockaddr *sa, socklen_t len)
{
    char host[128];
    int port;
    if (net_host_port(sa, len, host, sizeof host, &port) < 0)
        return push_error(L, "bad address");
    lua_pushstring(L, host);
    if (port < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, port);
    return 2;
}

#endif
