/* lqueue.c -- luasock.queue(): a FIFO between coroutines. q:push(value) never suspends;
 * q:pop([timeout]) returns the oldest value, suspending until one is pushed. It is the one way
 * for a coroutine to wait for another (a reply read by a client's reader coroutine, work handed
 * to a background coroutine), without polling.
 *
 * Values live in the queue's uservalue table between indices head and tail. A value pushed while
 * coroutines wait is handed straight to the first of them (task_wake_first_with), so a pop that
 * comes in between cannot take it from the waiter it was meant for. */
#include <lauxlib.h>

#include "lqueue.h"
#include "lresult.h"
#include "task.h"

#define QUEUE_MT "luasock.queue"

struct queue {
    lua_Integer head, tail; /* values at [head, tail) of the uservalue table */
    struct task_waiters waiters;
};

static struct queue *toqueue(lua_State *L)
{
    return luaL_checkudata(L, 1, QUEUE_MT);
}

/* q:push(value) -> true: hands value to the oldest waiting coroutine, or keeps it. */
static int queue_push(lua_State *L)
{
    struct queue *q = toqueue(L);
    luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "a value (not nil)");
    if (!task_wake_first_with(L, &q->waiters, 2)) {
        lua_getiuservalue(L, 1, 1);
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, q->tail);
        q->tail++;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int pop_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    const char *failure = task_failure(L);
    if (failure != NULL)
        return push_error(L, failure);
    task_push_delivery(L);
    return 1;
}

/* q:pop([timeout]) -> value | nil, "timeout" */
static int queue_pop(lua_State *L)
{
    struct queue *q = toqueue(L);
    double timeout = task_opttimeout(L, 2, "queue:pop");
    if (q->head < q->tail) {
        lua_getiuservalue(L, 1, 1);
        lua_rawgeti(L, -1, q->head);
        lua_pushnil(L);
        lua_rawseti(L, -3, q->head++);
        return 1;
    }
    task_check_wait(L, "queue:pop");
    if (timeout == 0)
        return push_error(L, "timeout");
    return task_wait(L, &q->waiters, timeout, pop_resumed, 0);
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
