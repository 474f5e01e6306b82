/* lvalues.h -- the values that say more than a plain Lua value can, for the object codecs:
 * luasock.null, the table markers (luasock.array, map, tuple, set) and the wrappers
 * luasock.bytes, luasock.uint64 and luasock.ext.
 *
 * luasock.null is the light userdata NULL (the value lua-cjson's cjson.null and OpenResty's
 * ngx.null are too). A marked table is the caller's table with one of our metatables. A wrapper
 * is a table of ours: bytes {s}, uint64 {bit pattern as a Lua integer}, ext {type, data}. */
#ifndef LVALUES_H
#define LVALUES_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

enum lvalue_kind {
    LV_OTHER, /* a plain value, or a table with a metatable of someone else's */
    LV_NULL,
    LV_ARRAY,
    LV_MAP,
    LV_TUPLE,
    LV_SET,
    LV_BYTES,
    LV_UINT64,
    LV_EXT
};

/* Creates the metatables and adds null, array, map, tuple, set, bytes, uint64, ext and kind to
 * the table on top of the stack (the luasock module). */
void lvalues_open(lua_State *L);

/* What the value at idx is. Allocates nothing and raises nothing (no metamethod runs), so the
 * encoders may call it at any point. */
enum lvalue_kind lvalues_kind(lua_State *L, int idx);

/* Pushers for the decoders; they allocate (and so may raise out of memory). */
void lvalues_push_null(lua_State *L);
void lvalues_push_bytes(lua_State *L, const char *s, size_t len);
void lvalues_push_uint64(lua_State *L, uint64_t value);
void lvalues_push_ext(lua_State *L, int type, const char *data, size_t len);
/* Gives the table at idx the metatable of kind (LV_ARRAY, LV_MAP, LV_TUPLE or LV_SET). */
void lvalues_mark(lua_State *L, int idx, enum lvalue_kind kind);

/* Readers for the encoders, for a value lvalues_kind classified; they allocate nothing and raise
 * nothing. A wrapper whose slots someone changed reads as empty bytes, 0 or ext 0 "". */
const char *lvalues_bytes(lua_State *L, int idx, size_t *len);
uint64_t lvalues_uint64(lua_State *L, int idx);
const char *lvalues_ext(lua_State *L, int idx, int *type, size_t *len);

#endif
