/* peers.c -- a hash table from IP address to its number of open connections; see peers.h.
 *
 * Open addressing with linear probing. A removal shifts the entries behind it back (no
 * tombstones), so a table that sees millions of short connections stays as small as the number
 * of addresses connected at once. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

#define FIRST_CAPACITY 64

struct slot {
    unsigned char addr[16]; /* IPv4 addresses as IPv4-mapped IPv6 */
    uint32_t count;         /* 0: empty slot */
};

static struct slot *slots;
static size_t capacity; /* a power of two */
static size_t used;

/* Returns false for peers without an IP address. */
static bool key_of(const struct sockaddr *peer, unsigned char key[16])
{
    if (peer->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
        return true;
    }
    if (peer->sa_family == AF_INET) {
        static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(key, v4_mapped, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        return true;
    }
    return false;
}

/* FNV-1a: the table only has to spread addresses, not resist chosen collisions, since a client
 * can only add slots for addresses it really connects from. */
static size_t home_of(const unsigned char key[16])
{
    uint64_t h = 1469598103934665603u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211u;
    return (size_t)h & (capacity - 1);
}

static struct slot *find(const unsigned char key[16])
{
    for (size_t i = home_of(key);; i = (i + 1) & (capacity - 1))
        if (slots[i].count == 0 || memcmp(slots[i].addr, key, 16) == 0)
            return &slots[i];
}

static bool grow(void)
{
    struct slot *old = slots;
    size_t old_capacity = capacity;
    size_t new_capacity = capacity ? capacity * 2 : FIRST_CAPACITY;
    struct slot *fresh = calloc(new_capacity, sizeof *fresh);
    if (fresh == NULL)
        return false;
    slots = fresh;
    capacity = new_capacity;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].count != 0)
            *find(old[i].addr) = old[i];
    free(old);
    return true;
}

bool peers_admit(const struct sockaddr *peer, size_t max)
{
    unsigned char key[16];
    if (!key_of(peer, key))
        return true;
    if ((used + 1) * 2 > capacity && !grow())
        return false;
    struct slot *s = find(key);
    if (s->count >= max)
        return false;
    if (s->count == 0) {
        memcpy(s->addr, key, 16);
        used++;
    }
    s->count++;
    return true;
}

void peers_release(const struct sockaddr *peer)
{
    unsigned char key[16];
    if (!key_of(peer, key) || capacity == 0)
        return;
    struct slot *s = find(key);
    if (s->count == 0 || --s->count > 0)
        return;
    used--;
    /* Shift back every entry of the probe run behind the hole that would no longer be found. */
    size_t hole = (size_t)(s - slots);
    for (size_t i = (hole + 1) & (capacity - 1); slots[i].count != 0; i = (i + 1) & (capacity - 1)) {
        size_t home = home_of(slots[i].addr);
        bool reachable = hole <= i ? (home <= hole || home > i) : (home <= hole && home > i);
        if (reachable) {
            slots[hole] = slots[i];
            hole = i;
        }
    }
    slots[hole].count = 0;
}

void peers_free(void)
{
    free(slots);
    slots = NULL;
    capacity = used = 0;
}
