/* Unit tests for peers.c: per-address counts against a plain array model, through growth and
 * the backward-shift removals that keep probe runs intact; IPv6 counted per /64 (or the prefix
 * set), IPv4 per address; a hash key of its own in every process. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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

static struct sockaddr_in6 v6(const char *text)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    CHECK(inet_pton(AF_INET6, text, &a.sin6_addr) == 1);
    return a;
}

/* Issue 13 item 11: a client with a /64 must not get a fresh count from each of its addresses. */
static void test_v6_counts_per_64_by_default(void)
{
    struct sockaddr_in6 a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2:ffff:ffff:ffff:fffe"),
                        other = v6("2001:db8:1:3::1");
    CHECK(peers_admit((struct sockaddr *)&a, 2));
    CHECK(peers_admit((struct sockaddr *)&b, 2));
    CHECK(!peers_admit((struct sockaddr *)&a, 2));
    CHECK(!peers_admit((struct sockaddr *)&b, 2));
    CHECK(peers_admit((struct sockaddr *)&other, 2));
    peers_release((struct sockaddr *)&a);
    CHECK(peers_admit((struct sockaddr *)&b, 2));
    peers_release((struct sockaddr *)&b);
    peers_release((struct sockaddr *)&b);
    peers_release((struct sockaddr *)&other);
    peers_free();
}

static bool key_is(const struct sockaddr *peer, const char *want)
{
    unsigned char key[16];
    char text[INET6_ADDRSTRLEN];
    return peers_key(peer, key) && inet_ntop(AF_INET6, key, text, sizeof text) != NULL &&
           strcmp(text, want) == 0;
}

static void test_keys(void)
{
    struct sockaddr_in in4 = v4(0x0102);
    struct sockaddr_in6 addr = v6("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff");
    struct sockaddr_in6 loopback = v6("::1"), mapped6 = v6("::ffff:10.0.1.2");
    CHECK(key_is((struct sockaddr *)&in4, "::ffff:10.0.1.2"));
    CHECK(key_is((struct sockaddr *)&mapped6, "::ffff:10.0.1.2"));
    CHECK(key_is((struct sockaddr *)&addr, "2001:db8:aaaa:bbbb::"));
    CHECK(key_is((struct sockaddr *)&loopback, "::"));
    peers_set_ipv6_prefix(128);
    CHECK(key_is((struct sockaddr *)&addr, "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"));
    CHECK(key_is((struct sockaddr *)&mapped6, "::ffff:10.0.1.2"));
    peers_set_ipv6_prefix(56);
    CHECK(key_is((struct sockaddr *)&addr, "2001:db8:aaaa:bb00::"));
    peers_set_ipv6_prefix(3);
    CHECK(key_is((struct sockaddr *)&addr, "2000::"));
    CHECK(key_is((struct sockaddr *)&mapped6, "::ffff:10.0.1.2"));
    peers_set_ipv6_prefix(1);
    CHECK(key_is((struct sockaddr *)&addr, "::"));
    peers_set_ipv6_prefix(PEERS_DEFAULT_IPV6_PREFIX);
    struct sockaddr un = {.sa_family = AF_UNIX};
    unsigned char key[16];
    CHECK(!peers_key(&un, key));
}

/* With --ipv6-prefix 128, each IPv6 address counts alone again. */
static void test_prefix_128_counts_per_address(void)
{
    peers_set_ipv6_prefix(128);
    struct sockaddr_in6 a = v6("2001:db8::1"), b = v6("2001:db8::2");
    CHECK(peers_admit((struct sockaddr *)&a, 1));
    CHECK(peers_admit((struct sockaddr *)&b, 1));
    CHECK(!peers_admit((struct sockaddr *)&a, 1));
    peers_release((struct sockaddr *)&a);
    peers_release((struct sockaddr *)&b);
    peers_free();
    peers_set_ipv6_prefix(PEERS_DEFAULT_IPV6_PREFIX);
}

/* The hash of one key in a fresh child process: each draws its own hash key. */
static uint64_t hash_in_child(const unsigned char key[16])
{
    int fds[2];
    uint64_t h = 0;
    if (pipe(fds) < 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        h = peers_hash(key);
        _exit(write(fds[1], &h, sizeof h) == (ssize_t)sizeof h ? 0 : 1);
    }
    close(fds[1]);
    if (pid < 0 || read(fds[0], &h, sizeof h) != (ssize_t)sizeof h)
        h = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return h;
}

static void test_hash_is_seeded_per_process(void)
{
    unsigned char key[16] = {0x20, 0x01, 0x0d, 0xb8};
    uint64_t first = hash_in_child(key), second = hash_in_child(key);
    CHECK(first != 0 && second != 0);
    CHECK(first != second);
    CHECK(peers_hash(key) == peers_hash(key));
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
    test_v6_counts_per_64_by_default();
    test_keys();
    test_prefix_128_counts_per_address();
    test_hash_is_seeded_per_process();
    test_unix_peers_are_not_counted();
    test_random_against_model();
    return check_report();
}
