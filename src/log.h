/* log.h -- log settings for the command line and the server; the logging call itself is
 * public. */
#ifndef LOG_H
#define LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "luasock.h"

/* The valid level names, for messages: "debug, info, notice, ...". */
#define LOG_LEVEL_NAMES                                                                    \
    "debug, info, notice, warn, warning, error, err, critical, crit, alert, emerg"

/* Returns the level named name, in any case, syslog's names included ("notice" is info,
 * "warning" warn, "err", "critical", "crit", "alert" and "emerg" error), or -1. */
int log_level_from_name(const char *name);
void log_set_level(enum luasock_log_level level);

/* Whether lines at level are written: to skip preparing one that would be dropped. */
bool log_wants(enum luasock_log_level level);

/* One JSON object per line instead of text (--log-format json). */
void log_set_json(bool json);
bool log_is_json(void);

/* Appends lines to path (--log-file), created if missing. Returns 0, or -1 with errno. */
int log_open_file(const char *path);

/* Opens the --log-file path again (SIGUSR1, after logrotate renamed it); a failure is logged
 * and the old file kept. */
void log_reopen(void);

/* Names the process in every line from now on ("worker 2"), for --workers. */
void log_set_worker(int id);

/* The script being served, for the JSON lines' "script". */
void log_set_script(const char *path);

/* luasock_log about one connection: JSON lines get its id and peer as "conn" and "peer". */
void log_conn(enum luasock_log_level level, uint64_t id, const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
