/* script.h -- the handler script inside the Lua state: loading it through
 * scripts/luasock/loader.lua, putting its settings and callbacks in place, watching its files and
 * reloading it. */
#ifndef SCRIPT_H
#define SCRIPT_H

#include <ev.h>
#include <lua.h>
#include <stdbool.h>

#include "watch.h"

enum script_callback { SCRIPT_HANDLE, SCRIPT_DATAGRAM, SCRIPT_ON_CLOSE };

void script_init(lua_State *L, const char *path);

/* `luasock check`: loads the script and runs its start hook as script_start does, without putting
 * anything in place; prints "PATH: ok" or the error. Returns 0 or -1. */
int script_check(void);

/* Loads the script, runs its start hook and puts its settings and callbacks in place. Leaves its
 * settings table on the stack, or prints the error and returns -1. */
int script_start(void);

/* `luasock run`: replaces the nargs values on top with the program's main function below them,
 * or prints the error and returns -1. */
int script_load_program(int nargs);

/* Pushes the callback and returns true, or pushes nothing and returns false if the script (as
 * last loaded) has none. */
bool script_push_callback(lua_State *L, enum script_callback which);

/* Whether the script (as last loaded) has that callback. */
bool script_has_callback(enum script_callback which);

/* The registry slot that holds the callback: a reload replaces the function in the same slot, so
 * a holder of the slot (a udp listener) calls the new code from then on. */
int script_callback_slot(enum script_callback which);

/* Loads the script again; logs "reloaded ..." with why, or "reload failed: ...". If that fails,
 * the old code keeps serving. Connections already open keep running their coroutines. */
int script_reload(const char *why); /* 0 if it reloaded */

/* Calls on_change when the script, or a module it loaded from its own directory, changes. */
void script_watch(struct ev_loop *loop, watch_cb on_change);
void script_unwatch(void);

#endif
