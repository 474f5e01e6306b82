/* cmodule.c -- a C module that a handler loads with require "cmodule" (c_module_test.sh): it
 * uses what include/luasock.h declares, resolved from the luasock binary when it loads, so it
 * loads only if the binary exports them. */
#include <lauxlib.h>
#include <lua.h>

#include "luasock.h"

/* cmodule.log(message): one line at info through luasock's own log. */
static int cmodule_log(lua_State *L)
{
    luasock_log(LUASOCK_LOG_INFO, "cmodule: %s", luaL_checkstring(L, 1));
    return 0;
}

/* cmodule.open_luasock(): the luasock module as luaopen_luasock builds it. */
static int cmodule_open_luasock(lua_State *L)
{
    return luaopen_luasock(L);
}

int luaopen_cmodule(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"log", cmodule_log},
        {"open_luasock", cmodule_open_luasock},
        {NULL, NULL},
    };
    luaL_newlib(L, functions);
    return 1;
}
