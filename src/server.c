/* server.c -- wires the pieces together: the Lua state, the handler script, the listeners and
 * the loop's per-iteration work (resume woken tasks, then flush output). */
#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf.h"
#include "conn.h"
#include "errors.h"
#include "guard.h"
#include "lconn.h"
#include "listener.h"
#include "lluasock.h"
#include "log.h"
#include "ludp.h"
#include "luasock.h"
#include "net.h"
#include "peers.h"
#include "resolver.h"
#include "server.h"
#include "task.h"
#include "watch.h"
#include "workers.h"

static struct ev_loop *loop;
static lua_State *L;
/* The script's callbacks live in registry slots that a reload overwrites in place, so whoever
 * kept a slot number (a udp listener) calls the new function from then on. */
static int handle_ref = LUA_NOREF;
static int on_close_ref = LUA_NOREF;
static int datagram_ref = LUA_NOREF;
static struct conn_settings builtin_settings;
static const char *script_path;
static bool watching;
static size_t max_connections;
static size_t max_per_ip;
/* Refusals are logged at most once a second: a flood of them must not flood the log too. */
static ev_tstamp refusal_logged_at;
static unsigned long refusals_unlogged;
static struct listener *listeners;
static ev_prepare before_wait;
static ev_idle keep_polling;
static ev_signal on_sigint, on_sigterm, on_sighup;
static const char *pid_file_written;
static bool shutting_down;
static double grace_seconds;
static ev_timer grace_timer;
/* --workers: the parent supervises and never serves; a worker is a fork of it. */
static int worker_count = 1;
static bool supervising;
static bool reloaded_before_fork; /* a restarted worker must catch up with the reloads */
/* The "listening on" lines; with workers they wait until every worker listens. */
static FILE *announcements;
static char *announcements_text;
static size_t announcements_size;

/* Finds the runtime's Lua files: beside the binary (build tree) or in ../share (installed). */
static int add_runtime_path(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        return -1;
    exe[n] = '\0';
    const char *dir = dirname(exe);
    const char *candidates[] = {"%s/lua", "%s/../share/luasock/lua"};
    for (size_t i = 0; i < 2; i++) {
        char root[4200], probe[4300];
        snprintf(root, sizeof root, candidates[i], dir);
        snprintf(probe, sizeof probe, "%s/luasock/loader.lua", root);
        if (access(probe, R_OK) == 0) {
            lua_getglobal(L, "package");
            lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", root, root);
            lua_getfield(L, -2, "path");
            lua_concat(L, 2);
            lua_setfield(L, -2, "path");
            lua_pop(L, 1);
            return 0;
        }
    }
    fprintf(stderr, "luasock: cannot find the runtime Lua files (luasock/loader.lua) in %s/lua "
                    "or %s/../share/luasock/lua\n", dir, dir);
    return -1;
}

static void before_wait_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    if (supervising)
        return;
    task_run_ready();
    conn_flush_all();
    if (shutting_down && task_handler_count() == 0 && !task_ready_pending()) {
        ev_break(l, EVBREAK_ALL);
        return;
    }
    /* Tasks woken meanwhile must run before the loop sleeps: an idle watcher keeps poll from
     * blocking for one more iteration. */
    if (task_ready_pending())
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

static void on_grace_over(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    luasock_log(LUASOCK_LOG_WARN, "grace period over: %d handlers still running; closing their "
                "connections", task_handler_count());
    ev_break(l, EVBREAK_ALL);
}

static void close_listeners(void)
{
    while (listeners != NULL) {
        struct listener *next = listeners->next;
        listener_close(loop, listeners);
        listeners = next;
    }
}

/* Stops accepting, wakes every handler blocked in a read with nil, "shutting down", and lets
 * the handlers finish for up to the grace period. */
static void begin_shutdown(const char *signal_name)
{
    shutting_down = true;
    lluasock_begin_shutdown();
    close_listeners();
    conn_interrupt_reads(ERR_SHUTTING_DOWN);
    luasock_log(LUASOCK_LOG_INFO, "shutting down (%s): waiting up to %g s for %d handlers",
                signal_name, grace_seconds, task_handler_count());
    ev_timer_init(&grace_timer, on_grace_over, grace_seconds, 0);
    ev_timer_start(loop, &grace_timer);
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)revents;
    if (supervising) {
        workers_stop(w->signum);
        return;
    }
    if (!shutting_down) {
        begin_shutdown(sigabbrev_np(w->signum));
        return;
    }
    luasock_log(LUASOCK_LOG_INFO, "second SIG%s: exiting now", sigabbrev_np(w->signum));
    ev_break(l, EVBREAK_ALL);
}

static int on_panic(lua_State *state)
{
    fprintf(stderr, "luasock: unprotected Lua error: %s\n", lua_tostring(state, -1));
    return 0;
}

static int open_runtime(void)
{
    loop = ev_default_loop(0);
    L = lua_newstate(guard_alloc, NULL);
    if (loop == NULL || L == NULL) {
        fprintf(stderr, "luasock: out of memory\n");
        return -1;
    }
    lua_atpanic(L, on_panic);
    luaL_openlibs(L);
    luaL_requiref(L, "luasock.core", luaopen_luasock, 0);
    lua_pop(L, 1);
    if (resolver_init(loop) < 0)
        return -1;
    task_init(loop, L);
    conn_init(loop, L);
    lconn_open(L);
    return add_runtime_path();
}

static void close_runtime(void)
{
    ev_timer_stop(loop, &grace_timer);
    close_listeners();
    if (pid_file_written != NULL)
        unlink(pid_file_written);
    watch_stop();
    resolver_shutdown();
    if (L != NULL) {
        conn_close_all();
        lua_close(L);
    }
    buf_pool_drain();
    peers_free();
    if (loop != NULL)
        ev_loop_destroy(loop);
}

/* Calls loader[fn](script path, ...) with the nargs values on top as more arguments; leaves its
 * first result, or the error message and returns -1 when the first result is nil. */
static int call_loader(const char *fn, const char *path, int nargs)
{
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luasock.loader");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_pushstring(L, path);
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

/* Leaves the script's table on the stack, or prints why it cannot be loaded after prefix. */
static int load_script(const char *path, const char *prefix)
{
    if (call_loader("load", path, 0) < 0) {
        fprintf(stderr, "%s%s\n", prefix, lua_tostring(L, -1));
        return -1;
    }
    return 0;
}

/* With the script's table on top: runs its start hook and leaves the settings table above it,
 * or the error message. */
static int configure_script(const char *path)
{
    lua_pushvalue(L, -1);
    return call_loader("configure", path, 1);
}

int server_check(const char *script)
{
    int status = 1;
    if (open_runtime() == 0 && load_script(script, "") == 0) {
        printf("%s: ok\n", script);
        status = 0;
    }
    close_runtime();
    return status;
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

#define DEFAULT_CPU_BUDGET 2.0
#define DEFAULT_MAX_MEMORY ((size_t)1 << 30)
#define DEFAULT_FIRST_BYTE_TIMEOUT 10.0

/* With the settings table on top: sets the defaults of new connections and the limits of the
 * handlers. */
static void apply_settings(void)
{
    guard_set_cpu_budget(time_setting("cpu_budget", DEFAULT_CPU_BUDGET));
    guard_set_memory_limit(size_setting("max_memory", DEFAULT_MAX_MEMORY));
    conn_first_byte_timeout = time_setting("first_byte_timeout", DEFAULT_FIRST_BYTE_TIMEOUT);
    struct conn_settings *d = &conn_defaults;
    *d = builtin_settings;
    d->max_line = size_setting("max_line", d->max_line);
    d->max_all = size_setting("max_all", d->max_all);
    d->high_water = size_setting("high_water", d->high_water);
    d->max_queue = size_setting("max_queue", d->max_queue);
    d->max_object = size_setting("max_object", d->max_object);
    d->read_timeout = time_setting("idle_timeout", d->read_timeout);
    d->send_timeout = time_setting("send_timeout", d->send_timeout);
}

/* Runs the script's on_close(conn, reason) in a task of its own: the connection may be closing
 * from inside another coroutine, which must not be interrupted. */
static void run_on_close(struct conn *c, const char *reason)
{
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, on_close_ref) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        return;
    }
    conn_push(L, c);
    lua_pushstring(L, reason);
    task_wake(task_new(L, 2, 0), 2);
}

static void refuse(int fd, const struct sockaddr *peer_addr, socklen_t peer_len,
                   const char *why)
{
    close(fd);
    ev_tstamp now = ev_now(loop);
    if (now - refusal_logged_at < 1) {
        refusals_unlogged++;
        return;
    }
    char peer[128], more[64] = "";
    net_format(peer_addr, peer_len, peer, sizeof peer);
    if (refusals_unlogged > 0)
        snprintf(more, sizeof more, " (and %lu more since the last such line)", refusals_unlogged);
    luasock_log(LUASOCK_LOG_WARN, "refused connection from %s: %s%s", peer, why, more);
    refusal_logged_at = now;
    refusals_unlogged = 0;
}

static void on_accept(int fd, const struct sockaddr *peer_addr, socklen_t peer_len)
{
    if (max_connections > 0 && conn_count() >= max_connections) {
        refuse(fd, peer_addr, peer_len, "too many connections open (--max-connections)");
        return;
    }
    if (max_per_ip > 0 && !peers_admit(peer_addr, max_per_ip)) {
        refuse(fd, peer_addr, peer_len, "too many connections from this address "
                                        "(--max-connections-per-ip)");
        return;
    }
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, handle_ref) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        luasock_log(LUASOCK_LOG_ERROR, "%s has no 'handle' function since its reload: "
                    "connection closed", script_path);
        close(fd);
        return;
    }
    net_set_nodelay(fd);
    struct conn *c = conn_new(L, fd, peer_addr, peer_len);
    c->peer_counted = max_per_ip > 0;
    struct task *t = task_new(L, 1, -1);
    task_resume(t, 1);
}

static int listen_failed(const char *err)
{
    fprintf(stderr, "luasock: %s\n", err);
    return -1;
}

static int open_listener(const char *text, const char *script)
{
    struct net_addr addr;
    const char *why;
    char err[512];
    if (net_parse_addr(text, &addr, &why) < 0) {
        fprintf(stderr, "luasock: bad listen address '%s': %s\n", text, why);
        return -1;
    }
    int callback = addr.kind == NET_UDP ? datagram_ref : handle_ref;
    int type = lua_rawgeti(L, LUA_REGISTRYINDEX, callback);
    lua_pop(L, 1);
    if (type != LUA_TFUNCTION) {
        fprintf(stderr, "luasock: %s: no '%s' function for listener %s\n", script,
                addr.kind == NET_UDP ? "datagram" : "handle", text);
        return -1;
    }
    char name[160];
    if (addr.kind == NET_UDP) {
        if (ludp_listen(L, text, &addr, datagram_ref, worker_count > 1, name, sizeof name, err,
                        sizeof err) < 0)
            return listen_failed(err);
    } else {
        struct listener *l = listener_open(loop, text, &addr, on_accept, worker_count > 1, err,
                                           sizeof err);
        if (l == NULL)
            return listen_failed(err);
        l->next = listeners;
        listeners = l;
        snprintf(name, sizeof name, "%s", l->name);
    }
    fprintf(announcements, "luasock: listening on %s (%s)\n", name, script);
    return 0;
}

/* Opens the command line's listeners, or else the script's (settings table on top). */
static int open_listeners(const struct serve_options *o)
{
    for (size_t i = 0; i < o->listen_count; i++)
        if (open_listener(o->listen[i], o->script) < 0)
            return -1;
    if (o->listen_count > 0)
        return 0;

    lua_getfield(L, -1, "listen");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int rc = open_listener(lua_tostring(L, -1), o->script);
        lua_pop(L, 1);
        if (rc < 0)
            return -1;
    }
    lua_pop(L, 1);
    if (n == 0) {
        fprintf(stderr, "luasock: %s: nowhere to listen: give --listen or set 'listen' in the "
                        "script\n", o->script);
        return -1;
    }
    return 0;
}

/* Serving thousands of connections needs more descriptors than the usual soft limit of 1024. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void start_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&on_sigint, on_signal, SIGINT);
    ev_signal_init(&on_sigterm, on_signal, SIGTERM);
    ev_signal_start(loop, &on_sigint);
    ev_signal_start(loop, &on_sigterm);
}

static void start_loop(void)
{
    ev_prepare_init(&before_wait, before_wait_cb);
    ev_prepare_start(loop, &before_wait);
    ev_idle_init(&keep_polling, keep_polling_cb);
    ev_run(loop, 0);
}

/* Stores the script's callback field in its registry slot, made on first use. A missing
 * callback is stored as false, never nil: a nil would punch a hole in the registry's array,
 * and luaL_ref could then hand out a slot that is still in use. */
static void install_callback(int *ref, const char *field)
{
    if (lua_getfield(L, -1, field) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
    }
    if (*ref == LUA_NOREF) {
        lua_pushvalue(L, -1);
        *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawseti(L, LUA_REGISTRYINDEX, *ref);
}

/* With the script's table below its settings table: makes them the ones in use. */
static void install_script(void)
{
    apply_settings();
    lua_pushvalue(L, -2);
    install_callback(&handle_ref, "handle");
    install_callback(&datagram_ref, "datagram");
    install_callback(&on_close_ref, "on_close");
    lua_pop(L, 1);
    conn_on_close = run_on_close;
}

/* Watches the script and the modules it loaded from its own directory. */
static void watch_script(void)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luasock.loader");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "local_modules");
    lua_pushstring(L, script_path);
    lua_call(L, 1, 1);
    const char *paths[64] = {script_path};
    int count = 1;
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n && count < 64; i++) {
        lua_rawgeti(L, -1, i);
        paths[count++] = lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays alive in the list below it */
    }
    if (watch_files(paths, count) < 0)
        luasock_log(LUASOCK_LOG_WARN, "--watch: cannot watch %d files", count);
    lua_pop(L, 2);
}

/* Loads the script again. If that fails, the old code keeps serving; connections already open
 * keep running their coroutines either way. */
static void reload(const char *changed)
{
    ev_tstamp began = ev_time();
    int top = lua_gettop(L);
    int rc = call_loader("forget_local_modules", script_path, 0);
    if (rc == 0) {
        lua_pop(L, 1);
        rc = call_loader("load", script_path, 0);
    }
    if (rc == 0)
        rc = configure_script(script_path);
    if (rc < 0) {
        /* The files watched so far stay watched: fixing a broken module must reload too. */
        luasock_log(LUASOCK_LOG_ERROR, "reload failed: %s", lua_tostring(L, -1));
    } else {
        install_script();
        luasock_log(LUASOCK_LOG_INFO, "reloaded %s in %.1f ms (%s)", script_path,
                    (ev_time() - began) * 1000, changed);
        if (watching)
            watch_script();
    }
    lua_settop(L, top);
}

/* The parent keeps the code it started with: each worker reloads itself, and a worker forked
 * later catches up as it starts. */
static void reload_workers(const char *why)
{
    luasock_log(LUASOCK_LOG_INFO, "reloading %d workers (%s)", worker_count, why);
    reloaded_before_fork = true;
    workers_signal(SIGHUP);
}

static void on_files_changed(const char *changed)
{
    char why[2100];
    snprintf(why, sizeof why, "changed: %s", changed);
    if (supervising)
        reload_workers(why);
    else
        reload(why);
}

static void on_hangup(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    if (supervising)
        reload_workers("SIGHUP");
    else
        reload("SIGHUP");
}

/* Writes our pid to path, unless it names a process that is still running. */
static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
        fprintf(stderr, "luasock: pid file %s names a running process (pid %ld): is another "
                        "server using it?\n", path, pid);
        return -1;
    }
    f = fopen(path, "w");
    if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
        fprintf(stderr, "luasock: pid file %s: %s\n", path, errors_string(errno));
        return -1;
    }
    pid_file_written = path;
    return 0;
}

static void discard_announcements(void)
{
    fclose(announcements);
    free(announcements_text);
    announcements = NULL;
}

static void print_announcements(void)
{
    fflush(announcements);
    fputs(announcements_text, stderr);
    discard_announcements();
}

/* Runs in each worker right after its fork: takes over the listeners, and drops what is the
 * parent's alone (its file watch, its pid file, its resolver channel). */
static void become_worker(int id)
{
    char origin[32];
    ev_loop_fork(loop);
    supervising = false;
    snprintf(origin, sizeof origin, "worker %d", id);
    log_set_origin(origin);
    if (announcements != NULL)
        discard_announcements();
    pid_file_written = NULL;
    watching = false;
    watch_stop();
    resolver_shutdown();
    if (resolver_init(loop) < 0)
        _exit(1);
    for (struct listener *l = listeners; l != NULL; l = l->next) {
        char err[512];
        if (listener_start_in_worker(loop, l, err, sizeof err) < 0) {
            luasock_log(LUASOCK_LOG_ERROR, "%s", err);
            _exit(1);
        }
    }
    ludp_start_listeners_in_worker();
    guard_start();
    lluasock_set_worker(L, id, worker_count);
    if (reloaded_before_fork)
        reload("catching up: started after a reload");
}

static int start(const struct serve_options *o)
{
    script_path = o->script;
    grace_seconds = o->grace;
    worker_count = o->workers > 1 ? o->workers : 1;
    announcements = open_memstream(&announcements_text, &announcements_size);
    if (announcements == NULL || open_runtime() < 0)
        return -1;
    lluasock_set_worker(L, worker_count > 1 ? 0 : 1, worker_count);
    if (o->pubsub != NULL)
        lluasock_set_pubsub_url(L, o->pubsub);
    if (load_script(o->script, "luasock: ") < 0)
        return -1;
    builtin_settings = conn_defaults;
    if (configure_script(o->script) < 0) {
        fprintf(stderr, "luasock: %s\n", lua_tostring(L, -1));
        return -1;
    }
    install_script();
    max_connections = o->max_connections;
    max_per_ip = o->max_per_ip;
    raise_fd_limit();
    guard_start();
    /* Before the "listening on" line: a SIGTERM sent right after it must stop us cleanly. */
    start_signals();
    if (o->pid_file != NULL && write_pid_file(o->pid_file) < 0)
        return -1;
    if (open_listeners(o) < 0)
        return -1;
    ev_signal_init(&on_sighup, on_hangup, SIGHUP);
    ev_signal_start(loop, &on_sighup);
    if (o->watch) {
        watching = true;
        watch_init(loop, on_files_changed);
        watch_script();
    }
    lua_settop(L, 0);
    return 0;
}

/* With workers: forks them, and returns in each worker as in the parent. */
static int start_workers(void)
{
    if (worker_count == 1) {
        print_announcements();
        return 0;
    }
    supervising = true;
    /* Workers get the grace period, then some time to close what remains. */
    if (workers_start(loop, worker_count, grace_seconds + 5, become_worker) < 0)
        return -1;
    if (supervising)
        print_announcements();
    return 0;
}

int server_serve(const struct serve_options *o)
{
    int status = 1;
    if (start(o) == 0 && start_workers() == 0) {
        start_loop();
        status = 0;
    }
    if (announcements != NULL)
        discard_announcements();
    workers_free();
    close_runtime();
    return status;
}

int server_run(const char *script, int argc, char **argv)
{
    int status = 1;
    if (open_runtime() == 0) {
        for (int i = 0; i < argc; i++)
            lua_pushstring(L, argv[i]);
        if (call_loader("load_program", script, argc) < 0) {
            fprintf(stderr, "luasock: %s\n", lua_tostring(L, -1));
        } else {
            start_signals();
            raise_fd_limit();
            lua_insert(L, 1); /* the script's function, below its arguments */
            lua_settop(L, argc + 1);
            struct task *t = task_new(L, argc, 0);
            task_set_main(t);
            task_wake(t, argc);
            start_loop();
            status = task_main_status();
        }
    }
    close_runtime();
    return status;
}
