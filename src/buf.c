/* buf.c -- byte buffers with a chunk pool; see buf.h for why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define POOL_MAX 256

static char *pool[POOL_MAX];
static size_t pool_size;

static char *chunk_take(void)
{
    return pool_size > 0 ? pool[--pool_size] : malloc(BUF_CHUNK);
}

static void storage_release(struct buf *b)
{
    if (b->cap == BUF_CHUNK && pool_size < POOL_MAX)
        pool[pool_size++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

char *buf_reserve(struct buf *b, size_t want)
{
    if (b->data == NULL) {
        size_t cap = want <= BUF_CHUNK ? BUF_CHUNK : want;
        b->data = cap == BUF_CHUNK ? chunk_take() : malloc(cap);
        if (b->data == NULL)
            return NULL;
        b->cap = cap;
        b->start = b->end = 0;
    }
    if (b->cap - b->end >= want)
        return b->data + b->end;

    size_t len = buf_len(b);
    if (want > SIZE_MAX / 2 - len)
        return NULL; /* no doubling could make that much room */
    if (b->cap - len >= want && len <= b->cap / 2) {
        memmove(b->data, b->data + b->start, len);
    } else {
        size_t cap = b->cap * 2;
        while (cap - len < want)
            cap *= 2;
        char *data = malloc(cap);
        if (data == NULL)
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

void buf_commit(struct buf *b, size_t n)
{
    b->end += n;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    char *room = buf_reserve(b, n);
    if (room == NULL)
        return -1;
    memcpy(room, data, n);
    b->end += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    b->start += n;
    if (b->start == b->end && b->data != NULL)
        storage_release(b);
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

void buf_pool_drain(void)
{
    while (pool_size > 0)
        free(pool[--pool_size]);
}
