/* lguard.h -- coroutine.resume, coroutine.wrap, coroutine.close and xpcall for handlers: they
 * refuse a task's thread and keep guard.c's stops (CPU budget, shutdown) on whichever coroutine
 * runs. */
#ifndef LGUARD_H
#define LGUARD_H

#include <lua.h>

/* Replaces those functions of the global tables. */
void lguard_install(lua_State *L);

#endif
