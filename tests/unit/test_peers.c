/* Unit tests for peers.c: per-address counts against a plain array model, through growth and
 * the backward-shift removals that keep probe runs intact. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "check.h"
#include "peers.h"

#define ADDRESSES 3000

static struct sockaddr_in v4(unsigned n)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(0x0a000000u + n);
    return a;
}

static void test_limit_per_address(void)
{
    struct sockaddr_in a = v4(1), b = v4(2);
    CHECK(peers_admit((struct sockaddr *)&a, 2));
    CHECK(peers_admit((struct sockaddr *)&a, 2));
    CHECK(!peers_admit((struct sockaddr *)&a, 2));
    CHECK(peers_admit((struct sockaddr *)&b, 2));
    peers_release((struct sockaddr *)&a);
    CHECK(peers_admit((struct sockaddr *)&a, 2));
    CHECK(!peers_admit((struct sockaddr *)&a, 2));
    peers_release((struct sockaddr *)&a);
    peers_release((struct sockaddr *)&a);
    peers_release((struct sockaddr *)&b);
    peers_free();
}

static void test_v4_and_v6_are_distinct_but_mapped_is_v4(void)
{
    struct sockaddr_in a = v4(7);
    struct sockaddr_in6 mapped = {.sin6_family = AF_INET6}, other = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.0.0.7", &mapped.sin6_addr);
    inet_pton(AF_INET6, "2001:db8::7", &other.sin6_addr);
    CHECK(peers_admit((struct sockaddr *)&a, 1));
    CHECK(!peers_admit((struct sockaddr *)&mapped, 1));
    CHECK(peers_admit((struct sockaddr *)&other, 1));
    peers_release((struct sockaddr *)&a);
    peers_release((struct sockaddr *)&other);
    peers_free();
}

static void test_unix_peers_are_not_counted(void)
{
    struct sockaddr un = {.sa_family = AF_UNIX};
    for (int i = 0; i < 10; i++)
        CHECK(peers_admit(&un, 1));
    peers_free();
}

/* Random admits and releases over many addresses: every answer must match the model. */
static void test_random_against_model(void)
{
    static unsigned model[ADDRESSES];
    const unsigned max = 3;
    int mismatches = 0;
    srand(12345);
    for (int step = 0; step < 400000; step++) {
        unsigned n = (unsigned)rand() % ADDRESSES;
        struct sockaddr_in a = v4(n);
        if (rand() % 2 == 0) {
            bool admitted = peers_admit((struct sockaddr *)&a, max);
            mismatches += admitted != (model[n] < max);
            model[n] += admitted;
        } else if (model[n] > 0) {
            peers_release((struct sockaddr *)&a);
            model[n]--;
        }
    }
    CHECK(mismatches == 0);
    /* Release everything: afterwards every address must be admitted max times again. */
    for (unsigned n = 0; n < ADDRESSES; n++) {
        struct sockaddr_in a = v4(n);
        while (model[n] > 0) {
            peers_release((struct sockaddr *)&a);
            model[n]--;
        }
    }
    for (unsigned n = 0; n < ADDRESSES; n++) {
        struct sockaddr_in a = v4(n);
        for (unsigned i = 0; i < max; i++)
            mismatches += !peers_admit((struct sockaddr *)&a, max);
        mismatches += peers_admit((struct sockaddr *)&a, max);
    }
    CHECK(mismatches == 0);
    peers_free();
}

int main(void)
{
    test_limit_per_address();
    test_v4_and_v6_are_distinct_but_mapped_is_v4();
    test_unix_peers_are_not_counted();
    test_random_against_model();
    return check_report();
}
