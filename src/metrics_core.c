/* metrics_core.c -- the server's own figures; see metrics_core.h. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "errors.h"
#include "guard.h"
#include "metrics.h"
#include "metrics_core.h"
#include "task.h"

#define LAG_INTERVAL 0.25

struct metrics_core metrics_core;
static struct metrics_listener *listeners;
static struct ev_loop *loop;
static ev_timer lag_timer;
static ev_tstamp lag_due;
static struct metric *lag;
static struct metric_series *lag_series;

static const char *const close_names[MC_CLOSE_COUNT] = {
    "closed", "timeout", "reset", "overflow", "too_large", "out_of_memory", "shutdown", "error"};
static const char *const refusal_names[MR_COUNT] = {"max_connections", "per_ip", "emfile"};
static const char *const dns_names[MD_COUNT] = {"ok", "not_found", "timeout", "error"};

struct metrics_listener *metrics_listener(const char *name)
{
    for (struct metrics_listener *l = listeners; l != NULL; l = l->next)
        if (strcmp(l->name, name) == 0)
            return l;
    struct metrics_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->next = listeners;
    listeners = l;
    return l;
}

enum metrics_close metrics_close_reason(const char *reason)
{
    static const struct {
        const char *reason;
        enum metrics_close label;
    } known[] = {{ERR_CLOSED, MC_CLOSED}, {ERR_TIMEOUT, MC_TIMEOUT}, {"reset", MC_RESET},
                 {ERR_OVERFLOW, MC_OVERFLOW}, {ERR_TOO_LARGE, MC_TOO_LARGE},
                 {ERR_LINE_TOO_LONG, MC_TOO_LARGE}, {ERR_NO_MEMORY, MC_NO_MEMORY},
                 {ERR_NO_BUFFERS, MC_NO_MEMORY}, {ERR_SHUTTING_DOWN, MC_SHUTDOWN}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(reason, known[i].reason) == 0)
            return known[i].label;
    return MC_ERROR;
}

/* How late the lag timer fired: the time the loop spent on other work past its deadline. */
static void on_lag_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    double late = ev_time() - lag_due;
    metrics_observe(lag, lag_series, late > 0 ? late : 0);
    /* Not counted as a reason for the loop to keep running (see metrics_core_start). */
    ev_ref(l);
    lag_due = ev_now(l) + LAG_INTERVAL;
    ev_timer_set(w, LAG_INTERVAL, 0);
    ev_timer_start(l, w);
    ev_unref(l);
}

int metrics_core_start(struct ev_loop *l)
{
    static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                    10};
    const char *err;
    loop = l;
    lag = metrics_define(METRIC_HISTOGRAM, "luasock_loop_lag_seconds",
                         "How late the event loop ran a timer due every 0.25 s", NULL, 0, bounds,
                         sizeof bounds / sizeof bounds[0], &err);
    lag_series = lag != NULL ? metrics_series(lag, NULL) : NULL;
    if (lag_series == NULL)
        return -1;
    lag_due = ev_now(loop) + LAG_INTERVAL;
    ev_timer_init(&lag_timer, on_lag_timer, LAG_INTERVAL, 0);
    ev_timer_start(loop, &lag_timer);
    ev_unref(loop);
    return 0;
}

static void write_one(FILE *out, const char *name, const char *help, enum metric_type type,
                      double value)
{
    metrics_write_header(out, name, help, type);
    metrics_write_sample(out, name, "", value);
}

static void write_labelled(FILE *out, const char *name, const char *help, const char *label,
                           const char *const *values, const uint64_t *counts, size_t n)
{
    metrics_write_header(out, name, help, METRIC_COUNTER);
    for (size_t i = 0; i < n; i++) {
        char labels[128] = "";
        metrics_append_label(labels, sizeof labels, label, values[i]);
        metrics_write_sample(out, name, labels, (double)counts[i]);
    }
}

static void write_connections(FILE *out)
{
    metrics_write_header(out, "luasock_connections_open", "Open accepted connections",
                         METRIC_GAUGE);
    uint64_t accepted = 0;
    for (struct metrics_listener *l = listeners; l != NULL; l = l->next) {
        char labels[256] = "";
        metrics_append_label(labels, sizeof labels, "listener", l->name);
        metrics_write_sample(out, "luasock_connections_open", labels, (double)l->open);
        accepted += l->accepted;
    }
    write_one(out, "luasock_connections_accepted_total", "Connections accepted", METRIC_COUNTER,
              (double)accepted);
    write_labelled(out, "luasock_connections_closed_total",
                   "Accepted connections closed, by reason", "reason", close_names,
                   metrics_core.closed, MC_CLOSE_COUNT);
    write_labelled(out, "luasock_connections_refused_total",
                   "Connections refused at accept, by cause", "cause", refusal_names,
                   metrics_core.refused, MR_COUNT);
    uint64_t in = metrics_core.bytes_in, sent = metrics_core.bytes_out;
    conn_add_open_bytes(&in, &sent);
    write_one(out, "luasock_bytes_received_total", "Bytes received on TCP and unix connections",
              METRIC_COUNTER, (double)in);
    write_one(out, "luasock_bytes_sent_total", "Bytes sent on TCP and unix connections",
              METRIC_COUNTER, (double)sent);
}

static void write_lua(FILE *out)
{
    write_one(out, "luasock_handler_errors_total", "Handlers and coroutines ended by an error",
              METRIC_COUNTER, (double)metrics_core.handler_errors);
    write_one(out, "luasock_tasks", "Tasks (handlers and coroutines) alive", METRIC_GAUGE,
              (double)task_count());
    write_one(out, "luasock_lua_memory_bytes", "Memory held by the Lua state", METRIC_GAUGE,
              (double)guard_memory_in_use());
    static const char *const directions[] = {"in", "out"};
    uint64_t udp[] = {metrics_core.udp_in, metrics_core.udp_out};
    write_labelled(out, "luasock_udp_datagrams_total", "UDP datagrams, by direction",
                   "direction", directions, udp, 2);
    write_labelled(out, "luasock_dns_queries_total", "Name lookups, by result", "result",
                   dns_names, metrics_core.dns, MD_COUNT);
}

static int open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    int n = -1; /* the directory's own descriptor */
    while (readdir(dir) != NULL)
        n++;
    closedir(dir);
    return n - 2; /* . and .. */
}

static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    double btime = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "btime %lf", &btime) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return btime;
}

/* /proc/self/stat's CPU times, start time and resident pages. */
static void write_reloads(FILE *out)
{
    static const char *const results[] = {"ok", "failed"};
    uint64_t reloads[] = {metrics_core.reloads_ok, metrics_core.reloads_failed};
    write_labelled(out, "luasock_reloads_total", "Script reloads, by result", "result", results,
                   reloads, 2);
}

void metrics_core_write_process(FILE *out)
{
    write_reloads(out);
    char text[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f != NULL ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    text[n] = '\0';
    const char *after_name = strrchr(text, ')');
    unsigned long long utime, stime, start;
    long rss;
    if (after_name == NULL ||
        sscanf(after_name + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                               "%*d %*d %*d %*d %llu %*u %ld", &utime, &stime, &start, &rss) != 4)
        return;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    write_one(out, "process_cpu_seconds_total", "User and system CPU time spent in seconds",
              METRIC_COUNTER, (double)(utime + stime) / ticks);
    write_one(out, "process_resident_memory_bytes", "Resident memory size in bytes",
              METRIC_GAUGE, (double)rss * (double)sysconf(_SC_PAGESIZE));
    write_one(out, "process_open_fds", "Number of open file descriptors", METRIC_GAUGE,
              open_fds());
    write_one(out, "process_start_time_seconds",
              "Start time of the process since unix epoch in seconds", METRIC_GAUGE,
              boot_time() + (double)start / ticks);
}

void metrics_core_reset(void)
{
    metrics_core = (struct metrics_core){0};
    for (struct metrics_listener *l = listeners; l != NULL; l = l->next)
        l->accepted = l->open = 0;
    metrics_reset();
}

void metrics_core_write(FILE *out)
{
    write_connections(out);
    write_lua(out);
    metrics_core_write_process(out);
    metrics_write_all(out);
}
