/* tablepath.h -- what the encoders (codec.c's MessagePack, pickle.c's pickle) share as they walk
 * Lua tables: the path of tables being encoded, to refuse cycles and nesting beyond the limit,
 * kept in a C array so that encoding allocates nothing in Lua and cannot raise halfway; and the
 * test that tells a sequence (an array, a list) from any other table. */
#ifndef TABLEPATH_H
#define TABLEPATH_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "codec.h"

struct table_path {
    const void **tables; /* outermost first: shallow, or malloc'd for a deeper max_depth */
    const void *shallow[CODEC_DEFAULT_MAX_DEPTH];
    int depth;
    int max_depth;
};

/* Returns 0, or -1 when the array for a max_depth above the default cannot be allocated. */
int table_path_init(struct table_path *p, int max_depth);
void table_path_free(struct table_path *p);

/* Enters the table at idx, at most max_depth deep (the caller refuses deeper nesting first, with
 * its own message): false when it is one of the tables being encoded, a cycle. After true,
 * table_path_leave must follow. */
bool table_path_enter(struct table_path *p, lua_State *L, int idx);
void table_path_leave(struct table_path *p);

/* n if the keys of the table at idx are exactly 1..n, else 0 (needs one free stack slot, and
 * runs no metamethod); *count gets the number of keys. */
lua_Integer table_sequence_length(lua_State *L, int idx, size_t *count);

#endif
