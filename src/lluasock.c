/* lluasock.c -- luasock.core, the C half of the module handlers get from require "luasock"
 * (scripts/luasock/init.lua is the other half): sleep, now, spawn, log, and the client
 * functions of lclient.c. */
#include <stdbool.h>
#include <lauxlib.h>

#include "codec.h"
#include "conn.h"
#include "errors.h"
#include "lclient.h"
#include "lqueue.h"
#include "lmetrics.h"
#include "lluasock.h"
#include "lresult.h"
#include "lvalues.h"
#include "objects.h"
#include "log.h"
#include "lstdio.h"
#include "ludp.h"
#include "luasock.h"
#include "net.h"
#include "task.h"

static bool shutting_down;

void lluasock_begin_shutdown(void)
{
    shutting_down = true;
}

static int luasock_shutting_down(lua_State *L)
{
    lua_pushboolean(L, shutting_down);
    return 1;
}

static int luasock_sleep(lua_State *L)
{
    return task_sleep(L, 1);
}

static int luasock_now(lua_State *L)
{
    lua_pushnumber(L, task_now());
    return 1;
}

/* fn(...) in a new task, started by start; returns the task. */
static int spawn(lua_State *L, void (*start)(struct task *))
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    struct task *t = task_new(L, lua_gettop(L) - 1, 0, NULL);
    start(t);
    task_push(L, t);
    return 1;
}

static int luasock_spawn(lua_State *L)
{
    return spawn(L, task_start);
}

/* luasock.core.spawn_service(fn, ...): luasock.spawn for the runtime's own modules (the pub/sub
 * bus), whose tasks no reload of the script stops. */
static int luasock_spawn_service(lua_State *L)
{
    return spawn(L, task_start_service);
}

/* Pushes tostring of the arguments from first on, joined by sep. */
static const char *join_arguments(lua_State *L, int first, char sep)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = first; i <= n; i++) {
        if (i > first)
            luaL_addchar(&b, sep);
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static int luasock_log_(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int level = log_level_from_name(name);
    if (level < 0)
        return luaL_argerror(L, 1, lua_pushfstring(L, "level must be one of " LOG_LEVEL_NAMES
                                                      " (any case); got '%s'", name));
    luasock_log((enum luasock_log_level)level, "%s", join_arguments(L, 2, ' '));
    return 0;
}

/* print in a server: one log line at info, arguments joined by tabs as print does, so that
 * output from many handlers never interleaves mid-line. */
static int luasock_print(lua_State *L)
{
    luasock_log(LUASOCK_LOG_INFO, "%s", join_arguments(L, 1, '\t'));
    return 0;
}

void lluasock_route_print(lua_State *L)
{
    lua_pushcfunction(L, luasock_print);
    lua_setglobal(L, "print");
}

/* Encodes the value at 1 with codec -> bytes | nil, err. The bytes are made in a buffer that
 * outlives the call, so that a memory error raised while they become a Lua string leaks nothing:
 * the next call frees what the failed one left. */
static int encode_with(lua_State *L, enum object_codec codec)
{
    static struct buf encoded;
    luaL_checkany(L, 1);
    struct codec_limits limits = {.max_size = conn_defaults.max_object,
                                  .max_depth = CODEC_DEFAULT_MAX_DEPTH};
    const char *err;
    buf_free(&encoded);
    if (object_encode(L, codec, 1, &encoded, &limits, &err) != CODEC_OK)
        return push_error(L, err);
    lua_pushlstring(L, buf_head(&encoded), buf_len(&encoded));
    buf_free(&encoded);
    return 1;
}

/* Decodes the string at 1, which must be exactly one value of codec, with the options table at
 * 2 ({exact = true}) -> value | nil, err. */
static int decode_with(lua_State *L, enum object_codec codec)
{
    size_t len, frame_len;
    const char *data = luaL_checklstring(L, 1, &len);
    bool exact = false;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        exact = lua_getfield(L, 2, "exact") != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    struct codec_limits limits = {conn_defaults.max_object, CODEC_DEFAULT_MAX_DEPTH,
                                  conn_defaults.max_object_items};
    struct object_scanner *scanner = object_scanner_new(codec);
    if (scanner == NULL)
        return push_error(L, ERR_NO_MEMORY);
    const char *err = "truncated";
    enum codec_status status = object_scan(scanner, data, len, &limits, &frame_len, &err);
    object_scanner_free(scanner);
    bool recoverable;
    if (status == CODEC_OK && frame_len != len)
        err = "trailing bytes after the value";
    else if (status == CODEC_OK
             && object_decode(L, codec, data, len, exact, &err, &recoverable) == CODEC_OK)
        return 1;
    return push_error(L, err);
}

/* luasock.encode(value) -> MessagePack bytes | nil, err */
static int luasock_encode(lua_State *L)
{
    return encode_with(L, OBJECT_MSGPACK);
}

/* luasock.decode(bytes [, {exact = true}]) -> value | nil, err: bytes must be exactly one value. */
static int luasock_decode(lua_State *L)
{
    return decode_with(L, OBJECT_MSGPACK);
}

/* luasock.pickle.encode(value) -> protocol 4 pickle bytes | nil, err */
static int pickle_encode_function(lua_State *L)
{
    return encode_with(L, OBJECT_PICKLE);
}

/* luasock.pickle.decode(bytes [, {exact = true}]) -> value | nil, err: plain data only. */
static int pickle_decode_function(lua_State *L)
{
    return decode_with(L, OBJECT_PICKLE);
}

void lluasock_set_worker(lua_State *L, int id, int count)
{
    static const char *const modules[] = {"luasock.core", "luasock"};
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    for (int i = 0; i < 2; i++) {
        if (lua_getfield(L, -1, modules[i]) == LUA_TTABLE) {
            lua_pushinteger(L, id);
            lua_setfield(L, -2, "worker");
            lua_pushinteger(L, count);
            lua_setfield(L, -2, "workers");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

void lluasock_set_pubsub_url(lua_State *L, const char *url)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "luasock.core");
    lua_pushstring(L, url);
    lua_setfield(L, -2, "pubsub_url");
    lua_pop(L, 2);
}

/* luasock.core.listener_callback(address) -> "handle" or "datagram", the callback that serves a
 * listener on address, or nil and "bad listen address ...": the loader checks a script's listen
 * with the parser and message of --listen. */
static int luasock_listener_callback(lua_State *L)
{
    struct net_addr addr;
    char err[512];
    if (net_check_listen(luaL_checkstring(L, 1), &addr, err, sizeof err) < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, addr.kind == NET_UDP ? "datagram" : "handle");
    return 1;
}

/* luasock.core.check_wait(what, level): raises as a waiting call does unless the caller can
 * wait, blaming the function level levels up from it as error() counts, so that a Lua wrapper
 * (luasock.connect) blames its caller's line rather than its own. */
static int luasock_check_wait(lua_State *L)
{
    task_check_wait_at(L, luaL_checkstring(L, 1), (int)luaL_optinteger(L, 2, 1));
    return 0;
}

static const luaL_Reg functions[] = {
    {"encode", luasock_encode},
    {"decode", luasock_decode},
    {"sleep", luasock_sleep},
    {"shutting_down", luasock_shutting_down},
    {"now", luasock_now},
    {"spawn", luasock_spawn},
    {"spawn_service", luasock_spawn_service},
    {"log", luasock_log_},
    {"listener_callback", luasock_listener_callback},
    {"check_wait", luasock_check_wait},
    {NULL, NULL},
};

int luaopen_luasock(lua_State *L)
{
    luaL_newlib(L, functions);
    lclient_open(L);
    ludp_open(L);
    lqueue_open(L);
    lvalues_open(L);
    lmetrics_open(L);
    lstdio_open(L);
    static const luaL_Reg pickle_functions[] = {
        {"encode", pickle_encode_function},
        {"decode", pickle_decode_function},
        {NULL, NULL},
    };
    luaL_newlib(L, pickle_functions);
    lua_setfield(L, -2, "pickle");
    lua_pushliteral(L, LUASOCK_VERSION);
    lua_setfield(L, -2, "version");
    lua_newtable(L); /* survives reloads: the module is loaded once per process */
    lua_setfield(L, -2, "state");
    lua_pushinteger(L, 1);
    lua_setfield(L, -2, "worker");
    lua_pushinteger(L, 1);
    lua_setfield(L, -2, "workers");
    return 1;
}
