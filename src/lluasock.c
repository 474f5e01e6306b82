/* lluasock.c -- luasock.core, the C half of the module handlers get from require "luasock"
 * (scripts/luasock/init.lua is the other half): sleep, now, spawn, log, and the client
 * functions of lclient.c. */
#include <ev.h>
#include <lauxlib.h>

#include "lclient.h"
#include "log.h"
#include "luasock.h"
#include "task.h"

static int luasock_sleep(lua_State *L)
{
    return task_sleep(L, luaL_checknumber(L, 1));
}

static int luasock_now(lua_State *L)
{
    lua_pushnumber(L, ev_now(EV_DEFAULT));
    return 1;
}

static int luasock_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    task_wake(task_new(L, nargs, 0), nargs);
    lua_pushboolean(L, 1);
    return 1;
}

static int luasock_log_(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, NULL, levels);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i <= n; i++) {
        if (i > 2)
            luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    luasock_log((enum luasock_log_level)level, "%s", lua_tostring(L, -1));
    return 0;
}

static const luaL_Reg functions[] = {
    {"sleep", luasock_sleep},
    {"now", luasock_now},
    {"spawn", luasock_spawn},
    {"log", luasock_log_},
    {NULL, NULL},
};

int luaopen_luasock(lua_State *L)
{
    luaL_newlib(L, functions);
    lclient_open(L);
    lua_pushliteral(L, LUASOCK_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
