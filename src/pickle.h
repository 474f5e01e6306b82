/* pickle.h -- Python's pickle for plain data: a resumable scanner that finds where a pickle
 * ends (its STOP opcode) within limits, a decoder to Lua values that never imports or calls
 * anything, and an encoder that writes protocol 4. PLACEHOLDER until the pickle branch lands. */
#ifndef PICKLE_H
#define PICKLE_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "buf.h"
#include "codec.h"

struct pickle_scanner {
    enum codec_status status;
    size_t pos;
};

void pickle_scanner_init(struct pickle_scanner *s);
void pickle_scanner_release(struct pickle_scanner *s);
enum codec_status pickle_scan(struct pickle_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err);
enum codec_status pickle_decode(lua_State *L, const char *data, size_t len, bool exact,
                                const char **err);
enum codec_status pickle_encode(lua_State *L, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err);

#endif
