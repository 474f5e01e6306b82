/* codec.h -- Lua values to and from MessagePack, framed on a byte stream.
 *
 * Values on the wire are plain MessagePack values one after another, with no length prefix, so
 * that any MessagePack stream reader (Python's msgpack.Unpacker on a socket) talks to us. Packing
 * goes through msgpack-c; finding where a value ends is done here, without allocating, so that a
 * hostile header is refused before anything is sized from it, and decoding reads the bytes the
 * framer vouched for straight into Lua values.
 *
 * The values of lvalues.h say what a plain Lua value cannot: luasock.null is nil inside arrays and
 * maps, marked tables say array or map, and the wrappers carry bin, uint64 and ext values. With
 * them, a value decoded exactly encodes back to the same MessagePack meaning: the same types (int,
 * uint, float, str, bin, array, map, nil, ext) and values, in the shortest forms (a float32 comes
 * back as a float64 of the same number). */
#ifndef CODEC_H
#define CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "buf.h"

#define CODEC_DEFAULT_MAX_SIZE (1024 * 1024)
#define CODEC_DEFAULT_MAX_DEPTH 100
#define CODEC_DEFAULT_MAX_ITEMS 100000

struct codec_limits {
    size_t max_size; /* largest encoded value accepted (default 1 MiB) */
    int max_depth;   /* deepest nesting of arrays/maps accepted (default 100) */
    /* Most values in one value when framing, itself and every array element, map key and map
     * value at any depth included (default 100000, at least 1): a byte of MessagePack can
     * become a 56-byte Lua table, so bytes alone do not bound what decoding costs. */
    size_t max_items;
};

enum codec_status { CODEC_OK, CODEC_MORE, CODEC_ERROR };

#define CODEC_ERR_TOO_MANY_ITEMS "too many items (max_object_items)"

/* Encodes the Lua value at index idx, appending its bytes to out. On CODEC_ERROR, *err is a short
 * static message and out is left as it was before the call. Integers go as the smallest msgpack
 * int, floats always as float64, valid UTF-8 strings as str and other strings as bin; luasock.null
 * goes as nil. A table marked luasock.array or luasock.tuple goes as an array of its elements
 * 1..#t (raw length; empty is the empty array), one marked luasock.map as a map of all its entries
 * (even if its keys are 1..n), one marked luasock.set as a map of each key to true. An unmarked
 * table whose keys are exactly 1..n goes as an array, any other (the empty one included) as a
 * map; other metatables are ignored. luasock.bytes goes as bin, luasock.uint64 as uint (shortest
 * form), luasock.ext as fixext 1/2/4/8/16 or ext 8/16/32 by its length (a timestamp is ext -1 with
 * 4, 8 or 12 bytes of data, nothing more). Refuses functions, other userdata, threads, cycles,
 * nesting deeper than max_depth (marked tables count; wrappers do not) and results larger than
 * max_size. Allocates nothing in Lua and raises nothing, so a failure always leaves out as it
 * was. */
enum codec_status codec_encode(lua_State *L, int idx, struct buf *out,
                               const struct codec_limits *limits, const char **err);

/* Finds the first complete value in data[0..len) without sizing anything from its headers (the
 * only allocation is a stack for values nested more than CODEC_SHALLOW_DEPTH deep): CODEC_OK with *frame_len
 * set, CODEC_MORE if the value is not complete yet (only while len < max_size), or CODEC_ERROR
 * with *err for malformed input (a reserved byte), nesting deeper than max_depth, a value that is or
 * would be larger than max_size ("too large"), or one of more than max_items values
 * (CODEC_ERR_TOO_MANY_ITEMS). Every element of an array or map takes at least a byte and is an
 * item, so a header whose count or length cannot fit in max_size, or whose count cannot fit in
 * max_items, is refused as soon as it is read. ext values are framed as bin values are. */
enum codec_status codec_frame(const char *data, size_t len, const struct codec_limits *limits,
                              size_t *frame_len, const char **err);

/* codec_frame for a value that arrives in pieces: the framer keeps how far it got, so each call
 * scans only what is new, and a value trickling in a byte at a time costs one pass, not one pass
 * per byte. Call codec_framer_scan again with the same data grown by what arrived (data may
 * move, its bytes must not change). Once it has said CODEC_OK or CODEC_ERROR it says the same
 * again at no cost, until codec_framer_release readies it for the next value. Given fewer bytes
 * than it already scanned, it starts over. */
#define CODEC_SHALLOW_DEPTH 8

struct codec_framer {
    enum codec_status status; /* CODEC_MORE until it has found the value's end, or failed */
    const char *err;          /* once failed */
    size_t pos;      /* where the element to scan next starts; the value's length once found */
    size_t pending;  /* entries promised by open containers and not started */
    size_t items;    /* values started */
    int depth;       /* open containers */
    int deepest;
    int room;        /* entries of left */
    uint64_t *left;  /* per open container, its entries not started; shallow or malloc'd */
    uint64_t shallow[CODEC_SHALLOW_DEPTH];
};

void codec_framer_init(struct codec_framer *f);
void codec_framer_release(struct codec_framer *f);
enum codec_status codec_framer_scan(struct codec_framer *f, const char *data, size_t len,
                                    const struct codec_limits *limits, size_t *frame_len,
                                    const char **err);

/* Decodes data[0..len), which must be exactly one value accepted by codec_frame (its max_depth
 * bounds the recursion here; the bytes are scanned again, so anything else is refused), and
 * pushes it on L. In both modes a nil inside an array or map becomes luasock.null (a nil on its
 * own stays nil; a nil or NaN map key is refused, "bad map key") and ext values become
 * luasock.ext(type, data). Plainly, arrays and maps are plain tables, bin is a string and an
 * integer above 2^63-1 the nearest float. With exact, arrays and maps come back marked
 * luasock.array and luasock.map, bin as luasock.bytes, integers above 2^63-1 as luasock.uint64
 * (see lvalues.h). Returns CODEC_OK, or CODEC_ERROR with *err and nothing pushed. Raises no Lua
 * error except out of memory (nothing is left to free then). */
enum codec_status codec_decode(lua_State *L, const char *data, size_t len, bool exact,
                               const char **err);

#endif
