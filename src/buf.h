/* buf.h -- growable byte buffers that hold memory only while they hold data.
 *
 * A connection has one input and one output buffer. Idle connections are the common case on a
 * busy server, so an empty buffer owns no storage; storage comes from a small pool of chunks so
 * that taking and giving back a chunk per message costs no malloc.
 *
 * The storage of all buffers together is counted against one budget per process (the script's
 * max_buffers), so that many peers each sending a large message cannot add up to more memory
 * than that. A buffer's first chunk is always granted: however full the budget, every
 * connection can still take in and answer a message of up to BUF_CHUNK bytes. */
#ifndef BUF_H
#define BUF_H

#include <stddef.h>
#include <string.h>

#define BUF_CHUNK 16384

struct buf {
    char *data;
    size_t start; /* first unread byte */
    size_t end;   /* one past the last byte */
    size_t cap;
};

static inline size_t buf_len(const struct buf *b)
{
    return b->end - b->start;
}

static inline const char *buf_head(const struct buf *b)
{
    return b->data != NULL ? b->data + b->start : "";
}

/* buf_reserve when the buffer has no storage or too little room. */
char *buf_grow(struct buf *b, size_t want);

/* Makes room for at least want more bytes and returns where they go, or NULL with errno ENOMEM
 * (out of memory) or ENOBUFS (the storage would pass the budget). The caller writes there and
 * then calls buf_commit with what it wrote. Inline, with the other calls made per message below
 * (the rest are rarer): 15 fewer instructions per 64-byte echo, 60 per pipelined line
 * (cachegrind). */
static inline char *buf_reserve(struct buf *b, size_t want)
{
    if (b->data != NULL && b->cap - b->end >= want)
        return b->data + b->end;
    return buf_grow(b, want);
}

static inline void buf_commit(struct buf *b, size_t n)
{
    b->end += n;
}

/* Returns 0, or -1 with errno as for buf_reserve (the buffer is unchanged). */
static inline int buf_append(struct buf *b, const void *data, size_t n)
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

void buf_free(struct buf *b);

/* Drops n bytes from the front; gives the storage back once the buffer is empty. */
static inline void buf_consume(struct buf *b, size_t n)
{
    b->start += n;
    if (b->start == b->end)
        buf_free(b);
}

/* Drops bytes from the end so that len remain (len <= buf_len): undoes appends. */
void buf_truncate(struct buf *b, size_t len);

/* The most storage all buffers may hold together, in bytes (0: no limit). Storage already held
 * is kept; only growth is refused. */
void buf_set_budget(size_t bytes);
size_t buf_budget(void);

/* The storage all buffers hold now, in bytes (pooled free chunks not counted). */
size_t buf_in_use(void);

/* Frees the pooled chunks (at exit, so leak checkers see a clean heap). */
void buf_pool_drain(void);

#endif
