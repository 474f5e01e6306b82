/* watch.c -- coalesced file-change notifications; see watch.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container.h"
#include "watch.h"

#define MAX_FILES 64
#define QUIET_SECONDS 0.1

struct watched_file {
    ev_stat stat;
    char *path;
    int changed;
};

static struct ev_loop *loop;
static watch_cb report;
static struct watched_file files[MAX_FILES];
static int file_count;
static ev_timer quiet;

static void on_change(struct ev_loop *l, ev_stat *w, int revents)
{
    (void)revents;
    struct watched_file *f = container_of(w, struct watched_file, stat);
    f->changed = 1;
    ev_timer_stop(l, &quiet);
    ev_timer_set(&quiet, QUIET_SECONDS, 0);
    ev_timer_start(l, &quiet);
}

static void on_quiet(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    char changed[2048] = "";
    size_t used = 0;
    for (int i = 0; i < file_count; i++) {
        if (!files[i].changed)
            continue;
        files[i].changed = 0;
        int n = snprintf(changed + used, sizeof changed - used, "%s%s", used ? ", " : "",
                         files[i].path);
        if (n > 0 && used + (size_t)n < sizeof changed)
            used += (size_t)n;
    }
    if (used > 0)
        report(changed);
}

void watch_init(struct ev_loop *l, watch_cb cb)
{
    loop = l;
    report = cb;
    ev_init(&quiet, on_quiet);
}

void watch_stop(void)
{
    ev_timer_stop(loop, &quiet);
    for (int i = 0; i < file_count; i++) {
        ev_stat_stop(loop, &files[i].stat);
        free(files[i].path);
    }
    file_count = 0;
}

int watch_files(const char *const *paths, int count)
{
    watch_stop();
    if (count > MAX_FILES)
        return -1;
    for (int i = 0; i < count; i++) {
        struct watched_file *f = &files[file_count];
        f->path = strdup(paths[i]);
        if (f->path == NULL)
            return -1;
        f->changed = 0;
        ev_stat_init(&f->stat, on_change, f->path, 0.);
        ev_stat_start(loop, &f->stat);
        file_count++;
    }
    return 0;
}
