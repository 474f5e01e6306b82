/* guard.c -- the CPU budget and the memory cap of handlers; see guard.h.
 *
 * A coroutine that loops forever would freeze every connection of its process. Counting Lua
 * instructions with a hook on every coroutine would slow down every handler, so instead an
 * interval timer on the process's CPU time (ITIMER_PROF: user and system time, so a loop of
 * system calls counts too; it ticks only while we run, so an idle server is never woken) checks
 * ten times a second whether the same resume is still running. The ticks only say when to look:
 * the process's CPU clock, read at the resume's first tick and at each later one, says how much
 * it used (ticks come faster than CPU time on a loaded machine). Once a resume has used up the
 * budget, the signal handler sets a count hook on the coroutine that runs at that moment (the
 * handler's, or one it resumed: lcoroutine.c tells us which), and the hook raises the error
 * inside it, again at every instruction until the resume has unwound, so pcall cannot keep it.
 * lua_sethook and clock_gettime are safe to call from a signal handler: lua.c stops a script on
 * Ctrl-C the same way. A SIGTERM or SIGINT stops a resume the same way once it has run on for a
 * second after the signal, so the loop gets to shut down. What no hook can interrupt is one long
 * C function call (string.find with a pathological pattern): the error, raised at the first
 * instruction after it, says how long it took.
 *
 * A resume that blocks (LuaSocket's socket.sleep, os.execute) uses no CPU, so no tick sees it,
 * yet it freezes every other connection. A wall-clock timer (ITIMER_REAL) looks twenty times a
 * second whether the same resume is still running; once it has run stall_warning seconds, the
 * signal handler sets a hook on its coroutine that fires when the blocking C function returns
 * (or at the next instruction, for Lua code): the hook logs where it was, with a traceback, once
 * per call site. Resumes only count themselves. The timer stops itself after a second without
 * a resume, so an idle server is not woken, and the next resume starts it again. Not a thread:
 * with a second thread, glibc's send, recv and malloc take their multi-threaded paths, which
 * cost the 64 B echo 150 instructions per message (cachegrind).
 *
 * The memory cap refuses allocations only while a handler runs. Lua then collects garbage and
 * tries again before it raises "not enough memory" in that handler; the core's own use of the
 * main state (accepting a connection, logging an error) must never fail that way. */
#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "blocks.h"
#include "guard.h"
#include "luasock.h"

#define TICK_USEC 100000
#define TICK_SECONDS (TICK_USEC / 1e6)
/* CPU seconds a resume may still run after SIGTERM or SIGINT before it is stopped, so that a
 * handler busy with a legitimate computation gets to finish it. */
#define SHUTDOWN_GRACE_SECONDS 1.0

enum stop_reason { NOT_STOPPED, OVER_BUDGET, SHUTTING_DOWN };

static lua_State *volatile running;   /* the task's coroutine of the current resume, or NULL */
static lua_State *volatile innermost; /* the coroutine that runs now: running or one it resumed */
static volatile sig_atomic_t ticked;  /* the current resume has seen a tick */
static volatile sig_atomic_t stop;    /* an enum stop_reason for the current resume */
static volatile sig_atomic_t shutdown_signal; /* SIGTERM or SIGINT has arrived */
static double first_tick_cpu;         /* the process's CPU seconds at that first tick */
static double decided_cpu;            /* ... when the stop was decided */
static double shutdown_cpu;           /* ... when the shutdown signal arrived */
static double late_seconds = -1;      /* how long the stop waited for a C function, once known */
static char stop_message[400];        /* the stop's error, where it was first raised */
static double budget_seconds;         /* 0: no budget */
/* Stall warnings: set by the timer's signal handler, read by the hook it sets. */
#define STALL_CHECK_USEC 50000
#define STALL_IDLE_CHECKS 20 /* checks without a resume before the timer stops itself */
#define STALL_SITES "luasock.stall_sites" /* registry: "file:line" -> true, once logged */
static volatile unsigned resume_count;      /* guard_enter's, to tell one resume from the next */
static volatile sig_atomic_t stall_timer_on;
static bool stall_watching;                 /* this process serves: guard_watch_stalls */
static double stall_seconds = 0.2;          /* at or below 0: no warnings */
static volatile unsigned stalled_resume;    /* the resume_count the hook was set for */
static double stalled_since;                /* monotonic time the timer first saw it running */
static void (*describer)(lua_State *co, char *out, size_t size);
static size_t in_use;
static size_t limit;
void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        blocks_free(ptr, old);
        in_use -= old;
        return NULL;
    }
    if (limit != 0 && running != NULL && nsize > old && in_use + (nsize - old) > limit)
        return NULL;
    void *block = blocks_realloc(ptr, old, nsize);
    if (block != NULL)
        in_use += nsize - old;
    return block;
}

size_t guard_memory_in_use(void)
{
    return in_use;
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

/* Time between deciding to stop and the hook's first call: Lua code is hooked within
 * an instruction, so anything longer than a few ticks was one C function call. */
static double seconds_in_c(void)
{
    if (late_seconds < 0)
        late_seconds = process_cpu_seconds() - decided_cpu;
    return late_seconds > 2 * TICK_SECONDS ? late_seconds : 0;
}

/* Words the stop's error once, with the place where it was first raised: a pcall that caught it
 * may run on somewhere else, where the error is raised again. */
static void describe_stop(lua_State *L)
{
    char why[200], in_c[100] = "";
    if (stop == OVER_BUDGET)
        snprintf(why, sizeof why, "used more than %.1f s of CPU without waiting (cpu_budget): "
                 "stopped", budget_seconds);
    else
        snprintf(why, sizeof why, "stopped: the server is shutting down, and this code ran on "
                 "for more than %.1f s of CPU without waiting", SHUTDOWN_GRACE_SECONDS);
    if (seconds_in_c() > 0)
        snprintf(in_c, sizeof in_c, " (%.1f s of it inside one C function call, which cannot be "
                 "interrupted)", seconds_in_c());
    luaL_where(L, 0);
    snprintf(stop_message, sizeof stop_message, "%s%s%s", lua_tostring(L, -1), why, in_c);
    lua_pop(L, 1);
}

/* Stays set, with a count of one, until the resume has unwound: a pcall that catches the error
 * gets it again at its caller's next instruction, so no loop can outlast it. */
static void stop_runaway(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (running == NULL || stop == NOT_STOPPED) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    if (stop_message[0] == '\0')
        describe_stop(L);
    lua_pushstring(L, stop_message);
    lua_error(L);
}

static void decide(enum stop_reason why, double now)
{
    if (stop == NOT_STOPPED) {
        stop = why;
        decided_cpu = now;
    }
    /* Again at every tick: the innermost coroutine may have changed since. */
    lua_sethook(innermost, stop_runaway, LUA_MASKCOUNT, 1);
}

static void on_tick(int sig)
{
    (void)sig;
    if (running == NULL || innermost == NULL)
        return;
    double now = process_cpu_seconds();
    if (!ticked) {
        ticked = 1;
        first_tick_cpu = now;
    }
    /* What ran before the first tick is not measured: up to a tick, which the budget allows. */
    double used = now - first_tick_cpu;
    double since_shutdown = now - (shutdown_cpu > first_tick_cpu ? shutdown_cpu : first_tick_cpu);
    if (budget_seconds > 0 && used >= budget_seconds - TICK_SECONDS) {
        decide(OVER_BUDGET, now);
    } else if (shutdown_signal && since_shutdown >= SHUTDOWN_GRACE_SECONDS) {
        decide(SHUTTING_DOWN, now);
    }
}

/* libev still hears of the signal (ev_feed_signal is safe here); we only note when it came. */
static void on_shutdown_signal(int sig)
{
    int saved = errno;
    shutdown_cpu = process_cpu_seconds();
    shutdown_signal = 1;
    ev_feed_signal(sig);
    errno = saved;
}

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs protected (it allocates, in the stalled coroutine) with the seconds it stalled: logs the
 * stall once per call site, the first Lua frame under the hook (the caller of the C function that
 * blocked, or the Lua code that ran on). */
static int log_stall(lua_State *L)
{
    double seconds = lua_tonumber(L, 1);
    lua_Debug site;
    int level = 1;
    while (lua_getstack(L, level, &site) && lua_getinfo(L, "Sl", &site) && site.currentline <= 0)
        level++;
    if (site.currentline <= 0)
        return 0;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, STALL_SITES);
    const char *where = lua_pushfstring(L, "%s:%d", site.short_src, site.currentline);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) != LUA_TNIL)
        return 0; /* this site has been reported */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, -4);
    char who[160] = "the script";
    if (describer != NULL && running != NULL)
        describer(running, who, sizeof who);
    luaL_traceback(L, L, NULL, level);
    luasock_log(LUASOCK_LOG_WARN, "event loop blocked for %.1f s by %s (%s)\n%s", seconds, where,
                who, lua_tostring(L, -1));
    return 0;
}

/* Set by the watcher thread on the coroutine that has run too long: fires when its blocking C
 * function returns, or at its next instruction. A stop decided meanwhile keeps its own hook. */
static void on_stall(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (running != NULL && stop != NOT_STOPPED) {
        lua_sethook(L, stop_runaway, LUA_MASKCOUNT, 1);
        return;
    }
    lua_sethook(L, NULL, 0, 0);
    if (running == NULL || resume_count != stalled_resume)
        return; /* a later resume: the stall is over */
    lua_pushcfunction(L, log_stall);
    lua_pushnumber(L, monotonic_seconds() - stalled_since);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        lua_pop(L, 1);
}

static void set_stall_timer(bool on)
{
    struct itimerval every = {{0, on ? STALL_CHECK_USEC : 0}, {0, on ? STALL_CHECK_USEC : 0}};
    stall_timer_on = on;
    setitimer(ITIMER_REAL, &every, NULL);
}

static void on_stall_check(int sig)
{
    (void)sig;
    static unsigned seen;
    static int idle_checks;
    static double seen_at;
    static bool flagged;
    int saved = errno;
    double now = monotonic_seconds();
    lua_State *co = innermost;
    if (running == NULL || co == NULL) {
        if (++idle_checks >= STALL_IDLE_CHECKS)
            set_stall_timer(false);
    } else if (resume_count != seen) {
        idle_checks = 0;
        seen = resume_count;
        seen_at = now;
        flagged = false;
    } else if (!flagged && stall_seconds > 0 && now - seen_at >= stall_seconds &&
               stop == NOT_STOPPED) {
        flagged = true;
        stalled_since = seen_at;
        stalled_resume = seen;
        lua_sethook(co, on_stall, LUA_MASKCOUNT | LUA_MASKRET, 1);
    }
    errno = saved;
}

void guard_set_stall_warning(double seconds)
{
    stall_seconds = seconds;
}

void guard_set_describer(void (*describe)(lua_State *co, char *out, size_t size))
{
    describer = describe;
}

void guard_watch_stalls(void)
{
    struct sigaction sa = {.sa_handler = on_stall_check, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    stall_watching = true;
}

void guard_start(void)
{
    struct sigaction sa = {.sa_handler = on_tick, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every = {{0, TICK_USEC}, {0, TICK_USEC}};
    setitimer(ITIMER_PROF, &every, NULL);
}

void guard_watch_shutdown_signals(void)
{
    struct sigaction sa = {.sa_handler = on_shutdown_signal, .sa_flags = SA_RESTART};
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

lua_State *guard_enter(lua_State *co)
{
    lua_State *outer = running;
    resume_count++;
    if (!stall_timer_on && stall_watching && stall_seconds > 0)
        set_stall_timer(true);
    ticked = 0;
    stop_message[0] = '\0';
    stop = NOT_STOPPED;
    late_seconds = -1;
    innermost = running = co;
    return outer;
}

void guard_leave(lua_State *outer)
{
    innermost = running = outer;
}

lua_State *guard_switch(lua_State *co)
{
    lua_State *outer = innermost;
    if (running != NULL) {
        innermost = co;
        if (stop != NOT_STOPPED)
            lua_sethook(co, stop_runaway, LUA_MASKCOUNT, 1);
    }
    return outer;
}

bool guard_stopping(void)
{
    return running != NULL && stop != NOT_STOPPED;
}

void guard_switch_back(lua_State *outer)
{
    if (running == NULL)
        return;
    innermost = outer;
    if (stop != NOT_STOPPED)
        lua_sethook(outer, stop_runaway, LUA_MASKCOUNT, 1);
}
