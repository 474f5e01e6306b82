/* siphash.c -- SipHash-2-4; see siphash.h. Written from the paper's description: two SipRounds
 * per 8-byte word of input, four to finish. */
#include "siphash.h"

static uint64_t rotl(uint64_t x, int bits)
{
    return (x << bits) | (x >> (64 - bits));
}

/* Little-endian, whatever the machine's order. */
static uint64_t load64(const unsigned char *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

struct sip {
    uint64_t v0, v1, v2, v3;
};

static void round_(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13) ^ s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16) ^ s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21) ^ s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17) ^ s->v2;
    s->v2 = rotl(s->v2, 32);
}

static void compress(struct sip *s, uint64_t m)
{
    s->v3 ^= m;
    round_(s);
    round_(s);
    s->v0 ^= m;
}

uint64_t siphash24(const unsigned char key[SIPHASH_KEY_SIZE], const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t k0 = load64(key), k1 = load64(key + 8);
    /* The initial constants spell "somepseudorandomlygeneratedbytes". */
    struct sip s = {
        k0 ^ 0x736f6d6570736575u,
        k1 ^ 0x646f72616e646f6du,
        k0 ^ 0x6c7967656e657261u,
        k1 ^ 0x7465646279746573u,
    };
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8)
        compress(&s, load64(in + i));
    /* The last word: the remaining bytes, and the length modulo 256 in its top byte. */
    uint64_t last = (uint64_t)(len & 0xff) << 56;
    for (size_t i = whole; i < len; i++)
        last |= (uint64_t)in[i] << (8 * (i - whole));
    compress(&s, last);
    s.v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        round_(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}
