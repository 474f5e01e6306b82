/* reader.c -- matching receive patterns against buffered bytes; see reader.h. */
#include <string.h>

#include "reader.h"

int read_parse_pattern(const char *pattern, struct read_req *req)
{
    if (pattern[0] == '*')
        pattern++;
    if (strcmp(pattern, "l") == 0) {
        req->kind = READ_LINE;
        req->delim = "\n";
        req->delim_len = 1;
        return 0;
    }
    if (strcmp(pattern, "a") == 0) {
        req->kind = READ_ALL;
        return 0;
    }
    return -1;
}

static enum read_status scan_delimited(const struct read_req *req, const char *data, size_t len,
                                       size_t *searched, struct read_span *span)
{
    size_t d = req->delim_len;
    size_t from = *searched >= d ? *searched - (d - 1) : 0;
    /* memmem finds a one-byte delimiter with memchr too, but only after work of its own: 25
     * instructions more per pipelined line (cachegrind). */
    const char *hit = d == 1 ? memchr(data + from, req->delim[0], len - from)
                             : memmem(data + from, len - from, req->delim, d);
    /* A line may end in "\r\n", so its payload may be one byte longer than the limit. */
    size_t slack = req->kind == READ_LINE ? 1 : 0;

    if (hit == NULL) {
        *searched = len;
        /* Subtracting, not adding: a limit near SIZE_MAX must not wrap. */
        if (len < d + slack || len - d - slack < req->limit)
            return READ_MORE;
        span->len = span->consumed = req->limit;
        span->skip_rest = true;
        return READ_TOO_LONG;
    }

    size_t payload = (size_t)(hit - data);
    span->consumed = payload + d;
    if (req->kind == READ_LINE && payload > 0 && data[payload - 1] == '\r')
        payload--;
    if (payload > req->limit) {
        span->len = req->limit;
        span->skip_rest = false;
        return READ_TOO_LONG;
    }
    span->len = payload;
    return READ_DONE;
}

enum read_status read_scan(const struct read_req *req, const char *data, size_t len, bool eof,
                           size_t *searched, struct read_span *span)
{
    span->skip_rest = false;
    switch (req->kind) {
    case READ_LINE:
    case READ_UNTIL:
        return scan_delimited(req, data, len, searched, span);
    case READ_COUNT:
        if (len < req->count)
            return READ_MORE;
        span->len = span->consumed = req->count;
        return READ_DONE;
    case READ_ANY:
        if (len == 0)
            return READ_MORE;
        span->len = span->consumed = len < req->count ? len : req->count;
        return READ_DONE;
    case READ_OBJECT:
        break;
    case READ_ALL:
        if (len > req->limit) {
            span->len = span->consumed = req->limit;
            return READ_TOO_LONG;
        }
        if (!eof)
            return READ_MORE;
        span->len = span->consumed = len;
        return READ_DONE;
    }
    return READ_MORE;
}

size_t read_skip(const struct read_req *req, const char *data, size_t len, bool *found)
{
    size_t d = req->delim_len;
    const char *hit = memmem(data, len, req->delim, d);
    *found = hit != NULL;
    if (hit != NULL)
        return (size_t)(hit - data) + d;
    return len >= d ? len - (d - 1) : 0;
}
