/* fuzz_reader.c -- libFuzzer target for reader.c: receive patterns over bytes that arrive in
 * random pieces.
 *
 * The input is a header choosing the read request and how the stream is split, then the stream:
 *
 *   byte 0     kind = byte % 5: 0 "*l", 1 receiveuntil, 2 receive(N), 3 receiveany, 4 "*a";
 *              split = byte / 5 % 4: 0 pieces of 1..64 bytes, 1 one byte at a time,
 *              2 all at once, 3 pieces of 1..4 or 1..300 bytes
 *   bytes 1-2  amount = byte1 | byte2 << 8, taken modulo 4097, is the limit (l, until, a) or the
 *              count (N, receiveany: at least 1); byte2 = 0xff means math.maxinteger - byte1
 *              instead, about the largest a script can set (max_line = math.maxinteger) or ask
 *              for (receive(math.maxinteger)). Not more: read_scan's limit + delim_len + 1
 *              would wrap for a limit within a few bytes of SIZE_MAX, which the loader's
 *              settings check and conn:setoption keep it from getting.
 *   byte 3     delimiter length - 1, modulo 8 (receiveuntil)
 *   bytes 4-7  seed of the split points
 *   then       the delimiter (receiveuntil only), then the stream
 *
 * The stream is fed the way conn.c feeds its input buffer: append a piece, then read_skip while
 * skipping the rest of an over-long record, read_scan, consume, repeat; end of stream after the
 * last piece. Every call is checked against reader.h (spans within the data and the limits, the
 * delimiter where the span says, *searched only an optimisation: a fresh scan agrees), each on an
 * exact-size copy of the buffered bytes so ASan sees any read past them. Then the records must
 * be the ones a whole-stream model finds, whatever the split: every record, every over-long
 * partial and what is left over. */
#include <stdbool.h>
#include <string.h>

#include <lua.h>

#include "fuzz.h"
#include "reader.h"

#define HEADER 8
#define NONE SIZE_MAX

struct setup {
    struct read_req req;
    int split;
    uint32_t rng;
    const char *stream;
    size_t n;
};

struct record {
    enum read_status st;
    size_t off; /* where the payload starts in the stream */
    size_t len;
};

struct records {
    struct record *r;
    size_t count, cap;
    bool stopped;      /* the connection would stop reading: "*a" done or too large, N = 0 */
    size_t remainder;  /* bytes left buffered at the end */
    bool skipping;     /* still skipping an over-long record at the end */
};

/* First delimiter in data[0..len), the plain way. */
static size_t find_delim(const struct read_req *req, const char *data, size_t len)
{
    for (size_t i = 0; req->delim_len <= len && i <= len - req->delim_len; i++) {
        if (memcmp(data + i, req->delim, req->delim_len) == 0)
            return i;
    }
    return NONE;
}

/* Line payloads drop a "\r" before the "\n". */
static size_t stripped(const struct read_req *req, const char *data, size_t payload)
{
    if (req->kind == READ_LINE && payload > 0 && data[payload - 1] == '\r')
        return payload - 1;
    return payload;
}

/* len >= limit + d + slack, without the sum wrapping. */
static bool at_threshold(const struct read_req *req, size_t len)
{
    size_t extra = req->delim_len + (req->kind == READ_LINE ? 1 : 0);
    return len >= req->limit && len - req->limit >= extra;
}

static void add(struct records *rs, enum read_status st, size_t off, size_t len)
{
    FUZZ_CHECK(rs->count < rs->cap);
    rs->r[rs->count++] = (struct record){st, off, len};
}

static uint32_t next_random(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static size_t piece_size(struct setup *s)
{
    uint32_t r = next_random(&s->rng);
    switch (s->split) {
    case 0:
        return 1 + r % 64;
    case 1:
        return 1;
    case 2:
        return s->n;
    default:
        return 1 + r % ((r >> 16) % 2 ? 4 : 300);
    }
}

/* Checks one read_scan result against reader.h. */
static void check_span(const struct read_req *req, const char *data, size_t len, bool eof,
                       enum read_status st, const struct read_span *span, size_t searched)
{
    if (st != READ_MORE)
        FUZZ_CHECK(span->len <= span->consumed && span->consumed <= len);
    switch (req->kind) {
    case READ_LINE:
    case READ_UNTIL: {
        size_t d = req->delim_len, hit = find_delim(req, data, len);
        if (st == READ_MORE) {
            FUZZ_CHECK(hit == NONE && !at_threshold(req, len));
            FUZZ_CHECK(searched == len);
        } else if (st == READ_DONE) {
            FUZZ_CHECK(hit != NONE && span->consumed == hit + d);
            FUZZ_CHECK(span->len == stripped(req, data, hit) && span->len <= req->limit);
            FUZZ_CHECK(!span->skip_rest);
        } else {
            FUZZ_CHECK(st == READ_TOO_LONG && span->len == req->limit);
            if (span->skip_rest) {
                FUZZ_CHECK(hit == NONE && at_threshold(req, len));
                FUZZ_CHECK(span->consumed == req->limit);
            } else {
                FUZZ_CHECK(hit != NONE && span->consumed == hit + d);
                FUZZ_CHECK(stripped(req, data, hit) > req->limit);
            }
        }
        break;
    }
    case READ_COUNT:
        FUZZ_CHECK(st != READ_TOO_LONG);
        if (st == READ_DONE)
            FUZZ_CHECK(span->len == req->count && span->consumed == req->count);
        else
            FUZZ_CHECK(len < req->count);
        break;
    case READ_ANY:
        FUZZ_CHECK(st != READ_TOO_LONG);
        if (st == READ_DONE)
            FUZZ_CHECK(span->len >= 1 && span->consumed == span->len
                       && span->len == (len < req->count ? len : req->count));
        else
            FUZZ_CHECK(len == 0);
        break;
    case READ_ALL:
        if (st == READ_TOO_LONG)
            FUZZ_CHECK(len > req->limit && span->len == req->limit
                       && span->consumed == req->limit);
        else if (st == READ_DONE)
            FUZZ_CHECK(eof && len <= req->limit && span->len == len && span->consumed == len);
        else
            FUZZ_CHECK(!eof && len <= req->limit);
        break;
    case READ_OBJECT:
        break;
    }
}

/* An exact-size copy of bytes, so that ASan catches a read past them. */
static char *copy_of(const char *bytes, size_t n)
{
    char *data = malloc(n);
    FUZZ_CHECK(data != NULL || n == 0);
    if (n > 0)
        memcpy(data, bytes, n);
    return data;
}

/* Feeds the stream in pieces as conn.c does and records what each read returns. */
static void feed(struct setup *s, struct records *rs)
{
    const struct read_req *req = &s->req;
    size_t start = 0, fed = 0, searched = 0;
    bool eof = false, skipping = false;
    while (!rs->stopped) {
        if (fed < s->n) {
            size_t piece = piece_size(s);
            fed += piece < s->n - fed ? piece : s->n - fed;
        } else if (!eof) {
            eof = true;
        } else {
            break;
        }
        for (;;) {
            size_t len = fed - start;
            char *data = copy_of(s->stream + start, fed - start);
            if (skipping) {
                bool found;
                size_t drop = read_skip(req, data, len, &found);
                size_t hit = find_delim(req, data, len), d = req->delim_len;
                FUZZ_CHECK(drop <= len);
                if (found)
                    FUZZ_CHECK(hit != NONE && drop == hit + d);
                else
                    FUZZ_CHECK(hit == NONE && drop == (len >= d ? len - (d - 1) : 0));
                start += drop;
                skipping = !found;
                free(data);
                if (skipping)
                    break;
                len = fed - start;
                data = copy_of(s->stream + start, fed - start);
            }

            struct read_span span, fresh_span;
            size_t fresh = 0;
            FUZZ_CHECK(searched <= len);
            enum read_status st = read_scan(req, data, len, eof, &searched, &span);
            enum read_status fresh_st = read_scan(req, data, len, eof, &fresh, &fresh_span);
            FUZZ_CHECK(st == fresh_st);
            if (st != READ_MORE)
                FUZZ_CHECK(span.len == fresh_span.len && span.consumed == fresh_span.consumed
                           && span.skip_rest == fresh_span.skip_rest);
            check_span(req, data, len, eof, st, &span, searched);
            free(data);
            if (st == READ_MORE)
                break;

            add(rs, st, start, span.len);
            start += span.consumed;
            searched = 0;
            if (st == READ_TOO_LONG && req->kind == READ_ALL)
                rs->stopped = true; /* conn.c closes the connection */
            else if (st == READ_TOO_LONG)
                skipping = span.skip_rest;
            else if (req->kind == READ_ALL || span.consumed == 0)
                rs->stopped = true; /* the stream is over, or N = 0 would repeat forever */
            if (rs->stopped)
                break;
        }
    }
    rs->remainder = fed - start;
    rs->skipping = skipping;
}

/* What the whole stream holds, read without pieces. */
static void model(const struct setup *s, struct records *rs)
{
    const struct read_req *req = &s->req;
    const char *in = s->stream;
    size_t n = s->n, pos = 0;
    switch (req->kind) {
    case READ_LINE:
    case READ_UNTIL:
        for (;;) {
            size_t hit = find_delim(req, in + pos, n - pos);
            if (hit == NONE)
                break;
            size_t payload = stripped(req, in + pos, hit);
            if (payload > req->limit)
                add(rs, READ_TOO_LONG, pos, req->limit);
            else
                add(rs, READ_DONE, pos, payload);
            pos += hit + req->delim_len;
        }
        rs->remainder = n - pos;
        if (at_threshold(req, n - pos)) {
            /* Over long and never ended: its start is returned, the rest skipped but for the
             * bytes that may begin a delimiter. */
            add(rs, READ_TOO_LONG, pos, req->limit);
            rs->remainder = req->delim_len - 1;
            rs->skipping = true;
        }
        break;
    case READ_COUNT:
        if (req->count == 0) {
            add(rs, READ_DONE, 0, 0);
            rs->stopped = true;
            break;
        }
        for (; n - pos >= req->count; pos += req->count)
            add(rs, READ_DONE, pos, req->count);
        rs->remainder = n - pos;
        break;
    case READ_ALL:
        if (n > req->limit) {
            add(rs, READ_TOO_LONG, 0, req->limit);
        } else {
            add(rs, READ_DONE, 0, n);
            rs->remainder = 0;
        }
        rs->stopped = true;
        break;
    case READ_ANY:
    case READ_OBJECT:
        break;
    }
}

static bool parse_setup(const uint8_t *data, size_t size, struct setup *s)
{
    static const enum read_kind kinds[] = {READ_LINE, READ_UNTIL, READ_COUNT, READ_ANY, READ_ALL};
    if (size < HEADER)
        return false;
    size_t amount = data[2] == 0xff ? (size_t)LUA_MAXINTEGER - data[1]
                                    : ((size_t)data[1] | (size_t)data[2] << 8) % 4097;
    memset(s, 0, sizeof *s);
    s->req.kind = kinds[data[0] % 5];
    s->split = data[0] / 5 % 4;
    s->rng = ((uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16
              | (uint32_t)data[7] << 24) | 1;
    size_t used = HEADER;
    switch (s->req.kind) {
    case READ_LINE:
        s->req.delim = "\n";
        s->req.delim_len = 1;
        s->req.limit = amount;
        break;
    case READ_UNTIL:
        s->req.delim_len = 1 + data[3] % 8;
        if (size - used < s->req.delim_len)
            return false;
        s->req.delim = (const char *)data + used;
        used += s->req.delim_len;
        s->req.limit = amount;
        break;
    case READ_COUNT:
        s->req.count = amount;
        break;
    case READ_ANY:
        s->req.count = amount > 0 ? amount : 1;
        break;
    default:
        s->req.limit = amount;
        break;
    }
    s->stream = (const char *)data + used;
    s->n = size - used;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct setup s;
    if (!parse_setup(data, size, &s))
        return 0;
    /* The delimiter too gets an exact-size copy of its own. */
    char *delim = copy_of(s.req.delim, s.req.delim_len);
    s.req.delim = delim;

    size_t cap = 2 * s.n + 4;
    struct records got = {.r = malloc(cap * sizeof *got.r), .cap = cap};
    struct records want = {.r = malloc(cap * sizeof *want.r), .cap = cap};
    FUZZ_CHECK(got.r != NULL && want.r != NULL);
    feed(&s, &got);

    if (s.req.kind == READ_ANY) {
        /* Pieces decide how much each read gets; together they are the whole stream. */
        size_t pos = 0;
        for (size_t i = 0; i < got.count; i++) {
            FUZZ_CHECK(got.r[i].st == READ_DONE && got.r[i].off == pos);
            FUZZ_CHECK(got.r[i].len >= 1 && got.r[i].len <= s.req.count);
            pos += got.r[i].len;
        }
        FUZZ_CHECK(pos == s.n && got.remainder == 0);
    } else {
        model(&s, &want);
        FUZZ_CHECK(got.count == want.count);
        for (size_t i = 0; i < got.count; i++) {
            FUZZ_CHECK(got.r[i].st == want.r[i].st);
            FUZZ_CHECK(got.r[i].off == want.r[i].off && got.r[i].len == want.r[i].len);
        }
        FUZZ_CHECK(got.stopped == want.stopped);
        if (!got.stopped) { /* after a stop, what is buffered depends on the pieces */
            FUZZ_CHECK(got.remainder == want.remainder);
            FUZZ_CHECK(got.skipping == want.skipping);
        }
    }
    free(got.r);
    free(want.r);
    free(delim);
    return 0;
}
