/* codec.c -- MessagePack through msgpack-c, with framing of our own; see codec.h. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "errors.h"

#define ERR_MALFORMED "malformed"
#define ERR_UNSUPPORTED "unsupported type"
#define ERR_TOO_DEEP "nesting too deep"
#define ERR_CYCLE "cycle in table"
#define ERR_BAD_KEY "bad map key"

/* msgpack-c tracks the containers it is inside in a fixed array of MSGPACK_EMBED_STACK_SIZE
 * entries (32, from its internal unpack_define.h, compiled into the library) and fails with
 * NOMEM_ERROR on anything nested deeper. test_codec.c checks depths on both sides of it. */
#define UNPACK_MAX_DEPTH 32

/* ---- Finding where a value ends ---- */

enum head_kind { HEAD_SCALAR, HEAD_BYTES, HEAD_ARRAY, HEAD_MAP, HEAD_EXT, HEAD_RESERVED };

/* What a value's first byte says about it. */
struct head {
    enum head_kind kind;
    size_t size;    /* bytes of header: the whole of a scalar, type and length of the others */
    uint32_t count; /* str/bin body bytes or array/map entries, once head_count has run */
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
    [0x07] = {HEAD_EXT, 1},      /* ext 8, 16, 32 */
    [0x08] = {HEAD_EXT, 1},
    [0x09] = {HEAD_EXT, 1},
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
    [0x14] = {HEAD_EXT, 1},      /* fixext 1, 2, 4, 8, 16 */
    [0x15] = {HEAD_EXT, 1},
    [0x16] = {HEAD_EXT, 1},
    [0x17] = {HEAD_EXT, 1},
    [0x18] = {HEAD_EXT, 1},
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

/* What follows the header: bytes of a str/bin, values of an array, keys and values of a map.
 * Each of those values takes a byte at least. */
static uint64_t head_body(const struct head *h)
{
    return h->kind == HEAD_MAP ? 2 * (uint64_t)h->count : h->count;
}

/* Reads the big-endian length that follows the type byte; p holds the whole header. */
static void head_count(struct head *h, const unsigned char *p)
{
    if (h->kind == HEAD_SCALAR)
        return;
    for (size_t i = 1; i < h->size; i++)
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
    if (h->kind == HEAD_EXT)
        return scan_fail(s, ERR_UNSUPPORTED);
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

static int push_object(lua_State *L, const msgpack_object *o, const char **err);

/* lua_createtable takes an int size hint; a hint is only a hint, so a huge one is dropped. */
static int size_hint(uint32_t n)
{
    return n <= INT_MAX ? (int)n : 0;
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

/* Pops a key and a value into the table below them. */
static int set_entry(lua_State *L, const char **err)
{
    if (!key_ok(L, -2)) {
        *err = ERR_BAD_KEY;
        return -1;
    }
    lua_rawset(L, -3);
    return 0;
}

/* Every level of nesting holds a table, a key and a value on the Lua stack. */
static int reserve_level(lua_State *L, const char **err)
{
    if (lua_checkstack(L, 3))
        return 0;
    *err = ERR_TOO_DEEP;
    return -1;
}

static int push_array(lua_State *L, const msgpack_object_array *a, const char **err)
{
    if (reserve_level(L, err) != 0)
        return -1;
    lua_createtable(L, size_hint(a->size), 0);
    for (uint32_t i = 0; i < a->size; i++) {
        if (push_object(L, &a->ptr[i], err) != 0)
            return -1;
        lua_rawseti(L, -2, (lua_Integer)i + 1); /* a nil element leaves a hole */
    }
    return 0;
}

static int push_map(lua_State *L, const msgpack_object_map *m, const char **err)
{
    if (reserve_level(L, err) != 0)
        return -1;
    lua_createtable(L, 0, size_hint(m->size));
    for (uint32_t i = 0; i < m->size; i++) {
        if (push_object(L, &m->ptr[i].key, err) != 0 || push_object(L, &m->ptr[i].val, err) != 0
            || set_entry(L, err) != 0)
            return -1;
    }
    return 0;
}

/* A uint64 above math.maxinteger has no Lua integer, so it becomes the nearest float. */
static void push_uint(lua_State *L, uint64_t u)
{
    if (u <= (uint64_t)LUA_MAXINTEGER)
        lua_pushinteger(L, (lua_Integer)u);
    else
        lua_pushnumber(L, (lua_Number)u);
}

static int push_object(lua_State *L, const msgpack_object *o, const char **err)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        lua_pushnil(L);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        push_uint(L, o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushinteger(L, o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32: /* msgpack-c widens float32 into via.f64 */
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, o->via.f64);
        return 0;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        return push_array(L, &o->via.array, err);
    case MSGPACK_OBJECT_MAP:
        return push_map(L, &o->via.map, err);
    default: /* ext: the scan refuses it first */
        *err = ERR_UNSUPPORTED;
        return -1;
    }
}

struct dec {
    lua_State *L;
    const char *data;
    size_t len;
    size_t pos;
    /* Containers with fewer than this many containers around them are opened here, because
     * what is inside them is nested deeper than msgpack-c can unpack. */
    int split_depth;
    const char *err;
};

struct unpacked {
    const msgpack_object *object;
    const char *err;
    int rc;
};

static int push_unpacked(lua_State *L)
{
    struct unpacked *u = lua_touserdata(L, 1);
    lua_pop(L, 1);
    u->rc = push_object(L, u->object, &u->err);
    return u->rc == 0 ? 1 : 0;
}

/* Unpacks the value at d->pos with msgpack-c and pushes it. The scan has vouched for every
 * header, so msgpack-c sizes nothing from a count the bytes do not back. The pushing runs
 * protected, so that a memory error in Lua (the handler's memory cap) frees msgpack-c's zone
 * before it is raised again. */
static int unpack_value(struct dec *d)
{
    msgpack_unpacked result;
    msgpack_unpacked_init(&result);
    msgpack_unpack_return ret = msgpack_unpack_next(&result, d->data, d->len, &d->pos);
    if (ret != MSGPACK_UNPACK_SUCCESS || !lua_checkstack(d->L, 2)) {
        msgpack_unpacked_destroy(&result);
        d->err = ret == MSGPACK_UNPACK_SUCCESS || ret == MSGPACK_UNPACK_NOMEM_ERROR
                     ? ERR_NO_MEMORY : ERR_MALFORMED;
        return -1;
    }
    struct unpacked u = {&result.data, NULL, -1};
    lua_pushcfunction(d->L, push_unpacked);
    lua_pushlightuserdata(d->L, &u);
    int status = lua_pcall(d->L, 1, 1, 0);
    msgpack_unpacked_destroy(&result);
    if (status != LUA_OK)
        return lua_error(d->L);
    if (u.rc != 0) {
        lua_pop(d->L, 1);
        d->err = u.err;
    }
    return u.rc;
}

static int decode_value(struct dec *d, int depth);

/* Opens the array or map at d->pos and decodes its entries one at a time. */
static int decode_split(struct dec *d, struct head h, int depth)
{
    lua_State *L = d->L;
    bool map = h.kind == HEAD_MAP;
    head_count(&h, (const unsigned char *)d->data + d->pos);
    d->pos += h.size;
    if (reserve_level(L, &d->err) != 0)
        return -1;
    lua_createtable(L, map ? 0 : size_hint(h.count), map ? size_hint(h.count) : 0);
    for (uint32_t i = 0; i < h.count; i++) { /* a map entry is a key, then a value */
        if (map && decode_value(d, depth + 1) != 0)
            return -1;
        if (decode_value(d, depth + 1) != 0)
            return -1;
        if (!map)
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        else if (set_entry(L, &d->err) != 0)
            return -1;
    }
    return 0;
}

/* Decodes the value at d->pos; depth is the number of containers around it. */
static int decode_value(struct dec *d, int depth)
{
    struct head h = head_classify((unsigned char)d->data[d->pos]);
    if (head_is_container(&h) && depth < d->split_depth)
        return decode_split(d, h, depth);
    return unpack_value(d);
}

enum codec_status codec_decode(lua_State *L, const char *data, size_t len, bool exact,
                               const char **err)
{
    (void)exact;
    /* Scanning first refuses ext types and reserved bytes, and learns how deep the value goes.
     * Without a size limit a truncated value is "more", so here it reads as malformed. */
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
    struct dec d = {.L = L, .data = data, .len = len, .split_depth = s.deepest - UNPACK_MAX_DEPTH};
    int top = lua_gettop(L);
    if (decode_value(&d, 0) != 0) {
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
    int depth;
    /* The tables being encoded, outermost first: meeting one of them again is a cycle. A C
     * array (shallow, or malloc'd for a deeper max_depth), so that encoding allocates nothing in
     * Lua and cannot raise halfway through. */
    const void **path;
    const void *shallow[CODEC_DEFAULT_MAX_DEPTH];
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

/* Length of the UTF-8 sequence at s (avail bytes there), or 0 if Python's strict decoder would
 * refuse it: overlong forms, surrogates and code points above U+10FFFF are all refused. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return n;
}

static bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* Text goes as str and anything else as bin, so that Python gets str or bytes accordingly. */
static int encode_string(struct enc *e, int idx)
{
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);
    /* msgpack lengths are 32-bit; checking max_size here also skips validating a huge string. */
    if (len > UINT32_MAX || len > e->max_size)
        return enc_fail(e, ERR_TOO_LARGE);
    if (utf8_valid(s, len))
        return msgpack_pack_str_with_body(&e->pk, s, len);
    return msgpack_pack_bin_with_body(&e->pk, s, len);
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
static int enter_table(struct enc *e, int idx)
{
    const void *table = lua_topointer(e->L, idx);
    for (int i = 0; i < e->depth; i++)
        if (e->path[i] == table)
            return enc_fail(e, ERR_CYCLE);
    e->path[e->depth++] = table;
    return 0;
}

/* Returns n if the keys of the table at idx are exactly 1..n, else 0; *count gets the number of
 * keys. Distinct positive integer keys as many as the largest of them must be 1..n. */
static lua_Integer sequence_length(lua_State *L, int idx, size_t *count)
{
    lua_Integer max = 0;
    bool positive_integers = true;
    *count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        (*count)++;
        lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        if (k < 1)
            positive_integers = false;
        else if (k > max)
            max = k;
    }
    return positive_integers && (size_t)max == *count ? max : 0;
}

static int encode_array(struct enc *e, int idx, lua_Integer n, int depth)
{
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

static int encode_map(struct enc *e, int idx, size_t count, int depth)
{
    lua_State *L = e->L;
    if (msgpack_pack_map(&e->pk, count) != 0)
        return -1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int top = lua_gettop(L);
        if (encode_value(e, top - 1, depth) != 0 || encode_value(e, top, depth) != 0)
            return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* Encodes the table at idx, which has depth containers around its entries (itself included). */
static int encode_table(struct enc *e, int idx, int depth)
{
    if (depth > e->max_depth)
        return enc_fail(e, ERR_TOO_DEEP);
    /* A level holds a key and a value. */
    if (!lua_checkstack(e->L, 2))
        return enc_fail(e, ERR_TOO_DEEP);
    if (enter_table(e, idx) != 0)
        return -1;
    size_t count;
    lua_Integer n = sequence_length(e->L, idx, &count);
    int rc = n > 0 ? encode_array(e, idx, n, depth) : encode_map(e, idx, count, depth);
    e->depth--;
    return rc;
}

/* Encodes the value at idx, which has depth containers around it. Metatables are not consulted:
 * what goes on the wire is what the table holds. */
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
    default: /* full and light userdata */
        return enc_fail(e, "cannot encode a userdata");
    }
}

/* Drops what a failed call appended. An emptied buffer gives its storage back, as buf.h says
 * empty buffers do. */
static void undo_append(struct buf *b, size_t len)
{
    b->end = b->start + len;
    if (len == 0)
        buf_free(b);
}

enum codec_status codec_encode(lua_State *L, int idx, struct buf *out,
                               const struct codec_limits *limits, const char **err)
{
    struct enc e = {.L = L, .out = out, .start = buf_len(out), .max_size = limits->max_size,
                    .max_depth = limits->max_depth};
    e.path = e.max_depth <= CODEC_DEFAULT_MAX_DEPTH ? e.shallow
                                                    : malloc((size_t)e.max_depth * sizeof *e.path);
    if (e.path == NULL) {
        *err = ERR_NO_MEMORY;
        return CODEC_ERROR;
    }
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    msgpack_packer_init(&e.pk, &e, enc_write);
    int rc = encode_value(&e, idx, 0);
    if (e.path != e.shallow)
        free(e.path);
    lua_settop(L, top);
    if (rc == 0)
        return CODEC_OK;
    undo_append(out, e.start);
    *err = e.err;
    return CODEC_ERROR;
}
