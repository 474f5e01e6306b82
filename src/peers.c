/* peers.c -- a hash table from IP address (or IPv6 network) to its number of open
 * connections; see peers.h.
 *
 * Open addressing with linear probing. A removal shifts the entries behind it back (no
 * tombstones), so a table that sees millions of short connections stays as small as the number
 * of addresses connected at once. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "peers.h"
#include "siphash.h"

#define FIRST_CAPACITY 64

struct slot {
    unsigned char addr[16]; /* the key: see peers_key */
    uint32_t count;         /* 0: empty slot */
};

static struct slot *slots;
static size_t capacity; /* a power of two */
static size_t used;
static int ipv6_prefix = PEERS_DEFAULT_IPV6_PREFIX;
/* The hash key, drawn by each process when it first counts a client: one that connects from
 * addresses it chose (any host with a /48 has 65536 networks to pick from) must not be able to
 * tell which of them share a probe run, and pile them into one. */
static unsigned char seed[SIPHASH_KEY_SIZE];
static bool seeded;

void peers_set_ipv6_prefix(int bits)
{
    ipv6_prefix = bits;
}

bool peers_key(const struct sockaddr *peer, unsigned char key[16])
{
    if (peer->sa_family == AF_INET) {
        static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(key, v4_mapped, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        return true;
    }
    if (peer->sa_family != AF_INET6)
        return false;
    const struct in6_addr *addr = &((const struct sockaddr_in6 *)peer)->sin6_addr;
    memcpy(key, addr, 16);
    /* An IPv4 client of a dual-stack socket: its key is the one it has over IPv4. No masked
     * IPv6 key can equal it, since masking clears bits and the ::ffff: marker is set ones. */
    if (IN6_IS_ADDR_V4MAPPED(addr))
        return true;
    for (int i = 0, bits = ipv6_prefix; i < 16; i++, bits -= 8) {
        int kept = bits >= 8 ? 8 : bits > 0 ? bits : 0;
        key[i] &= (unsigned char)(0xff00u >> kept);
    }
    return true;
}

/* From the kernel; should getrandom fail (no such call), the clocks, the pid and the stack's
 * address (randomised by ASLR), mixed: far weaker, but still different in every process. */
static void draw_seed(void)
{
    seeded = true;
    if (getrandom(seed, sizeof seed, 0) == (ssize_t)sizeof seed)
        return;
    struct {
        struct timespec real, mono;
        pid_t pid;
        const void *stack;
    } weak = {.pid = getpid()};
    weak.stack = &weak;
    clock_gettime(CLOCK_REALTIME, &weak.real);
    clock_gettime(CLOCK_MONOTONIC, &weak.mono);
    memset(seed, 0, sizeof seed);
    uint64_t words[2];
    words[0] = siphash24(seed, &weak, sizeof weak);
    seed[0] = 1;
    words[1] = siphash24(seed, &weak, sizeof weak);
    memcpy(seed, words, sizeof seed);
}

uint64_t peers_hash(const unsigned char key[16])
{
    if (!seeded)
        draw_seed();
    return siphash24(seed, key, 16);
}

static size_t home_of(const unsigned char key[16])
{
    return (size_t)peers_hash(key) & (capacity - 1);
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
    if (!peers_key(peer, key))
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
    if (!peers_key(peer, key) || capacity == 0)
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
    seeded = false;
}
