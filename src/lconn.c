/* lconn.c -- the Lua methods of a connection: conn:receive, conn:send, ...
 *
 * Each method checks its arguments (misuse raises), asks conn.c to do the work, and either
 * returns the results or suspends the calling coroutine until conn.c resumes it with them. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"
#include "errors.h"
#include "lresult.h"
#include "lconn.h"
#include "ltls.h"
#include "net.h"
#include "task.h"

#define DEFAULT_RECEIVEANY_MAX 65536

/* For the few functions that every send or receive runs (each says what inlining it saved). */
#define IN_LINE inline __attribute__((always_inline))

/* A connection is recognised by its userdata's size and a mark that only conn_new writes: two
 * cheap reads on every receive and send, where luaL_checkudata would look the metatable up by
 * name and compare it (three API calls more). Lua code cannot forge the bytes of a full
 * userdata, and no other userdata in the state has both this size and this mark. Inlined into
 * each method, its error out of line: 35 fewer instructions per 64-byte echo, 25 per pipelined
 * line (cachegrind). */
static __attribute__((noinline)) void not_a_conn(lua_State *L)
{
    luaL_typeerror(L, 1, CONN_MT);
}

static IN_LINE struct conn *toconn(lua_State *L)
{
    struct conn *c = lua_touserdata(L, 1);
    if (c == NULL || lua_rawlen(L, 1) != sizeof *c || c->mark != CONN_MARK)
        not_a_conn(L);
    return c;
}

struct conn *lconn_check(lua_State *L)
{
    return toconn(L);
}

/* A second coroutine reading the same connection is a mistake, refused before anything of the
 * first reader's changes. */
static int start_read(lua_State *L, struct conn *c, struct read_req *req, const char *prefix,
                      size_t prefix_len, const char *what)
{
    if (c->reading)
        return luaL_error(L, "conn %I is already being read by another coroutine",
                          (lua_Integer)c->id);
    req->limit = req->kind == READ_ALL ? c->set->max_all : c->set->max_line;
    c->req = *req;
    c->prefix = prefix;
    c->prefix_len = prefix_len;
    return conn_read(c, L, what);
}

/* The pattern's type is asked once, and an absent prefix not at all: 60 fewer instructions per
 * pipelined receive("*l") than with lua_isnoneornil and luaL_optlstring (cachegrind). */
static int conn_receive(lua_State *L)
{
    struct conn *c = toconn(L);
    struct read_req req = {.kind = READ_LINE, .delim = "\n", .delim_len = 1};
    int type = lua_type(L, 2);
    if (type == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 0, 2, "byte count must not be negative");
        req.kind = READ_COUNT;
        req.count = (size_t)n;
    } else if (type > LUA_TNIL) {
        const char *pattern = luaL_checkstring(L, 2);
        if (read_parse_pattern(pattern, &req) < 0)
            return luaL_argerror(L, 2, lua_pushfstring(L, "invalid pattern '%s'", pattern));
    }
    size_t prefix_len = 0;
    const char *prefix = lua_gettop(L) >= 3 ? luaL_optlstring(L, 3, NULL, &prefix_len) : NULL;
    return start_read(L, c, &req, prefix, prefix_len, "conn:receive");
}

/* luaL_optinteger, with a given integer taken in one API call instead of three (lua_type, then
 * luaL_checkinteger's lua_tointegerx): anything else goes the long way, to the same default or
 * error. 50 fewer instructions per receiveany(65536) (cachegrind, 64-byte echo). */
static lua_Integer opt_integer(lua_State *L, int idx, lua_Integer dflt)
{
    int isnum;
    lua_Integer n = lua_tointegerx(L, idx, &isnum);
    return isnum ? n : luaL_optinteger(L, idx, dflt);
}

static int conn_receiveany(lua_State *L)
{
    struct conn *c = toconn(L);
    lua_Integer max = opt_integer(L, 2, DEFAULT_RECEIVEANY_MAX);
    luaL_argcheck(L, max >= 1, 2, "must be at least 1");
    struct read_req req = {.kind = READ_ANY, .count = (size_t)max};
    return start_read(L, c, &req, NULL, 0, "conn:receiveany");
}

/* Returns the value, or nil, err (a nil value comes back as nil with no error). */
static int conn_receive_object(lua_State *L)
{
    struct conn *c = toconn(L);
    struct read_req req = {.kind = READ_OBJECT};
    return start_read(L, c, &req, NULL, 0, "conn:receive_object");
}

static int conn_receiveuntil(lua_State *L)
{
    struct conn *c = toconn(L);
    struct read_req req = {.kind = READ_UNTIL};
    req.delim = luaL_checklstring(L, 2, &req.delim_len);
    luaL_argcheck(L, req.delim_len > 0, 2, "delimiter must not be empty");
    return start_read(L, c, &req, NULL, 0, "conn:receiveuntil");
}

/* A number as Lua's tostring writes it, but formatted in C: send allocates nothing in Lua once
 * it has queued bytes, so a memory error cannot leave half a message queued. */
static size_t number_text(lua_State *L, int idx, char *out, size_t size)
{
    if (lua_isinteger(L, idx))
        return (size_t)snprintf(out, size, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    size_t len = (size_t)snprintf(out, size, LUA_NUMBER_FMT,
                                  (LUAI_UACNUMBER)lua_tonumber(L, idx));
    if (out[strspn(out, "-0123456789")] == '\0' && len + 2 < size) {
        out[len++] = '.'; /* a float that looks like an integer: 1e15 is "1e+15", 2.0 is "2.0" */
        out[len++] = '0';
        out[len] = '\0';
    }
    return len;
}

/* Appends the string or number at idx, of type type, to the output. Returns 0, -1 when out of
 * memory, or 1 when the value is neither (nothing appended). The caller passes the type it
 * already has, and has the bytes flushed once for all arguments (conn_queued): 25 fewer
 * instructions per echoed message, 55 per pipelined send(line, "\n") (cachegrind). This and
 * queue_args are inlined into send and post: 30 fewer per echo, 70 per pipelined line. */
static IN_LINE int queue_value(lua_State *L, struct conn *c, int idx, int type)
{
    char number[64];
    size_t len;
    const char *data;
    switch (type) {
    case LUA_TSTRING:
        data = lua_tolstring(L, idx, &len);
        break;
    case LUA_TNUMBER:
        len = number_text(L, idx, number, sizeof number);
        data = number;
        break;
    default:
        return 1;
    }
    return buf_append(&c->out, data, len);
}

/* Queues send's or post's data arguments (strings, numbers, arrays of those) in one pass. Arrays
 * are read raw: no metamethod runs in the middle of queueing, where it could close the
 * connection under us. Returns 0, or pushes nil, err and returns -1. Misuse raises with nothing
 * queued: the queue is put back to before bytes. */
static IN_LINE int queue_args(lua_State *L, struct conn *c, size_t before)
{
    int top = lua_gettop(L);
    luaL_argcheck(L, top >= 2, 2, "string expected, got no value");
    if (c->state != CONN_OPEN || c->shut_wr) {
        push_error(L, ERR_CLOSED);
        return -1;
    }
    int rc = 0;
    for (int arg = 2; arg <= top && rc == 0; arg++) {
        int type = lua_type(L, arg);
        if (type != LUA_TTABLE) {
            if ((rc = queue_value(L, c, arg, type)) > 0) {
                buf_truncate(&c->out, before);
                return luaL_typeerror(L, arg, "string or array of strings");
            }
            continue;
        }
        lua_Integer n = (lua_Integer)lua_rawlen(L, arg);
        for (lua_Integer i = 1; i <= n && rc == 0; i++) {
            if ((rc = queue_value(L, c, -1, lua_rawgeti(L, arg, i))) > 0) {
                buf_truncate(&c->out, before);
                return luaL_error(L, "bad argument #%d to 'send' (item %d is a %s, not a string)",
                                  arg - 1, (int)i, luaL_typename(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    if (rc < 0) {
        const char *err = errno == ENOBUFS ? ERR_NO_BUFFERS : ERR_NO_MEMORY;
        buf_truncate(&c->out, before);
        push_error(L, err);
        return -1;
    }
    conn_queued(c);
    return 0;
}

static int conn_send(lua_State *L)
{
    struct conn *c = toconn(L);
    size_t before = buf_len(&c->out);
    if (queue_args(L, c, before) < 0)
        return 2;
    return conn_after_send(c, L, before, "conn:send");
}

static int conn_send_object(lua_State *L)
{
    struct conn *c = toconn(L);
    luaL_checkany(L, 2);
    if (c->state != CONN_OPEN || c->shut_wr)
        return push_error(L, ERR_CLOSED);
    size_t before = buf_len(&c->out);
    const char *err;
    if (conn_queue_object(c, L, 2, &err) < 0)
        return push_error(L, err);
    return conn_after_send(c, L, before, "conn:send_object");
}

/* Like send, but never suspends: for broadcasting to connections other than one's own. Returns
 * the bytes it queued and the bytes now queued in all, so that a broadcaster sees who is behind. */
static int conn_post(lua_State *L)
{
    struct conn *c = toconn(L);
    size_t before = buf_len(&c->out);
    if (queue_args(L, c, before) < 0)
        return 2;
    size_t queued = buf_len(&c->out) - before;
    if (conn_check_queue(c) < 0)
        return push_error(L, ERR_OVERFLOW);
    lua_pushinteger(L, (lua_Integer)queued);
    lua_pushinteger(L, (lua_Integer)buf_len(&c->out));
    return 2;
}

/* conn:drain's stack, from the first call on: 1 the connection, 2 the mark, 3 the deadline (below
 * 0: none), so that a drainer woken for a lower mark than its own can wait again for what is left
 * of its time. */
static int drain_resumed(lua_State *L, int status, lua_KContext ctx);

static int drain_check(lua_State *L, struct conn *c)
{
    if (c->state != CONN_OPEN)
        return push_error(L, ERR_CLOSED);
    size_t mark = (size_t)lua_tointeger(L, 2);
    size_t queued = buf_len(&c->out);
    if (queued <= mark) {
        lua_pushinteger(L, (lua_Integer)queued);
        return 1;
    }
    double deadline = lua_tonumber(L, 3);
    double left = deadline < 0 ? -1 : deadline - task_now();
    if (deadline >= 0 && left <= 0)
        return push_error(L, ERR_TIMEOUT);
    return conn_wait_drain(c, L, mark, left, drain_resumed);
}

static int drain_resumed(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    const char *failure = task_failure(L);
    if (failure != NULL)
        return push_error(L, failure);
    return drain_check(L, (struct conn *)ctx);
}

/* conn:drain([mark [, timeout]]): waits until at most mark bytes (default 0) are queued for the
 * peer; returns how many are. Any task may wait on any connection, several at once. */
static int conn_drain(lua_State *L)
{
    struct conn *c = toconn(L);
    lua_Integer mark = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, mark >= 0, 2, "must not be negative");
    double timeout = task_opttimeout(L, 3, "conn:drain");
    lua_settop(L, 1);
    lua_pushinteger(L, mark);
    lua_pushnumber(L, timeout < 0 ? -1 : task_now() + timeout);
    if (c->state == CONN_OPEN && buf_len(&c->out) > (size_t)mark && timeout != 0)
        task_check_wait(L, "conn:drain");
    return drain_check(L, c);
}

static int conn_settimeout(lua_State *L)
{
    struct conn *c = toconn(L);
    double timeout = task_opttimeout(L, 2, "conn:settimeout");
    struct conn_settings *set = conn_own_settings(c, L);
    set->read_timeout = set->send_timeout = timeout;
    lua_pushboolean(L, 1);
    return 1;
}

/* settimeouts(connect, send, read): nil leaves a timeout as it is. The connect timeout is
 * accepted for OpenResty compatibility; accepted connections are connected already. */
static int conn_settimeouts(lua_State *L)
{
    struct conn *c = toconn(L);
    if (!lua_isnoneornil(L, 2))
        task_opttimeout(L, 2, "conn:settimeouts (connect)");
    if (!lua_isnoneornil(L, 3)) {
        double timeout = task_opttimeout(L, 3, "conn:settimeouts (send)");
        conn_own_settings(c, L)->send_timeout = timeout;
    }
    if (!lua_isnoneornil(L, 4)) {
        double timeout = task_opttimeout(L, 4, "conn:settimeouts (read)");
        conn_own_settings(c, L)->read_timeout = timeout;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_close_method(lua_State *L)
{
    conn_close(toconn(L));
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_shutdown_method(lua_State *L)
{
    static const char *const names[] = {"send", "receive", "both", NULL};
    static const int hows[] = {SHUT_WR, SHUT_RD, SHUT_RDWR};
    struct conn *c = toconn(L);
    int how = hows[luaL_checkoption(L, 2, "send", names)];
    if (c->state != CONN_OPEN)
        return push_error(L, ERR_CLOSED);
    conn_shutdown(c, how);
    lua_pushboolean(L, 1);
    return 1;
}

/* The address kept from accept or connect: it is still known once the connection is closed
 * (in on_close, say). */
static int conn_peer(lua_State *L)
{
    struct conn *c = toconn(L);
    return push_host_port(L, &c->peer.sa, c->peer_len);
}

static int conn_local_address(lua_State *L)
{
    struct conn *c = toconn(L);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (c->fd < 0)
        return push_error(L, ERR_CLOSED);
    if (getsockname(c->fd, (struct sockaddr *)&ss, &len) < 0)
        return push_error(L, errors_string(errno));
    return push_host_port(L, (struct sockaddr *)&ss, len);
}

static int conn_id(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)toconn(L)->id);
    return 1;
}

/* The object options: the codec (loading luasock.json for "json": raises if lua-cjson is not
 * installed), exact decoding, and what invalid JSON does. */
static int set_object_option(lua_State *L, struct conn *c, const char *name)
{
    static const char *const json_errors[] = {"close", "return", NULL};
    if (strcmp(name, "exact_objects") == 0) {
        luaL_checktype(L, 3, LUA_TBOOLEAN);
        conn_own_settings(c, L)->exact_objects = lua_toboolean(L, 3);
    } else if (strcmp(name, "json_errors") == 0) {
        bool keep = luaL_checkoption(L, 3, NULL, json_errors) == 1;
        conn_own_settings(c, L)->keep_bad_json = keep;
    } else {
        enum object_codec codec = (enum object_codec)luaL_checkoption(L, 3, NULL,
                                                                      object_codec_names);
        if (codec == OBJECT_JSON) {
            lua_getglobal(L, "require");
            lua_pushliteral(L, "luasock.json");
            lua_call(L, 1, 0);
        }
        conn_set_object_codec(c, L, codec);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_setoption(lua_State *L)
{
    static const char *const names[] = {"max_line", "max_all", "high_water", "max_queue",
                                        "max_object", "max_object_items", "max_receive",
                                        "soft_queue", "object_codec", "exact_objects",
                                        "json_errors", NULL};
    static const lua_Integer least[] = {1, 1, 0, 1, 1, 1, 1, 0};
    struct conn *c = toconn(L);
    int option = luaL_checkoption(L, 2, NULL, names);
    if (option >= (int)(sizeof least / sizeof least[0]))
        return set_object_option(L, c, names[option]);
    lua_Integer value = luaL_checkinteger(L, 3);
    luaL_argcheck(L, value >= least[option], 3, "out of range");
    struct conn_settings *set = conn_own_settings(c, L);
    size_t *fields[] = {&set->max_line, &set->max_all, &set->high_water, &set->max_queue,
                        &set->max_object, &set->max_object_items, &set->max_receive,
                        &set->soft_queue};
    *fields[option] = (size_t)value;
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_tostring(lua_State *L)
{
    lua_pushfstring(L, "conn %I", (lua_Integer)toconn(L)->id);
    return 1;
}

static int conn_gc(lua_State *L)
{
    conn_release(toconn(L));
    return 0;
}

static const luaL_Reg methods[] = {
    {"receive", conn_receive},
    {"receiveany", conn_receiveany},
    {"receiveuntil", conn_receiveuntil},
    {"send", conn_send},
    {"post", conn_post},
    {"drain", conn_drain},
    {"send_object", conn_send_object},
    {"receive_object", conn_receive_object},
    {"settimeout", conn_settimeout},
    {"settimeouts", conn_settimeouts},
    {"close", conn_close_method},
    {"shutdown", conn_shutdown_method},
    {"peer", conn_peer},
    {"local_address", conn_local_address},
    {"id", conn_id},
    {"setoption", conn_setoption},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", NULL}, /* the methods table */
    {"__gc", conn_gc},
    {"__close", conn_close_method},
    {"__tostring", conn_tostring},
    {NULL, NULL},
};

void lconn_open(lua_State *L)
{
    luaL_newmetatable(L, CONN_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    ltls_open(L);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
