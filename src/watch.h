/* watch.h -- watching files for changes, one callback per burst.
 *
 * An editor saving a file makes several events (write, rename, attribute change); they are
 * coalesced until the files have been quiet for a moment, then reported once. inotify on the
 * loop, so nothing is polled. */
#ifndef WATCH_H
#define WATCH_H

#include <ev.h>

/* changed: the paths that changed during the burst, comma-separated. */
typedef void (*watch_cb)(const char *changed);

void watch_init(struct ev_loop *loop, watch_cb cb);

/* Replaces the set of watched files. Returns 0, or -1 if there are too many. */
int watch_files(const char *const *paths, int count);

void watch_stop(void);

#endif
