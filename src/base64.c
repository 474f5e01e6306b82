/* base64.c -- base64 with nginx's decoding rules (see base64.h). */
#include <stdint.h>

#include "base64.h"

static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encode(char *out, const unsigned char *in, size_t len, bool pad)
{
    size_t n = 0;
    for (; len >= 3; in += 3, len -= 3) {
        out[n++] = digits[in[0] >> 2];
        out[n++] = digits[((in[0] & 3) << 4) | (in[1] >> 4)];
        out[n++] = digits[((in[1] & 15) << 2) | (in[2] >> 6)];
        out[n++] = digits[in[2] & 63];
    }
    if (len > 0) {
        unsigned next = len == 2 ? in[1] : 0;
        out[n++] = digits[in[0] >> 2];
        out[n++] = digits[((in[0] & 3) << 4) | (next >> 4)];
        if (len == 2)
            out[n++] = digits[(next & 15) << 2];
        else if (pad)
            out[n++] = '=';
        if (pad)
            out[n++] = '=';
    }
    return n;
}

static int value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    return c == '/' ? 63 : -1;
}

int base64_decode(unsigned char *out, const char *in, size_t len, size_t *out_len)
{
    size_t n = 0, count = 0;
    uint32_t bits = 0;
    int held = 0;
    for (; count < len && in[count] != '='; count++) {
        int v = value((unsigned char)in[count]);
        if (v < 0)
            return -1;
        bits = (bits << 6) | (uint32_t)v;
        held += 6;
        if (held >= 8) {
            held -= 8;
            out[n++] = (unsigned char)(bits >> held);
            bits &= (1u << held) - 1;
        }
    }
    if (count % 4 == 1)
        return -1;
    *out_len = n;
    return 0;
}
