/* Unit tests for net.c: listen address parsing and formatting. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "check.h"
#include "net.h"

static void test_parse(void)
{
    struct net_addr a;
    const char *why = NULL;
    CHECK(net_parse_addr("127.0.0.1:9090", &a, &why) == 0);
    CHECK(a.kind == NET_TCP);
    CHECK_STR(a.host, "127.0.0.1");
    CHECK_STR(a.port, "9090");
    CHECK(net_parse_addr("[::1]:0", &a, &why) == 0);
    CHECK_STR(a.host, "::1");
    CHECK_STR(a.port, "0");
    CHECK(net_parse_addr("*:80", &a, &why) == 0);
    CHECK_STR(a.host, "");
    CHECK(net_parse_addr("localhost:8080", &a, &why) == 0);
    CHECK_STR(a.host, "localhost");
    CHECK(net_parse_addr("unix:/tmp/x.sock", &a, &why) == 0);
    CHECK(a.kind == NET_UNIX);
    CHECK_STR(a.path, "/tmp/x.sock");

    CHECK(net_parse_addr("nonsense", &a, &why) < 0 && why != NULL);
    CHECK(net_parse_addr("1.2.3.4:99999", &a, &why) < 0);
    CHECK_STR(why, "port must be a number from 0 to 65535");
    CHECK(net_parse_addr("1.2.3.4:", &a, &why) < 0);
    CHECK(net_parse_addr("::1:80", &a, &why) < 0);
    CHECK(net_parse_addr("[::1]80", &a, &why) < 0);
    CHECK(net_parse_addr("unix:", &a, &why) < 0);
    /* Found by fuzzing: strtol took signs and spaces, and "[]" meant "any address". */
    CHECK(net_parse_addr("1.2.3.4:+80", &a, &why) < 0);
    CHECK(net_parse_addr("1.2.3.4: 80", &a, &why) < 0);
    CHECK(net_parse_addr("1.2.3.4:-0", &a, &why) < 0);
    CHECK(net_parse_addr("[]:80", &a, &why) < 0);
    CHECK_STR(why, "expected an IPv6 address inside [ ]");
}

static void test_format(void)
{
    char out[64];
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(9090)};
    inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    net_format((struct sockaddr *)&v4, sizeof v4, out, sizeof out);
    CHECK_STR(out, "127.0.0.1:9090");

    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(80)};
    inet_pton(AF_INET6, "::1", &v6.sin6_addr);
    net_format((struct sockaddr *)&v6, sizeof v6, out, sizeof out);
    CHECK_STR(out, "[::1]:80");
}

int main(void)
{
    test_parse();
    test_format();
    return check_report();
}
