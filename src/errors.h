/* errors.h -- the one place where OS error codes become the short strings Lua code sees.
 *
 * Socket helpers return -1 and leave errno; callers hand errno here. Lua gets a stable phrase
 * ("reset", "connection refused"); logs get the phrase plus the errno name ("ECONNRESET"). */
#ifndef ERRORS_H
#define ERRORS_H

#include <stddef.h>

/* Fixed strings for conditions that are not an errno. */
#define ERR_TIMEOUT "timeout"
#define ERR_CLOSED "closed"
#define ERR_LINE_TOO_LONG "line too long"
#define ERR_TOO_LARGE "too large"
#define ERR_NO_MEMORY "out of memory"
#define ERR_NO_BUFFERS "out of buffer memory (max_buffers)"
#define ERR_OVERFLOW "overflow"
#define ERR_SHUTTING_DOWN "shutting down"

/* "reset", "permission denied", ...: for Lua and for user-facing messages. */
const char *errors_string(int err);

/* "ECONNRESET", ...: for log lines next to errors_string. */
const char *errors_name(int err);

/* getaddrinfo's EAI_* codes: "host not found", ... */
const char *errors_gai_string(int gai_error);

/* c-ares's ARES_* codes: "host not found", "timeout", "resolver error: ..." */
const char *errors_ares_string(int status);

/* A signal's name without "SIG": "TERM", "KILL", "RTMIN+1" (real-time signals have no
 * abbreviation of their own), or its number. Returns buf. */
const char *errors_signal_name(int sig, char *buf, size_t size);

#endif
