/* task.c -- resuming coroutines and reporting their errors; see task.h. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "conn.h"
#include "guard.h"
#include "luasock.h"
#include "task.h"

#define TASK_MT "luasock.task"

static struct ev_loop *loop;
static lua_State *main_L;
static struct task *ready_head, *ready_tail;
static struct task *main_task;
static int handler_count;
static int main_status;

static int task_gc(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    ev_timer_stop(loop, &t->sleep_timer);
    return 0;
}

/* Pushes true and the task's results, or false and its error message. */
static int push_outcome(struct task *t, lua_State *L)
{
    luaL_checkstack(L, t->nresults + 1, "too many results");
    lua_pushboolean(L, !t->failed);
    int first = lua_gettop(t->co) - t->nresults + 1;
    for (int i = 0; i < t->nresults; i++) {
        lua_pushvalue(t->co, first + i);
        lua_xmove(t->co, L, 1);
    }
    return 1 + t->nresults;
}

/* task:join() -> true, results... | false, error: waits for a spawned task to end. */
static int task_join(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    if (t->done)
        return push_outcome(t, L);
    struct task *me = task_check(L, "join");
    if (t == me || t->joiner != NULL)
        return luaL_error(L, t == me ? "a task cannot join itself"
                                     : "another coroutine is already joining this task");
    t->joiner = me;
    return task_suspend(L);
}

static int task_tostring(lua_State *L)
{
    struct task *t = luaL_checkudata(L, 1, TASK_MT);
    lua_pushfstring(L, "task (%s)", t->done ? (t->failed ? "failed" : "done") : "running");
    return 1;
}

static void sleep_done(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct task *t = w->data;
    lua_pushboolean(task_stack(t), 1);
    task_resume(t, 1);
}

void task_init(struct ev_loop *l, lua_State *L)
{
    loop = l;
    main_L = L;
    /* New threads copy the main thread's extra space, and Lua leaves it uninitialised: plain
     * coroutines must read as "not a task". */
    *(struct task **)lua_getextraspace(L) = NULL;
    static const luaL_Reg metamethods[] = {
        {"__gc", task_gc},
        {"__tostring", task_tostring},
        {NULL, NULL},
    };
    luaL_newmetatable(L, TASK_MT);
    luaL_setfuncs(L, metamethods, 0);
    lua_newtable(L);
    lua_pushcfunction(L, task_join);
    lua_setfield(L, -2, "join");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

struct task *task_new(lua_State *L, int nargs, int conn_index)
{
    if (conn_index != 0)
        conn_index = lua_absindex(L, conn_index);
    struct task *t = lua_newuserdatauv(L, sizeof *t, 2);
    *t = (struct task){.ref = LUA_NOREF};
    luaL_setmetatable(L, TASK_MT);
    ev_init(&t->sleep_timer, sleep_done);
    t->sleep_timer.data = t;

    t->co = lua_newthread(L);
    *(struct task **)lua_getextraspace(t->co) = t;
    lua_setiuservalue(L, -2, 1);
    if (conn_index != 0) {
        t->conn = lua_touserdata(L, conn_index);
        task_await_at_shutdown(t);
        lua_pushvalue(L, conn_index);
        lua_setiuservalue(L, -2, 2);
    }
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_checkstack(t->co, nargs + 1, "too many arguments");
    lua_xmove(L, t->co, nargs + 1);
    return t;
}

struct task *task_check(lua_State *L, const char *what)
{
    struct task *t = task_current(L);
    if (t == NULL)
        luaL_error(L, "%s must be called from a handler or a luasock.spawn coroutine", what);
    return t;
}

lua_State *task_stack(struct task *t)
{
    lua_checkstack(t->co, 4);
    return t->co;
}

int task_suspend(lua_State *L)
{
    task_current(L)->waiting = true;
    return lua_yield(L, 0);
}

static void report_error(struct task *t)
{
    const char *message = lua_tostring(t->co, -1);
    if (message == NULL)
        message = lua_pushfstring(t->co, "(error object is a %s value)", luaL_typename(t->co, -1));
    luaL_traceback(main_L, t->co, message, 0);
    if (t == main_task) {
        fprintf(stderr, "luasock: %s\n", lua_tostring(main_L, -1));
    } else if (t->conn != NULL) {
        char who[160];
        conn_describe(t->conn, who, sizeof who);
        luasock_log(LUASOCK_LOG_ERROR, "handler error in %s: %s", who, lua_tostring(main_L, -1));
    } else {
        luasock_log(LUASOCK_LOG_ERROR, "error in spawned coroutine: %s", lua_tostring(main_L, -1));
    }
    lua_pop(main_L, 1);
    lua_pushstring(main_L, message); /* what join reports, kept past the reset */
    /* Runs the pending __close handlers of <close> variables the error skipped. */
    lua_resetthread(t->co);
    lua_xmove(main_L, t->co, 1);
    t->failed = true;
    t->nresults = 1;
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

static void finish(struct task *t)
{
    t->done = true;
    ev_timer_stop(loop, &t->sleep_timer);
    if (t->conn != NULL)
        conn_close(t->conn);
    if (t->awaited)
        handler_count--;
    conn_close_owned(t);
    if (t->joiner != NULL) {
        struct task *joiner = t->joiner;
        t->joiner = NULL;
        task_wake(joiner, push_outcome(t, task_stack(joiner)));
    }
    if (t == main_task) {
        main_status = exit_status(t);
        ev_break(loop, EVBREAK_ALL);
    }
    luaL_unref(main_L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
}

void task_resume(struct task *t, int nargs)
{
    int nresults;
    t->waiting = false;
    lua_State *outer = guard_enter(t->co);
    int status = lua_resume(t->co, NULL, nargs, &nresults);
    guard_leave(outer);
    if (status == LUA_YIELD) {
        lua_pop(t->co, nresults);
        /* A bare coroutine.yield() in a handler just lets the others run. */
        if (!t->waiting)
            task_wake(t, 0);
        return;
    }
    if (status == LUA_OK)
        t->nresults = nresults;
    else
        report_error(t);
    finish(t);
}

void task_wake(struct task *t, int nargs)
{
    if (t->queued)
        return;
    t->queued = true;
    t->nargs = nargs;
    t->next_ready = NULL;
    if (ready_tail != NULL)
        ready_tail->next_ready = t;
    else
        ready_head = t;
    ready_tail = t;
}

bool task_run_ready(void)
{
    struct task *t = ready_head;
    ready_head = ready_tail = NULL;
    while (t != NULL) {
        struct task *next = t->next_ready;
        t->queued = false;
        task_resume(t, t->nargs);
        t = next;
    }
    return ready_head != NULL;
}

bool task_ready_pending(void)
{
    return ready_head != NULL;
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

void task_restore_sleep_timer(struct task *t)
{
    ev_set_cb(&t->sleep_timer, sleep_done);
}

int task_sleep(lua_State *L, double seconds)
{
    struct task *t = task_check(L, "luasock.sleep");
    ev_timer_set(&t->sleep_timer, seconds > 0 ? seconds : 0, 0);
    ev_timer_start(loop, &t->sleep_timer);
    return task_suspend(L);
}

void task_push(lua_State *L, struct task *t)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
}

void task_set_main(struct task *t)
{
    main_task = t;
}

int task_main_status(void)
{
    return main_status;
}

lua_State *task_main_state(void)
{
    return main_L;
}
