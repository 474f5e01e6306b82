/* lua_floor.c -- the benchmark's Lua floor: what luasock's handler loop costs before luasock adds
 * anything. One libev loop, one coroutine per connection running the very handler luasock runs
 * (examples/echo.lua or bench/line.lua, by its handle function), and a connection userdata whose
 * methods do the least they can: receiveany(max) and receive("*l") read into a buffer that exists
 * only while it holds bytes, and yield until the socket is readable (its watcher stays on);
 * send(...) writes at once
 * and keeps only what the socket did not take. No timeouts, limits, error messages, logging or
 * protection: the figures luasock adds to these are what its features cost.
 *
 * The Lua state uses luasock's own allocator (src/blocks.c, compiled in), so that both count
 * the same allocation costs. Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
 *
 * Usage: lua_floor [--listen HOST:PORT] SCRIPT   (default 127.0.0.1:0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blocks.h"
#include "peer.h"

#define CONN_MT "lua_floor.conn"

struct conn {
    ev_io reader, writer;
    lua_State *co;
    int ref;         /* keeps the userdata (and through it the thread) while the handler runs */
    bool readable;   /* the last read filled what it asked for: read again before waiting */
    char *in;        /* in[start, end): received and not yet taken; NULL when empty */
    size_t start, end, cap;
    char *out;       /* out[0, out_len): what the socket did not take */
    size_t out_len;
};

static struct ev_loop *loop;
static lua_State *L;
static char room[65536]; /* receiveany reads here when nothing is kept */
static char *spare;      /* an input buffer that was let go, for the next one */

static void *allocate(void *ud, void *ptr, size_t old, size_t size)
{
    (void)ud;
    if (size == 0) {
        blocks_free(ptr, ptr != NULL ? old : 0);
        return NULL;
    }
    return blocks_realloc(ptr, ptr != NULL ? old : 0, size);
}

static void drop_input(struct conn *c)
{
    if (spare == NULL && c->cap == sizeof room)
        spare = c->in;
    else
        free(c->in);
    c->in = NULL;
    c->start = c->end = c->cap = 0;
}

/* Reads what the socket has, after the bytes kept. Returns 1 with bytes read, 0 when the socket
 * has none now, -1 at the end of the stream or on an error. */
static int fill(struct conn *c)
{
    if (c->in == NULL && spare != NULL) {
        c->in = spare;
        spare = NULL;
        c->cap = sizeof room;
    } else if (c->cap - c->end < sizeof room / 2) {
        size_t kept = c->end - c->start;
        char *grown = malloc(kept + sizeof room);
        if (grown == NULL)
            return -1;
        if (kept > 0)
            memcpy(grown, c->in + c->start, kept);
        free(c->in);
        c->in = grown;
        c->start = 0;
        c->end = kept;
        c->cap = kept + sizeof room;
    }
    ssize_t n = recv(c->reader.fd, c->in + c->end, c->cap - c->end, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        c->readable = false;
        return 0;
    }
    if (n <= 0)
        return -1;
    c->readable = (size_t)n == c->cap - c->end;
    c->end += (size_t)n;
    return 1;
}

static void take(lua_State *co, struct conn *c, size_t len, size_t skip)
{
    lua_pushlstring(co, c->in + c->start, len);
    c->start += len + skip;
    if (c->start == c->end)
        drop_input(c);
}

/* The reader watcher stays on from the accept: the coroutine waits in a read whenever the loop
 * runs (send never waits), so every readable event is for it. */
static int wait_readable(lua_State *co, struct conn *c, lua_KFunction again)
{
    return lua_yieldk(co, 0, (lua_KContext)c, again);
}

static int receive_line(lua_State *co, int status, lua_KContext ctx)
{
    (void)status;
    struct conn *c = (struct conn *)ctx;
    for (;;) {
        if (c->in != NULL) {
            const char *nl = memchr(c->in + c->start, '\n', c->end - c->start);
            if (nl != NULL) {
                take(co, c, (size_t)(nl - (c->in + c->start)), 1);
                return 1;
            }
        }
        int got = c->readable ? fill(c) : 0;
        if (got == 0)
            return wait_readable(co, c, receive_line);
        if (got < 0) {
            lua_pushnil(co);
            lua_pushliteral(co, "closed");
            return 2;
        }
    }
}

static int receive_any(lua_State *co, int status, lua_KContext ctx)
{
    (void)status;
    struct conn *c = (struct conn *)ctx;
    size_t max = (size_t)lua_tointeger(co, 2);
    if (c->in != NULL) {
        size_t len = c->end - c->start;
        take(co, c, len < max ? len : max, 0);
        return 1;
    }
    if (!c->readable)
        return wait_readable(co, c, receive_any);
    size_t want = max < sizeof room ? max : sizeof room;
    ssize_t n = recv(c->reader.fd, room, want, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        c->readable = false;
        return wait_readable(co, c, receive_any);
    }
    if (n <= 0) {
        lua_pushnil(co);
        lua_pushliteral(co, "closed");
        return 2;
    }
    c->readable = (size_t)n == want;
    lua_pushlstring(co, room, (size_t)n);
    return 1;
}

static int conn_receive(lua_State *co)
{
    struct conn *c = lua_touserdata(co, 1);
    return receive_line(co, LUA_OK, (lua_KContext)c);
}

static int conn_receiveany(lua_State *co)
{
    struct conn *c = lua_touserdata(co, 1);
    return receive_any(co, LUA_OK, (lua_KContext)c);
}

static void keep_output(struct conn *c, const char *data, size_t len)
{
    char *grown = realloc(c->out, c->out_len + len);
    if (grown == NULL)
        return;
    memcpy(grown + c->out_len, data, len);
    c->out = grown;
    c->out_len += len;
    ev_io_start(loop, &c->writer);
}

static int conn_send(lua_State *co)
{
    struct conn *c = lua_touserdata(co, 1);
    int n = lua_gettop(co);
    size_t total = 0;
    for (int i = 2; i <= n; i++) {
        size_t len;
        const char *data = lua_tolstring(co, i, &len);
        total += len;
        if (c->out_len > 0) {
            keep_output(c, data, len);
            continue;
        }
        ssize_t sent = send(c->reader.fd, data, len, MSG_NOSIGNAL);
        if (sent < 0)
            sent = 0;
        if ((size_t)sent < len)
            keep_output(c, data + sent, len - (size_t)sent);
    }
    lua_pushinteger(co, (lua_Integer)total);
    return 1;
}

static void finish(struct conn *c)
{
    ev_io_stop(loop, &c->reader);
    ev_io_stop(loop, &c->writer);
    close(c->reader.fd);
    drop_input(c);
    free(c->out);
    c->out = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
}

static void resume(struct conn *c, int nargs)
{
    int nresults;
    int status = lua_resume(c->co, L, nargs, &nresults);
    if (status == LUA_YIELD)
        return;
    if (status != LUA_OK)
        fprintf(stderr, "lua_floor: handler error: %s\n", lua_tostring(c->co, -1));
    finish(c);
}

static void on_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    (void)l;
    struct conn *c = (struct conn *)w;
    c->readable = true;
    resume(c, 0);
}

static void on_writable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, writer));
    ssize_t sent = send(w->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (sent <= 0)
        return;
    memmove(c->out, c->out + sent, c->out_len - (size_t)sent);
    c->out_len -= (size_t)sent;
    if (c->out_len == 0)
        ev_io_stop(l, w);
}

static void start_handler(int fd)
{
    lua_State *co = lua_newthread(L);
    struct conn *c = lua_newuserdatauv(L, sizeof *c, 1);
    *c = (struct conn){.co = co};
    luaL_setmetatable(L, CONN_MT);
    lua_rotate(L, -2, 1);
    lua_setiuservalue(L, -2, 1);
    ev_io_init(&c->reader, on_readable, fd, EV_READ);
    ev_io_init(&c->writer, on_writable, fd, EV_WRITE);
    ev_io_start(loop, &c->reader);
    lua_pushvalue(L, -1);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, LUA_REGISTRYINDEX, "lua_floor.handle");
    lua_xmove(L, co, 1);
    lua_xmove(L, co, 1);
    resume(c, 1);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    int fd;
    while ((fd = peer_accept(w->fd)) >= 0)
        start_handler(fd);
}

/* Loads SCRIPT and keeps its handle function in the registry. */
static int load_handler(const char *script)
{
    static const luaL_Reg methods[] = {{"receive", conn_receive},
                                       {"receiveany", conn_receiveany},
                                       {"send", conn_send},
                                       {NULL, NULL}};
    L = lua_newstate(allocate, NULL);
    if (L == NULL)
        return -1;
    luaL_openlibs(L);
    luaL_newmetatable(L, CONN_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    if (luaL_dofile(L, script) != LUA_OK || !lua_istable(L, -1) ||
        lua_getfield(L, -1, "handle") != LUA_TFUNCTION) {
        fprintf(stderr, "lua_floor: %s: %s\n", script,
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "no handle function");
        return -1;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "lua_floor.handle");
    lua_pop(L, 1);
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec = "127.0.0.1:0";
    int arg = 1;
    if (argc == 4 && strcmp(argv[1], "--listen") == 0) {
        spec = argv[2];
        arg = 3;
    }
    if (arg != argc - 1) {
        fprintf(stderr, "usage: lua_floor [--listen HOST:PORT] SCRIPT\n");
        return 2;
    }
    int fd;
    if (load_handler(argv[arg]) < 0 || (fd = peer_listen("lua_floor", spec)) < 0)
        return 1;
    loop = EV_DEFAULT;
    peer_run(fd, on_accept);
    lua_close(L);
    blocks_release();
    free(spare);
    return 0;
}
