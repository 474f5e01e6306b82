/* lstdio.c -- luasock.stdin, luasock.stdout and luasock.stderr, for `luasock run` scripts.
 *
 * Each is a connection (conn.c) over one end of a socketpair, with a thread at the other end
 * that does the blocking I/O on descriptor 0, 1 or 2. So reads and sends never block the loop,
 * whatever the descriptor is: a terminal, a pipe, or a regular file (which epoll refuses). The
 * whole read and send API comes with the connection, and the process's own descriptors are left
 * as they are: a terminal shared with the shell is never made non-blocking, and none is closed.
 * The threads touch no Lua and nothing of the loop; they run with every signal blocked, so the
 * loop's handlers run on the main thread and a write to a closed pipe fails with EPIPE. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "errors.h"
#include "lresult.h"
#include "lstdio.h"

#define CHUNK 16384

struct pump {
    const char *name;
    int fd;            /* 0, 1 or 2 */
    int end;           /* the thread's end of the socketpair */
    int ref;           /* the connection's userdata, kept for the life of the state */
    struct conn *conn; /* NULL until first used */
    pthread_t thread;
    void *(*run)(void *);
};

static void *pump_in(void *arg);
static void *pump_out(void *arg);

static struct pump pumps[] = {
    {"stdin", 0, -1, LUA_NOREF, NULL, 0, pump_in},
    {"stdout", 1, -1, LUA_NOREF, NULL, 0, pump_out},
    {"stderr", 2, -1, LUA_NOREF, NULL, 0, pump_out},
};

static bool enabled;

/* Writes all of data to fd: with send(MSG_NOSIGNAL) to our end of the socketpair, so that a
 * closed connection is an error and not SIGPIPE, and with write to standard output or error. */
static int write_all(int fd, const char *data, size_t len, bool to_socket)
{
    while (len > 0) {
        ssize_t n = to_socket ? send(fd, data, len, MSG_NOSIGNAL) : write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Standard input into the socketpair, until its end or until the connection closes: it is
 * watched too, so that a script that closes luasock.stdin does not wait for a line from the
 * keyboard. Bytes sent to luasock.stdin are dropped. */
static void *pump_in(void *arg)
{
    struct pump *p = arg;
    char chunk[CHUNK];
    struct pollfd fds[2] = {{.fd = p->fd, .events = POLLIN}, {.fd = p->end, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents != 0) {
            ssize_t n = recv(p->end, chunk, sizeof chunk, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
        if (fds[0].revents == 0)
            continue;
        ssize_t n = read(p->fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(p->end, chunk, (size_t)n, true) < 0)
            break;
    }
    close(p->end);
    return NULL;
}

/* The socketpair into standard output or error, until the connection closes. A failed write (a
 * closed pipe) closes this end, and so makes the script's next send fail. */
static void *pump_out(void *arg)
{
    struct pump *p = arg;
    char chunk[CHUNK];
    for (;;) {
        ssize_t n = recv(p->end, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(p->fd, chunk, (size_t)n, false) < 0)
            break;
    }
    close(p->end);
    return NULL;
}

/* Starts p's thread with every signal blocked. Returns 0, or an errno value. */
static int start_thread(struct pump *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&p->thread, NULL, p->run, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

/* Pushes p's new connection, or nil and the error. The userdata and its reference come first,
 * so that nothing acquired afterwards is left behind by a raise. */
static int open_pump(lua_State *L, struct pump *p)
{
    struct conn *c = conn_new(L);
    struct conn_settings *set = conn_own_settings(c, L);
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int pair[2] = {-1, -1};
    int err;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0
        || fcntl(pair[0], F_SETFL, O_NONBLOCK) < 0) {
        err = errno;
    } else {
        p->end = pair[1];
        err = start_thread(p);
    }
    if (err != 0) {
        if (pair[0] >= 0) {
            close(pair[0]);
            close(pair[1]);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        conn_discard(c);
        return push_error(L, lua_pushfstring(L, "luasock.%s: %s", p->name, errors_string(err)));
    }
    struct sockaddr_un peer = {.sun_family = AF_UNIX};
    conn_attach(c, pair[0], (struct sockaddr *)&peer, sizeof peer);
    c->heard_from = true; /* no first-byte timeout */
    set->read_timeout = -1; /* a user may think for as long as they like */
    p->conn = c;
    p->ref = ref;
    return 1;
}

/* luasock.core.stdio(name) -> conn | nil, err: the connection for "stdin", "stdout" or
 * "stderr", made on first use (a script that never reads standard input leaves it alone). */
static int luasock_stdio(lua_State *L)
{
    static const char *const names[] = {"stdin", "stdout", "stderr", NULL};
    struct pump *p = &pumps[luaL_checkoption(L, 1, NULL, names)];
    if (!enabled)
        return push_error(L, lua_pushfstring(L, "luasock.%s is only available in `luasock run` "
                                                "scripts (a server's standard streams are not its "
                                                "handlers')", p->name));
    if (p->ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref);
        return 1;
    }
    return open_pump(L, p);
}

void lstdio_enable(void)
{
    /* A descriptor the process started without would go to the next file opened (the loop's
     * epoll): /dev/null stands in for it, so that a closed stdin reads as empty. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
            break;
    enabled = true;
}

void lstdio_flush(void)
{
    for (int i = 1; i < 3; i++)
        if (pumps[i].conn != NULL)
            conn_close(pumps[i].conn);
}

void lstdio_join(void)
{
    for (int i = 1; i < 3; i++)
        if (pumps[i].conn != NULL) {
            pthread_join(pumps[i].thread, NULL);
            pumps[i].conn = NULL;
        }
    if (pumps[0].conn != NULL)
        pthread_detach(pumps[0].thread);
}

void lstdio_open(lua_State *L)
{
    lua_pushcfunction(L, luasock_stdio);
    lua_setfield(L, -2, "stdio");
}
