/* Unit tests for timeouts.c: many timeouts fire in the order of their deadlines through one libev
 * timer; stopping or restarting one (also from another's callback) keeps the others in order; a
 * timeout started by a callback with 0 seconds fires on a later iteration, not in the same one. */
#include <stdlib.h>

#include "check.h"
#include "container.h"
#include "timeouts.h"

#define MANY 500

struct item {
    struct timeout t;
    int id;
};

static struct ev_loop *loop;
static int fired[MANY * 2], nfired;
static struct item items[MANY];
static struct item *victim; /* stopped by the first callback that fires */

static void on_fire(struct timeout *t)
{
    struct item *it = container_of(t, struct item, t);
    fired[nfired++] = it->id;
    if (victim != NULL) {
        timeout_stop(&victim->t);
        victim = NULL;
    }
}

static void run_until_idle(void)
{
    while (ev_run(loop, EVRUN_ONCE))
        ;
}

static void test_order_and_stop(void)
{
    nfired = 0;
    /* Deadlines in a shuffled order, 1 ms apart. */
    for (int i = 0; i < MANY; i++) {
        items[i].id = (i * 7919) % MANY;
        timeout_init(&items[i].t, on_fire);
        timeout_start(&items[i].t, 0.001 * items[i].id);
    }
    /* Stopped before the loop runs, restarted later, and stopped from a callback. */
    struct item *stopped = &items[10], *moved = &items[20];
    timeout_stop(&stopped->t);
    CHECK(!timeout_active(&stopped->t));
    timeout_start(&moved->t, 0.001 * MANY);
    victim = &items[30];
    int victim_id = victim->id;
    run_until_idle();
    CHECK(nfired == MANY - 2 || (victim_id == fired[0] && nfired == MANY - 1));
    int last = -1, ordered = 1, seen_stopped = 0, seen_victim = 0;
    for (int i = 0; i < nfired; i++) {
        if (fired[i] == stopped->id)
            seen_stopped = 1;
        if (fired[i] == victim_id && i > 0)
            seen_victim = 1;
        if (fired[i] != moved->id && fired[i] < last)
            ordered = 0;
        if (fired[i] != moved->id)
            last = fired[i];
    }
    CHECK(ordered);
    CHECK(!seen_stopped);
    CHECK(!seen_victim);
    CHECK(fired[nfired - 1] == moved->id);
    for (int i = 0; i < MANY; i++)
        CHECK(!timeout_active(&items[i].t));
}

static int iterations, restarts, fired_in[3];
static struct timeout again;

static void on_again(struct timeout *t)
{
    fired_in[restarts] = iterations;
    if (++restarts < 3)
        timeout_start(t, 0);
}

static void count_iteration(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    iterations++;
}

static void test_zero_restart_waits_for_the_next_iteration(void)
{
    ev_prepare prepare;
    ev_prepare_init(&prepare, count_iteration);
    ev_prepare_start(loop, &prepare);
    timeout_init(&again, on_again);
    timeout_start(&again, 0);
    for (int i = 0; i < 100 && timeout_active(&again); i++)
        ev_run(loop, EVRUN_ONCE);
    ev_prepare_stop(loop, &prepare);
    CHECK(restarts == 3);
    CHECK(fired_in[0] < fired_in[1] && fired_in[1] < fired_in[2]);
}

int main(void)
{
    loop = ev_default_loop(0);
    timeouts_init(loop);
    test_order_and_stop();
    test_zero_restart_waits_for_the_next_iteration();
    return check_report();
}
