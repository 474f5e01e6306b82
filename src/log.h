/* log.h -- log level parsing for the command line; the logging call itself is public. */
#ifndef LOG_H
#define LOG_H

#include "luasock.h"

/* Returns the level named name ("debug", "info", "warn", "error"), or -1. */
int log_level_from_name(const char *name);
void log_set_level(enum luasock_log_level level);

#endif
