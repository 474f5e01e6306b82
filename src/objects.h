/* objects.h -- the object codecs a connection speaks in receive_object/send_object: MessagePack
 * (codec.c), pickle (pickle.c) and JSON lines (lua-cjson, through scripts/luasock/json.lua),
 * behind one interface: a scanner that finds where the next value ends, resumable so that a value
 * trickling in costs one pass; a decoder; an encoder. conn.c owns the bytes and calls these. */
#ifndef OBJECTS_H
#define OBJECTS_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "buf.h"
#include "codec.h"

enum object_codec { OBJECT_MSGPACK, OBJECT_PICKLE, OBJECT_JSON };

/* The names settings and conn:setoption take, in enum order, NULL-terminated. */
extern const char *const object_codec_names[];

struct object_scanner;

/* A scanner for one value of codec, or NULL when out of memory. It lives only while a value is
 * incomplete: idle connections do not pay for it. */
struct object_scanner *object_scanner_new(enum object_codec codec);
void object_scanner_free(struct object_scanner *s);

/* Where the value at the head of data[0..len) ends: CODEC_OK with *frame_len, CODEC_MORE, or
 * CODEC_ERROR with *err. For JSON, limits->max_size is the longest line (the script's max_line)
 * and the frame includes its "\n". Call again with the same data grown (see codec_framer_scan). */
enum codec_status object_scan(struct object_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err);

/* Decodes one frame that object_scan found, on the running thread L, pushing the value.
 * CODEC_ERROR leaves nothing pushed and *err valid until the next call. A JSON error is one the
 * connection can survive (the next line is the next value): *recoverable says so. Raises only
 * out of memory (the handler's, like every allocation of its own). */
enum codec_status object_decode(lua_State *L, enum object_codec codec, const char *data,
                                size_t len, bool exact, const char **err, bool *recoverable);

/* Appends the encoding of the value at idx to out; on CODEC_ERROR out is as it was. MessagePack
 * and pickle allocate nothing in Lua and raise nothing; JSON makes its text in Lua and may raise
 * out of memory, before anything is appended. */
enum codec_status object_encode(lua_State *L, enum object_codec codec, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err);

#endif
