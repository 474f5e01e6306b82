/* blocks.c -- small blocks for the Lua state; see blocks.h.
 *
 * Measured with cachegrind on the 64 B echo and the pipelined line workloads, a Lua string's
 * malloc and free through glibc cost about 340 instructions per message; from a free list they
 * cost about 30. Blocks are 8-byte aligned, which is all that Lua's objects and luasock's
 * userdata need (LUAI_MAXALIGN: pointers, 64-bit integers, doubles).
 *
 * Under AddressSanitizer every block comes straight from malloc, so that it still sees each
 * use after free and overflow. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

#ifdef __SANITIZE_ADDRESS__
#define BLOCKS_POOLED 0
#else
#define BLOCKS_POOLED 1
#endif

#define STEP 8
#define SMALL_MAX 512 /* larger blocks come from malloc */
#define SLAB_BYTES 65536

union block {
    union block *next; /* while free */
};

struct slab {
    struct slab *next; /* its blocks follow, 8-byte aligned */
};

static union block *free_lists[SMALL_MAX / STEP + 1]; /* by size / STEP, rounded up */
static char *carve_at, *carve_end; /* the unused rest of the newest slab */
static struct slab *slabs;

static size_t class_of(size_t size)
{
    return (size + STEP - 1) / STEP;
}

/* A new block of class k from the newest slab, or from a new one. What is left of a slab too
 * small for the block (under SMALL_MAX bytes) is not used. */
static void *carve(size_t k)
{
    size_t bytes = k * STEP;
    if ((size_t)(carve_end - carve_at) < bytes) {
        struct slab *s = malloc(SLAB_BYTES);
        if (s == NULL)
            return NULL;
        s->next = slabs;
        slabs = s;
        carve_at = (char *)(s + 1);
        carve_end = (char *)s + SLAB_BYTES;
    }
    void *block = carve_at;
    carve_at += bytes;
    return block;
}

static void *small_alloc(size_t size)
{
    size_t k = class_of(size);
    union block *b = free_lists[k];
    if (b == NULL)
        return carve(k);
    free_lists[k] = b->next;
    return b;
}

static void small_free(void *ptr, size_t size)
{
    union block *b = ptr;
    size_t k = class_of(size);
    b->next = free_lists[k];
    free_lists[k] = b;
}

void blocks_free(void *ptr, size_t size)
{
    if (ptr == NULL)
        return;
    if (BLOCKS_POOLED && size <= SMALL_MAX)
        small_free(ptr, size);
    else
        free(ptr);
}

void *blocks_realloc(void *ptr, size_t old, size_t size)
{
    if (!BLOCKS_POOLED)
        return realloc(ptr, size);
    bool old_small = ptr != NULL && old <= SMALL_MAX, new_small = size <= SMALL_MAX;
    if (ptr == NULL)
        return new_small ? small_alloc(size) : malloc(size);
    if (!old_small && !new_small)
        return realloc(ptr, size);
    if (old_small && new_small && class_of(old) == class_of(size))
        return ptr;
    void *block = new_small ? small_alloc(size) : malloc(size);
    if (block == NULL)
        /* A shrinking block may stay: it is larger than asked. Freed at its new size, a malloc
         * block ends up on a free list, which is harmless. */
        return size < old ? ptr : NULL;
    memcpy(block, ptr, old < size ? old : size);
    blocks_free(ptr, old);
    return block;
}

void blocks_release(void)
{
    while (slabs != NULL) {
        struct slab *next = slabs->next;
        free(slabs);
        slabs = next;
    }
    memset(free_lists, 0, sizeof free_lists);
    carve_at = carve_end = NULL;
}
