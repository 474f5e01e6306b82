/* buf.c -- byte buffers with a chunk pool and a budget; see buf.h for why. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define POOL_MAX 256

static char *pool[POOL_MAX];
static size_t pool_size;
static size_t in_use; /* storage held by buffers */
static size_t budget; /* 0: none */

/* Whether a buffer holding old_cap bytes of storage may hold cap instead (see buf.h: the first
 * chunk is always granted). */
static bool within_budget(size_t old_cap, size_t cap)
{
    if (budget == 0 || cap <= BUF_CHUNK || in_use - old_cap + cap <= budget)
        return true;
    errno = ENOBUFS;
    return false;
}

/* Storage of cap bytes, counted; NULL with errno ENOMEM. */
static char *storage_take(size_t cap)
{
    char *data = cap == BUF_CHUNK && pool_size > 0 ? pool[--pool_size] : malloc(cap);
    if (data == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    in_use += cap;
    return data;
}

static void storage_release(struct buf *b)
{
    in_use -= b->cap;
    if (b->cap == BUF_CHUNK && pool_size < POOL_MAX)
        pool[pool_size++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

/* buf_grow's general case, kept out of line: see there. */
static __attribute__((noinline)) char *make_room(struct buf *b, size_t want)
{
    if (b->data == NULL) {
        size_t cap = want <= BUF_CHUNK ? BUF_CHUNK : want;
        if (!within_budget(0, cap) || (b->data = storage_take(cap)) == NULL)
            return NULL;
        b->cap = cap;
        b->start = b->end = 0;
    }
    if (b->cap - b->end >= want)
        return b->data + b->end;

    size_t len = buf_len(b);
    if (want > SIZE_MAX / 2 - len) {
        errno = ENOMEM; /* no doubling could make that much room */
        return NULL;
    }
    if (b->cap - len >= want && len <= b->cap / 2) {
        memmove(b->data, b->data + b->start, len);
    } else {
        /* Doubling keeps appends cheap; one large append gets what it needs, not twice that,
         * since all storage counts against the budget. */
        size_t cap = b->cap * 2;
        if (cap - len < want)
            cap = (len + want + BUF_CHUNK - 1) / BUF_CHUNK * BUF_CHUNK;
        char *data;
        if (!within_budget(b->cap, cap) || (data = storage_take(cap)) == NULL)
            return NULL;
        memcpy(data, b->data + b->start, len);
        storage_release(b);
        b->data = data;
        b->cap = cap;
    }
    b->start = 0;
    b->end = len;
    return b->data + b->end;
}

/* The common case, an empty buffer taking a pooled chunk (always within the budget), on its
 * own: it needs none of the registers that make_room saves first. 65 fewer instructions per
 * 64-byte echo, whose input and output buffers each take a chunk per message (cachegrind). */
char *buf_grow(struct buf *b, size_t want)
{
    if (b->data != NULL || want > BUF_CHUNK || pool_size == 0)
        return make_room(b, want);
    b->data = pool[--pool_size];
    in_use += BUF_CHUNK;
    b->cap = BUF_CHUNK;
    b->start = b->end = 0;
    return b->data;
}

void buf_truncate(struct buf *b, size_t len)
{
    b->end = b->start + len;
    if (len == 0 && b->data != NULL)
        storage_release(b);
}

void buf_free(struct buf *b)
{
    if (b->data != NULL)
        storage_release(b);
}

void buf_set_budget(size_t bytes)
{
    budget = bytes;
}

size_t buf_budget(void)
{
    return budget;
}

size_t buf_in_use(void)
{
    return in_use;
}

void buf_pool_drain(void)
{
    while (pool_size > 0)
        free(pool[--pool_size]);
}
