/* Unit tests for reader.c: receive patterns over byte ranges, including bytes that arrive in
 * pieces (the caller keeps appending and calls read_scan again with the same *searched). */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "reader.h"

static struct read_req line_req(size_t limit)
{
    return (struct read_req){.kind = READ_LINE, .delim = "\n", .delim_len = 1, .limit = limit};
}

static struct read_req until_req(const char *delim, size_t limit)
{
    return (struct read_req){.kind = READ_UNTIL, .delim = delim, .delim_len = strlen(delim),
                             .limit = limit};
}

/* Feeds data one byte at a time; returns the status once it is not READ_MORE. */
static enum read_status feed_bytewise(const struct read_req *req, const char *data, size_t len,
                                      struct read_span *span, size_t *fed)
{
    size_t searched = 0;
    for (*fed = 1; *fed <= len; (*fed)++) {
        enum read_status st = read_scan(req, data, *fed, false, &searched, span);
        if (st != READ_MORE)
            return st;
    }
    return READ_MORE;
}

static void test_parse(void)
{
    struct read_req r;
    CHECK(read_parse_pattern("*l", &r) == 0 && r.kind == READ_LINE);
    CHECK(read_parse_pattern("l", &r) == 0 && r.kind == READ_LINE && r.delim_len == 1);
    CHECK(read_parse_pattern("*a", &r) == 0 && r.kind == READ_ALL);
    CHECK(read_parse_pattern("a", &r) == 0 && r.kind == READ_ALL);
    CHECK(read_parse_pattern("*x", &r) < 0);
    CHECK(read_parse_pattern("", &r) < 0);
    CHECK(read_parse_pattern("*line", &r) < 0);
}

static void test_lines(void)
{
    struct read_req r = line_req(100);
    struct read_span s;
    size_t searched = 0;
    CHECK(read_scan(&r, "hello\nrest", 10, false, &searched, &s) == READ_DONE);
    CHECK(s.len == 5 && s.consumed == 6);

    searched = 0;
    CHECK(read_scan(&r, "hi\r\n", 4, false, &searched, &s) == READ_DONE);
    CHECK(s.len == 2 && s.consumed == 4);

    searched = 0;
    CHECK(read_scan(&r, "a\rb\n", 4, false, &searched, &s) == READ_DONE);
    CHECK(s.len == 3); /* a \r inside the line is data */

    searched = 0;
    CHECK(read_scan(&r, "\n", 1, false, &searched, &s) == READ_DONE && s.len == 0);

    searched = 0;
    CHECK(read_scan(&r, "partial", 7, false, &searched, &s) == READ_MORE);
    CHECK(searched == 7);
}

static void test_line_bytewise(void)
{
    struct read_req r = line_req(100);
    struct read_span s;
    size_t fed;
    const char *text = "one byte at a time\r\n";
    CHECK(feed_bytewise(&r, text, strlen(text), &s, &fed) == READ_DONE);
    CHECK(fed == strlen(text) && s.len == 18 && s.consumed == 20);
}

static void test_line_limits(void)
{
    struct read_req r = line_req(4);
    struct read_span s;
    size_t searched = 0;
    CHECK(read_scan(&r, "abcd\n", 5, false, &searched, &s) == READ_DONE && s.len == 4);
    searched = 0;
    CHECK(read_scan(&r, "abcd\r\n", 6, false, &searched, &s) == READ_DONE && s.len == 4);
    searched = 0;
    CHECK(read_scan(&r, "abcd\r", 5, false, &searched, &s) == READ_MORE);
    searched = 0;
    CHECK(read_scan(&r, "abcdef", 6, false, &searched, &s) == READ_TOO_LONG);
    CHECK(s.len == 4 && s.consumed == 4 && s.skip_rest);
    searched = 0;
    CHECK(read_scan(&r, "abcde\n", 6, false, &searched, &s) == READ_TOO_LONG);
    CHECK(s.len == 4 && s.consumed == 6 && !s.skip_rest);
}

static void test_until(void)
{
    struct read_req r = until_req("\r\n\r\n", 100);
    struct read_span s;
    size_t fed;
    const char *text = "a\r\n\rb\r\n\r\nafter";
    CHECK(feed_bytewise(&r, text, strlen(text), &s, &fed) == READ_DONE);
    CHECK(s.len == 5 && s.consumed == 9 && fed == 9);

    /* The delimiter split across two arrivals, after a near-miss that overlaps it. */
    size_t searched = 0;
    CHECK(read_scan(&r, "x\r\n\r\r\n", 6, false, &searched, &s) == READ_MORE);
    CHECK(read_scan(&r, "x\r\n\r\r\n\r\n", 8, false, &searched, &s) == READ_DONE);
    CHECK(s.len == 4 && s.consumed == 8);

    r = until_req("--", 3);
    searched = 0;
    CHECK(read_scan(&r, "abcd-", 5, false, &searched, &s) == READ_TOO_LONG && s.skip_rest);
    searched = 0;
    CHECK(read_scan(&r, "abc-", 4, false, &searched, &s) == READ_MORE);
}

static void test_skip(void)
{
    struct read_req r = until_req("\r\n", 10);
    bool found;
    CHECK(read_skip(&r, "xxxx\r", 5, &found) == 4 && !found);
    CHECK(read_skip(&r, "\r\nnext", 6, &found) == 2 && found);
    r = line_req(10);
    CHECK(read_skip(&r, "zzz", 3, &found) == 3 && !found);
}

static void test_count_any_all(void)
{
    struct read_span s;
    size_t searched = 0;
    struct read_req r = {.kind = READ_COUNT, .count = 3};
    CHECK(read_scan(&r, "ab", 2, false, &searched, &s) == READ_MORE);
    CHECK(read_scan(&r, "abcd", 4, false, &searched, &s) == READ_DONE && s.len == 3);
    r.count = 0;
    CHECK(read_scan(&r, "", 0, false, &searched, &s) == READ_DONE && s.len == 0);

    r = (struct read_req){.kind = READ_ANY, .count = 2};
    CHECK(read_scan(&r, "", 0, false, &searched, &s) == READ_MORE);
    CHECK(read_scan(&r, "abc", 3, false, &searched, &s) == READ_DONE && s.len == 2);
    CHECK(read_scan(&r, "a", 1, false, &searched, &s) == READ_DONE && s.len == 1);

    r = (struct read_req){.kind = READ_ALL, .limit = 5};
    CHECK(read_scan(&r, "abc", 3, false, &searched, &s) == READ_MORE);
    CHECK(read_scan(&r, "abc", 3, true, &searched, &s) == READ_DONE && s.len == 3);
    CHECK(read_scan(&r, "abcdef", 6, false, &searched, &s) == READ_TOO_LONG && s.len == 5);
}

/* Found by fuzzing: limit + delimiter length wrapped for a limit near SIZE_MAX, and one byte
 * read as a line too long. */
static void test_huge_limit(void)
{
    struct read_req r = line_req(SIZE_MAX);
    struct read_span span;
    size_t searched = 0;
    CHECK(read_scan(&r, "a", 1, false, &searched, &span) == READ_MORE);
}

int main(void)
{
    test_huge_limit();
    test_parse();
    test_lines();
    test_line_bytewise();
    test_line_limits();
    test_until();
    test_skip();
    test_count_any_all();
    return check_report();
}
