/* lvalues.c -- luasock.null, the table markers and the bytes, uint64 and ext wrappers; see
 * lvalues.h. The codecs tell them apart by metatable identity, which needs no allocation and
 * runs no metamethod, so an encoder can classify a value anywhere in its walk. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lvalues.h"

static const char *const metatable_names[] = {
    [LV_ARRAY] = "luasock.array", [LV_MAP] = "luasock.map",       [LV_TUPLE] = "luasock.tuple",
    [LV_SET] = "luasock.set",     [LV_BYTES] = "luasock.bytes",   [LV_UINT64] = "luasock.uint64",
    [LV_EXT] = "luasock.ext",
};

#define KINDS (sizeof metatable_names / sizeof metatable_names[0])

/* The metatables' addresses, for lvalues_kind: they live in the registry for the life of the
 * state, so the addresses stay valid. */
static const void *metatables[KINDS];

enum lvalue_kind lvalues_kind(lua_State *L, int idx)
{
    int type = lua_type(L, idx);
    if (type == LUA_TLIGHTUSERDATA)
        return lua_touserdata(L, idx) == NULL ? LV_NULL : LV_OTHER;
    if (type != LUA_TTABLE || !lua_getmetatable(L, idx))
        return LV_OTHER;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    for (size_t kind = LV_ARRAY; kind < KINDS; kind++)
        if (metatables[kind] == mt)
            return (enum lvalue_kind)kind;
    return LV_OTHER;
}

/* ---- Pushers (decoders) ---- */

void lvalues_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

void lvalues_mark(lua_State *L, int idx, enum lvalue_kind kind)
{
    idx = lua_absindex(L, idx);
    luaL_getmetatable(L, metatable_names[kind]);
    lua_setmetatable(L, idx);
}

/* A new wrapper table of kind with the value on top of the stack as its slot 1 (popped). */
static void wrap_top(lua_State *L, enum lvalue_kind kind, int slots)
{
    lua_createtable(L, slots, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lvalues_mark(L, -1, kind);
}

void lvalues_push_bytes(lua_State *L, const char *s, size_t len)
{
    lua_pushlstring(L, s, len);
    wrap_top(L, LV_BYTES, 1);
}

void lvalues_push_uint64(lua_State *L, uint64_t value)
{
    lua_pushinteger(L, (lua_Integer)value); /* the bit pattern */
    wrap_top(L, LV_UINT64, 1);
}

void lvalues_push_ext(lua_State *L, int type, const char *data, size_t len)
{
    lua_pushinteger(L, type);
    wrap_top(L, LV_EXT, 2);
    lua_pushlstring(L, data, len);
    lua_rawseti(L, -2, 2);
}

/* ---- Readers (encoders) ---- */

/* Slot n of the table at idx as a string; "" if someone put something else there. */
static const char *string_slot(lua_State *L, int idx, int n, size_t *len)
{
    const char *s = NULL;
    if (lua_rawgeti(L, idx, n) == LUA_TSTRING)
        s = lua_tolstring(L, -1, len); /* the table keeps it alive */
    lua_pop(L, 1);
    if (s == NULL) {
        *len = 0;
        return "";
    }
    return s;
}

static lua_Integer integer_slot(lua_State *L, int idx, int n)
{
    lua_rawgeti(L, idx, n);
    lua_Integer value = lua_tointegerx(L, -1, NULL);
    lua_pop(L, 1);
    return value;
}

const char *lvalues_bytes(lua_State *L, int idx, size_t *len)
{
    return string_slot(L, lua_absindex(L, idx), 1, len);
}

uint64_t lvalues_uint64(lua_State *L, int idx)
{
    return (uint64_t)integer_slot(L, lua_absindex(L, idx), 1);
}

const char *lvalues_ext(lua_State *L, int idx, int *type, size_t *len)
{
    idx = lua_absindex(L, idx);
    *type = (int)integer_slot(L, idx, 1);
    return string_slot(L, idx, 2, len);
}

/* ---- The Lua functions ---- */

/* luasock.array(t), map(t), tuple(t), set(t) -> t, marked. A table with a metatable of
 * someone else's is refused: replacing it would change what the table does. */
static int mark(lua_State *L, enum lvalue_kind kind)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    enum lvalue_kind now = lvalues_kind(L, 1);
    if (now == LV_OTHER && lua_getmetatable(L, 1))
        return luaL_error(L, "%s: the table already has a metatable", metatable_names[kind]);
    if (now != LV_OTHER && now != LV_ARRAY && now != LV_MAP && now != LV_TUPLE && now != LV_SET)
        return luaL_argerror(L, 1, "a plain table expected");
    lua_settop(L, 1);
    lvalues_mark(L, 1, kind);
    return 1;
}

static int luasock_array(lua_State *L) { return mark(L, LV_ARRAY); }
static int luasock_map(lua_State *L) { return mark(L, LV_MAP); }
static int luasock_tuple(lua_State *L) { return mark(L, LV_TUPLE); }
static int luasock_set(lua_State *L) { return mark(L, LV_SET); }

/* luasock.bytes(s) -> a bytes value (a bytes value gives a copy of itself). */
static int luasock_bytes(lua_State *L)
{
    size_t len;
    const char *s = lvalues_kind(L, 1) == LV_BYTES ? lvalues_bytes(L, 1, &len)
                                                   : luaL_checklstring(L, 1, &len);
    lvalues_push_bytes(L, s, len);
    return 1;
}

/* Reads a decimal 0..2^64-1 with nothing else around it. */
static int parse_uint64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = value;
    return 0;
}

/* luasock.uint64(n) -> an unsigned 64-bit value: n a non-negative integer, a decimal string up
 * to 18446744073709551615, or a uint64 value. */
static int luasock_uint64(lua_State *L)
{
    uint64_t value;
    if (lvalues_kind(L, 1) == LV_UINT64) {
        value = lvalues_uint64(L, 1);
    } else if (lua_isinteger(L, 1) && lua_tointeger(L, 1) >= 0) {
        value = (uint64_t)lua_tointeger(L, 1);
    } else if (lua_type(L, 1) != LUA_TSTRING || parse_uint64(lua_tostring(L, 1), &value) < 0) {
        return luaL_argerror(L, 1, "a non-negative integer or a decimal string up to 2^64-1 "
                                   "expected");
    }
    lvalues_push_uint64(L, value);
    return 1;
}

/* luasock.ext(type, data) -> a MessagePack extension value (type -128..127). */
static int luasock_ext(lua_State *L)
{
    lua_Integer type = luaL_checkinteger(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, type >= -128 && type <= 127, 1, "ext type must be -128 to 127");
    lvalues_push_ext(L, (int)type, data, len);
    return 1;
}

/* luasock.kind(v) -> "null", "array", "map", "tuple", "set", "bytes", "uint64", "ext", or nil. */
static int luasock_kind(lua_State *L)
{
    luaL_checkany(L, 1);
    enum lvalue_kind kind = lvalues_kind(L, 1);
    if (kind == LV_OTHER)
        lua_pushnil(L);
    else if (kind == LV_NULL)
        lua_pushliteral(L, "null");
    else
        lua_pushstring(L, metatable_names[kind] + strlen("luasock."));
    return 1;
}

/* ---- Metamethods ---- */

static int bytes_tostring(lua_State *L)
{
    size_t len;
    const char *s = lvalues_bytes(L, 1, &len);
    lua_pushlstring(L, s, len);
    return 1;
}

static int bytes_len(lua_State *L)
{
    size_t len;
    lvalues_bytes(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
}

/* Both operands are tables with this __eq; equal when their kinds and slots are. */
static int wrapper_eq(lua_State *L)
{
    enum lvalue_kind kind = lvalues_kind(L, 1);
    bool equal = kind == lvalues_kind(L, 2);
    for (int n = 1; equal && n <= (kind == LV_EXT ? 2 : 1); n++) {
        lua_rawgeti(L, 1, n);
        lua_rawgeti(L, 2, n);
        equal = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, equal);
    return 1;
}

/* bytes .. string and string .. bytes give strings. */
static int bytes_concat(lua_State *L)
{
    for (int i = 1; i <= 2; i++) {
        if (lvalues_kind(L, i) == LV_BYTES) {
            size_t len;
            const char *s = lvalues_bytes(L, i, &len);
            lua_pushlstring(L, s, len);
        } else {
            luaL_checkstring(L, i);
            lua_pushvalue(L, i);
        }
    }
    lua_concat(L, 2);
    return 1;
}

static int uint64_tostring(lua_State *L)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, lvalues_uint64(L, 1));
    lua_pushstring(L, text);
    return 1;
}

static uint64_t uint64_operand(lua_State *L, int i)
{
    if (lvalues_kind(L, i) == LV_UINT64)
        return lvalues_uint64(L, i);
    lua_Integer n = luaL_checkinteger(L, i);
    luaL_argcheck(L, n >= 0, i, "negative number compared with a uint64");
    return (uint64_t)n;
}

static int uint64_lt(lua_State *L)
{
    lua_pushboolean(L, uint64_operand(L, 1) < uint64_operand(L, 2));
    return 1;
}

static int uint64_le(lua_State *L)
{
    lua_pushboolean(L, uint64_operand(L, 1) <= uint64_operand(L, 2));
    return 1;
}

static int ext_tostring(lua_State *L)
{
    int type;
    size_t len;
    lvalues_ext(L, 1, &type, &len);
    lua_pushfstring(L, "luasock.ext(%d, %d bytes)", type, (int)len);
    return 1;
}

/* e.type and e.data. */
static int ext_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key != NULL && strcmp(key, "type") == 0)
        lua_rawgeti(L, 1, 1);
    else if (key != NULL && strcmp(key, "data") == 0)
        lua_rawgeti(L, 1, 2);
    else
        lua_pushnil(L);
    return 1;
}

static const luaL_Reg bytes_methods[] = {
    {"__tostring", bytes_tostring}, {"__len", bytes_len}, {"__eq", wrapper_eq},
    {"__concat", bytes_concat},     {NULL, NULL},
};

static const luaL_Reg uint64_methods[] = {
    {"__tostring", uint64_tostring}, {"__eq", wrapper_eq}, {"__lt", uint64_lt},
    {"__le", uint64_le},             {NULL, NULL},
};

static const luaL_Reg ext_methods[] = {
    {"__tostring", ext_tostring}, {"__eq", wrapper_eq}, {"__index", ext_index}, {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"array", luasock_array}, {"map", luasock_map},       {"tuple", luasock_tuple},
    {"set", luasock_set},     {"bytes", luasock_bytes},   {"uint64", luasock_uint64},
    {"ext", luasock_ext},     {"kind", luasock_kind},     {NULL, NULL},
};

void lvalues_open(lua_State *L)
{
    for (size_t kind = LV_ARRAY; kind < KINDS; kind++) {
        luaL_newmetatable(L, metatable_names[kind]);
        if (kind == LV_BYTES)
            luaL_setfuncs(L, bytes_methods, 0);
        else if (kind == LV_UINT64)
            luaL_setfuncs(L, uint64_methods, 0);
        else if (kind == LV_EXT)
            luaL_setfuncs(L, ext_methods, 0);
        metatables[kind] = lua_topointer(L, -1);
        lua_pop(L, 1);
    }
    luaL_setfuncs(L, functions, 0);
    lvalues_push_null(L);
    lua_setfield(L, -2, "null");
}
