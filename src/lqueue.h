/* lqueue.h -- luasock.queue() (lqueue.c). */
#ifndef LQUEUE_H
#define LQUEUE_H

#include <lua.h>

/* Registers the metatable and adds queue() to the module table on top of L. */
void lqueue_open(lua_State *L);

#endif
