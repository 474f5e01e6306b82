/* workers.c -- the --workers parent: forks the workers, restarts the ones that die, and passes
 * signals on; see workers.h.
 *
 * A worker is a fork of the parent after it has loaded the script and bound the listening
 * sockets, so a worker starts with nothing to do but serve, and a restart costs one fork. The
 * parent never accepts or runs a handler. Workers get a process group of their own so that a
 * terminal's Ctrl-C reaches them once, through the parent, and not twice (a second SIGINT means
 * "exit at once").
 *
 * With a watchdog, each worker stamps the time in shared memory at every turn of its loop (a
 * timer makes an idle loop turn too), and the parent kills a worker whose stamp is older than
 * the watchdog's period: one whose loop is stuck in a C function that no hook can interrupt, or
 * in a bug of ours. The restart is then the usual one. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "container.h"
#include "errors.h"
#include "luasock.h"
#include "workers.h"

/* A worker that dies sooner than this after its start waits longer before each restart. */
#define QUICK_DEATH_SECONDS 5.0
#define FIRST_BACKOFF_SECONDS 0.1
#define MAX_BACKOFF_SECONDS 30.0

struct worker {
    int id;    /* 1..count, kept across restarts */
    pid_t pid; /* 0 while it waits for its restart */
    ev_child exit;
    ev_timer restart;
    ev_tstamp started;
    int quick_deaths;
};

void (*workers_on_exit)(int id);
static struct ev_loop *loop;
static struct worker *workers;
static int worker_count;
static workers_become_cb become_worker;
static bool stopping;
static double kill_after;
static ev_timer kill_timer;
static double watchdog_seconds; /* 0: no watchdog */
static ev_tstamp *beats;        /* shared: when each worker's loop last turned */
static ev_timer watchdog_timer; /* the parent's check, or the worker's reason to turn */
static ev_prepare beat;         /* in a worker: stamps its turns */
static int beat_slot;

static void forget_workers(void)
{
    for (int i = 0; i < worker_count; i++) {
        ev_child_stop(loop, &workers[i].exit);
        ev_timer_stop(loop, &workers[i].restart);
    }
    ev_timer_stop(loop, &kill_timer);
    ev_timer_stop(loop, &watchdog_timer);
    free(workers);
    workers = NULL;
    worker_count = 0;
}

static void on_beat(struct ev_loop *l, ev_prepare *p, int revents)
{
    (void)p;
    (void)revents;
    beats[beat_slot] = ev_now(l);
}

static void on_idle_beat(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)l;
    (void)t;
    (void)revents;
}

static void start_beating(int id)
{
    beat_slot = id - 1;
    ev_prepare_init(&beat, on_beat);
    ev_prepare_start(loop, &beat);
    ev_timer_init(&watchdog_timer, on_idle_beat, watchdog_seconds / 4, watchdog_seconds / 4);
    ev_timer_start(loop, &watchdog_timer);
}

/* Returns the worker's number in the new worker, 0 in the parent, -1 if fork failed. */
static int spawn(struct worker *w)
{
    pid_t parent = getpid();
    /* Output the script buffered before the fork would otherwise be written once per process. */
    fflush(NULL);
    if (beats != NULL)
        beats[w->id - 1] = ev_time();
    pid_t pid = fork();
    if (pid < 0) {
        luasock_log(LUASOCK_LOG_ERROR, "fork for worker %d: %s", w->id, errors_string(errno));
        return -1;
    }
    if (pid == 0) {
        int id = w->id;
        forget_workers();
        setpgid(0, 0);
        /* A worker must not outlive a parent that was killed outright. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        if (beats != NULL)
            start_beating(id);
        become_worker(id);
        return id;
    }
    w->pid = pid;
    w->started = ev_time();
    ev_child_set(&w->exit, pid, 0);
    ev_child_start(loop, &w->exit);
    luasock_log(LUASOCK_LOG_INFO, "worker %d started (pid %ld)", w->id, (long)pid);
    return 0;
}

static void describe_exit(int status, char *out, size_t size)
{
    char name[16];
    if (WIFEXITED(status))
        snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, size, "was killed by SIG%s%s",
                 errors_signal_name(WTERMSIG(status), name, sizeof name),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(out, size, "stopped (status %#x)", (unsigned)status);
}

static int running_count(void)
{
    int n = 0;
    for (int i = 0; i < worker_count; i++)
        n += workers[i].pid > 0;
    return n;
}

static double backoff(int quick_deaths)
{
    double delay = 0;
    if (quick_deaths > 0)
        for (delay = FIRST_BACKOFF_SECONDS; --quick_deaths > 0 && delay < MAX_BACKOFF_SECONDS;)
            delay *= 2;
    return delay < MAX_BACKOFF_SECONDS ? delay : MAX_BACKOFF_SECONDS;
}

static void on_worker_exit(struct ev_loop *l, ev_child *c, int revents)
{
    (void)revents;
    struct worker *w = container_of(c, struct worker, exit);
    char cause[80];
    describe_exit(c->rstatus, cause, sizeof cause);
    ev_child_stop(l, c);
    w->pid = 0;
    if (workers_on_exit != NULL)
        workers_on_exit(w->id);
    if (stopping) {
        luasock_log(LUASOCK_LOG_INFO, "worker %d (pid %d) %s", w->id, c->rpid, cause);
        if (running_count() == 0)
            ev_break(l, EVBREAK_ALL);
        return;
    }
    ev_tstamp lived = ev_now(l) - w->started;
    w->quick_deaths = lived < QUICK_DEATH_SECONDS ? w->quick_deaths + 1 : 0;
    double delay = backoff(w->quick_deaths);
    luasock_log(LUASOCK_LOG_WARN, "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                w->id, c->rpid, cause, lived, delay);
    ev_timer_set(&w->restart, delay, 0);
    ev_timer_start(l, &w->restart);
}

static void on_restart(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, restart);
    if (spawn(w) < 0) {
        ev_timer_set(t, backoff(++w->quick_deaths), 0);
        ev_timer_start(l, t);
    }
    /* In the new worker, this returns into the loop, which serves from now on. */
}

static void on_watchdog(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)l;
    (void)t;
    (void)revents;
    ev_tstamp now = ev_time();
    for (int i = 0; i < worker_count; i++) {
        struct worker *w = &workers[i];
        double silent = now - beats[i];
        if (w->pid <= 0 || silent < watchdog_seconds)
            continue;
        luasock_log(LUASOCK_LOG_ERROR, "worker %d (pid %ld): its loop has not turned for %.1f s "
                    "(--watchdog %g): killing it", w->id, (long)w->pid, silent, watchdog_seconds);
        kill(w->pid, SIGKILL);
        beats[i] = now; /* once: its exit restarts it */
    }
}

static void on_kill_timer(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)l;
    (void)t;
    (void)revents;
    luasock_log(LUASOCK_LOG_WARN, "%d workers still running %g s after the stop: killing them",
                running_count(), kill_after);
    workers_signal(SIGKILL);
}

/* Waits until every worker has reported that it serves (or died trying). */
static int wait_ready(int fd, int count)
{
    int ready = 0;
    char bytes[64];
    while (ready < count) {
        ssize_t n = read(fd, bytes, sizeof bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        ready += (int)n;
    }
    return ready == count ? 0 : -1;
}

/* The beats outlive forget_workers: a worker keeps stamping its own. */
static int map_beats(int count)
{
    void *shared = mmap(NULL, (size_t)count * sizeof *beats, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return -1;
    beats = shared;
    return 0;
}

int workers_start(struct ev_loop *l, int count, double kill_after_seconds, double watchdog,
                  workers_become_cb become)
{
    loop = l;
    become_worker = become;
    kill_after = kill_after_seconds;
    watchdog_seconds = watchdog;
    workers = calloc((size_t)count, sizeof *workers);
    int ready[2];
    if (workers == NULL || (watchdog > 0 && map_beats(count) < 0) ||
        pipe2(ready, O_CLOEXEC) < 0) {
        fprintf(stderr, "luasock: cannot start workers: %s\n", errors_string(errno));
        free(workers);
        return -1;
    }
    worker_count = count;
    ev_init(&kill_timer, on_kill_timer);
    ev_init(&watchdog_timer, on_watchdog);
    for (int i = 0; i < count; i++) {
        struct worker *w = &workers[i];
        w->id = i + 1;
        ev_init(&w->exit, on_worker_exit);
        ev_init(&w->restart, on_restart);
        int id = spawn(w);
        if (id > 0) {
            close(ready[0]);
            if (write(ready[1], "+", 1) != 1)
                _exit(1);
            close(ready[1]);
            return id;
        }
        if (id < 0)
            break;
    }
    close(ready[1]);
    int rc = wait_ready(ready[0], count);
    close(ready[0]);
    if (rc == 0 && watchdog > 0) {
        double every = watchdog / 4 < 1 ? watchdog / 4 : 1;
        ev_timer_set(&watchdog_timer, every, every);
        ev_timer_start(loop, &watchdog_timer);
    }
    if (rc < 0) {
        fprintf(stderr, "luasock: a worker failed to start: stopping\n");
        workers_signal(SIGKILL);
        for (int i = 0; i < worker_count; i++)
            if (workers[i].pid > 0)
                waitpid(workers[i].pid, NULL, 0);
        forget_workers();
    }
    return rc;
}

pid_t workers_pid(int id)
{
    return id >= 1 && id <= worker_count ? workers[id - 1].pid : 0;
}

void workers_signal(int sig)
{
    for (int i = 0; i < worker_count; i++)
        if (workers[i].pid > 0)
            kill(workers[i].pid, sig);
}

void workers_stop(int sig)
{
    if (!stopping) {
        stopping = true;
        for (int i = 0; i < worker_count; i++)
            ev_timer_stop(loop, &workers[i].restart);
        char name[16];
        luasock_log(LUASOCK_LOG_INFO, "SIG%s: stopping %d workers",
                    errors_signal_name(sig, name, sizeof name), running_count());
        ev_timer_set(&kill_timer, kill_after, 0);
        ev_timer_start(loop, &kill_timer);
    }
    workers_signal(sig);
    if (running_count() == 0)
        ev_break(loop, EVBREAK_ALL);
}

void workers_free(void)
{
    forget_workers();
}
