/* Unit tests for errors.c: the phrases handlers compare against must not change. */
#include <errno.h>
#include <netdb.h>

#include "check.h"
#include "errors.h"

int main(void)
{
    CHECK_STR(errors_string(ECONNRESET), "reset");
    CHECK_STR(errors_string(EPIPE), "closed");
    CHECK_STR(errors_string(ETIMEDOUT), "timeout");
    CHECK_STR(errors_string(EACCES), "permission denied");
    CHECK_STR(errors_string(EADDRINUSE), "address in use");
    CHECK_STR(errors_string(ECONNREFUSED), "connection refused");
    CHECK_STR(errors_string(ENETUNREACH), "network unreachable");
    CHECK_STR(errors_string(EHOSTUNREACH), "host unreachable");
    CHECK_STR(errors_string(EISCONN), "transport endpoint is already connected");
    CHECK_STR(errors_name(ECONNRESET), "ECONNRESET");
    CHECK_STR(errors_name(EACCES), "EACCES");
    CHECK_STR(errors_gai_string(EAI_NONAME), "host not found");
    return check_report();
}
