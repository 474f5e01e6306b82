/* watch.c -- coalesced file-change notifications; see watch.h.
 *
 * inotify watches the directories that hold the files, and a write is reported whether or not
 * it changed the file's size or its one-second modification time (libev's ev_stat compares
 * those, and misses a same-size save within the same second). Renames onto a file count too,
 * which is how many editors save. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "luasock.h"
#include "watch.h"

#define MAX_FILES 64
#define QUIET_SECONDS 0.1
#define EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB)

struct watched_file {
    char *path;
    char *dir;
    const char *name; /* inside path */
    int wd;
    int changed;
};

static struct ev_loop *loop;
static watch_cb report;
static struct watched_file files[MAX_FILES];
static int file_count;
static int inotify_fd = -1;
static ev_io events;
static ev_timer quiet;

static void mark_changed(int wd, const char *name)
{
    int hit = 0;
    for (int i = 0; i < file_count; i++) {
        if (files[i].wd == wd && strcmp(files[i].name, name) == 0) {
            files[i].changed = 1;
            hit = 1;
        }
    }
    if (hit) {
        ev_timer_stop(loop, &quiet);
        ev_timer_set(&quiet, QUIET_SECONDS, 0);
        ev_timer_start(loop, &quiet);
    }
}

static void on_events(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    char buffer[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(w->fd, buffer, sizeof buffer)) > 0) {
        for (char *p = buffer; p < buffer + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->len > 0)
                mark_changed(e->wd, e->name);
            p += sizeof *e + e->len;
        }
    }
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

static void forget_files(void)
{
    for (int i = 0; i < file_count; i++) {
        free(files[i].path);
        free(files[i].dir);
    }
    file_count = 0;
}

void watch_stop(void)
{
    ev_timer_stop(loop, &quiet);
    if (inotify_fd >= 0) {
        ev_io_stop(loop, &events);
        close(inotify_fd);
        inotify_fd = -1;
    }
    forget_files();
}

static int add_file(const char *path)
{
    struct watched_file *f = &files[file_count];
    f->path = strdup(path);
    char *copy = strdup(path);
    if (f->path == NULL || copy == NULL) {
        free(f->path);
        free(copy);
        return -1;
    }
    f->dir = strdup(dirname(copy));
    free(copy);
    if (f->dir == NULL) {
        free(f->path);
        return -1;
    }
    const char *slash = strrchr(f->path, '/');
    f->name = slash != NULL ? slash + 1 : f->path;
    f->changed = 0;
    /* inotify gives one watch descriptor per directory, however often it is added. */
    f->wd = inotify_add_watch(inotify_fd, f->dir, EVENTS);
    file_count++;
    if (f->wd < 0) {
        luasock_log(LUASOCK_LOG_WARN, "--watch: %s: %s", f->dir, strerror(errno));
        return -1;
    }
    return 0;
}

int watch_files(const char *const *paths, int count)
{
    watch_stop();
    if (count > MAX_FILES)
        return -1;
    inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd < 0)
        return -1;
    ev_io_init(&events, on_events, inotify_fd, EV_READ);
    ev_io_start(loop, &events);
    for (int i = 0; i < count; i++)
        if (add_file(paths[i]) < 0)
            return -1;
    return 0;
}
