/* guard.h -- limits on what a handler's Lua code may consume: CPU time per resume and the Lua
 * state's memory. Exceeding either fails the coroutine that did it with a clear error; the
 * process and every other connection go on. */
#ifndef GUARD_H
#define GUARD_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* The allocator to create the Lua state with (ud unused). */
void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* seconds <= 0: no limit. Takes effect at the next resume. */
void guard_set_cpu_budget(double seconds);

/* bytes == 0: no limit. */
void guard_set_memory_limit(size_t bytes);

/* What the Lua state holds now, in bytes. */
size_t guard_memory_in_use(void);

/* Starts the CPU-time ticks in this process (again after a fork: interval timers are not
 * inherited). */
void guard_start(void);

/* Watches for stalls (stall_warning) in a process that serves (not the --workers parent): a
 * wall-clock timer, running while resumes do. */
void guard_watch_stalls(void);

/* stall_warning: a resume that runs this many seconds of wall time (blocked in a C call, or
 * busy) is logged with where it was, once per call site. At or below 0: never. */
void guard_set_stall_warning(double seconds);

/* How a stall warning names what stalled: describe(co, ...) for the task's coroutine co. */
void guard_set_describer(void (*describe)(lua_State *co, char *out, size_t size));

/* After libev's watchers for SIGTERM and SIGINT have started: notes their arrival too, so that
 * a resume that runs on for a second after one is stopped. libev still gets the signals. */
void guard_watch_shutdown_signals(void);

/* Around running Lua code for a handler: the limits apply to co (and its allocations) only in
 * between, never to the core's own use of the main state. */
lua_State *guard_enter(lua_State *co);
void guard_leave(lua_State *outer); /* what guard_enter returned */

/* Around resuming (or closing) a coroutine from Lua code: co runs from now on, then outer again
 * (what guard_switch returned). A stop follows whichever runs. */
lua_State *guard_switch(lua_State *co);
/* Whether the current resume is being stopped (its error is on its way). */
bool guard_stopping(void);
void guard_switch_back(lua_State *outer);

#endif
