/* siphash.h -- SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012):
 * a keyed hash for hash tables whose keys a peer chooses. Without the key, nobody can tell which
 * inputs collide. */
#ifndef SIPHASH_H
#define SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_SIZE 16

/* The 64-bit SipHash-2-4 of data[0..len) under key, the output read as a little-endian number
 * (the paper's byte order). */
uint64_t siphash24(const unsigned char key[SIPHASH_KEY_SIZE], const void *data, size_t len);

#endif
