/* resolver.c -- c-ares on the libev loop; see resolver.h. */
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "luasock.h"
#include "metrics_core.h"
#include "resolver.h"

#define MAX_SOCKETS 16
#define QUERY_TIMEOUT_MS 2000
#define QUERY_TRIES 2
/* The answers to a burst of lookups arrive together: the kernel's default buffer (about 200 KiB)
 * dropped some of a thousand, which then waited for a retry or timed out. */
#define RECEIVE_BUFFER_BYTES (4 * 1024 * 1024)

struct watched {
    ev_io io;
    bool used;
};

struct lookup {
    resolver_cb cb;
    void *ud;
};

static struct ev_loop *loop;
static ares_channel channel;
static bool channel_ready;
static struct watched sockets[MAX_SOCKETS];
static ev_timer timeouts;

static void arm_timeouts(void)
{
    struct timeval tv;
    ev_timer_stop(loop, &timeouts);
    if (ares_timeout(channel, NULL, &tv) != NULL) {
        ev_timer_set(&timeouts, (double)tv.tv_sec + tv.tv_usec / 1e6, 0);
        ev_timer_start(loop, &timeouts);
    }
}

static void on_socket(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    ares_process_fd(channel, revents & EV_READ ? w->fd : ARES_SOCKET_BAD,
                    revents & EV_WRITE ? w->fd : ARES_SOCKET_BAD);
    arm_timeouts();
}

static void on_timeouts(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timeouts();
}

/* c-ares opens and closes its UDP/TCP sockets itself, and tells us what to watch here. */
static void on_socket_state(void *data, ares_socket_t fd, int readable, int writable)
{
    (void)data;
    struct watched *slot = NULL;
    for (int i = 0; i < MAX_SOCKETS && slot == NULL; i++)
        if (sockets[i].used && sockets[i].io.fd == fd)
            slot = &sockets[i];
    if (slot != NULL) {
        ev_io_stop(loop, &slot->io);
        slot->used = false;
    }
    if (!readable && !writable)
        return;
    for (int i = 0; i < MAX_SOCKETS && (slot == NULL || slot->used); i++)
        slot = &sockets[i];
    if (slot == NULL || slot->used) {
        luasock_log(LUASOCK_LOG_WARN, "resolver: more than %d sockets at once", MAX_SOCKETS);
        return;
    }
    slot->used = true;
    ev_io_init(&slot->io, on_socket, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(loop, &slot->io);
}

int resolver_init(struct ev_loop *l)
{
    loop = l;
    ev_init(&timeouts, on_timeouts);
    struct ares_options options = {
        .sock_state_cb = on_socket_state,
        .timeout = QUERY_TIMEOUT_MS,
        .tries = QUERY_TRIES,
        .socket_receive_buffer_size = RECEIVE_BUFFER_BYTES,
    };
    int status = ares_library_init(ARES_LIB_INIT_ALL);
    if (status == ARES_SUCCESS)
        status = ares_init_options(&channel, &options,
                                   ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                                       ARES_OPT_SOCK_RCVBUF);
    if (status != ARES_SUCCESS) {
        luasock_log(LUASOCK_LOG_ERROR, "resolver: %s", ares_strerror(status));
        return -1;
    }
    channel_ready = true;
    return 0;
}

void resolver_shutdown(void)
{
    if (!channel_ready)
        return;
    ares_destroy(channel);
    channel_ready = false;
    ev_timer_stop(loop, &timeouts);
    for (int i = 0; i < MAX_SOCKETS; i++)
        if (sockets[i].used)
            ev_io_stop(loop, &sockets[i].io);
    ares_library_cleanup();
}

int resolver_set_servers(const char *csv)
{
    return ares_set_servers_ports_csv(channel, csv);
}

static void on_result(void *arg, int status, int timeouts_seen, struct ares_addrinfo *result)
{
    (void)timeouts_seen;
    struct lookup *lookup = arg;
    metrics_core.dns[status == ARES_SUCCESS                               ? MD_OK
                     : status == ARES_ENOTFOUND || status == ARES_ENODATA ? MD_NOT_FOUND
                     : status == ARES_ETIMEOUT                            ? MD_TIMEOUT
                                                                          : MD_ERROR]++;
    lookup->cb(lookup->ud, status, status == ARES_SUCCESS ? result : NULL);
    if (result != NULL)
        ares_freeaddrinfo(result);
    free(lookup);
}

void resolver_lookup(const char *host, int family, resolver_cb cb, void *ud)
{
    struct lookup *lookup = malloc(sizeof *lookup);
    if (lookup == NULL) {
        metrics_core.dns[MD_ERROR]++;
        cb(ud, ARES_ENOMEM, NULL);
        return;
    }
    *lookup = (struct lookup){.cb = cb, .ud = ud};
    struct ares_addrinfo_hints hints = {.ai_family = family, .ai_socktype = SOCK_STREAM};
    ares_getaddrinfo(channel, host, NULL, &hints, on_result, lookup);
    /* ares_timeout looks at every pending query: once per burst is enough, since a timer that
     * fires before this query's first timeout re-arms for it. */
    if (!ev_is_active(&timeouts) || ev_timer_remaining(loop, &timeouts) > QUERY_TIMEOUT_MS / 1e3)
        arm_timeouts();
}
