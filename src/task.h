/* task.h -- the coroutine bridge: every handler and spawned function runs as a task.
 *
 * One protocol for every call that has to wait: the Lua-facing C function records which task
 * waits and on what, then returns task_suspend(L). Whoever completes the wait pushes the
 * results onto the task's thread and calls task_resume (from an event callback, where no task
 * is running) or task_wake (from inside Lua code, which must not resume another coroutine). */
#ifndef TASK_H
#define TASK_H

#include <ev.h>
#include <lua.h>
#include <stdbool.h>

struct conn;

struct task {
    lua_State *co;
    int ref;             /* registry reference that keeps the task alive until it ends */
    int nargs;           /* values pushed on co for the next resume (ready queue only) */
    bool waiting;        /* suspended by a luasock call, not by a bare coroutine.yield */
    bool queued;
    bool done;
    bool failed;         /* ended by an error; its message is the one value left on co */
    bool awaited;        /* a graceful shutdown waits for it (handlers, on_close hooks) */
    int nresults;        /* values left on co once done, for join */
    struct task *joiner; /* waiting in join for this task to end */
    struct conn *conn;   /* the connection a handler task serves, closed when it ends */
    struct conn *owned;  /* outgoing connections it made, closed when it ends */
    struct task *next_ready;  /* in the ready queue, or among a luasock.queue's waiters */
    struct queue *waiting_on; /* the luasock.queue it waits in, if any */
    ev_timer sleep_timer;     /* luasock.sleep, and a queue:pop timeout */
};

void task_init(struct ev_loop *loop, lua_State *L);

/* Moves the function and its nargs arguments from the top of L into a new task; conn_index,
 * if not 0, is the stack index of the connection the task serves. The task starts on the first
 * task_resume or task_wake, with nargs. */
struct task *task_new(lua_State *L, int nargs, int conn_index);

/* The task running on thread L, or NULL for the main thread and plain coroutines. */
static inline struct task *task_current(lua_State *L)
{
    return *(struct task **)lua_getextraspace(L);
}

/* Like task_current, but raises a clear error when called from outside a task. */
struct task *task_check(lua_State *L, const char *what);

/* The thread to push a suspended task's resume values on, with room for a few of them. */
lua_State *task_stack(struct task *t);

int task_suspend(lua_State *L);
void task_resume(struct task *t, int nargs);
void task_wake(struct task *t, int nargs);

/* Resumes the tasks woken since the last call; returns true if more were woken meanwhile. */
bool task_run_ready(void);
bool task_ready_pending(void);

/* A graceful shutdown waits for t to end, as for a connection's handler. */
void task_await_at_shutdown(struct task *t);

/* How many awaited tasks are still running (graceful shutdown waits for none). */
int task_handler_count(void);

/* After a queue:pop timeout borrowed the sleep timer. */
void task_restore_sleep_timer(struct task *t);

/* luasock.sleep: suspends the calling task for seconds. */
int task_sleep(lua_State *L, double seconds);

/* Pushes the task's userdata (a handle with :join()) while it runs. */
void task_push(lua_State *L, struct task *t);

/* `luasock run`: the task whose end ends the loop, and the exit status it ended with. */
void task_set_main(struct task *t);

/* The main thread, for event callbacks that start tasks. */
lua_State *task_main_state(void);
int task_main_status(void);

#endif
