/* peers.h -- open connections per client IP address, for --max-connections-per-ip. */
#ifndef PEERS_H
#define PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Counts one more connection from peer's address, unless max are open already: then returns
 * false. Unix-socket peers have no address and are always admitted, uncounted. */
bool peers_admit(const struct sockaddr *peer, size_t max);

/* The connection from peer that peers_admit counted has closed. */
void peers_release(const struct sockaddr *peer);

/* Frees the table (at exit). */
void peers_free(void);

#endif
