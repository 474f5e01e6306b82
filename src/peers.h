/* peers.h -- open connections per client IP address, for --max-connections-per-ip. IPv4
 * clients count per address; IPv6 clients per network (--ipv6-prefix), since one host is
 * usually given a whole /64 and may connect from any address in it. */
#ifndef PEERS_H
#define PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PEERS_DEFAULT_IPV6_PREFIX 64

/* IPv6 clients count per network of their first `bits` bits (1 to 128; 128: per address).
 * IPv4-mapped IPv6 addresses (an IPv4 client of a dual-stack socket) count as IPv4. Set before
 * the first peers_admit. */
void peers_set_ipv6_prefix(int bits);

/* Counts one more connection from peer's address, unless max are open already: then returns
 * false. Unix-socket peers have no address and are always admitted, uncounted. */
bool peers_admit(const struct sockaddr *peer, size_t max);

/* The connection from peer that peers_admit counted has closed. */
void peers_release(const struct sockaddr *peer);

/* Frees the table (at exit). */
void peers_free(void);

/* What peer is counted under: IPv4 as IPv4-mapped IPv6, IPv6 with the bits after the prefix
 * cleared. False for peers without an IP address. For the unit tests, as is peers_hash. */
bool peers_key(const struct sockaddr *peer, unsigned char key[16]);

/* The table's hash of a key: SipHash-2-4 under a key each process draws from getrandom on
 * first use. */
uint64_t peers_hash(const unsigned char key[16]);

#endif
