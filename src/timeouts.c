/* timeouts.c -- a binary min-heap of timeouts under one ev_timer; see timeouts.h. */
#include <stdio.h>
#include <stdlib.h>

#include "timeouts.h"

static struct ev_loop *loop;
static ev_timer timer;       /* set for heap[1] */
static struct timeout **heap; /* heap[1..count]; heap[0] unused */
static unsigned count, capacity;
/* The timeouts that were due when the timer fired, until each has fired: one that is stopped or
 * started again meanwhile leaves a NULL here. A timeout started by a callback fires on a later
 * iteration of the loop, as a libev timer would (a task doing sleep(0) in a loop lets the others
 * run). */
static struct timeout **due;
static unsigned due_count, due_capacity;
#define DUE (1u << 31) /* in slot: the rest is the index in due */

static void place(struct timeout *t, unsigned slot)
{
    heap[slot] = t;
    t->slot = slot;
}

static void sift_up(unsigned slot)
{
    struct timeout *t = heap[slot];
    while (slot > 1 && heap[slot / 2]->at > t->at) {
        place(heap[slot / 2], slot);
        slot /= 2;
    }
    place(t, slot);
}

static void sift_down(unsigned slot)
{
    struct timeout *t = heap[slot];
    for (;;) {
        unsigned child = slot * 2;
        if (child > count)
            break;
        if (child < count && heap[child + 1]->at < heap[child]->at)
            child++;
        if (heap[child]->at >= t->at)
            break;
        place(heap[child], slot);
        slot = child;
    }
    place(t, slot);
}

/* The libev timer follows the earliest timeout. It is only moved when that one changes: most
 * starts and stops are of later ones. */
static void follow_earliest(void)
{
    if (count == 0) {
        ev_timer_stop(loop, &timer);
        return;
    }
    ev_tstamp after = heap[1]->at - ev_now(loop);
    if (ev_is_active(&timer) && ev_timer_remaining(loop, &timer) == after)
        return;
    ev_timer_stop(loop, &timer);
    ev_timer_set(&timer, after > 0 ? after : 0, 0);
    ev_timer_start(loop, &timer);
}

/* Takes t out of the heap without moving the libev timer. */
static void unlink_timeout(struct timeout *t)
{
    unsigned slot = t->slot;
    struct timeout *last = heap[count--];
    t->slot = 0;
    if (last == t)
        return;
    place(last, slot);
    if (slot > 1 && heap[slot / 2]->at > last->at)
        sift_up(slot);
    else
        sift_down(slot);
}

/* Makes room for one more entry in *array, as libev does for its own timer heap: it aborts if
 * that fails. */
static void reserve(struct timeout ***array, unsigned *cap, unsigned used)
{
    if (used < *cap)
        return;
    unsigned more = *cap < 64 ? 64 : *cap * 2;
    struct timeout **grown = realloc(*array, more * sizeof **array);
    if (grown == NULL) {
        fprintf(stderr, "luasock: cannot allocate %zu bytes for timeouts, aborting\n",
                more * sizeof **array);
        abort();
    }
    *array = grown;
    *cap = more;
}

/* Takes t out of the heap or the due list. Returns true if it was the heap's earliest. */
static bool take_out(struct timeout *t)
{
    if (t->slot & DUE) {
        due[t->slot & ~DUE] = NULL;
        t->slot = 0;
        return false;
    }
    bool first = t->slot == 1;
    unlink_timeout(t);
    return first;
}

void timeout_start(struct timeout *t, ev_tstamp seconds)
{
    struct timeout *first = count > 0 ? heap[1] : NULL;
    if (t->slot != 0)
        take_out(t);
    reserve(&heap, &capacity, count + 1);
    t->at = ev_now(loop) + seconds;
    place(t, ++count);
    sift_up(count);
    if (heap[1] != first || heap[1] == t)
        follow_earliest();
}

void timeout_cancel(struct timeout *t)
{
    if (take_out(t))
        follow_earliest();
}

/* Fires every timeout that is due, earliest first. A callback may start or stop any timeout
 * (resume a task that closes a connection): see due. */
static void on_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    if (due_count > 0)
        return; /* a callback ran the loop: the outer call is not done */
    while (count > 0 && heap[1]->at <= ev_now(loop)) {
        struct timeout *t = heap[1];
        unlink_timeout(t);
        reserve(&due, &due_capacity, due_count + 1);
        t->slot = DUE | due_count;
        due[due_count++] = t;
    }
    follow_earliest();
    for (unsigned i = 0; i < due_count; i++) {
        struct timeout *t = due[i];
        if (t == NULL)
            continue;
        due[i] = NULL;
        t->slot = 0;
        t->fire(t);
    }
    due_count = 0;
    follow_earliest();
}

void timeouts_init(struct ev_loop *l)
{
    loop = l;
    ev_init(&timer, on_timer);
}
