/* workers.h -- `serve --workers N`: the parent forks N workers from its started server, keeps N
 * running, and passes signals on to them. */
#ifndef WORKERS_H
#define WORKERS_H

#include <ev.h>
#include <sys/types.h>

/* Runs in a worker right after its fork, with the worker's number (1..N). */
typedef void (*workers_become_cb)(int id);

/* Forks count workers and waits until each has called become(). Returns 0 in the parent, which
 * then supervises from the default loop; the worker's number in a worker (also when a restart
 * forks it later, from inside the parent's loop); -1 if a worker failed to start (the others
 * are stopped). kill_after: seconds after a stop request before workers are killed. watchdog:
 * kill (and so restart) a worker whose loop has not turned for that many seconds; 0: never. */
int workers_start(struct ev_loop *loop, int count, double kill_after, double watchdog,
                  workers_become_cb become);

/* Called in the parent when worker id has exited, or NULL. */
extern void (*workers_on_exit)(int id);

/* The pid of worker id (1..N), or 0 while it waits for its restart. */
pid_t workers_pid(int id);

/* Sends sig to every running worker. */
void workers_signal(int sig);

/* Stops restarting workers and sends them sig; the loop breaks when the last has exited. Asked
 * again, sends sig again (a second SIGINT makes the workers exit at once). */
void workers_stop(int sig);

/* In the parent after the loop: what is left to free. */
void workers_free(void);

#endif
