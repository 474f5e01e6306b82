/* lguard.c -- the functions of Lua's standard library that guard.c's stops must see through.
 * coroutine.resume, coroutine.wrap and coroutine.close behave as Lua's own, with two
 * differences:
 *
 *   - they refuse a task's thread: a task is resumed only when its wait ends (a foreign resume
 *     would return from the middle of a luasock call that is still registered), and it ends
 *     only by returning or failing;
 *   - they tell guard.c which coroutine runs, so that the CPU budget stops the one that loops,
 *     however deeply a handler nests them.
 *
 * xpcall does not call its message handler for the error of a stop: Lua runs a message handler
 * for an error raised by a hook with hooks off, so a handler that loops could not be stopped. */
#include <lauxlib.h>

#include "guard.h"
#include "lguard.h"
#include "task.h"

static lua_State *check_coroutine(lua_State *L, int arg, const char *what)
{
    lua_State *co = lua_tothread(L, arg);
    luaL_argexpected(L, co != NULL, arg, "coroutine");
    if (co != L && task_current(co) != NULL)
        luaL_error(L, "coroutine.%s: a handler's or luasock.spawn's coroutine is run by luasock "
                      "only", what);
    return co;
}

enum state { RUNNING, NORMAL, SUSPENDED, DEAD };

static enum state state_of(lua_State *L, lua_State *co)
{
    lua_Debug ar;
    if (co == L)
        return RUNNING;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return SUSPENDED;
    case LUA_OK:
        if (lua_getstack(co, 0, &ar))
            return NORMAL; /* it resumed the one that runs */
        return lua_gettop(co) == 0 ? DEAD : SUSPENDED;
    default:
        return DEAD; /* it failed */
    }
}

/* Resumes co with the narg values on top of L. Returns how many results it moved onto L, or -1
 * with an error value on top of L. */
static int resume(lua_State *L, lua_State *co, int narg)
{
    enum state state = state_of(L, co);
    if (state != SUSPENDED) {
        lua_pushstring(L, state == DEAD ? "cannot resume dead coroutine"
                                        : "cannot resume non-suspended coroutine");
        return -1;
    }
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    int nresults;
    lua_State *outer = guard_switch(co);
    int status = lua_resume(co, L, narg, &nresults);
    guard_switch_back(outer);
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_xmove(co, L, 1);
        return -1;
    }
    if (!lua_checkstack(L, nresults + 1)) {
        lua_pop(co, nresults);
        lua_pushliteral(L, "too many results to resume");
        return -1;
    }
    lua_xmove(co, L, nresults);
    return nresults;
}

/* Runs co's pending __close handlers, as the coroutine that runs; returns their status, with an
 * error value on co if not LUA_OK. */
static int close_pending(lua_State *co)
{
    lua_State *outer = guard_switch(co);
    int status = lua_resetthread(co);
    guard_switch_back(outer);
    return status;
}

/* coroutine.resume(co, ...) -> true, results... | false, error */
static int co_resume(lua_State *L)
{
    lua_State *co = check_coroutine(L, 1, "resume");
    int n = resume(L, co, lua_gettop(L) - 1);
    lua_pushboolean(L, n >= 0);
    lua_insert(L, n >= 0 ? -(n + 1) : -2);
    return n >= 0 ? n + 1 : 2;
}

/* The function coroutine.wrap returns: resumes, and raises what the coroutine raised, with the
 * caller's position in front of a string (as Lua's own wrap does). */
static int wrapped_call(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int n = resume(L, co, lua_gettop(L));
    if (n >= 0)
        return n;
    int status = lua_status(co);
    if (status != LUA_OK && status != LUA_YIELD) {
        status = close_pending(co);
        lua_xmove(co, L, 1);
    }
    if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, wrapped_call, 1);
    return 1;
}

/* coroutine.close(co) -> true | false, error: runs its pending __close handlers. */
static int co_close(lua_State *L)
{
    lua_State *co = check_coroutine(L, 1, "close");
    enum state state = state_of(L, co);
    if (state != SUSPENDED && state != DEAD)
        return luaL_error(L, "cannot close a %s coroutine",
                          state == RUNNING ? "running" : "normal");
    int status = close_pending(co);
    if (status == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

/* Calls the caller's message handler (upvalue 1), unless the error is a stop's. */
static int message_handler(lua_State *L)
{
    if (guard_stopping())
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int finish_xpcall(lua_State *L, int status, lua_KContext first_result)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)first_result + 1;
}

/* xpcall(f, handler, ...) -> true, results... | false, what handler returned */
static int guarded_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, message_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1); /* the first result, below f's */
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* true and f go below f's arguments */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 3, finish_xpcall);
    return finish_xpcall(L, status, 3);
}

void lguard_install(lua_State *L)
{
    static const luaL_Reg replaced[] = {
        {"resume", co_resume},
        {"wrap", co_wrap},
        {"close", co_close},
        {NULL, NULL},
    };
    lua_getglobal(L, "coroutine");
    luaL_setfuncs(L, replaced, 0);
    lua_pop(L, 1);
    lua_register(L, "xpcall", guarded_xpcall);
}
