/* errors.c -- errno and getaddrinfo codes to short strings; see errors.h. */
#include <ares.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"

struct phrase {
    int code;
    const char *text;
};

/* Phrases a handler is likely to compare against; everything else falls back to strerror. */
static const struct phrase errno_phrases[] = {
    {ECONNRESET, "reset"},
    {EPIPE, ERR_CLOSED},
    {ETIMEDOUT, ERR_TIMEOUT},
    {ECONNREFUSED, "connection refused"},
    {ECONNABORTED, "connection aborted"},
    {EACCES, "permission denied"},
    {EPERM, "permission denied"},
    {EADDRINUSE, "address in use"},
    {EADDRNOTAVAIL, "address not available"},
    {ENETUNREACH, "network unreachable"},
    {EHOSTUNREACH, "host unreachable"},
    {ENETDOWN, "network down"},
    {EMFILE, "too many open files"},
    {ENFILE, "too many open files"},
    {ENOBUFS, "out of buffer space"},
    {ENOMEM, ERR_NO_MEMORY},
    {ENOENT, "no such file or directory"},
    {ENOTDIR, "not a directory"},
    {ENAMETOOLONG, "name too long"},
    {EAFNOSUPPORT, "address family not supported"},
    {EINVAL, "invalid argument"},
};

static const struct phrase gai_phrases[] = {
    {EAI_NONAME, "host not found"},
    {EAI_NODATA, "host not found"},
    {EAI_AGAIN, "temporary failure in name resolution"},
    {EAI_FAIL, "name resolution failed"},
    {EAI_FAMILY, "address family not supported"},
    {EAI_SERVICE, "bad port"},
    {EAI_MEMORY, ERR_NO_MEMORY},
};

static const char *lookup(const struct phrase *table, size_t n, int code)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].code == code)
            return table[i].text;
    return NULL;
}

/* strerror's text starts with a capital letter; our phrases do not. */
static const char *lowercase_into(char *copy, size_t size, const char *text)
{
    size_t i = 0;
    for (; text[i] != '\0' && i + 1 < size; i++)
        copy[i] = (char)tolower((unsigned char)text[i]);
    copy[i] = '\0';
    return copy;
}

static const char *lowercased(const char *text)
{
    static char copy[128];
    return lowercase_into(copy, sizeof copy, text);
}

const char *errors_string(int err)
{
    /* One copy per code: the text of a failed wait is handed to its coroutine later, and must
     * not change meanwhile. */
    static char texts[256][96];
    const char *text = lookup(errno_phrases, sizeof errno_phrases / sizeof *errno_phrases, err);
    if (text != NULL)
        return text;
    if (err < 0 || err >= 256)
        return lowercased(strerror(err));
    if (texts[err][0] == '\0')
        lowercase_into(texts[err], sizeof texts[err], strerror(err));
    return texts[err];
}

const char *errors_name(int err)
{
    const char *name = strerrorname_np(err);
    return name != NULL ? name : "E?";
}

const char *errors_gai_string(int gai_error)
{
    if (gai_error == EAI_SYSTEM)
        return errors_string(errno);
    const char *text = lookup(gai_phrases, sizeof gai_phrases / sizeof *gai_phrases, gai_error);
    return text != NULL ? text : lowercased(gai_strerror(gai_error));
}

const char *errors_ares_string(int status)
{
    static char text[160];
    switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return "host not found";
    case ARES_ETIMEOUT:
        return ERR_TIMEOUT;
    case ARES_ENOMEM:
        return ERR_NO_MEMORY;
    default:
        snprintf(text, sizeof text, "resolver error: %s", lowercased(ares_strerror(status)));
        return text;
    }
}

const char *errors_signal_name(int sig, char *buf, size_t size)
{
    const char *name = sigabbrev_np(sig);
    if (name != NULL)
        snprintf(buf, size, "%s", name);
    else if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        snprintf(buf, size, "RTMIN+%d", sig - SIGRTMIN);
    else
        snprintf(buf, size, "%d", sig);
    return buf;
}
