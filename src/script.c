/* script.c -- the handler script in the Lua state; see script.h.
 *
 * What a script may contain, and the checks on it, are in scripts/luasock/loader.lua, so that
 * `serve`, `check` and a reload accept and refuse exactly the same scripts. This file moves the
 * results into C: the callbacks into registry slots, the settings into conn_defaults and the
 * handler limits. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "conn.h"
#include "guard.h"
#include "ltls.h"
#include "ludp.h"
#include "luasock.h"
#include "script.h"
#include "task.h"

#define DEFAULT_CPU_BUDGET 2.0
#define DEFAULT_MAX_MEMORY ((size_t)1 << 30)
#define DEFAULT_MAX_BUFFERS ((size_t)256 << 20)
#define DEFAULT_FIRST_BYTE_TIMEOUT 10.0
#define DEFAULT_STALL_WARNING 0.2
#define MAX_WATCHED_FILES 64

static lua_State *L;
static const char *script_path;
/* Registry slots, made on first install; see script_callback_slot. */
static int slots[3] = {LUA_NOREF, LUA_NOREF, LUA_NOREF};
static const char *const slot_fields[3] = {"handle", "datagram", "on_close"};
static struct conn_settings builtin_settings;
static bool watching;

void script_init(lua_State *state, const char *path)
{
    L = state;
    script_path = path;
    builtin_settings = conn_defaults;
}

/* Calls loader[fn](script path, ...) with the nargs values on top as more arguments; leaves its
 * first result, or the error message and returns -1 when the first result is nil. */
static int call_loader(const char *fn, int nargs)
{
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luasock.loader");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_pushstring(L, script_path);
    for (int i = 1; i <= nargs; i++)
        lua_pushvalue(L, base + i);
    /* A script whose top level loops forever must not freeze a server that reloads it. */
    lua_State *outer = guard_enter(L);
    int status = lua_pcall(L, 1 + nargs, 2, 0);
    guard_leave(outer);
    if (status != LUA_OK)
        return -1;
    if (lua_isnil(L, -2)) {
        lua_remove(L, -2);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

/* Leaves the script's table on the stack, and above it its settings table once its start hook
 * has run and its certificates have loaded; or the error message. */
static int load_and_configure(void)
{
    task_begin_load();
    int rc = call_loader("load", 0);
    if (rc == 0) {
        lua_pushvalue(L, -1);
        rc = call_loader("configure", 1);
    }
    char err[512];
    if (rc == 0 && ltls_configure(L, script_path, err, sizeof err) < 0) {
        lua_pushstring(L, err);
        rc = -1;
    }
    task_end_load(rc == 0);
    return rc;
}

int script_check(void)
{
    /* The path serve takes, start hook included, short of installing and listening. */
    if (load_and_configure() < 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return -1;
    }
    printf("%s: ok\n", script_path);
    return 0;
}

static size_t size_setting(const char *name, size_t fallback)
{
    lua_getfield(L, -1, name);
    size_t value = lua_isinteger(L, -1) ? (size_t)lua_tointeger(L, -1) : fallback;
    lua_pop(L, 1);
    return value;
}

static double time_setting(const char *name, double fallback)
{
    lua_getfield(L, -1, name);
    double value = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : fallback;
    lua_pop(L, 1);
    return value;
}

/* The index in names of a string setting the loader checked, or fallback when unset. */
static int option_setting(const char *name, const char *const names[], int fallback)
{
    lua_getfield(L, -1, name);
    const char *value = lua_tostring(L, -1);
    int found = fallback;
    for (int i = 0; value != NULL && names[i] != NULL; i++)
        if (strcmp(names[i], value) == 0)
            found = i;
    lua_pop(L, 1);
    return found;
}

static bool boolean_setting(const char *name)
{
    lua_getfield(L, -1, name);
    bool value = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return value;
}

/* With the settings table on top: sets the defaults of new connections and the limits of the
 * handlers. */
static void apply_settings(void)
{
    guard_set_cpu_budget(time_setting("cpu_budget", DEFAULT_CPU_BUDGET));
    guard_set_stall_warning(time_setting("stall_warning", DEFAULT_STALL_WARNING));
    guard_set_memory_limit(size_setting("max_memory", DEFAULT_MAX_MEMORY));
    buf_set_budget(size_setting("max_buffers", DEFAULT_MAX_BUFFERS));
    conn_first_byte_timeout = time_setting("first_byte_timeout", DEFAULT_FIRST_BYTE_TIMEOUT);
    ludp_set_max_tasks(size_setting("max_datagram_tasks", LUDP_DEFAULT_MAX_TASKS));
    struct conn_settings *d = &conn_defaults;
    *d = builtin_settings;
    d->max_line = size_setting("max_line", d->max_line);
    d->max_all = size_setting("max_all", d->max_all);
    d->max_receive = size_setting("max_receive", d->max_receive);
    d->high_water = size_setting("high_water", d->high_water);
    d->max_queue = size_setting("max_queue", d->max_queue);
    d->soft_queue = size_setting("soft_queue", d->soft_queue);
    d->soft_queue_seconds = time_setting("soft_queue_seconds", d->soft_queue_seconds);
    d->max_object = size_setting("max_object", d->max_object);
    d->max_object_items = size_setting("max_object_items", d->max_object_items);
    d->read_timeout = time_setting("idle_timeout", d->read_timeout);
    d->send_timeout = time_setting("send_timeout", d->send_timeout);
    d->object_codec = (enum object_codec)option_setting("object_codec", object_codec_names, 0);
    d->exact_objects = boolean_setting("exact_objects");
    static const char *const json_errors[] = {"close", "return", NULL};
    d->keep_bad_json = option_setting("json_errors", json_errors, 0) == 1;
    conn_access_log = conn_access_log_always || boolean_setting("access_log");
}

/* Starts the script's on_close(conn, reason) in a task of its own; the connection's userdata is
 * on top of the stack. */
static void run_on_close(lua_State *state, const char *reason)
{
    if (!script_push_callback(state, SCRIPT_ON_CLOSE))
        return;
    lua_pushvalue(state, -2);
    lua_pushstring(state, reason);
    struct task *t = task_new(state, 2, 0, NULL);
    /* A hook that tells others a member left must get to do so during a graceful shutdown. */
    task_await_at_shutdown(t);
    task_start(t);
}

/* Stores a callback field of the settings table (on top) in its registry slot. A missing
 * callback is stored as false, never nil: a nil would punch a hole in the registry's array, and
 * luaL_ref could then hand out a slot that is still in use. */
static void install_callback(int which)
{
    if (lua_getfield(L, -1, slot_fields[which]) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
    }
    if (slots[which] == LUA_NOREF) {
        lua_pushvalue(L, -1);
        slots[which] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawseti(L, LUA_REGISTRYINDEX, slots[which]);
}

/* With the settings table (settings and callbacks) on top: makes them the ones in use. */
static void install(void)
{
    apply_settings();
    for (int which = 0; which < 3; which++)
        install_callback(which);
    /* Only a script with the hook pays for it: a deferred step per closed connection. */
    conn_on_close = script_has_callback(SCRIPT_ON_CLOSE) ? run_on_close : NULL;
}

int script_start(void)
{
    if (load_and_configure() < 0) {
        fprintf(stderr, "luasock: %s\n", lua_tostring(L, -1));
        return -1;
    }
    install();
    return 0;
}

int script_load_program(int nargs)
{
    if (call_loader("load_program", nargs) < 0) {
        fprintf(stderr, "luasock: %s\n", lua_tostring(L, -1));
        return -1;
    }
    lua_insert(L, -1 - nargs);
    lua_settop(L, nargs + 1);
    return 0;
}

bool script_push_callback(lua_State *state, enum script_callback which)
{
    if (lua_rawgeti(state, LUA_REGISTRYINDEX, slots[which]) == LUA_TFUNCTION)
        return true;
    lua_pop(state, 1);
    return false;
}

bool script_has_callback(enum script_callback which)
{
    bool has = script_push_callback(L, which);
    if (has)
        lua_pop(L, 1);
    return has;
}

int script_callback_slot(enum script_callback which)
{
    return slots[which];
}

/* Watches the script and the modules it loaded from its own directory. Runs protected
 * (task_protected): the list comes from Lua. */
static int watch_files_in_use(lua_State *state)
{
    if (call_loader("local_modules", 0) < 0)
        return lua_error(state);
    const char *paths[MAX_WATCHED_FILES] = {script_path};
    int count = 1 + ltls_files(paths + 1, MAX_WATCHED_FILES / 2);
    lua_Integer n = (lua_Integer)lua_rawlen(state, -1);
    for (lua_Integer i = 1; i <= n && count < MAX_WATCHED_FILES; i++) {
        if (lua_rawgeti(state, -1, i) == LUA_TSTRING)
            paths[count++] = lua_tostring(state, -1);
        lua_pop(state, 1); /* the string stays alive in the list below it */
    }
    if (watch_files(paths, count) < 0)
        luasock_log(LUASOCK_LOG_WARN, "--watch: cannot watch %d files", count);
    return 0;
}

int script_reload(const char *why)
{
    ev_tstamp began = ev_time();
    int top = lua_gettop(L);
    int rc = call_loader("forget_local_modules", 0);
    if (rc == 0) {
        lua_pop(L, 1);
        rc = load_and_configure();
    }
    if (rc < 0) {
        /* The files watched so far stay watched: fixing a broken module must reload too. */
        luasock_log(LUASOCK_LOG_ERROR, "reload failed: %s", lua_tostring(L, -1));
    } else {
        install();
        luasock_log(LUASOCK_LOG_INFO, "reloaded %s in %.1f ms (%s)", script_path,
                    (ev_time() - began) * 1000, why);
        if (watching)
            task_protected(watch_files_in_use, NULL, "--watch");
    }
    lua_settop(L, top);
    return rc;
}

void script_watch(struct ev_loop *loop, watch_cb on_change)
{
    watching = true;
    watch_init(loop, on_change);
    task_protected(watch_files_in_use, NULL, "--watch");
}

void script_unwatch(void)
{
    watching = false;
    watch_stop();
}
