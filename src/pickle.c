/* pickle.c -- PLACEHOLDER until the pickle branch lands: refuses everything. */
#include "pickle.h"

#define ERR_NOT_YET "pickle: not available yet"

void pickle_scanner_init(struct pickle_scanner *s)
{
    s->status = CODEC_MORE;
    s->pos = 0;
}

void pickle_scanner_release(struct pickle_scanner *s)
{
    pickle_scanner_init(s);
}

enum codec_status pickle_scan(struct pickle_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err)
{
    (void)s, (void)data, (void)len, (void)limits, (void)frame_len;
    *err = ERR_NOT_YET;
    return CODEC_ERROR;
}

enum codec_status pickle_decode(lua_State *L, const char *data, size_t len, bool exact,
                                const char **err)
{
    (void)L, (void)data, (void)len, (void)exact;
    *err = ERR_NOT_YET;
    return CODEC_ERROR;
}

enum codec_status pickle_encode(lua_State *L, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err)
{
    (void)L, (void)idx, (void)out, (void)limits;
    *err = ERR_NOT_YET;
    return CODEC_ERROR;
}
