/* pickle.h -- Python's pickle for plain data: a resumable scanner that finds where a pickle
 * ends (its STOP opcode) within limits, a decoder to Lua values that never imports or calls
 * anything, and an encoder that writes protocol 4.
 *
 * The scanner runs the pickle machine on kinds instead of values (what each stack entry and memo
 * slot is: a list, a dict, a set or anything else, and how deep it nests), so that it checks
 * every opcode, argument, length, stack use and memo reference before the decoder runs; the
 * decoder then only builds what the scanner vouched for. Opcodes that import or call (GLOBAL,
 * REDUCE, ...) and unknown bytes are refused by the scanner. Errors specific to pickle start with
 * "pickle: "; the limits give codec.h's and errors.h's messages (ERR_TOO_LARGE,
 * CODEC_ERR_TOO_MANY_ITEMS), nesting "pickle: nesting too deep". */
#ifndef PICKLE_H
#define PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "buf.h"
#include "codec.h"

/* What the scanner knows of a stack entry or memo slot. */
struct pickle_item {
    unsigned char kind; /* a list, dict or set (which opcodes may add to) or any other value */
    int depth;          /* containers nested in it, itself included; 0 for a scalar */
};

struct pickle_memo_slot {
    uint32_t key;
    bool used;
    struct pickle_item item;
};

/* pickle_scan keeps its place like codec_framer_scan (codec.h): call it again with the same
 * data grown by what arrived (data may move, its bytes must not change); each call scans only
 * what is new, so a pickle trickling in a byte at a time costs one pass. Once it has said
 * CODEC_OK or CODEC_ERROR it says the same again, until pickle_scanner_release readies it (and
 * frees what it allocated) for the next pickle. Given fewer bytes than it scanned, it starts
 * over. */
struct pickle_scanner {
    enum codec_status status;
    const char *err;
    size_t pos;       /* where the next opcode starts; the pickle's length once found */
    size_t seen;      /* bytes of a text argument searched for its newline already */
    size_t frame_end; /* where the current FRAME ends (0: none) */
    size_t items;     /* values pushed */
    struct pickle_item *stack;
    size_t height, stack_room, max_height;
    size_t *marks; /* the stack's height at each MARK */
    size_t nmarks, mark_room, max_marks;
    struct pickle_memo_slot *memo; /* open addressing; memo_room is 0 or a power of two */
    size_t memo_count, memo_room;
};

void pickle_scanner_init(struct pickle_scanner *s);
void pickle_scanner_release(struct pickle_scanner *s);

/* Finds the end of the first pickle in data[0..len): CODEC_OK with *frame_len (the bytes up to
 * and including its STOP), CODEC_MORE while it is incomplete and len < max_size, or CODEC_ERROR
 * with *err: a refused or unknown opcode, a malformed argument, a stack or memo misuse, more
 * than max_size bytes (a length or FRAME is refused as soon as it is read), more than max_items
 * values pushed, or nesting (MARKs open, or containers in containers) deeper than max_depth. */
enum codec_status pickle_scan(struct pickle_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err);

/* Decodes data[0..len), which must be exactly one pickle, and pushes its value: None is nil at
 * the top and luasock.null inside containers, tuples are arrays, sets and frozensets tables of
 * member -> true. With exact, lists, dicts, tuples and sets come back marked, bytes as
 * luasock.bytes and ints from 2^63 to 2^64-1 as luasock.uint64 (without exact those are an
 * error). Returns CODEC_OK, or CODEC_ERROR with *err and nothing pushed. Raises no Lua error
 * except out of memory. */
enum codec_status pickle_decode(lua_State *L, const char *data, size_t len, bool exact,
                                const char **err);

/* Encodes the Lua value at idx as a protocol 4 pickle appended to out (see docs/api.md, "Pickle",
 * for the types). On CODEC_ERROR, *err is a static message and out is left as it was. Refuses
 * functions, userdata other than luasock.null, ext values, cycles, nesting deeper than max_depth
 * and results larger than max_size. Allocates nothing in Lua and raises nothing. */
enum codec_status pickle_encode(lua_State *L, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err);

#endif
