/* Unit tests for buf.c: growth, consumption, compaction, and that an empty buffer owns no
 * storage (idle connections must cost nothing); a size no buffer can reach is refused; the
 * budget (max_buffers) refuses growth past it but never a buffer's first chunk. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "container.h"

static void test_append_consume(void)
{
    struct buf b = {0};
    CHECK(buf_len(&b) == 0 && b.data == NULL);
    CHECK(strcmp(buf_head(&b), "") == 0);
    CHECK(buf_append(&b, "hello", 5) == 0);
    CHECK(buf_len(&b) == 5 && memcmp(buf_head(&b), "hello", 5) == 0);
    CHECK(b.cap == BUF_CHUNK);
    buf_consume(&b, 2);
    CHECK(buf_len(&b) == 3 && memcmp(buf_head(&b), "llo", 3) == 0);
    buf_consume(&b, 3);
    CHECK(b.data == NULL && b.cap == 0);
}

static void test_growth_keeps_bytes(void)
{
    struct buf b = {0};
    char block[1000];
    for (size_t i = 0; i < 100; i++) {
        memset(block, (int)('a' + i % 26), sizeof block);
        CHECK(buf_append(&b, block, sizeof block) == 0);
    }
    CHECK(buf_len(&b) == 100000 && b.cap >= 100000);
    int intact = 1;
    for (size_t i = 0; i < 100; i++)
        intact &= buf_head(&b)[i * 1000] == (char)('a' + i % 26);
    CHECK(intact);
    buf_free(&b);
    CHECK(b.data == NULL);
}

static void test_compaction(void)
{
    struct buf b = {0};
    char big[BUF_CHUNK - 10];
    memset(big, 'x', sizeof big);
    CHECK(buf_append(&b, big, sizeof big) == 0);
    buf_consume(&b, sizeof big - 4);
    /* 4 bytes left at the end of the chunk: room is made by moving them, not by growing. */
    char *room = buf_reserve(&b, 100);
    CHECK(room != NULL && b.cap == BUF_CHUNK && b.start == 0 && buf_len(&b) == 4);
    memcpy(room, "tail", 4);
    buf_commit(&b, 4);
    CHECK(memcmp(buf_head(&b), "xxxxtail", 8) == 0);
    buf_free(&b);
}

static void test_reserve_without_commit(void)
{
    struct buf b = {0};
    CHECK(buf_reserve(&b, 10) != NULL && buf_len(&b) == 0);
    buf_free(&b);
    CHECK(b.data == NULL);
    buf_consume(&b, 0);
    CHECK(b.data == NULL);
}

static void test_truncate(void)
{
    struct buf b = {0};
    CHECK(buf_append(&b, "keep", 4) == 0);
    CHECK(buf_append(&b, "undo", 4) == 0);
    buf_truncate(&b, 4);
    CHECK(buf_len(&b) == 4 && memcmp(buf_head(&b), "keep", 4) == 0);
    buf_truncate(&b, 0);
    CHECK(b.data == NULL && buf_len(&b) == 0);
}

/* One large append takes what it needs (rounded to a chunk), not the next power of two. */
static void test_large_append_exact(void)
{
    static char big[1048576];
    struct buf b = {0};
    CHECK(buf_append(&b, "head", 4) == 0);
    CHECK(buf_append(&b, big, sizeof big) == 0);
    CHECK(buf_len(&b) == 4 + sizeof big && b.cap == sizeof big + BUF_CHUNK);
    CHECK(buf_in_use() == b.cap);
    buf_free(&b);
    CHECK(buf_in_use() == 0);
}

/* Issue 13 item 4: the storage of all buffers is counted against one budget. */
static void test_budget(void)
{
    static char block[4 * BUF_CHUNK];
    struct buf a = {0}, b = {0}, c = {0};
    buf_set_budget(5 * BUF_CHUNK + BUF_CHUNK / 2);
    CHECK(buf_append(&a, block, 4 * BUF_CHUNK) == 0);
    CHECK(buf_append(&b, block, BUF_CHUNK) == 0);
    CHECK(buf_in_use() == 5 * BUF_CHUNK);
    /* b may not double to 2 chunks: that would make 6 in all... */
    errno = 0;
    CHECK(buf_append(&b, "x", 1) == -1 && errno == ENOBUFS);
    CHECK(buf_len(&b) == BUF_CHUNK && b.cap == BUF_CHUNK && buf_in_use() == 5 * BUF_CHUNK);
    CHECK(buf_reserve(&c, 2 * BUF_CHUNK) == NULL && errno == ENOBUFS && c.data == NULL);
    /* ...but a first chunk is granted even past the budget. */
    CHECK(buf_append(&c, "y", 1) == 0 && buf_in_use() == 6 * BUF_CHUNK);
    CHECK(buf_append(&c, block, BUF_CHUNK) == -1 && errno == ENOBUFS && buf_len(&c) == 1);
    /* Freed storage can be had again. */
    buf_free(&a);
    CHECK(buf_append(&b, "x", 1) == 0 && b.cap == 2 * BUF_CHUNK);
    CHECK(buf_in_use() == 3 * BUF_CHUNK);
    buf_set_budget(0);
    CHECK(buf_append(&c, block, sizeof block) == 0);
    buf_free(&b);
    buf_free(&c);
    CHECK(buf_in_use() == 0);
}

struct holder {
    int before;
    struct buf inner;
};

static void test_container_of(void)
{
    struct holder h;
    CHECK(container_of(&h.inner, struct holder, inner) == &h);
}

/* A request for more than the address space can hold must fail; under AddressSanitizer too,
 * where a huge malloc would otherwise abort instead of returning NULL. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static void on_hang(int sig)
{
    (void)sig;
    static const char message[] = "test_buf: buf_reserve did not return within 5 s\n";
    (void)!write(STDERR_FILENO, message, sizeof message - 1);
    _exit(1);
}

/* Issue 12 item 14: the doubling in buf_reserve had no overflow guard, so a want near SIZE_MAX
 * on a buffer that holds storage doubled its capacity to 0 and looped forever (or wrapped and
 * "succeeded" with a 0-byte block). It must return NULL and leave the buffer as it was. */
static void test_huge_reserve_fails(void)
{
    signal(SIGALRM, on_hang);
    alarm(5);
    const size_t wants[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4};
    for (size_t i = 0; i < sizeof wants / sizeof wants[0]; i++) {
        struct buf b = {0};
        CHECK(buf_append(&b, "hello", 5) == 0);
        CHECK(buf_reserve(&b, wants[i]) == NULL);
        CHECK(buf_len(&b) == 5 && memcmp(buf_head(&b), "hello", 5) == 0);
        buf_free(&b);

        struct buf empty = {0}; /* storage held, no bytes */
        CHECK(buf_reserve(&empty, 10) != NULL);
        CHECK(buf_reserve(&empty, wants[i]) == NULL);
        buf_free(&empty);
    }
    alarm(0);
}

int main(void)
{
    test_append_consume();
    test_growth_keeps_bytes();
    test_compaction();
    test_reserve_without_commit();
    test_truncate();
    test_container_of();
    test_huge_reserve_fails();
    test_large_append_exact();
    test_budget();
    buf_pool_drain();
    return check_report();
}
