/* tablepath.c -- the encoders' walk over Lua tables; see tablepath.h. */
#include <stdlib.h>

#include "tablepath.h"

int table_path_init(struct table_path *p, int max_depth)
{
    p->depth = 0;
    p->max_depth = max_depth;
    p->tables = max_depth <= CODEC_DEFAULT_MAX_DEPTH
                    ? p->shallow
                    : malloc((size_t)max_depth * sizeof *p->tables);
    return p->tables != NULL ? 0 : -1;
}

void table_path_free(struct table_path *p)
{
    if (p->tables != p->shallow)
        free(p->tables);
    p->tables = p->shallow;
}

bool table_path_enter(struct table_path *p, lua_State *L, int idx)
{
    const void *table = lua_topointer(L, idx);
    for (int i = 0; i < p->depth; i++)
        if (p->tables[i] == table)
            return false;
    p->tables[p->depth++] = table;
    return true;
}

void table_path_leave(struct table_path *p)
{
    p->depth--;
}

/* Distinct positive integer keys as many as the largest of them must be 1..n. */
lua_Integer table_sequence_length(lua_State *L, int idx, size_t *count)
{
    lua_Integer max = 0;
    bool positive_integers = true;
    *count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        (*count)++;
        lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        if (k < 1)
            positive_integers = false;
        else if (k > max)
            max = k;
    }
    return positive_integers && (size_t)max == *count ? max : 0;
}
