/* server.c -- `luasock serve`, `run` and `check` from start to exit: the runtime (loop, Lua
 * state), the listeners and accepting, signals and graceful shutdown, the pid file and the
 * --workers glue. The handler script itself is script.c's; the loop's per-iteration work is
 * task.c's. */
#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <lualib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blocks.h"
#include "buf.h"
#include "conn.h"
#include "errors.h"
#include "guard.h"
#include "lguard.h"
#include "metrics_core.h"
#include "metrics_http.h"
#include "metrics_workers.h"
#include "lngx.h"
#include "lconn.h"
#include "listener.h"
#include "ltls.h"
#include "lluasock.h"
#include "log.h"
#include "lstdio.h"
#include "ludp.h"
#include "udp.h"
#include "luasock.h"
#include "net.h"
#include "peers.h"
#include "resolver.h"
#include "script.h"
#include "server.h"
#include "task.h"
#include "tls.h"
#include "workers.h"

static struct ev_loop *loop;
static lua_State *L;
static const char *script_path;
static size_t max_connections;
static size_t max_per_ip;
static int ipv6_prefix = PEERS_DEFAULT_IPV6_PREFIX;
/* Refusals are logged at most once a second: a flood of them must not flood the log too. */
static ev_tstamp refusal_logged_at;
static unsigned long refusals_unlogged;
static struct listener *listeners;
static ev_signal on_sigint, on_sigterm, on_sighup, on_sigusr1;
static const char *pid_file_written;
static bool shutting_down;
static double grace_seconds;
static double watchdog_seconds;
static ev_timer grace_timer;
/* --workers: the parent supervises and never serves; a worker is a fork of it. */
static int worker_count = 1;
static bool supervising;
static bool metrics_on; /* --metrics or the script's metrics */
/* The "listening on" lines; with workers they wait until every worker listens. */
static FILE *announcements;
static char *announcements_text;
static size_t announcements_size;

/* Where the installed runtime is, relative to the installed binary's directory (CMake sets it
 * from the install directories: share/luasock/lua beside bin/). */
#ifndef LUASOCK_RUNTIME_FROM_BINDIR
#define LUASOCK_RUNTIME_FROM_BINDIR "../share/luasock/lua"
#endif

/* Finds the runtime's Lua files: beside the binary (build tree) or where `cmake --install` put
 * them (relative to the binary, so a prefix can move). */
static int add_runtime_path(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        return -1;
    exe[n] = '\0';
    const char *dir = dirname(exe);
    const char *candidates[] = {"%s/lua", "%s/" LUASOCK_RUNTIME_FROM_BINDIR};
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
                    "or %s/" LUASOCK_RUNTIME_FROM_BINDIR "\n", dir, dir);
    return -1;
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
        listener_close(listeners);
        listeners = next;
    }
}

/* Stops accepting, wakes every handler blocked in a read with nil, "shutting down", and lets
 * the handlers finish for up to the grace period. */
static void begin_shutdown(const char *signal_name)
{
    shutting_down = true;
    task_stop_when_idle();
    lluasock_begin_shutdown();
    close_listeners();
    conn_interrupt_waits(ERR_SHUTTING_DOWN);
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
    char name[16];
    errors_signal_name(w->signum, name, sizeof name);
    if (!shutting_down) {
        begin_shutdown(name);
        return;
    }
    luasock_log(LUASOCK_LOG_INFO, "second SIG%s: exiting now", name);
    ev_break(l, EVBREAK_ALL);
}

/* Lua's warnings (warn(), an error in a __gc metamethod) go to the log. A warning may come in
 * pieces; "@off" and "@on" switch them off and on (on by default: a server's log is where its
 * author looks). */
static void on_warning(void *ud, const char *piece, int tocont)
{
    static char text[1024];
    static size_t len;
    static bool off;
    (void)ud;
    if (len == 0 && !tocont && piece[0] == '@') {
        if (strcmp(piece, "@off") == 0)
            off = true;
        else if (strcmp(piece, "@on") == 0)
            off = false;
        return;
    }
    size_t n = strlen(piece), room = sizeof text - 1 - len;
    memcpy(text + len, piece, n < room ? n : room);
    len += n < room ? n : room;
    text[len] = '\0';
    if (tocont)
        return;
    if (!off)
        luasock_log(LUASOCK_LOG_WARN, "Lua warning: %s", text);
    len = 0;
}

/* Reached only by a real out-of-memory (malloc failing) outside any protected call: everything
 * else that runs Lua code on an event is protected (task.h). */
static int on_panic(lua_State *state)
{
    fprintf(stderr, "luasock: unprotected Lua error: %s\n", lua_tostring(state, -1));
    return 0;
}

/* libev aborts on a failed system call (no descriptor left for its signal pipe, say) unless it
 * is told what to do instead: a clear message and exit status 1. */
static void on_libev_failure(const char *what)
{
    fprintf(stderr, "luasock: %s: %s\n", what, errors_string(errno));
    _exit(1);
}

static int open_runtime(void)
{
    ev_set_syserr_cb(on_libev_failure);
    loop = ev_default_loop(0);
    L = lua_newstate(guard_alloc, NULL);
    if (loop == NULL || L == NULL) {
        fprintf(stderr, "luasock: out of memory\n");
        return -1;
    }
    lua_atpanic(L, on_panic);
    lua_setwarnf(L, on_warning, NULL);
    luaL_openlibs(L);
    lguard_install(L);
    luaL_requiref(L, "luasock.core", luaopen_luasock, 0);
    lua_pop(L, 1);
    lngx_preload(L);
    if (resolver_init(loop) < 0)
        return -1;
    task_init(loop, L, conn_flush_all);
    conn_init(loop, L);
    if (tls_init() < 0)
        return -1;
    listener_init(loop);
    udp_init(loop);
    lconn_open(L);
    return add_runtime_path();
}

static void close_runtime(void)
{
    ev_timer_stop(loop, &grace_timer);
    close_listeners();
    metrics_http_close();
    if (pid_file_written != NULL)
        unlink(pid_file_written);
    watch_stop();
    resolver_shutdown();
    if (L != NULL) {
        conn_close_all();
        lua_close(L);
        blocks_release();
    }
    buf_pool_drain();
    peers_free();
    if (loop != NULL)
        ev_loop_destroy(loop);
}

static int check_one(const char *script)
{
    int status = 1;
    if (open_runtime() == 0) {
        script_init(L, script);
        status = script_check() == 0 ? 0 : 1;
    }
    close_runtime();
    return status;
}

int server_check(char *const scripts[], int count)
{
    int failed = 0;
    for (int i = 0; i < count; i++) {
        /* Each script in a process of its own, as serve would run it: nothing one loads (its
         * globals, modules, shared dicts) reaches the next. */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            exit(check_one(scripts[i]));
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) < 0) {
            fprintf(stderr, "luasock: check %s: %s\n", scripts[i], errors_string(errno));
            failed = 1;
        } else if (!WIFEXITED(status)) {
            fprintf(stderr, "luasock: check %s: killed by signal %d\n", scripts[i],
                    WTERMSIG(status));
            failed = 1;
        } else if (WEXITSTATUS(status) != 0) {
            failed = 1;
        }
    }
    return failed;
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

/* Whom the refused client was counted with: its address, or for IPv6 its network. */
static const char *per_ip_refusal(const struct sockaddr *peer)
{
    static char why[96];
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
    if (peer->sa_family != AF_INET6 || IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) || ipv6_prefix == 128)
        return "too many connections from this address (--max-connections-per-ip)";
    snprintf(why, sizeof why, "too many connections from its /%d network "
                              "(--max-connections-per-ip, --ipv6-prefix)", ipv6_prefix);
    return why;
}

struct accepted {
    int fd;
    const struct sockaddr *peer;
    socklen_t peer_len;
    bool tls;
    struct conn *conn;  /* once it owns fd */
    struct task *task;  /* its handler, to start once the protected step is over */
};

/* Makes the connection and its handler's task; runs protected (task_protected). A TLS
 * connection gets its handler once its handshake has completed (secured). */
static int new_handler_task(lua_State *state)
{
    struct accepted *a = lua_touserdata(state, 1);
    if (!script_push_callback(state, SCRIPT_HANDLE))
        return luaL_error(state, "%s has no 'handle' function", script_path);
    struct conn *c = conn_new(state);
    conn_attach(c, a->fd, a->peer, a->peer_len);
    c->peer_counted = max_per_ip > 0;
    a->conn = c;
    if (a->tls)
        return 0;
    a->task = conn_new_handler(state, c);
    return 0;
}

/* The handler of a TLS connection whose handshake has completed; runs protected. */
static int new_secured_task(lua_State *state)
{
    struct accepted *a = lua_touserdata(state, 1);
    if (!script_push_callback(state, SCRIPT_HANDLE))
        return luaL_error(state, "%s has no 'handle' function", script_path);
    conn_push(state, a->conn);
    a->task = conn_new_handler(state, a->conn);
    return 0;
}

static void secured(struct conn *c)
{
    struct accepted a = {.conn = c};
    if (task_protected(new_secured_task, &a, "accept") == 0)
        task_run(a.task);
    else
        conn_close(c);
}

/* The server side of the handshake, before any handler; out of memory, c is closed. */
static void start_handshake(struct conn *c)
{
    SSL_CTX *ctx = ltls_server_context();
    if (ctx == NULL || conn_accept_tls(c, ctx) < 0) {
        luasock_log(LUASOCK_LOG_WARN, "conn %llu: closed: no memory for its tls session",
                    (unsigned long long)c->id);
        conn_close(c);
    }
}

static void count_accepted(struct listener *l, struct conn *c)
{
    if (l->counts == NULL)
        return;
    l->counts->accepted++;
    l->counts->open++;
    c->counted = l->counts;
}

/* The socket is accepted before its connection object exists, but this frame owns it until the
 * protected step has handed it over, and closes it if that step fails. */
static void on_accept(struct listener *l, int fd, const struct sockaddr *peer_addr,
                      socklen_t peer_len)
{
    if (max_connections > 0 && conn_count() >= max_connections) {
        metrics_core.refused[MR_MAX_CONNECTIONS]++;
        refuse(fd, peer_addr, peer_len, "too many connections open (--max-connections)");
        return;
    }
    if (!script_has_callback(SCRIPT_HANDLE)) {
        luasock_log(LUASOCK_LOG_ERROR, "%s has no 'handle' function since its reload: "
                    "connection closed", script_path);
        close(fd);
        return;
    }
    if (max_per_ip > 0 && !peers_admit(peer_addr, max_per_ip)) {
        metrics_core.refused[MR_PER_IP]++;
        refuse(fd, peer_addr, peer_len, per_ip_refusal(peer_addr));
        return;
    }
    net_set_nodelay(fd);
    struct accepted a = {.fd = fd, .peer = peer_addr, .peer_len = peer_len, .tls = l->tls};
    if (task_protected(new_handler_task, &a, "accept") == 0) {
        count_accepted(l, a.conn);
        if (a.tls)
            start_handshake(a.conn);
        else
            task_run(a.task);
    } else if (a.conn != NULL) {
        conn_close(a.conn);
    } else {
        close(fd);
        if (max_per_ip > 0)
            peers_release(peer_addr);
    }
}

static int listen_failed(const char *err)
{
    fprintf(stderr, "luasock: %s\n", err);
    return -1;
}

static int open_listener(const char *text, const char *script)
{
    struct net_addr addr;
    char err[512];
    if (net_check_listen(text, &addr, err, sizeof err) < 0)
        return listen_failed(err);
    enum script_callback callback = addr.kind == NET_UDP ? SCRIPT_DATAGRAM : SCRIPT_HANDLE;
    if (!script_push_callback(L, callback)) {
        fprintf(stderr, "luasock: %s: no '%s' function for listener %s\n", script,
                addr.kind == NET_UDP ? "datagram" : "handle", text);
        return -1;
    }
    lua_pop(L, 1);
    char name[160];
    if (addr.kind == NET_UDP) {
        if (ludp_listen(L, text, &addr, script_callback_slot(SCRIPT_DATAGRAM), worker_count > 1,
                        name, sizeof name, err, sizeof err) < 0)
            return listen_failed(err);
    } else {
        if (addr.tls && ltls_require_server_context() == NULL) {
            fprintf(stderr, "luasock: listen %s: no certificate: set tls = { cert = FILE, key = "
                            "FILE } in %s, or give --tls-cert and --tls-key\n", text, script);
            return -1;
        }
        struct listener *l = listener_open(text, &addr, on_accept, worker_count > 1, err,
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

/* Serves /metrics and /healthz on --metrics, or else on the script's metrics address (settings
 * table on top), if either is given. */
static int open_metrics(const struct serve_options *o)
{
    lua_getfield(L, -1, "metrics");
    const char *text = o->metrics != NULL ? o->metrics : lua_tostring(L, -1);
    int rc = 0;
    if (text != NULL) {
        char name[160], err[600];
        void (*write)(FILE *) = worker_count > 1 ? metrics_workers_write : metrics_core_write;
        metrics_on = true;
        if (metrics_http_open(loop, text, write, name, sizeof name, err, sizeof err) < 0) {
            fprintf(stderr, "luasock: %s\n", err);
            rc = -1;
        } else if (metrics_core_start(loop) < 0 ||
                   (worker_count > 1 && metrics_workers_init(loop, worker_count) < 0)) {
            fprintf(stderr, "luasock: metrics %s: %s\n", text, ERR_NO_MEMORY);
            rc = -1;
        } else {
            fprintf(announcements, "luasock: metrics on %s (GET /metrics, /healthz)\n", name);
        }
    }
    lua_pop(L, 1);
    return rc;
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
    guard_watch_shutdown_signals();
}

/* Reloads the script; in the --workers parent, then every worker. The parent reloads first: a
 * worker it forks later must start with the last code that loaded. The workers reload only if
 * that succeeded (they would fail the same way). */
static void reload(const char *why)
{
    int rc = script_reload(why);
    if (rc == 0)
        metrics_core.reloads_ok++;
    else
        metrics_core.reloads_failed++;
    if (rc == 0 && supervising) {
        luasock_log(LUASOCK_LOG_INFO, "reloading %d workers", worker_count);
        workers_signal(SIGHUP);
    }
}

static void on_files_changed(const char *changed)
{
    char why[2100];
    snprintf(why, sizeof why, "changed: %s", changed);
    reload(why);
}

/* logrotate renamed the log file: every process opens the new one. */
static void on_reopen(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    log_reopen();
    if (supervising)
        workers_signal(SIGUSR1);
}

static void on_hangup(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
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

/* In JSON, they are log lines like the others: every line of the log parses. */
static void print_announcements(void)
{
    fflush(announcements);
    if (log_is_json())
        for (char *line = strtok(announcements_text, "\n"); line; line = strtok(NULL, "\n"))
            luasock_log(LUASOCK_LOG_INFO, "%s", line);
    else
        fputs(announcements_text, stderr);
    discard_announcements();
}

/* Each worker draws its own random numbers: forked copies of one generator would draw the same.
 * Runs protected (task_protected). */
static int reseed_random(lua_State *state)
{
    lua_Integer seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed[0] = (lua_Integer)time(NULL);
        seed[1] = (lua_Integer)getpid();
    }
    lua_getglobal(state, "math");
    lua_getfield(state, -1, "randomseed");
    lua_pushinteger(state, seed[0]);
    lua_pushinteger(state, seed[1]);
    lua_call(state, 2, 0);
    return 0;
}

/* Runs in each worker right after its fork: takes over the listeners, and drops what is the
 * parent's alone (its file watch, its pid file, its resolver channel). */
static void become_worker(int id)
{
    ev_loop_fork(loop);
    supervising = false;
    log_set_worker(id);
    if (announcements != NULL)
        discard_announcements();
    pid_file_written = NULL;
    script_unwatch();
    resolver_shutdown();
    if (resolver_init(loop) < 0)
        _exit(1);
    for (struct listener *l = listeners; l != NULL; l = l->next) {
        char err[512];
        if (listener_start_in_worker(l, err, sizeof err) < 0) {
            luasock_log(LUASOCK_LOG_ERROR, "%s", err);
            _exit(1);
        }
    }
    udp_start_listeners_in_worker();
    if (metrics_on) {
        metrics_http_close(); /* the parent's */
        metrics_workers_become(id);
    }
    guard_start();
    guard_watch_stalls();
    task_release_load_tasks();
    lluasock_set_worker(L, id, worker_count);
    task_protected(reseed_random, NULL, "reseeding math.random");
}

static int start(const struct serve_options *o)
{
    script_path = o->script;
    grace_seconds = o->grace;
    watchdog_seconds = o->watchdog;
    worker_count = o->workers > 1 ? o->workers : 1;
    if (o->log_file != NULL && log_open_file(o->log_file) < 0) {
        fprintf(stderr, "luasock: --log-file %s: %s\n", o->log_file, errors_string(errno));
        return -1;
    }
    log_set_script(o->script);
    conn_access_log_always = o->access_log;
    announcements = open_memstream(&announcements_text, &announcements_size);
    if (announcements == NULL || open_runtime() < 0)
        return -1;
    conn_on_secured = secured;
    lluasock_route_print(L);
    lluasock_set_worker(L, worker_count > 1 ? 0 : 1, worker_count);
    if (o->pubsub != NULL)
        lluasock_set_pubsub_url(L, o->pubsub);
    script_init(L, o->script);
    if (o->tls_cert != NULL)
        ltls_set_command_line(o->tls_cert, o->tls_key);
    if (script_start() < 0)
        return -1;
    max_connections = o->max_connections;
    max_per_ip = o->max_per_ip;
    ipv6_prefix = o->ipv6_prefix;
    peers_set_ipv6_prefix(ipv6_prefix);
    raise_fd_limit();
    guard_start();
    /* Before the "listening on" line: a SIGTERM sent right after it must stop us cleanly. */
    start_signals();
    if (o->pid_file != NULL && write_pid_file(o->pid_file) < 0)
        return -1;
    if (open_listeners(o) < 0 || open_metrics(o) < 0)
        return -1;
    ev_signal_init(&on_sighup, on_hangup, SIGHUP);
    ev_signal_start(loop, &on_sighup);
    ev_signal_init(&on_sigusr1, on_reopen, SIGUSR1);
    ev_signal_start(loop, &on_sigusr1);
    if (o->watch)
        script_watch(loop, on_files_changed);
    lua_settop(L, 0);
    return 0;
}

/* With workers: forks them, and returns in each worker as in the parent. */
static int start_workers(void)
{
    if (worker_count == 1) {
        guard_watch_stalls();
        print_announcements();
        return 0;
    }
    supervising = true;
    /* Workers get the grace period, then some time to close what remains. */
    if (workers_start(loop, worker_count, grace_seconds + 5, watchdog_seconds, become_worker) < 0)
        return -1;
    if (supervising) {
        task_hold_load_tasks();
        print_announcements();
    }
    return 0;
}

int server_serve(const struct serve_options *o)
{
    int status = 1;
    if (start(o) == 0 && start_workers() == 0) {
        ev_run(loop, 0);
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
    lstdio_enable();
    if (open_runtime() == 0) {
        script_init(L, script);
        for (int i = 0; i < argc; i++)
            lua_pushstring(L, argv[i]);
        if (script_load_program(argc) == 0) {
            start_signals();
            raise_fd_limit();
            struct task *t = task_new(L, argc, 0, NULL);
            task_set_main(t);
            task_start(t);
            ev_run(loop, 0);
            status = task_main_status();
            lstdio_flush();
            conn_finish_closing();
            lstdio_join();
        }
    }
    close_runtime();
    return status;
}
