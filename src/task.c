/* task.c -- tasks, their waits, the loop's step and the protected trampoline; see task.h.
 *
 * A task is a userdata that holds its thread. It is anchored in the registry from its creation
 * until it ends, and whatever it waits in only links to it through task.c's records: the
 * waiters list it is in, its timer, the resources it owns. Ending (finish) takes it out of all of
 * them, so nothing can reach a task that the garbage collector may free. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>

#include "container.h"
#include "errors.h"
#include "guard.h"
#include "lresult.h"
#include "luasock.h"
#include "metrics_core.h"
#include "task.h"

#define TASK_MT "luasock.task"

/* The task userdata's user values: its thread, the resource it serves (kept alive for error
 * reports), and a value handed to it by task_wake_first_with. A task embedded in another
 * userdata (task_new_in) uses two of that one's instead, and serves it. */
enum { UV_THREAD = 1, UV_SERVED, UV_DELIVERY, UV_COUNT = UV_DELIVERY };

/* A task with a userdata of its own (task_new) also has a handle to join it, maybe a tally and a
 * place in the list of the load that spawned it. A connection's handler needs none of these: 32
 * bytes less in each connection (measured: 1.99 -> 1.96 KiB RSS per idle echo connection at
 * 10,000). */
struct spawned {
    struct task task;
    struct task_waiters joiners;
    size_t *tally; /* counts it while it is alive, if not NULL */
    struct task *next_of_load; /* in the list of the script's load that spawned it */
};

static struct spawned *spawned(struct task *t)
{
    return container_of(t, struct spawned, task);
}

static struct ev_loop *loop;
static lua_State *main_L;
static void (*after_step)(void);
static ev_prepare step_watcher;
static ev_idle keep_polling;
static struct task *ready_head, *ready_tail;
static struct task_job *jobs_head, *jobs_tail;
static struct task *main_task;
static int main_status;
static int handler_count;
static size_t live_count; /* tasks made and not yet finished */
static bool stopping_when_idle;
/* The tasks spawned while the script loaded (its top level and start()), newest first: those of
 * the load in use, and those of a load under way. */
static struct task *load_tasks, *loading_tasks;
static bool loading;
static bool holding; /* the --workers parent: load tasks run only in workers */
/* A task that fails for memory at its start has cost a full collection (Lua runs one before it
 * gives up), tens of milliseconds with many coroutines alive. After two in one iteration of the
 * loop, the others that have not started fail without running, until the next. */
#define START_FAILURES_BEFORE_REFUSING 2
static int start_failures; /* in this iteration */
static int refused_starts; /* since the last step */

/* ---- Waiters, the ready queue, resuming ---- */

static void waiters_append(struct task_waiters *w, struct task *t)
{
    t->next = NULL;
    if (w->last != NULL)
        w->last->next = t;
    else
        w->first = t;
    w->last = t;
    t->waiting_in = w;
}

static void waiters_remove(struct task *t)
{
    struct task_waiters *w = t->waiting_in;
    if (w == NULL)
        return;
    struct task *prev = NULL;
    for (struct task *i = w->first; i != t; i = i->next)
        prev = i;
    if (prev != NULL)
        prev->next = t->next;
    else
        w->first = t->next;
    if (w->last == t)
        w->last = prev;
    t->next = NULL;
    t->waiting_in = NULL;
}

/* The one place a wait ends: the task is taken out of everything it waited in. */
static void end_wait(struct task *t, const char *failure)
{
    waiters_remove(t);
    timeout_stop(&t->timer);
    t->waiting = false;
    t->failure = failure;
}

static void enqueue(struct task *t)
{
    if (t->queued)
        return;
    t->queued = true;
    t->next = NULL;
    if (ready_tail != NULL)
        ready_tail->next = t;
    else
        ready_head = t;
    ready_tail = t;
}

/* Pushes true and the task's results, or false and its error message. The results stay on the
 * ended task's stack for the next join: they are moved off and copies moved back, so nothing is
 * allocated on that thread. */
static int push_outcome(struct task *t, lua_State *L)
{
    if (t->refused) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "not enough memory");
        return 2;
    }
    int n = t->nresults;
    luaL_checkstack(L, 2 * n + 1, "too many results");
    lua_pushboolean(L, !t->failed);
    int base = lua_gettop(L);
    lua_xmove(t->co, L, n);
    for (int i = 1; i <= n; i++)
        lua_pushvalue(L, base + i);
    lua_xmove(L, t->co, n);
    return 1 + n;
}

/* `luasock run` exits with what the script returned: an integer, 1 for false, else 0. */
static int exit_status(struct task *t)
{
    if (t->failed)
        return 1;
    if (t->nresults == 0)
        return 0;
    int first = lua_gettop(t->co) - t->nresults + 1;
    if (lua_isinteger(t->co, first))
        return (int)lua_tointeger(t->co, first);
    return lua_isboolean(t->co, first) && !lua_toboolean(t->co, first) ? 1 : 0;
}

static void close_owned(struct task *t)
{
    struct task_resource *r = t->owned;
    t->owned = NULL;
    while (r != NULL) {
        struct task_resource *next = r->next;
        r->owner = NULL;
        r->next = NULL;
        r->ops->close(r);
        r = next;
    }
}

/* Runs the __close handlers of the <close> variables a task left pending (an error skipped
 * them, or it is being cancelled), under the task's limits like the rest of its code. */
static void close_pending(struct task *t)
{
    lua_State *outer = guard_enter(t->co);
    lua_resetthread(t->co);
    guard_leave(outer);
}

/* Logs a failed task's error with its traceback, then runs the __close handlers of the <close>
 * variables the error skipped (under the task's limits, like the rest of its code). Leaves the
 * message as the one value on the task's thread, for join. Runs through task_protected: it
 * allocates on the main thread. */
static int report_error(lua_State *L)
{
    struct task *t = lua_touserdata(L, 1);
    lua_xmove(t->co, L, 1);
    int type = lua_type(L, -1);
    const char *message = type == LUA_TSTRING || type == LUA_TNUMBER
                              ? lua_tostring(L, -1)
                              : lua_pushfstring(L, "(error object is a %s value)",
                                                lua_typename(L, type));
    luaL_traceback(L, t->co, message, 0);
    const char *traceback = lua_tostring(L, -1);
    if (t != main_task)
        metrics_core.handler_errors++;
    if (t == main_task) {
        fprintf(stderr, "luasock: %s\n", traceback);
    } else if (t->served != NULL) {
        char who[160];
        t->served->ops->describe(t->served, who, sizeof who);
        luasock_log(LUASOCK_LOG_ERROR, "handler error in %s: %s", who, traceback);
    } else {
        luasock_log(LUASOCK_LOG_ERROR, "error in spawned coroutine: %s", traceback);
    }
    lua_pushstring(L, message);
    close_pending(t);
    lua_xmove(L, t->co, 1);
    t->nresults = 1;
    return 0;
}

static void forget_load_task(struct task **list, struct task *t)
{
    for (struct task **p = list; *p != NULL; p = &spawned(*p)->next_of_load)
        if (*p == t) {
            *p = spawned(t)->next_of_load;
            return;
        }
}

/* Takes an ended task out of everything, closes what it owns and lets go of it. Allocates
 * nothing. */
static void finish(struct task *t)
{
    t->done = true;
    forget_load_task(&load_tasks, t);
    forget_load_task(&loading_tasks, t);
    end_wait(t, NULL);
    close_owned(t);
    live_count--;
    if (t->awaited)
        handler_count--;
    if (!t->embedded) {
        if (spawned(t)->tally != NULL)
            (*spawned(t)->tally)--;
        task_wake_all(&spawned(t)->joiners, NULL);
    }
    if (t == main_task) {
        main_status = exit_status(t);
        ev_break(loop, EVBREAK_ALL);
    }
    if (!t->embedded) {
        luaL_unref(main_L, LUA_REGISTRYINDEX, t->ref);
        t->ref = LUA_NOREF;
        return;
    }
    /* Its holder may outlive it (a connection closing), its thread need not. */
    lua_rawgeti(main_L, LUA_REGISTRYINDEX, t->ref);
    lua_pushnil(main_L);
    lua_setiuservalue(main_L, -2, t->thread_uv);
    lua_pop(main_L, 1);
    t->co = NULL;
    t->ref = LUA_NOREF;
    t->served->ops->task_ended(t->served);
}

/* Fails a task that has not started, without running it (nothing is allocated on its thread). */
static void refuse_start(struct task *t)
{
    lua_settop(t->co, 0);
    t->failed = t->refused = true;
    refused_starts++;
    finish(t);
}

static void resume(struct task *t)
{
    bool starting = !t->started;
    if (starting && start_failures >= START_FAILURES_BEFORE_REFUSING) {
        refuse_start(t);
        return;
    }
    t->started = true;
    int nargs = t->nargs, nresults;
    t->nargs = 0;
    lua_State *outer = guard_enter(t->co);
    int status = lua_resume(t->co, NULL, nargs, &nresults);
    guard_leave(outer);
    if (starting && status == LUA_ERRMEM)
        start_failures++;
    if (status == LUA_YIELD) {
        if (nresults > 0) /* task_wait yields none: 20 instructions per message saved */
            lua_pop(t->co, nresults);
        /* A bare coroutine.yield() in a handler just lets the others run. */
        if (!t->waiting)
            enqueue(t);
        return;
    }
    if (status == LUA_OK) {
        t->nresults = nresults;
    } else {
        t->failed = true;
        task_protected(report_error, t, "reporting a coroutine's error");
    }
    finish(t);
}

static void on_timeout(struct timeout *w)
{
    struct task *t = container_of(w, struct task, timer);
    end_wait(t, ERR_TIMEOUT);
    resume(t);
}

bool task_can_wait(lua_State *L)
{
    return task_current(L) != NULL && lua_isyieldable(L);
}

struct task *task_check_wait_at(lua_State *L, const char *what, int level)
{
    struct task *t = task_current(L);
    if (t != NULL && lua_isyieldable(L))
        return t;
    luaL_where(L, level);
    if (t == NULL)
        lua_pushfstring(L, "%s must be called from a handler or a luasock.spawn coroutine", what);
    else
        lua_pushfstring(L, "%s cannot wait inside a C function (string.gsub callback, "
                           "table.sort comparator, metamethod)", what);
    lua_concat(L, 2);
    lua_error(L);
    return NULL;
}

struct task *task_check_wait(lua_State *L, const char *what)
{
    return task_check_wait_at(L, what, 1);
}

int task_wait(lua_State *L, struct task_waiters *waiters, double timeout, lua_KFunction k,
              lua_KContext ctx)
{
    struct task *t = task_current(L);
    t->waiting = true;
    t->failure = NULL;
    if (waiters != NULL)
        waiters_append(waiters, t);
    if (timeout >= 0 && timeout <= TASK_MAX_TIMEOUT)
        timeout_start(&t->timer, timeout);
    return lua_yieldk(L, 0, ctx, k);
}

double task_opttimeout(lua_State *L, int idx, const char *what)
{
    if (lua_isnoneornil(L, idx) || (lua_isboolean(L, idx) && !lua_toboolean(L, idx)))
        return -1;
    if (!lua_isnumber(L, idx))
        luaL_error(L, "%s: timeout must be a number of seconds, not %s", what,
                   luaL_typename(L, idx));
    double seconds = lua_tonumber(L, idx);
    if (seconds != seconds)
        luaL_error(L, "%s: timeout is NaN; expected seconds, or nil or math.huge for none", what);
    if (seconds == HUGE_VAL || (seconds < 0 && seconds != -HUGE_VAL))
        return -1;
    if (seconds > TASK_MAX_TIMEOUT || seconds == -HUGE_VAL)
        luaL_error(L, "%s: timeout %f is out of range; expected at most %d seconds, or nil or "
                      "math.huge for none", what, seconds, (int)TASK_MAX_TIMEOUT);
    return seconds;
}

const char *task_failure(lua_State *L)
{
    return task_current(L)->failure;
}

/* Takes the first task out of w, its wait over. */
static struct task *end_first_wait(struct task_waiters *w, const char *failure)
{
    struct task *t = w->first;
    if (t == NULL)
        return NULL;
    w->first = t->next;
    if (w->last == t)
        w->last = NULL;
    t->next = NULL;
    t->waiting_in = NULL;
    end_wait(t, failure);
    return t;
}

bool task_wake_first(struct task_waiters *w, const char *failure)
{
    struct task *t = end_first_wait(w, failure);
    if (t != NULL)
        enqueue(t);
    return t != NULL;
}

void task_wake_all(struct task_waiters *w, const char *failure)
{
    while (task_wake_first(w, failure))
        ;
}

bool task_resume_first(struct task_waiters *w, const char *failure)
{
    struct task *t = end_first_wait(w, failure);
    if (t != NULL)
        resume(t);
    return t != NULL;
}

bool task_wake_first_with(lua_State *L, struct task_waiters *w, int idx)
{
    struct task *t = w->first;
    if (t == NULL)
        return false;
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_pushvalue(L, idx);
    lua_setiuservalue(L, -2, t->delivery_uv);
    lua_pop(L, 1);
    return task_wake_first(w, NULL);
}

void task_push_delivery(lua_State *L)
{
    struct task *t = task_current(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_getiuservalue(L, -1, t->delivery_uv);
    lua_pushnil(L);
    lua_setiuservalue(L, -3, t->delivery_uv);
    lua_remove(L, -2);
}

/* ---- Ownership ---- */

void task_own(struct task *t, struct task_resource *r)
{
    r->owner = t;
    r->next = t->owned;
    t->owned = r;
}

void task_disown(struct task_resource *r)
{
    if (r->owner == NULL)
        return;
    struct task_resource **link = &r->owner->owned;
    while (*link != r)
        link = &(*link)->next;
    *link = r->next;
    r->owner = NULL;
    r->next = NULL;
}

/* ---- The loop's step and the trampoline ---- */

int task_protected(lua_CFunction fn, void *ud, const char *what)
{
    int top = lua_gettop(main_L);
    lua_pushcfunction(main_L, fn);
    lua_pushlightuserdata(main_L, ud);
    int status = lua_pcall(main_L, 1, 0, 0);
    if (status != LUA_OK) {
        const char *message = lua_type(main_L, -1) == LUA_TSTRING ? lua_tostring(main_L, -1)
                                                                  : "(error object is not a string)";
        luasock_log(LUASOCK_LOG_ERROR, "%s: %s", what, message);
    }
    lua_settop(main_L, top);
    return status == LUA_OK ? 0 : -1;
}

void task_defer(struct task_job *job)
{
    if (job->queued)
        return;
    job->queued = true;
    job->next = NULL;
    if (jobs_tail != NULL)
        jobs_tail->next = job;
    else
        jobs_head = job;
    jobs_tail = job;
}

static int run_job(lua_State *L)
{
    struct task_job *job = lua_touserdata(L, 1);
    job->run(L, job);
    return 0;
}

static void run_jobs(void)
{
    struct task_job *job = jobs_head;
    jobs_head = jobs_tail = NULL;
    while (job != NULL) {
        struct task_job *next = job->next;
        job->queued = false;
        task_protected(run_job, job, job->what);
        job = next;
    }
}

static void run_ready(void)
{
    struct task *t = ready_head;
    ready_head = ready_tail = NULL;
    while (t != NULL) {
        struct task *next = t->next;
        t->queued = false;
        if (!t->done && !t->held)
            resume(t);
        t = next;
    }
}

/* Runs before the loop waits for events: the tasks woken since the last step, the deferred
 * work, then after_step (output leaves in one system call per connection). Tasks woken
 * meanwhile run on the next iteration, which must then not block: an idle watcher sees to it. */
static void step(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    run_ready();
    run_jobs();
    after_step();
    if (refused_starts > 0) {
        luasock_log(LUASOCK_LOG_ERROR, "not enough memory (max_memory): %d tasks failed before "
                    "they started", refused_starts);
        refused_starts = 0;
    }
    start_failures = 0;
    bool pending = ready_head != NULL || jobs_head != NULL;
    if (stopping_when_idle && handler_count == 0 && !pending) {
        /* Once: after it, `luasock run` runs the loop again to finish closing (its stdout). */
        stopping_when_idle = false;
        ev_break(l, EVBREAK_ALL);
        return;
    }
    if (pending)
        ev_idle_start(l, &keep_polling);
    else
        ev_idle_stop(l, &keep_polling);
}

static void keep_polling_cb(struct ev_loop *l, ev_idle *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* ---- Lua: task handles ---- */

static int join_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    return push_outcome(lua_touserdata(L, 1), L);
}

/* task:join() -> true, results... | false, error: waits for a spawned task to end. */
static int task_join(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    if (t->done)
        return push_outcome(t, L);
    if (t == task_current(L))
        return luaL_error(L, "a task cannot join itself");
    task_check_wait(L, "task:join");
    if (!task_waiters_empty(&spawned(t)->joiners))
        return luaL_error(L, "another coroutine is already joining this task");
    return task_wait(L, &spawned(t)->joiners, -1, join_resumed, 0);
}

static void cancel(struct task *t);

/* task:cancel() -> true | nil, err: ends a spawned task that waits or has not started yet, as
 * a reload does (ngx.thread.kill): its pending __close handlers run, its connections close, and
 * its joiner gets true with no results. A running task, and a connection's handler, are refused:
 * the one would be cut mid-instruction, the other is its connection's to end. */
static int task_cancel(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    if (t->done)
        return push_error(L, "already done");
    if (t->served != NULL || t->service)
        return push_error(L, "not a spawned task");
    if (t == task_current(L) || (t->started && lua_status(t->co) != LUA_YIELD))
        return push_error(L, "running");
    cancel(t);
    lua_pushboolean(L, 1);
    return 1;
}

static int task_tostring(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    lua_pushfstring(L, "task (%s)", t->done ? (t->failed ? "failed" : "done") : "running");
    return 1;
}

/* For stall warnings: "conn 4", or what else the task running on co serves. */
static void describe_running(lua_State *co, char *out, size_t size)
{
    struct task *t = task_current(co);
    if (t == NULL) {
        snprintf(out, size, "the script");
    } else if (t->served == NULL) {
        snprintf(out, size, "a spawned task");
    } else {
        t->served->ops->describe(t->served, out, size);
        char *from = strstr(out, " from ");
        if (from != NULL)
            *from = '\0';
    }
}

void task_init(struct ev_loop *l, lua_State *L, void (*after)(void))
{
    guard_set_describer(describe_running);
    loop = l;
    main_L = L;
    after_step = after;
    timeouts_init(l);
    /* New threads copy the main thread's extra space, and Lua leaves it uninitialised: plain
     * coroutines must read as "not a task". */
    *(struct task **)lua_getextraspace(L) = NULL;
    /* No __gc: an object with a finalizer, and the thread it holds, outlive the emergency
     * collections Lua runs at the memory cap. None is needed: a task's timer stops when it ends,
     * and it is collected only after that, or when the state closes (after every finalizer). */
    static const luaL_Reg metamethods[] = {
        {"__tostring", task_tostring},
        {NULL, NULL},
    };
    luaL_newmetatable(L, TASK_MT);
    luaL_setfuncs(L, metamethods, 0);
    lua_newtable(L);
    lua_pushcfunction(L, task_join);
    lua_setfield(L, -2, "join");
    lua_pushcfunction(L, task_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    ev_prepare_init(&step_watcher, step);
    ev_prepare_start(loop, &step_watcher);
    ev_idle_init(&keep_polling, keep_polling_cb);
}

/* ---- Creating and starting tasks ---- */

/* Gives t, in the userdata on top of L, its thread (as that userdata's user value thread_uv). */
static void make_thread(lua_State *L, struct task *t, int thread_uv, int delivery_uv, int nargs)
{
    *t = (struct task){.ref = LUA_NOREF, .thread_uv = (unsigned char)thread_uv,
                       .delivery_uv = (unsigned char)delivery_uv};
    timeout_init(&t->timer, on_timeout);
    t->co = lua_newthread(L);
    *(struct task **)lua_getextraspace(t->co) = t;
    /* A new thread's stack has room for a few dozen values; growing it raises nothing. */
    if (!lua_checkstack(t->co, nargs + 1))
        luaL_error(L, "too many arguments");
    lua_setiuservalue(L, -2, thread_uv);
}

static struct task *started_with(lua_State *L, struct task *t, int nargs,
                                 struct task_resource *served);

struct task *task_new(lua_State *L, int nargs, int served_index, struct task_resource *served)
{
    if (served_index != 0)
        served_index = lua_absindex(L, served_index);
    struct spawned *s = lua_newuserdatauv(L, sizeof *s, UV_COUNT);
    *s = (struct spawned){.tally = NULL};
    struct task *t = &s->task;
    luaL_setmetatable(L, TASK_MT);
    make_thread(L, t, UV_THREAD, UV_DELIVERY, nargs);
    if (served != NULL) {
        lua_pushvalue(L, served_index);
        lua_setiuservalue(L, -2, UV_SERVED);
    }
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return started_with(L, t, nargs, served);
}

struct task *task_new_in(lua_State *L, struct task *t, int holder_index, int anchor,
                         int thread_uv, int delivery_uv, int nargs, struct task_resource *served)
{
    lua_pushvalue(L, holder_index);
    make_thread(L, t, thread_uv, delivery_uv, nargs);
    lua_pop(L, 1);
    t->embedded = true;
    /* The holder's own anchor: one registry slot less per connection (measured: 2.11 -> 2.08 KiB
     * RSS per idle echo connection at 10,000). */
    t->ref = anchor;
    return started_with(L, t, nargs, served);
}

/* Moves the function and its arguments from the top of L onto the thread of t, anchored. */
static struct task *started_with(lua_State *L, struct task *t, int nargs,
                                 struct task_resource *served)
{
    /* Nothing below raises: the task is complete or it was never registered anywhere. */
    lua_xmove(L, t->co, nargs + 1);
    t->nargs = nargs;
    live_count++;
    if (served != NULL) {
        t->served = served;
        task_own(t, served);
        task_await_at_shutdown(t);
    }
    return t;
}

void task_tally(struct task *t, size_t *tally)
{
    spawned(t)->tally = tally;
    (*tally)++;
}

void task_start(struct task *t)
{
    if (loading) {
        spawned(t)->next_of_load = loading_tasks;
        loading_tasks = t;
        t->held = holding;
    }
    if (!t->held)
        enqueue(t);
}

void task_start_service(struct task *t)
{
    t->service = true;
    task_start(t);
}

static void unqueue(struct task *t)
{
    struct task *before = NULL;
    for (struct task *q = ready_head; q != NULL; before = q, q = q->next)
        if (q == t) {
            if (before != NULL)
                before->next = t->next;
            else
                ready_head = t->next;
            if (ready_tail == t)
                ready_tail = before;
            t->queued = false;
            return;
        }
}

/* Ends a task that is not running, wherever it waits: its pending __close handlers run (under
 * its limits), and nothing of it runs again. */
static void cancel(struct task *t)
{
    unqueue(t);
    end_wait(t, NULL);
    close_pending(t);
    lua_settop(t->co, 0);
    t->nresults = 0;
    finish(t);
}

/* Stops the script's tasks in *list; the runtime's own (task_start_service) move to *keep. */
static int stop_script_tasks(struct task **list, struct task **keep)
{
    int stopped = 0;
    while (*list != NULL) {
        struct task *t = *list;
        if (t->service) {
            *list = spawned(t)->next_of_load;
            spawned(t)->next_of_load = *keep;
            *keep = t;
        } else {
            cancel(t); /* which takes it off *list */
            stopped++;
        }
    }
    return stopped;
}

void task_begin_load(void)
{
    loading = true;
}

void task_end_load(bool in_use)
{
    loading = false;
    int stopped;
    if (in_use) {
        stopped = stop_script_tasks(&load_tasks, &loading_tasks);
        load_tasks = loading_tasks;
    } else {
        stopped = stop_script_tasks(&loading_tasks, &load_tasks);
    }
    loading_tasks = NULL;
    if (stopped > 0)
        luasock_log(LUASOCK_LOG_INFO, "stopped %d tasks that the %s load of the script spawned",
                    stopped, in_use ? "previous" : "failed");
}

void task_hold_load_tasks(void)
{
    holding = true;
    for (struct task *t = load_tasks; t != NULL; t = spawned(t)->next_of_load)
        t->held = true;
}

void task_release_load_tasks(void)
{
    holding = false;
    for (struct task *t = load_tasks; t != NULL; t = spawned(t)->next_of_load) {
        t->held = false;
        enqueue(t);
    }
}

void task_run(struct task *t)
{
    resume(t);
}

static int sleep_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    lua_pushboolean(L, 1);
    return 1;
}

int task_sleep(lua_State *L, int arg)
{
    double seconds = luaL_checknumber(L, arg);
    /* A negative sleep is no sleep; math.huge sleeps until the server stops. */
    seconds = seconds < 0 && seconds != -HUGE_VAL ? 0 : task_opttimeout(L, arg, "luasock.sleep");
    task_check_wait(L, "luasock.sleep");
    return task_wait(L, NULL, seconds, sleep_resumed, 0);
}

ev_tstamp task_now(void)
{
    return ev_now(loop);
}

void task_push(lua_State *L, struct task *t)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
}

void task_await_at_shutdown(struct task *t)
{
    t->awaited = true;
    handler_count++;
}

int task_handler_count(void)
{
    return handler_count;
}

size_t task_count(void)
{
    return live_count;
}

void task_stop_when_idle(void)
{
    stopping_when_idle = true;
}

void task_set_main(struct task *t)
{
    main_task = t;
}

int task_main_status(void)
{
    return main_status;
}
