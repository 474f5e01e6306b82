/* lqueue.c -- luasock.queue(): a FIFO between coroutines. q:push(value) never suspends;
 * q:pop([timeout]) returns the oldest value, suspending until one is pushed. It is the one way
 * for a coroutine to wait for another (a reply read by a client's reader coroutine, work handed
 * to a background coroutine), without polling.
 *
 * Values live in the queue's uservalue table between indices head and tail; a waiting task is
 * linked through its next_ready field, which is free while it is suspended. */
#include <lauxlib.h>

#include "lqueue.h"
#include "lresult.h"
#include "task.h"

#define loop EV_DEFAULT

#define QUEUE_MT "luasock.queue"

struct queue {
    lua_Integer head, tail; /* values at [head, tail) of the uservalue table */
    struct task *first_waiter, *last_waiter;
};

static struct queue *toqueue(lua_State *L)
{
    return luaL_checkudata(L, 1, QUEUE_MT);
}

static void unlink_waiter(struct queue *q, struct task *t)
{
    struct task **link = &q->first_waiter, *prev = NULL;
    while (*link != t) {
        prev = *link;
        link = &(*link)->next_ready;
    }
    *link = t->next_ready;
    if (q->last_waiter == t)
        q->last_waiter = prev;
    t->next_ready = NULL;
    t->waiting_on = NULL;
}

static void pop_timed_out(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct task *t = w->data;
    unlink_waiter(t->waiting_on, t);
    task_restore_sleep_timer(t);
    task_resume(t, push_error(task_stack(t), "timeout"));
}

/* q:push(value) -> true: hands value to the oldest waiting coroutine, or keeps it. */
static int queue_push(lua_State *L)
{
    struct queue *q = toqueue(L);
    luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "a value (not nil)");
    struct task *t = q->first_waiter;
    if (t != NULL) {
        unlink_waiter(q, t);
        ev_timer_stop(loop, &t->sleep_timer);
        task_restore_sleep_timer(t);
        lua_State *to = task_stack(t);
        lua_pushvalue(L, 2);
        lua_xmove(L, to, 1);
        task_wake(t, 1);
    } else {
        lua_getiuservalue(L, 1, 1);
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, q->tail++);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* q:pop([timeout]) -> value | nil, "timeout" */
static int queue_pop(lua_State *L)
{
    struct queue *q = toqueue(L);
    double timeout = luaL_optnumber(L, 2, -1);
    if (q->head < q->tail) {
        lua_getiuservalue(L, 1, 1);
        lua_rawgeti(L, -1, q->head);
        lua_pushnil(L);
        lua_rawseti(L, -3, q->head++);
        return 1;
    }
    struct task *t = task_check(L, "queue:pop");
    if (timeout == 0)
        return push_error(L, "timeout");
    t->waiting_on = q;
    t->next_ready = NULL;
    if (q->last_waiter != NULL)
        q->last_waiter->next_ready = t;
    else
        q->first_waiter = t;
    q->last_waiter = t;
    if (timeout > 0) {
        ev_set_cb(&t->sleep_timer, pop_timed_out);
        ev_timer_set(&t->sleep_timer, timeout, 0);
        ev_timer_start(loop, &t->sleep_timer);
    }
    return task_suspend(L);
}

static int queue_len(lua_State *L)
{
    struct queue *q = toqueue(L);
    lua_pushinteger(L, q->tail - q->head);
    return 1;
}

static int queue_tostring(lua_State *L)
{
    struct queue *q = toqueue(L);
    lua_pushfstring(L, "queue (%I values)", (lua_Integer)(q->tail - q->head));
    return 1;
}

/* luasock.queue() -> an empty queue */
static int luasock_queue(lua_State *L)
{
    struct queue *q = lua_newuserdatauv(L, sizeof *q, 1);
    *q = (struct queue){.head = 1, .tail = 1};
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, QUEUE_MT);
    return 1;
}

void lqueue_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"push", queue_push},
        {"pop", queue_pop},
        {"len", queue_len},
        {NULL, NULL},
    };
    luaL_newmetatable(L, QUEUE_MT);
    lua_pushcfunction(L, queue_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, luasock_queue);
    lua_setfield(L, -2, "queue");
}
