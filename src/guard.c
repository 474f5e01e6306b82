/* guard.c -- the CPU budget and the memory cap of handlers; see guard.h.
 *
 * A coroutine that loops forever would freeze every connection of its process. Counting Lua
 * instructions with a hook on every coroutine would slow down every handler, so instead an
 * interval timer on the process's CPU time (ITIMER_VIRTUAL: it ticks only while we run our own
 * code, so an idle server is never woken) checks ten times a second whether the same resume is
 * still running. Once one has used up the budget, the signal handler sets a count hook on its
 * coroutine, and the hook raises the error inside it. lua_sethook is safe to call from a signal
 * handler: lua.c stops a script on Ctrl-C the same way.
 *
 * The memory cap refuses allocations only while a handler runs. Lua then collects garbage and
 * tries again before it raises "not enough memory" in that handler; the core's own use of the
 * main state (accepting a connection, logging an error) must never fail that way. */
#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>

#include "guard.h"

#define TICK_USEC 100000

static lua_State *volatile running; /* the coroutine of the current resume, or NULL */
static volatile sig_atomic_t ticks; /* CPU ticks seen during the current resume */
static int budget_ticks;            /* 0: no budget */
static double budget_seconds;
static size_t in_use;
static size_t limit;

void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        in_use -= old;
        return NULL;
    }
    if (limit != 0 && running != NULL && nsize > old && in_use + (nsize - old) > limit)
        return NULL;
    void *block = realloc(ptr, nsize);
    if (block != NULL)
        in_use += nsize - old;
    return block;
}

void guard_set_memory_limit(size_t bytes)
{
    limit = bytes;
}

size_t guard_memory_in_use(void)
{
    return in_use;
}

void guard_set_cpu_budget(double seconds)
{
    budget_seconds = seconds;
    budget_ticks = seconds > 0 ? (int)(seconds * 1e6 / TICK_USEC + 0.999) : 0;
    if (seconds > 0 && budget_ticks < 1)
        budget_ticks = 1;
}

static void stop_runaway(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    /* The hook may have been set just as that resume ended; this is then a later one. */
    if (L != running || budget_ticks == 0 || ticks < budget_ticks)
        return;
    luaL_where(L, 0);
    lua_pushfstring(L, "used more than %f s of CPU without waiting (cpu_budget): stopped",
                    (lua_Number)budget_seconds);
    lua_concat(L, 2);
    lua_error(L);
}

static void on_tick(int sig)
{
    (void)sig;
    lua_State *L = running;
    if (L != NULL && budget_ticks > 0 && ++ticks >= budget_ticks)
        lua_sethook(L, stop_runaway, LUA_MASKCOUNT, 1);
}

void guard_start(void)
{
    struct sigaction sa = {.sa_handler = on_tick, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGVTALRM, &sa, NULL);
    struct itimerval every = {{0, TICK_USEC}, {0, TICK_USEC}};
    setitimer(ITIMER_VIRTUAL, &every, NULL);
}

lua_State *guard_enter(lua_State *co)
{
    lua_State *outer = running;
    ticks = 0;
    running = co;
    return outer;
}

void guard_leave(lua_State *outer)
{
    running = outer;
}
