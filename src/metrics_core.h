/* metrics_core.h -- the server's own figures: luasock_* and process_*.
 *
 * The event counters are plain integers that the code counting them increments where the event
 * already happens (an accept, a close, a reload): counting costs an addition and is always on.
 * Figures that exist anyway (open connections, tasks, Lua memory, /proc/self) are read when the
 * metrics are written. */
#ifndef METRICS_CORE_H
#define METRICS_CORE_H

#include <ev.h>
#include <stdint.h>
#include <stdio.h>

enum metrics_close { /* luasock_connections_closed_total's reasons */
    MC_CLOSED, MC_TIMEOUT, MC_RESET, MC_OVERFLOW, MC_TOO_LARGE, MC_NO_MEMORY, MC_SHUTDOWN,
    MC_ERROR, MC_CLOSE_COUNT
};
enum metrics_refusal { MR_MAX_CONNECTIONS, MR_PER_IP, MR_EMFILE, MR_COUNT };
enum metrics_dns { MD_OK, MD_NOT_FOUND, MD_TIMEOUT, MD_ERROR, MD_COUNT };

struct metrics_core {
    uint64_t closed[MC_CLOSE_COUNT];
    uint64_t refused[MR_COUNT];
    uint64_t bytes_in, bytes_out; /* of closed connections; open ones are added when written */
    uint64_t handler_errors;
    uint64_t reloads_ok, reloads_failed;
    uint64_t udp_in, udp_out;
    uint64_t dns[MD_COUNT];
};

extern struct metrics_core metrics_core;

/* Accepted and open connections of one listener; kept until exit, since connections outlive
 * their listener at shutdown. */
struct metrics_listener {
    struct metrics_listener *next;
    uint64_t accepted, open;
    char name[160];
};

/* Returns the figures of the listener called name, made if new, or NULL when out of memory. */
struct metrics_listener *metrics_listener(const char *name);

/* The label for a connection's close reason (conn.h's close_reason). */
enum metrics_close metrics_close_reason(const char *reason);

/* Starts measuring how late the loop runs its timers (luasock_loop_lag_seconds). */
int metrics_core_start(struct ev_loop *loop);

/* Writes the figures of the process itself alone: luasock_reloads_total and process_*. */
void metrics_core_write_process(FILE *out);

/* Sets every counter, gauge and histogram to zero (in a worker just forked: the parent's
 * figures are not its own). */
void metrics_core_reset(void);

/* Writes the core's figures and then the registry's (metrics.h). */
void metrics_core_write(FILE *out);

#endif
