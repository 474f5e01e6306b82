/* fuzz_addr.c -- libFuzzer target for net_parse_addr, the parser of --listen addresses.
 *
 * The input, cut at its first NUL, is the address text. On success the result must be what
 * net.h promises (fields NUL-terminated within their arrays, the port a canonical 0..65535, the
 * kind given by the "unix:" or "udp:" prefix, tls by a "tls:" before it, the host and path copied
 * from the text) and must
 * come back unchanged when written out in canonical form and parsed again. On failure the reason
 * must be a phrase. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "net.h"

static bool terminated(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}

/* "0".."65535" as snprintf("%ld") writes it: digits, no sign, no leading zero. */
static bool canonical_port(const char *port)
{
    size_t n = strlen(port);
    if (n == 0 || n > 5 || (n > 1 && port[0] == '0'))
        return false;
    long value = 0;
    for (size_t i = 0; i < n; i++) {
        if (port[i] < '0' || port[i] > '9')
            return false;
        value = value * 10 + (port[i] - '0');
    }
    return value <= 65535;
}

/* Checks host and port against the text after any "udp:" prefix. */
static void check_host_port(const char *rest, const struct net_addr *addr)
{
    const char *host = rest, *colon;
    size_t host_len;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        FUZZ_CHECK(close != NULL && close[1] == ':');
        host = rest + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strchr(rest, ':');
        FUZZ_CHECK(colon != NULL && strchr(colon + 1, ':') == NULL); /* exactly one colon */
        host_len = (size_t)(colon - rest);
    }
    if (host_len == 1 && host[0] == '*') /* any address */
        FUZZ_CHECK(addr->host[0] == '\0');
    else
        FUZZ_CHECK(strlen(addr->host) == host_len && memcmp(addr->host, host, host_len) == 0);
    /* The port text is a decimal number (strtol's leading blanks and sign allowed) of the same
     * value as the canonical one stored. */
    char *end;
    long value = strtol(colon + 1, &end, 10);
    FUZZ_CHECK(colon[1] != '\0' && *end == '\0');
    FUZZ_CHECK(value == strtol(addr->port, NULL, 10));
}

/* Writes addr as text that parses back to it: the host in brackets unless it holds a ']' (then
 * it came from HOST:PORT and has no colon), so that "udp", "unix", "tls" or "" stay hosts. */
static void format_addr(const struct net_addr *addr, char *out, size_t size)
{
    const char *tls = addr->tls ? "tls:" : "";
    if (addr->kind == NET_UNIX) {
        snprintf(out, size, "%sunix:%s", tls, addr->path);
        return;
    }
    const char *prefix = addr->kind == NET_UDP ? "udp:" : tls;
    if (addr->host[0] == '\0')
        snprintf(out, size, "%s*:%s", prefix, addr->port);
    else if (strchr(addr->host, ']') != NULL)
        snprintf(out, size, "%s%s:%s", prefix, addr->host, addr->port);
    else
        snprintf(out, size, "%s[%s]:%s", prefix, addr->host, addr->port);
}

static void check_parsed(const char *text, const struct net_addr *addr)
{
    FUZZ_CHECK(terminated(addr->host, sizeof addr->host));
    FUZZ_CHECK(terminated(addr->port, sizeof addr->port));
    FUZZ_CHECK(terminated(addr->path, sizeof addr->path));
    bool tls = strncmp(text, "tls:", 4) == 0;
    FUZZ_CHECK(addr->tls == tls);
    if (tls)
        text += 4;
    if (strncmp(text, "unix:", 5) == 0) {
        FUZZ_CHECK(addr->kind == NET_UNIX);
        FUZZ_CHECK(addr->path[0] != '\0' && strcmp(addr->path, text + 5) == 0);
        FUZZ_CHECK(addr->host[0] == '\0' && addr->port[0] == '\0');
        return;
    }
    bool udp = strncmp(text, "udp:", 4) == 0;
    FUZZ_CHECK(!(udp && tls)); /* tls is for streams */
    FUZZ_CHECK(addr->kind == (udp ? NET_UDP : NET_TCP));
    FUZZ_CHECK(addr->path[0] == '\0');
    FUZZ_CHECK(canonical_port(addr->port));
    check_host_port(udp ? text + 4 : text, addr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct net_addr *addr = malloc(sizeof *addr); /* on the heap, so ASan sees any overrun */
    FUZZ_CHECK(text != NULL && addr != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    const char *why = NULL;
    int rc = net_parse_addr(text, addr, &why);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    } else {
        check_parsed(text, addr);

        char again[sizeof addr->host + sizeof addr->port + sizeof addr->path + 16];
        format_addr(addr, again, sizeof again);
        struct net_addr *back = malloc(sizeof *back);
        FUZZ_CHECK(back != NULL);
        why = NULL;
        if (net_parse_addr(again, back, &why) != 0) {
            fprintf(stderr, "canonical form \"%s\" refused: %s\n", again, why);
            FUZZ_CHECK(!"the canonical form of a parsed address parses");
        }
        FUZZ_CHECK(back->kind == addr->kind);
        FUZZ_CHECK(back->tls == addr->tls);
        FUZZ_CHECK(strcmp(back->host, addr->host) == 0);
        FUZZ_CHECK(strcmp(back->port, addr->port) == 0);
        FUZZ_CHECK(strcmp(back->path, addr->path) == 0);
        free(back);
    }
    free(addr);
    free(text);
    return 0;
}
