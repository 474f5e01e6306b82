/* resolver.h -- non-blocking name resolution: c-ares driven by the libev loop.
 *
 * c-ares reads /etc/hosts and /etc/resolv.conf like getaddrinfo, but never blocks: it tells us
 * which sockets to watch, and we hand their readiness back to it. */
#ifndef RESOLVER_H
#define RESOLVER_H

#include <ares.h>
#include <ev.h>

/* status is an ARES_* code; result (NULL unless ARES_SUCCESS) is freed by the resolver after
 * the callback returns. */
typedef void (*resolver_cb)(void *ud, int status, struct ares_addrinfo *result);

/* Returns 0, or -1 with the reason printed. */
int resolver_init(struct ev_loop *loop);

/* Cancels pending lookups (their callbacks get ARES_EDESTRUCTION) and frees the channel. */
void resolver_shutdown(void);

/* Uses these name servers ("127.0.0.1:5353,[::1]:53") instead of resolv.conf's. Returns an
 * ARES_* status. */
int resolver_set_servers(const char *csv);

/* Looks host up for family AF_INET, AF_INET6 or AF_UNSPEC (both). The callback may run before
 * this returns (names from /etc/hosts). */
void resolver_lookup(const char *host, int family, resolver_cb cb, void *ud);

#endif
