/* timeouts.h -- one-shot timeouts on one libev timer: the read, send and linger deadline of
 * every connection and the wait timeout of every task.
 *
 * An ev_timer is 48 bytes, and libev keeps a 16-byte heap entry for each one started. Idle
 * connections each had two (their own and their handler task's), so the timeouts are kept in a
 * heap of their own instead: 24 bytes each and 8 in the heap (measured: 2.08 -> 2.02 KiB RSS per
 * idle echo connection at 10,000), and the one libev timer is set for the earliest. */
#ifndef TIMEOUTS_H
#define TIMEOUTS_H

#include <ev.h>
#include <stdbool.h>

struct timeout {
    ev_tstamp at;   /* when it fires, on ev_now's clock */
    unsigned slot;  /* its place in the heap, from 1; 0: not started */
    void (*fire)(struct timeout *t); /* called once it is due, already stopped */
};

void timeouts_init(struct ev_loop *loop);

/* Embedded in its owner, which must stop it before it goes away. */
static inline void timeout_init(struct timeout *t, void (*fire)(struct timeout *t))
{
    t->slot = 0;
    t->fire = fire;
}

static inline bool timeout_active(const struct timeout *t)
{
    return t->slot != 0;
}

/* (Re)starts t to fire after seconds (at least 0, finite). */
void timeout_start(struct timeout *t, ev_tstamp seconds);

void timeout_cancel(struct timeout *t);

/* Inline: a task's wait ends with a stop, which most waits (reads) leave nothing to do for. */
static inline void timeout_stop(struct timeout *t)
{
    if (t->slot != 0)
        timeout_cancel(t);
}

#endif
