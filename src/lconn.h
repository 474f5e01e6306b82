/* lconn.h -- registers the connection metatable and its methods (lconn.c). */
#ifndef LCONN_H
#define LCONN_H

#include <lua.h>

struct conn;

void lconn_open(lua_State *L);

/* The connection at argument 1, or raises (the check every connection method makes). */
struct conn *lconn_check(lua_State *L);

#endif
