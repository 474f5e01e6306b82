/* metrics_workers.h -- one /metrics for a --workers server: the workers send the parent their
 * figures, and the parent shows them with a `worker` label and totals.
 *
 * Every METRICS_WORKERS_PERIOD seconds (and once at its start) a worker sends its whole text
 * to the parent as one datagram; the parent keeps the last one of each worker. When a worker
 * dies, the counters of its last text become the base its replacement counts on from, so a
 * counter never goes backwards, per worker or in the totals (what the dead worker counted after
 * its last text is lost). */
#ifndef METRICS_WORKERS_H
#define METRICS_WORKERS_H

#include <ev.h>
#include <stdio.h>

#define METRICS_WORKERS_PERIOD 0.5

/* In the parent, before the workers are forked. Returns 0, or -1 with errno. */
int metrics_workers_init(struct ev_loop *loop, int count);

/* In a worker right after its fork: sends its figures from now on. */
void metrics_workers_become(int id);

/* In the parent: worker id has exited. */
void metrics_workers_exited(int id);

/* In the parent: the workers' figures and totals, then its own reloads and process_*. */
void metrics_workers_write(FILE *out);

#endif
