/* task.h -- the coroutine bridge: every handler and spawned function runs as a task, and every
 * call that has to wait goes through one protocol here.
 *
 *   1. task_check_wait(L, "conn:receive") raises unless the caller is a task that can suspend
 *      here. It runs before the call changes anything, so a refused wait leaves nothing behind.
 *   2. The call records what it waits for in its own state (a read request, a queue) and returns
 *      task_wait(L, &waiters, timeout, k, ctx), which cannot raise.
 *   3. Whoever ends the wait takes the task out of the waiters: task_wake_first from Lua code,
 *      task_resume_first from an event callback, where no Lua code runs. The wait's timeout ends
 *      it the same way with "timeout".
 *   4. The task resumes in k, on its own thread and under its own limits: k builds the call's
 *      results there (task_failure tells how the wait ended), or waits again. So nothing is ever
 *      pushed onto a coroutine that is not running, and a memory error while building results is
 *      an error in the handler that asked for them.
 *
 * A task that ends is taken out of whatever it still waits in, and closes what it owns.
 * Event-to-Lua work that is not a resume (starting a handler for an accepted connection, running
 * an on_close hook) goes through task_protected, the one protected trampoline. */
#ifndef TASK_H
#define TASK_H

#include <ev.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "timeouts.h"

struct task;

/* Tasks waiting for one thing (a connection's reader, a queue's poppers, a task's joiners), in
 * the order they came. Embedded in that thing, zeroed; only task.c changes it. */
struct task_waiters {
    struct task *first, *last;
};

static inline bool task_waiters_empty(const struct task_waiters *w)
{
    return w->first == NULL;
}

/* Something a task closes when it ends: the connection a handler serves, the connections a
 * task made. Embedded in the thing, with ops set; only task.c changes the links. */
struct task_resource;

struct task_resource_ops {
    void (*close)(struct task_resource *r);
    /* For error reports: "conn 12 from 127.0.0.1:5555". */
    void (*describe)(struct task_resource *r, char *out, size_t size);
    /* The task embedded in r's userdata (task_new_in) has ended and no longer needs the anchor
     * it shared; NULL for resources that hold no task. */
    void (*task_ended)(struct task_resource *r);
};

struct task_resource {
    const struct task_resource_ops *ops;
    struct task *owner;
    struct task_resource *next;
};

/* Work that the core must not do where it is, because it would allocate on a Lua thread that is
 * not running (a handler is): it runs later in the loop's step, protected, on the main thread.
 * Embedded in its owner, which must stay alive until it has run. */
struct task_job {
    void (*run)(lua_State *L, struct task_job *job);
    const char *what; /* for the log line if it raises */
    struct task_job *next;
    bool queued;
};

/* A task: only task.c uses its fields. It is the body of its own userdata (task_new), or part
 * of another's (task_new_in): a connection's handler lives in its connection. */
struct task {
    lua_State *co;
    int ref;        /* registry reference that keeps the task alive until it ends */
    int nargs;      /* values on co for its first resume */
    int nresults;   /* values left on co once done, for join */
    bool waiting; /* suspended in task_wait, not by a bare coroutine.yield */
    bool queued;  /* in the ready queue */
    bool done;
    bool failed;  /* ended by an error; its message is the one value left on co */
    bool awaited; /* a graceful shutdown waits for it */
    bool held;    /* of the script's load, kept by the --workers parent for its workers */
    bool started;
    bool service; /* the runtime's own (the pub/sub bus): no load of the script owns it */
    bool refused; /* failed before it started: memory was exhausted */
    bool embedded; /* in another userdata (task_new_in) */
    unsigned char thread_uv, delivery_uv; /* its user values */
    const char *failure;             /* how its last wait ended, for the continuation */
    struct task_waiters *waiting_in; /* the list it waits in, if its wait has one */
    struct task *next;               /* in waiting_in, or in the ready queue */
    struct timeout timer;            /* the wait's timeout (a sleep's end) */
    struct task_resource *served;
    struct task_resource *owned;
};

/* after_step runs at the end of each loop step, after the woken tasks (conn.c flushes output
 * there). */
void task_init(struct ev_loop *loop, lua_State *L, void (*after_step)(void));

/* Moves the function and its nargs arguments from the top of L into a new task, which starts
 * with them on task_start or task_run. served, if not NULL, is the resource (at stack index
 * served_index) that a handler serves: the task owns it, describes it in its error reports, and
 * a graceful shutdown waits for the task. Raises on L (out of memory) before anything is
 * registered. */
struct task *task_new(lua_State *L, int nargs, int served_index, struct task_resource *served);

/* As task_new, for a task t embedded in the userdata at holder_index, whose user values
 * thread_uv and delivery_uv it uses for its thread and for task_wake_first_with; it serves
 * served (part of that userdata). anchor is the registry reference that keeps that userdata
 * alive: its owner keeps it until served's task_ended has been called, which finish calls once
 * the task has ended. */
struct task *task_new_in(lua_State *L, struct task *t, int holder_index, int anchor,
                         int thread_uv, int delivery_uv, int nargs, struct task_resource *served);

/* t (made by task_new) counts itself in *tally from now until it ends (the datagram tasks alive,
 * against max_datagram_tasks). */
void task_tally(struct task *t, size_t *tally);

/* Starts a new task on the next loop step (from Lua code: one made by task_new), or at once (from
 * an event callback). */
void task_start(struct task *t);
void task_run(struct task *t);

/* The task running on thread L, or NULL for the main thread and plain coroutines. */
static inline struct task *task_current(lua_State *L)
{
    return *(struct task **)lua_getextraspace(L);
}

/* Whether the calling coroutine is a task that can suspend here (not inside a string.gsub
 * callback, a table.sort comparator or a metamethod called from C). */
bool task_can_wait(lua_State *L);

/* Raises "what must be called from a handler ..." or "what cannot wait inside a C function ..."
 * unless task_can_wait; returns the calling task. */
struct task *task_check_wait(lua_State *L, const char *what);

/* The same, blaming the function level levels up the stack (1: the Lua caller of the C function,
 * as luaL_where counts): a Lua wrapper such as luasock.connect blames its own caller's line. */
struct task *task_check_wait_at(lua_State *L, const char *what, int level);

/* Suspends the calling task (checked with task_check_wait) in waiters (NULL: none, as for a
 * sleep) for at most timeout seconds (below 0: no limit). When it is resumed, k(L, LUA_YIELD,
 * ctx) runs on its thread and returns the call's results. Cannot raise. A timeout that
 * task_opttimeout would refuse counts as none. */
int task_wait(lua_State *L, struct task_waiters *waiters, double timeout, lua_KFunction k,
              lua_KContext ctx);

/* The longest timeout accepted, in seconds (about 31 years): anything beyond is a mistake, or a
 * number a peer sent. libev's timer heap must only ever see finite times: one NaN breaks its
 * order and stops every other timer of the process. */
#define TASK_MAX_TIMEOUT 1e9

/* The timeout at index idx: seconds, or none (nil, false, a negative number or math.huge:
 * returned as -1). Raises "what: timeout is NaN; ..." for NaN, and likewise for -math.huge, more
 * than TASK_MAX_TIMEOUT and what is not a number. */
double task_opttimeout(lua_State *L, int idx, const char *what);

/* In a wait's continuation: how the wait ended, as its caller should report it ("timeout",
 * "closed", ...), or NULL if it ended as hoped. */
const char *task_failure(lua_State *L);

/* End the wait of the first waiting task, or of all, with failure (NULL: as hoped): from Lua
 * code or c-ares callbacks, the task runs on the next loop step; task_resume_first, only from an
 * event callback, resumes it at once (so the callback must not use what the task may free).
 * Return false if none waited. */
bool task_wake_first(struct task_waiters *w, const char *failure);
void task_wake_all(struct task_waiters *w, const char *failure);
bool task_resume_first(struct task_waiters *w, const char *failure);

/* task_wake_first, handing the value at index idx of L (the running thread) to that task; its
 * continuation pushes it with task_push_delivery. */
bool task_wake_first_with(lua_State *L, struct task_waiters *w, int idx);
void task_push_delivery(lua_State *L);

/* t closes r when it ends, unless r is disowned first (it closed by itself). */
void task_own(struct task *t, struct task_resource *r);
void task_disown(struct task_resource *r);

/* Queues job for the loop's next step (once, however often it is deferred). */
void task_defer(struct task_job *job);

/* Runs fn on the main thread, protected, with ud as its one argument (a light userdata). A
 * raise is logged as "what: message" and gives -1. Only from C code that Lua did not call (event
 * callbacks, the loop's step), so that nothing but the main thread is running. */
int task_protected(lua_CFunction fn, void *ud, const char *what);

/* The tasks that luasock.spawn creates while the script loads (its top level and start()) belong
 * to that load. Between task_begin_load and task_end_load(in_use): if in_use, the new load's
 * tasks replace the previous load's, which are stopped (a reload); if not, the new load's are
 * stopped (the load failed). */
void task_begin_load(void);
void task_end_load(bool in_use);

/* Starts a task of the runtime itself (the pub/sub bus's connection), which outlives the load of
 * the script that happened to start it; the --workers parent holds it like the load's. */
void task_start_service(struct task *t);

/* The --workers parent holds the load's tasks instead of running them (also those of later
 * loads); a worker forked from it releases them, to run them itself. */
void task_hold_load_tasks(void);
void task_release_load_tasks(void);

/* luasock.sleep: suspends the calling task for the seconds at index arg. */
int task_sleep(lua_State *L, int arg);

/* The loop's time, as of the current iteration (luasock.now). */
ev_tstamp task_now(void);

/* Pushes the task's userdata (a handle with :join()); for tasks that have not ended. */
void task_push(lua_State *L, struct task *t);

/* A graceful shutdown waits for t to end, as for a connection's handler. */
void task_await_at_shutdown(struct task *t);

/* How many awaited tasks are still running. */
int task_handler_count(void);

/* Tasks made and not yet ended. */
size_t task_count(void);

/* Graceful shutdown: the loop ends once no awaited task runs and nothing is left to do. */
void task_stop_when_idle(void);

/* `luasock run`: the task whose end ends the loop, and the exit status it ended with. */
void task_set_main(struct task *t);
int task_main_status(void);

#endif
