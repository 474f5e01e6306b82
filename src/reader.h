/* reader.h -- what a receive call asks for, and finding it in buffered bytes.
 *
 * Pure functions over a byte range, so every pattern (and a delimiter split across packets) is
 * unit-tested without sockets. conn.c feeds them the connection's input buffer. */
#ifndef READER_H
#define READER_H

#include <stdbool.h>
#include <stddef.h>

enum read_kind {
    READ_LINE,  /* "*l": up to "\n", a "\r" before it dropped */
    READ_COUNT, /* N: exactly count bytes */
    READ_ALL,   /* "*a": everything until end of stream */
    READ_ANY,   /* receiveany: 1 to count bytes */
    READ_UNTIL, /* receiveuntil: up to delim */
    READ_OBJECT /* receive_object: one MessagePack value (framed by codec.c, not here) */
};

struct read_req {
    enum read_kind kind;
    size_t count;
    const char *delim;
    size_t delim_len;
    size_t limit; /* longest line/record (LINE, UNTIL) or most bytes (ALL) */
};

enum read_status {
    READ_DONE,    /* span says what to return and what to drop */
    READ_MORE,    /* not there yet */
    READ_TOO_LONG /* over limit: return span.len bytes as partial, drop span.consumed */
};

struct read_span {
    size_t len;      /* bytes of payload at the start of the data */
    size_t consumed; /* bytes to drop from the buffer (payload plus delimiter) */
    bool skip_rest;  /* TOO_LONG: the record goes on; skip it up to its delimiter */
};

/* Fills req from a receive pattern: "*l", "l", "*a" or "a". Returns 0, or -1 if unknown. */
int read_parse_pattern(const char *pattern, struct read_req *req);

/* Looks for what req asks for in data[0..len). *searched is how far an earlier call already
 * looked for the delimiter in the same bytes (0 at first); it is updated so that a line
 * arriving a byte at a time is scanned once, not once per byte. */
enum read_status read_scan(const struct read_req *req, const char *data, size_t len, bool eof,
                           size_t *searched, struct read_span *span);

/* While skipping the rest of an over-long record: returns how many bytes of data to drop, and
 * sets *found when that includes the record's delimiter. Keeps the last delim_len-1 bytes when
 * the delimiter is not found, since it may be split across reads. */
size_t read_skip(const struct read_req *req, const char *data, size_t len, bool *found);

#endif
