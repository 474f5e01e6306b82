/* lconn.h -- registers the connection metatable and its methods (lconn.c). */
#ifndef LCONN_H
#define LCONN_H

#include <lua.h>

void lconn_open(lua_State *L);

#endif
