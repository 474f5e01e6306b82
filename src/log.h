/* log.h -- log settings for the command line and the server; the logging call itself is
 * public. */
#ifndef LOG_H
#define LOG_H

#include "luasock.h"

/* Returns the level named name ("debug", "info", "warn", "error"), or -1. */
int log_level_from_name(const char *name);
void log_set_level(enum luasock_log_level level);

/* Names the process in every line from now on ("worker 2"), for --workers. */
void log_set_origin(const char *origin);

#endif
