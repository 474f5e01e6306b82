/* guard.c -- the CPU budget and the memory cap of handlers; see guard.h.
 *
 * A coroutine that loops forever would freeze every connection of its process. Counting Lua
 * instructions with a hook on every coroutine would slow down every handler, so instead an
 * interval timer on the process's CPU time (ITIMER_PROF: user and system time, so a loop of
 * system calls counts too; it ticks only while we run, so an idle server is never woken) checks
 * ten times a second whether the same resume is still running. The ticks only say when to look:
 * the process's CPU clock, read at the resume's first tick and at each later one, says how much
 * it used (ticks come faster than CPU time on a loaded machine). Once a resume has used up the
 * budget, the signal handler sets a count hook on its coroutine, and the hook raises the error
 * inside it. lua_sethook and clock_gettime are safe to call from a signal handler: lua.c stops a
 * script on Ctrl-C the same way.
 *
 * The memory cap refuses allocations only while a handler runs. Lua then collects garbage and
 * tries again before it raises "not enough memory" in that handler; the core's own use of the
 * main state (accepting a connection, logging an error) must never fail that way. */
#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "guard.h"

#define TICK_USEC 100000
#define TICK_SECONDS (TICK_USEC / 1e6)

static lua_State *volatile running; /* the coroutine of the current resume, or NULL */
static volatile sig_atomic_t ticked;   /* the current resume has seen a tick */
static volatile sig_atomic_t exceeded; /* ... and has used up its budget */
static double first_tick_cpu;          /* the process's CPU seconds at that first tick */
static double budget_seconds;          /* 0: no budget */
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

void guard_set_cpu_budget(double seconds)
{
    budget_seconds = seconds > 0 ? seconds : 0;
}

static double process_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void stop_runaway(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    /* The hook may have been set just as that resume ended; this is then a later one. */
    if (L != running || !exceeded)
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
    if (L == NULL || budget_seconds == 0)
        return;
    if (!ticked) {
        ticked = 1;
        first_tick_cpu = process_cpu_seconds();
    }
    /* What ran before the first tick is not measured: up to a tick, which the budget allows. */
    if (process_cpu_seconds() - first_tick_cpu >= budget_seconds - TICK_SECONDS) {
        exceeded = 1;
        lua_sethook(L, stop_runaway, LUA_MASKCOUNT, 1);
    }
}

void guard_start(void)
{
    struct sigaction sa = {.sa_handler = on_tick, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every = {{0, TICK_USEC}, {0, TICK_USEC}};
    setitimer(ITIMER_PROF, &every, NULL);
}

lua_State *guard_enter(lua_State *co)
{
    lua_State *outer = running;
    ticked = exceeded = 0;
    running = co;
    return outer;
}

void guard_leave(lua_State *outer)
{
    running = outer;
}
