/* log.c -- timestamped log lines on stderr.
 *
 * One fprintf per line, so lines from a busy server never interleave mid-line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static enum luasock_log_level min_level = LUASOCK_LOG_INFO;
static char origin[32];

int log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void log_set_level(enum luasock_log_level level)
{
    min_level = level;
}

void log_set_origin(const char *name)
{
    snprintf(origin, sizeof origin, "%s: ", name);
}

void luasock_log(enum luasock_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;

    struct timespec now;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);

    /* Tracebacks can be long: format into the stack buffer, or the heap when it is too small. */
    char small[1024];
    char *message = small;
    va_list ap;
    va_start(ap, fmt);
    int needed = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (needed >= (int)sizeof small && (message = malloc((size_t)needed + 1)) != NULL) {
        va_start(ap, fmt);
        vsnprintf(message, (size_t)needed + 1, fmt, ap);
        va_end(ap);
    }
    if (message == NULL)
        message = small;

    fprintf(stderr, "%s.%03ld [%s] %s%s\n", stamp, now.tv_nsec / 1000000L, level_names[level],
            origin, message);
    if (message != small)
        free(message);
}
