/* blocks.h -- the Lua state's memory: small blocks from size-class free lists, large ones from
 * malloc.
 *
 * Most of what Lua allocates is small (a 64-byte message is a 90-byte string; a table header is
 * 56 bytes) and short-lived. Lua tells its allocator every block's size when it frees or resizes
 * it, so small blocks need neither malloc's per-block header nor its bookkeeping: they are cut
 * from 64 KiB slabs and recycled through one free list per size. Slabs are kept until exit: a
 * block freed after a spike is reused by the next allocation of its size. */
#ifndef BLOCKS_H
#define BLOCKS_H

#include <stddef.h>

/* realloc for Lua: old is the block's current size (0 when ptr is NULL). Returns NULL when
 * memory cannot be had; a block that shrinks is never lost (it may stay where it is). */
void *blocks_realloc(void *ptr, size_t old, size_t size);

/* Frees a block of the given size (ptr may be NULL). */
void blocks_free(void *ptr, size_t size);

/* Gives every slab back to malloc, once the Lua state is closed (so leak checkers see a clean
 * heap at exit). */
void blocks_release(void);

#endif
