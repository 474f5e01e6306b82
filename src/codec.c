/* codec.c -- MessagePack: framing, decoding and encoding; see codec.h.
 *
 * Framing and decoding are our own. The framer checks every header against the limits before
 * anything trusts it, so the decoder reads the validated bytes straight into Lua values: no
 * intermediate objects, no allocation but Lua's own (a memory error is raised with nothing of
 * ours to free), and no depth of its own to work around (msgpack-c's unpacker stopped at 32
 * levels). msgpack-c is still used for packing: its packer writes through our callback (so a
 * refused write stops it with nothing allocated) and picks the shortest form of every header
 * and number exactly as Python's packb does, which the byte-for-byte tests rely on. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "errors.h"
#include "tablepath.h"
#include "utf8.h"
#include "lvalues.h"

#define ERR_MALFORMED "malformed"
#define ERR_TOO_DEEP "nesting too deep"
#define ERR_CYCLE "cycle in table"
#define ERR_BAD_KEY "bad map key"

/* ---- Finding where a value ends ---- */

enum head_kind { HEAD_SCALAR, HEAD_BYTES, HEAD_ARRAY, HEAD_MAP, HEAD_EXT, HEAD_RESERVED };

/* What a value's first byte says about it. */
struct head {
    enum head_kind kind;
    size_t size;    /* bytes of header: the whole of a scalar, type and length of the others */
    uint32_t count; /* str/bin/ext body bytes or array/map entries, once head_count has run */
};

/* The type bytes 0xc0..0xdf, whose length (if any) follows them in the next 1, 2 or 4 bytes. */
static const struct {
    unsigned char kind, size;
} typed_heads[32] = {
    [0x00] = {HEAD_SCALAR, 1},   /* nil */
    [0x01] = {HEAD_RESERVED, 1}, /* never used */
    [0x02] = {HEAD_SCALAR, 1},   /* false */
    [0x03] = {HEAD_SCALAR, 1},   /* true */
    [0x04] = {HEAD_BYTES, 2},    /* bin 8, 16, 32 */
    [0x05] = {HEAD_BYTES, 3},
    [0x06] = {HEAD_BYTES, 5},
    [0x07] = {HEAD_EXT, 3},      /* ext 8, 16, 32: the length, then the ext type */
    [0x08] = {HEAD_EXT, 4},
    [0x09] = {HEAD_EXT, 6},
    [0x0a] = {HEAD_SCALAR, 5},   /* float 32, 64 */
    [0x0b] = {HEAD_SCALAR, 9},
    [0x0c] = {HEAD_SCALAR, 2},   /* uint 8, 16, 32, 64 */
    [0x0d] = {HEAD_SCALAR, 3},
    [0x0e] = {HEAD_SCALAR, 5},
    [0x0f] = {HEAD_SCALAR, 9},
    [0x10] = {HEAD_SCALAR, 2},   /* int 8, 16, 32, 64 */
    [0x11] = {HEAD_SCALAR, 3},
    [0x12] = {HEAD_SCALAR, 5},
    [0x13] = {HEAD_SCALAR, 9},
    [0x14] = {HEAD_EXT, 2},      /* fixext 1, 2, 4, 8, 16: the ext type */
    [0x15] = {HEAD_EXT, 2},
    [0x16] = {HEAD_EXT, 2},
    [0x17] = {HEAD_EXT, 2},
    [0x18] = {HEAD_EXT, 2},
    [0x19] = {HEAD_BYTES, 2},    /* str 8, 16, 32 */
    [0x1a] = {HEAD_BYTES, 3},
    [0x1b] = {HEAD_BYTES, 5},
    [0x1c] = {HEAD_ARRAY, 3},    /* array 16, 32 */
    [0x1d] = {HEAD_ARRAY, 5},
    [0x1e] = {HEAD_MAP, 3},      /* map 16, 32 */
    [0x1f] = {HEAD_MAP, 5},
};

static struct head head_classify(unsigned char b)
{
    if (b <= 0x7f || b >= 0xe0)
        return (struct head){HEAD_SCALAR, 1, 0}; /* fixint */
    if (b <= 0x8f)
        return (struct head){HEAD_MAP, 1, b & 0x0f};
    if (b <= 0x9f)
        return (struct head){HEAD_ARRAY, 1, b & 0x0f};
    if (b <= 0xbf)
        return (struct head){HEAD_BYTES, 1, b & 0x1f};
    return (struct head){typed_heads[b - 0xc0].kind, typed_heads[b - 0xc0].size, 0};
}

static bool head_is_container(const struct head *h)
{
    return h->kind == HEAD_ARRAY || h->kind == HEAD_MAP;
}

/* What follows the header: bytes of a str/bin/ext, values of an array, keys and values of a map.
 * Each of those values takes a byte at least. */
static uint64_t head_body(const struct head *h)
{
    return h->kind == HEAD_MAP ? 2 * (uint64_t)h->count : h->count;
}

/* Reads the big-endian length that follows the type byte; p holds the whole header. A fixext's
 * length is in its type byte, and an ext header ends with the ext type, after the length. */
static void head_count(struct head *h, const unsigned char *p)
{
    if (h->kind == HEAD_SCALAR)
        return;
    if (h->kind == HEAD_EXT && p[0] >= 0xd4) {
        h->count = 1u << (p[0] - 0xd4);
        return;
    }
    size_t end = h->kind == HEAD_EXT ? h->size - 1 : h->size;
    for (size_t i = 1; i < end; i++)
        h->count = h->count << 8 | p[i];
}

struct scan {
    const unsigned char *data;
    size_t len;
    size_t pos;
    size_t max_size;
    size_t pending; /* entries promised by open containers and not started: a byte each at least */
    size_t items;   /* values started, the one being scanned included */
    size_t max_items;
    int max_depth;
    int deepest; /* deepest container seen; a top-level array or map is 1 */
    const char *err;
};

static struct scan scan_start(const char *data, size_t len, const struct codec_limits *limits)
{
    return (struct scan){.data = (const unsigned char *)data, .len = len,
                         .max_size = limits->max_size, .max_depth = limits->max_depth,
                         .max_items = limits->max_items};
}

static enum codec_status scan_fail(struct scan *s, const char *err)
{
    s->err = err;
    return CODEC_ERROR;
}

/* Reads the header at s->pos and checks it against the limits before anything trusts its count.
 * The room left for this value is max_size minus what came before and a byte for each entry
 * still promised, so pos + pending never exceeds max_size; likewise every entry promised is an
 * item to come, so items + pending never exceeds max_items. */
static enum codec_status scan_head(struct scan *s, int depth, struct head *h)
{
    size_t room = s->max_size - s->pos - s->pending;
    if (room == 0)
        return scan_fail(s, ERR_TOO_LARGE);
    if (s->pos == s->len)
        return CODEC_MORE;
    *h = head_classify(s->data[s->pos]);
    if (h->kind == HEAD_RESERVED)
        return scan_fail(s, ERR_MALFORMED);
    if (head_is_container(h) && depth >= s->max_depth)
        return scan_fail(s, ERR_TOO_DEEP);
    if (h->size > room)
        return scan_fail(s, ERR_TOO_LARGE);
    if (s->len - s->pos < h->size)
        return CODEC_MORE;
    head_count(h, s->data + s->pos);
    if (head_body(h) > room - h->size)
        return scan_fail(s, ERR_TOO_LARGE);
    if (s->items > s->max_items
        || (head_is_container(h) && head_body(h) > s->max_items - s->items - s->pending))
        return scan_fail(s, CODEC_ERR_TOO_MANY_ITEMS);
    s->pos += h->size;
    return CODEC_OK;
}

void codec_framer_init(struct codec_framer *f)
{
    *f = (struct codec_framer){.left = f->shallow, .room = CODEC_SHALLOW_DEPTH,
                               .status = CODEC_MORE};
}

void codec_framer_release(struct codec_framer *f)
{
    if (f->left != f->shallow)
        free(f->left);
    codec_framer_init(f);
}

/* Makes room for one more open container. */
static bool framer_grow(struct codec_framer *f)
{
    if (f->depth < f->room)
        return true;
    int room = f->room * 2;
    uint64_t *left = malloc((size_t)room * sizeof *left);
    if (left == NULL)
        return false;
    memcpy(left, f->left, (size_t)f->depth * sizeof *left);
    if (f->left != f->shallow)
        free(f->left);
    f->left = left;
    f->room = room;
    return true;
}

/* Steps over the element at s->pos, one level of f's stack at a time (no recursion: the depth
 * is the peer's choice). On CODEC_MORE everything is as before the element, so the next call
 * starts again at it rather than at the value's first byte. */
static enum codec_status scan_element(struct scan *s, struct codec_framer *f)
{
    struct head h;
    size_t start = s->pos;
    if (f->depth > 0) {
        f->left[f->depth - 1]--;
        s->pending--;
    }
    s->items++;
    enum codec_status st = scan_head(s, f->depth, &h);
    if (st == CODEC_OK && !head_is_container(&h)) {
        if (s->len - s->pos < head_body(&h))
            st = CODEC_MORE;
        else
            s->pos += head_body(&h);
    } else if (st == CODEC_OK) {
        if (!framer_grow(f))
            return scan_fail(s, ERR_NO_MEMORY);
        f->left[f->depth++] = head_body(&h);
        s->pending += head_body(&h);
        if (f->depth > s->deepest)
            s->deepest = f->depth;
    }
    if (st == CODEC_MORE) {
        s->pos = start;
        s->items--;
        if (f->depth > 0) {
            f->left[f->depth - 1]++;
            s->pending++;
        }
    }
    return st;
}

static enum codec_status scan_resume(struct scan *s, struct codec_framer *f)
{
    s->pos = f->pos;
    s->pending = f->pending;
    s->items = f->items;
    s->deepest = f->deepest;
    enum codec_status st;
    do {
        st = scan_element(s, f);
        while (st == CODEC_OK && f->depth > 0 && f->left[f->depth - 1] == 0)
            f->depth--;
    } while (st == CODEC_OK && f->depth > 0);
    f->pos = s->pos;
    f->pending = s->pending;
    f->items = s->items;
    f->deepest = s->deepest;
    return st;
}

enum codec_status codec_framer_scan(struct codec_framer *f, const char *data, size_t len,
                                    const struct codec_limits *limits, size_t *frame_len,
                                    const char **err)
{
    /* Bytes the framer had scanned are gone: whatever it kept is about other bytes. */
    if (f->pos > len)
        codec_framer_release(f);
    if (f->status == CODEC_MORE) {
        struct scan s = scan_start(data, len, limits);
        f->status = scan_resume(&s, f);
        f->err = s.err;
    }
    if (f->status == CODEC_OK)
        *frame_len = f->pos;
    else if (f->status == CODEC_ERROR)
        *err = f->err;
    return f->status;
}

enum codec_status codec_frame(const char *data, size_t len, const struct codec_limits *limits,
                              size_t *frame_len, const char **err)
{
    struct codec_framer f;
    codec_framer_init(&f);
    enum codec_status st = codec_framer_scan(&f, data, len, limits, frame_len, err);
    codec_framer_release(&f);
    return st;
}

/* ---- Decoding ---- */

/* The bytes were scanned first, so every header here is whole and every length is backed by the
 * bytes that follow it: decoding reads them straight into Lua values, with no bounds to check. */
struct dec {
    lua_State *L;
    const unsigned char *data;
    size_t pos;
    bool exact;
    const char *err;
};

static uint64_t read_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* A uint64 above math.maxinteger has no Lua integer: exactly, it becomes a luasock.uint64;
 * otherwise the nearest float. */
static void push_uint(struct dec *d, uint64_t u)
{
    if (u <= (uint64_t)LUA_MAXINTEGER)
        lua_pushinteger(d->L, (lua_Integer)u);
    else if (d->exact)
        lvalues_push_uint64(d->L, u);
    else
        lua_pushnumber(d->L, (lua_Number)u);
}

/* int 8, 16, 32 or 64 (n bytes at p), sign-extended. */
static void push_int(lua_State *L, const unsigned char *p, size_t n)
{
    uint64_t u = read_be(p, n);
    if (n < 8 && (u >> (8 * n - 1)) != 0)
        u |= UINT64_MAX << (8 * n);
    lua_pushinteger(L, (lua_Integer)u);
}

/* float32 becomes a Lua float (a double) holding the same number. */
static void push_float(lua_State *L, const unsigned char *p, size_t n)
{
    uint64_t bits = read_be(p, n);
    if (n == 4) {
        uint32_t bits32 = (uint32_t)bits;
        float f;
        memcpy(&f, &bits32, sizeof f);
        lua_pushnumber(L, (lua_Number)f);
    } else {
        double f;
        memcpy(&f, &bits, sizeof f);
        lua_pushnumber(L, (lua_Number)f);
    }
}

/* A value whose header is all of it. A nil inside an array or map is luasock.null, so that the
 * entry is there (Lua tables cannot hold nil); a nil on its own stays nil. */
static void push_scalar(struct dec *d, const unsigned char *p, bool inside)
{
    lua_State *L = d->L;
    unsigned char b = p[0];
    if (b <= 0x7f)
        lua_pushinteger(L, b);
    else if (b >= 0xe0)
        lua_pushinteger(L, (lua_Integer)b - 0x100);
    else if (b == 0xc0 && inside)
        lvalues_push_null(L);
    else if (b == 0xc0)
        lua_pushnil(L);
    else if (b == 0xc2 || b == 0xc3)
        lua_pushboolean(L, b == 0xc3);
    else if (b == 0xca || b == 0xcb)
        push_float(L, p + 1, b == 0xca ? 4 : 8);
    else if (b >= 0xcc && b <= 0xcf)
        push_uint(d, read_be(p + 1, (size_t)1 << (b - 0xcc)));
    else /* int 8..64 */
        push_int(L, p + 1, (size_t)1 << (b - 0xd0));
}

/* str always as a Lua string; bin as one too, or as a luasock.bytes exactly. */
static void push_bytes(struct dec *d, unsigned char type, const unsigned char *body, size_t len)
{
    bool bin = type >= 0xc4 && type <= 0xc6;
    if (bin && d->exact)
        lvalues_push_bytes(d->L, (const char *)body, len);
    else
        lua_pushlstring(d->L, (const char *)body, len);
}

/* Lua tables cannot hold a nil or NaN key, and lua_rawset would raise for one. */
static bool key_ok(lua_State *L, int idx)
{
    if (lua_isnil(L, idx))
        return false;
    if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
        lua_Number n = lua_tonumber(L, idx);
        return n == n;
    }
    return true;
}

/* lua_createtable takes an int size hint; a hint is only a hint, so a huge one is dropped. */
static int size_hint(uint32_t n)
{
    return n <= INT_MAX ? (int)n : 0;
}

static int decode_value(struct dec *d, bool inside);

/* The entries of an array or map whose header was just read. A level holds the table, a key, a
 * value and what a value's pusher needs for a moment (a metatable). */
static int decode_container(struct dec *d, const struct head *h)
{
    lua_State *L = d->L;
    bool map = h->kind == HEAD_MAP;
    if (!lua_checkstack(L, 4)) {
        d->err = ERR_TOO_DEEP;
        return -1;
    }
    lua_createtable(L, map ? 0 : size_hint(h->count), map ? size_hint(h->count) : 0);
    for (uint32_t i = 0; i < h->count; i++) {
        if (!map) {
            if (decode_value(d, true) != 0)
                return -1;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
            continue;
        }
        /* A map key is a value on its own: a nil key is refused, not made luasock.null. */
        if (decode_value(d, false) != 0 || decode_value(d, true) != 0)
            return -1;
        if (!key_ok(L, -2)) {
            d->err = ERR_BAD_KEY;
            return -1;
        }
        lua_rawset(L, -3);
    }
    if (d->exact)
        lvalues_mark(L, -1, map ? LV_MAP : LV_ARRAY);
    return 0;
}

/* Decodes the value at d->pos and pushes it; inside says whether an array or map holds it. */
static int decode_value(struct dec *d, bool inside)
{
    const unsigned char *p = d->data + d->pos;
    struct head h = head_classify(p[0]);
    head_count(&h, p);
    d->pos += h.size;
    switch (h.kind) {
    case HEAD_SCALAR:
        push_scalar(d, p, inside);
        return 0;
    case HEAD_BYTES:
        push_bytes(d, p[0], p + h.size, h.count);
        break;
    case HEAD_EXT: /* its type is the last byte of its header */
        lvalues_push_ext(d->L, (int8_t)p[h.size - 1], (const char *)p + h.size, h.count);
        break;
    case HEAD_ARRAY:
    case HEAD_MAP:
        return decode_container(d, &h);
    default: /* reserved: the scan refuses it first */
        d->err = ERR_MALFORMED;
        return -1;
    }
    d->pos += h.count;
    return 0;
}

enum codec_status codec_decode(lua_State *L, const char *data, size_t len, bool exact,
                               const char **err)
{
    /* Scanning first refuses reserved bytes and truncated or trailing ones, so that decoding can
     * trust every header. Without a size limit a truncated value is "more", so here it reads as
     * malformed. */
    struct codec_limits none = {SIZE_MAX, INT_MAX, SIZE_MAX};
    struct scan s = scan_start(data, len, &none);
    struct codec_framer f;
    codec_framer_init(&f);
    enum codec_status st = scan_resume(&s, &f);
    codec_framer_release(&f);
    if (st != CODEC_OK || s.pos != len) {
        *err = st == CODEC_ERROR ? s.err : ERR_MALFORMED;
        return CODEC_ERROR;
    }
    if (!lua_checkstack(L, 3)) {
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    struct dec d = {.L = L, .data = (const unsigned char *)data, .exact = exact};
    int top = lua_gettop(L);
    if (decode_value(&d, false) != 0) {
        lua_settop(L, top);
        *err = d.err;
        return CODEC_ERROR;
    }
    return CODEC_OK;
}

/* ---- Encoding ---- */

struct enc {
    lua_State *L;
    msgpack_packer pk;
    struct buf *out;
    size_t start; /* bytes in out before this value */
    size_t max_size;
    int max_depth;
    struct table_path path; /* the tables being encoded: meeting one of them again is a cycle */
    const char *err;
};

static int enc_fail(struct enc *e, const char *err)
{
    e->err = err;
    return -1;
}

/* msgpack-c's write callback. Every msgpack_pack_* call returns what this returns, so a refused
 * write stops the encoding with e->err set. */
static int enc_write(void *data, const char *bytes, size_t n)
{
    struct enc *e = data;
    if (n > e->max_size - (buf_len(e->out) - e->start))
        return enc_fail(e, ERR_TOO_LARGE);
    if (buf_append(e->out, bytes, n) != 0)
        return enc_fail(e, errno == ENOBUFS ? ERR_NO_BUFFERS : ERR_NO_MEMORY);
    return 0;
}

/* msgpack lengths are 32-bit; checking max_size first also skips validating a huge string. */
static bool fits(const struct enc *e, size_t len)
{
    return len <= UINT32_MAX && len <= e->max_size;
}

/* Text goes as str and anything else as bin, so that Python gets str or bytes accordingly. */
static int encode_string(struct enc *e, int idx)
{
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);
    if (!fits(e, len))
        return enc_fail(e, ERR_TOO_LARGE);
    if (utf8_valid(s, len))
        return msgpack_pack_str_with_body(&e->pk, s, len);
    return msgpack_pack_bin_with_body(&e->pk, s, len);
}

/* A luasock.bytes goes as bin whatever it holds. */
static int encode_bytes(struct enc *e, int idx)
{
    size_t len;
    const char *s = lvalues_bytes(e->L, idx, &len);
    if (!fits(e, len))
        return enc_fail(e, ERR_TOO_LARGE);
    return msgpack_pack_bin_with_body(&e->pk, s, len);
}

/* A luasock.ext goes as fixext 1/2/4/8/16 when its length is one of those, else as ext 8/16/32
 * (msgpack-c picks, as Python's packb does). */
static int encode_ext(struct enc *e, int idx)
{
    int type;
    size_t len;
    const char *data = lvalues_ext(e->L, idx, &type, &len);
    if (!fits(e, len))
        return enc_fail(e, ERR_TOO_LARGE);
    if (msgpack_pack_ext(&e->pk, len, (int8_t)type) != 0)
        return -1;
    return msgpack_pack_ext_body(&e->pk, data, len);
}

/* Floats always go as float64, so that 1.0 comes back a float and no precision is lost. */
static int encode_number(struct enc *e, int idx)
{
    if (lua_isinteger(e->L, idx))
        return msgpack_pack_int64(&e->pk, lua_tointeger(e->L, idx));
    return msgpack_pack_double(&e->pk, lua_tonumber(e->L, idx));
}

static int encode_value(struct enc *e, int idx, int depth);

/* Puts the table at idx on the path; finding it there already means a cycle. A table reached
 * twice without a cycle (a shared subtable) is fine: it is off the path again by then. */
static int encode_array(struct enc *e, int idx, lua_Integer n, int depth)
{
    if ((lua_Unsigned)n > e->max_size) /* a byte each at least */
        return enc_fail(e, ERR_TOO_LARGE);
    if (msgpack_pack_array(&e->pk, (size_t)n) != 0)
        return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(e->L, idx, i);
        if (encode_value(e, lua_gettop(e->L), depth) != 0)
            return -1;
        lua_pop(e->L, 1);
    }
    return 0;
}

static size_t count_keys(lua_State *L, int idx)
{
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
    }
    return count;
}

/* Every key and value of the table at idx; for a set, every key with true. */
static int encode_map(struct enc *e, int idx, size_t count, bool set, int depth)
{
    lua_State *L = e->L;
    if (msgpack_pack_map(&e->pk, count) != 0)
        return -1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int top = lua_gettop(L);
        if (encode_value(e, top - 1, depth) != 0)
            return -1;
        if ((set ? msgpack_pack_true(&e->pk) : encode_value(e, top, depth)) != 0)
            return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* A table as its marker says (see codec.h), or an unmarked one by its keys. */
static int encode_entries(struct enc *e, int idx, enum lvalue_kind kind, int depth)
{
    size_t count;
    lua_Integer n;
    switch (kind) {
    case LV_ARRAY:
    case LV_TUPLE:
        return encode_array(e, idx, (lua_Integer)lua_rawlen(e->L, idx), depth);
    case LV_MAP:
    case LV_SET:
        return encode_map(e, idx, count_keys(e->L, idx), kind == LV_SET, depth);
    default:
        n = table_sequence_length(e->L, idx, &count);
        return n > 0 ? encode_array(e, idx, n, depth) : encode_map(e, idx, count, false, depth);
    }
}

/* Encodes the table at idx, which has depth containers around its entries (itself included).
 * The wrappers are values, not containers. */
static int encode_table(struct enc *e, int idx, int depth)
{
    enum lvalue_kind kind = lvalues_kind(e->L, idx);
    if (kind == LV_BYTES)
        return encode_bytes(e, idx);
    if (kind == LV_UINT64)
        return msgpack_pack_uint64(&e->pk, lvalues_uint64(e->L, idx));
    if (kind == LV_EXT)
        return encode_ext(e, idx);
    if (depth > e->max_depth)
        return enc_fail(e, ERR_TOO_DEEP);
    /* A level holds a key, a value and what lvalues_kind needs for a moment. */
    if (!lua_checkstack(e->L, 3))
        return enc_fail(e, ERR_TOO_DEEP);
    if (!table_path_enter(&e->path, e->L, idx))
        return enc_fail(e, ERR_CYCLE);
    int rc = encode_entries(e, idx, kind, depth);
    table_path_leave(&e->path);
    return rc;
}

/* Encodes the value at idx, which has depth containers around it. Metatables are consulted only
 * to tell luasock's markers and wrappers (lvalues_kind, which runs no metamethod); otherwise what
 * goes on the wire is what the table holds. */
static int encode_value(struct enc *e, int idx, int depth)
{
    switch (lua_type(e->L, idx)) {
    case LUA_TNIL:
        return msgpack_pack_nil(&e->pk);
    case LUA_TBOOLEAN:
        return lua_toboolean(e->L, idx) ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
    case LUA_TNUMBER:
        return encode_number(e, idx);
    case LUA_TSTRING:
        return encode_string(e, idx);
    case LUA_TTABLE:
        return encode_table(e, idx, depth + 1);
    case LUA_TFUNCTION:
        return enc_fail(e, "cannot encode a function");
    case LUA_TTHREAD:
        return enc_fail(e, "cannot encode a thread");
    case LUA_TLIGHTUSERDATA:
        if (lvalues_kind(e->L, idx) == LV_NULL)
            return msgpack_pack_nil(&e->pk);
        return enc_fail(e, "cannot encode a userdata");
    default: /* full userdata */
        return enc_fail(e, "cannot encode a userdata");
    }
}

enum codec_status codec_encode(lua_State *L, int idx, struct buf *out,
                               const struct codec_limits *limits, const char **err)
{
    struct enc e = {.L = L, .out = out, .start = buf_len(out), .max_size = limits->max_size,
                    .max_depth = limits->max_depth};
    if (table_path_init(&e.path, e.max_depth) < 0) {
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 2)) {
        table_path_free(&e.path);
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    msgpack_packer_init(&e.pk, &e, enc_write);
    int rc = encode_value(&e, idx, 0);
    table_path_free(&e.path);
    lua_settop(L, top);
    if (rc == 0)
        return CODEC_OK;
    buf_truncate(out, e.start);
    *err = e.err;
    return CODEC_ERROR;
}
