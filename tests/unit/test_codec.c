/* Unit tests for codec.c: round trips of every Lua type, framing on a byte stream (values that
 * arrive in pieces, back to back, truncated or hostile), the limits, byte-for-byte agreement
 * with Python's msgpack (the expected bytes below come from msgpack.packb in python3-msgpack),
 * the markers and wrappers of lvalues.h, and exact decoding (whose values encode back to the
 * bytes they came from). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "same_lua.h"
#include "codec.h"
#include "lvalues.h"

/* A byte string literal and its length, NULs included. */
#define BYTES(s) (s), sizeof(s) - 1

static lua_State *L;
static const struct codec_limits defaults = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH,
                                             CODEC_DEFAULT_MAX_ITEMS};

static const char same_lua[] =
    SAME_LUA;

/* Pushes the value of the Lua expression (or the result of the chunk, when it starts with
 * "local"); a broken expression fails a check and pushes nil. */
static void push_lua(const char *code)
{
    char chunk[1024];
    snprintf(chunk, sizeof chunk, strncmp(code, "local", 5) == 0 ? "%s" : "return %s", code);
    if (luaL_dostring(L, chunk) != LUA_OK) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        CHECK(false);
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

static enum codec_status encode_lua(const char *code, struct buf *out,
                                    const struct codec_limits *limits, const char **err)
{
    push_lua(code);
    enum codec_status st = codec_encode(L, -1, out, limits, err);
    lua_pop(L, 1);
    return st;
}

static bool same(int a, int b)
{
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    lua_getglobal(L, "same");
    lua_pushvalue(L, a);
    lua_pushvalue(L, b);
    lua_call(L, 2, 1);
    bool equal = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return equal;
}

/* Encodes, frames and decodes the value, and compares the result with the original. */
static bool round_trips(const char *code)
{
    struct buf out = {0};
    const char *err = "";
    size_t frame_len = 0;
    int top = lua_gettop(L);
    push_lua(code);
    bool ok = codec_encode(L, -1, &out, &defaults, &err) == CODEC_OK
              && codec_frame(buf_head(&out), buf_len(&out), &defaults, &frame_len, &err) == CODEC_OK
              && frame_len == buf_len(&out)
              && codec_decode(L, buf_head(&out), frame_len, false, &err) == CODEC_OK && same(-2, -1);
    if (!ok)
        fprintf(stderr, "round trip of %s: %s\n", code, err);
    ok = ok && lua_gettop(L) == top + 2;
    lua_settop(L, top);
    buf_free(&out);
    return ok;
}

static bool hex_equals(const struct buf *b, const char *hex)
{
    size_t len = buf_len(b);
    if (strlen(hex) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1 || byte != (unsigned char)buf_head(b)[i])
            return false;
    }
    return true;
}

/* Checks the encoding of a value against the bytes Python's msgpack.packb gives. */
static bool encodes_as(const char *code, const char *hex)
{
    struct buf out = {0};
    const char *err;
    bool ok = encode_lua(code, &out, &defaults, &err) == CODEC_OK && hex_equals(&out, hex);
    buf_free(&out);
    return ok;
}

static unsigned char first_byte(const char *code)
{
    struct buf out = {0};
    const char *err;
    unsigned char b = encode_lua(code, &out, &defaults, &err) == CODEC_OK ? buf_head(&out)[0] : 0;
    buf_free(&out);
    return b;
}

/* Builds depth nested one-element arrays (or maps {1: ...}) around the integer 1. */
static size_t nested(char *out, int depth, bool maps)
{
    size_t n = 0;
    for (int i = 0; i < depth; i++) {
        out[n++] = maps ? '\x81' : '\x91';
        if (maps)
            out[n++] = '\x01';
    }
    out[n++] = '\x01';
    return n;
}

/* Decodes what `nested` built and checks that the chain t[1][1]... is depth tables deep (arrays
 * and maps alike index by 1) and ends in the integer 1. */
static bool decodes_nested(const char *bytes, size_t len, int depth, bool exact)
{
    const char *err;
    if (codec_decode(L, bytes, len, exact, &err) != CODEC_OK)
        return false;
    int found = 0;
    while (lua_istable(L, -1)) {
        found++;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    bool ok = found == depth && lua_isinteger(L, -1) && lua_tointeger(L, -1) == 1;
    lua_pop(L, 1);
    return ok;
}

static void test_scalars(void)
{
    CHECK(round_trips("nil"));
    CHECK(round_trips("true"));
    CHECK(round_trips("false"));
    CHECK(round_trips("0"));
    CHECK(round_trips("0.0"));
    CHECK(round_trips("-0.0"));
    CHECK(round_trips("1.0"));
    CHECK(round_trips("1.5"));
    CHECK(round_trips("-1"));
    CHECK(round_trips("-33"));
    CHECK(round_trips("255"));
    CHECK(round_trips("-129"));
    CHECK(round_trips("65536"));
    CHECK(round_trips("-2147483649"));
    CHECK(round_trips("math.maxinteger"));
    CHECK(round_trips("math.mininteger"));
    CHECK(round_trips("1.7976931348623157e308"));
    CHECK(round_trips("4.9406564584124654e-324"));
    CHECK(round_trips("2.2250738585072014e-308"));
    CHECK(round_trips("math.huge"));
    CHECK(round_trips("-math.huge"));
    CHECK(round_trips("2^53 + 0.0"));

    /* NaN is never equal to itself, so it gets its own check. */
    struct buf out = {0};
    const char *err;
    CHECK(encode_lua("0/0", &out, &defaults, &err) == CODEC_OK);
    CHECK(codec_decode(L, buf_head(&out), buf_len(&out), false, &err) == CODEC_OK);
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) != lua_tonumber(L, -1));
    lua_pop(L, 1);
    buf_free(&out);
}

static void test_strings(void)
{
    CHECK(round_trips("''"));
    CHECK(round_trips("'h\\u{E9}llo'"));
    CHECK(round_trips("'a\\0b'"));
    CHECK(round_trips("'\\0\\255\\0'"));
    CHECK(round_trips("string.rep('x', 31)"));
    CHECK(round_trips("string.rep('x', 32)"));
    CHECK(round_trips("string.rep('x', 70000)"));
    CHECK(round_trips("string.rep('\\0\\255', 200)"));
    CHECK(round_trips("string.rep('\\255', 70000)"));

    /* Text goes as str (0xa0..0xbf, 0xd9..0xdb), anything else as bin (0xc4..0xc6). */
    CHECK(first_byte("'a\\0b'") == 0xa3);
    CHECK(first_byte("'\\u{1F600}'") == 0xa4);
    CHECK(first_byte("string.rep('x', 300)") == 0xda);
    CHECK(first_byte("'\\0\\255\\0'") == 0xc4);
    CHECK(first_byte("string.rep('\\0\\255', 200)") == 0xc5);
    CHECK(first_byte("string.rep('\\255', 70000)") == 0xc6);
    CHECK(first_byte("'\\xC0\\x80'") == 0xc4);         /* overlong NUL */
    CHECK(first_byte("'\\xE0\\x80\\xAF'") == 0xc4);     /* overlong '/' */
    CHECK(first_byte("'\\xED\\xA0\\x80'") == 0xc4);     /* a surrogate */
    CHECK(first_byte("'\\xF4\\x90\\x80\\x80'") == 0xc4); /* above U+10FFFF */
    CHECK(first_byte("'ab\\xE2\\x82'") == 0xc4);        /* cut short */
    CHECK(first_byte("'\\xE2\\x82\\xAC'") == 0xa3);     /* the euro sign */
}

static void test_tables(void)
{
    CHECK(round_trips("{}"));
    CHECK(round_trips("{1, 2, 3}"));
    CHECK(round_trips("{'a', {'b', {'c'}}, {}}"));
    CHECK(round_trips("{a = 1, b = {c = {d = true}}, [10] = 'ten', [-1] = 0.5}"));
    CHECK(round_trips("{[1] = 'x', [3] = 'z'}"));
    CHECK(round_trips("{[1.5] = 1, [true] = false, [0] = 0}"));
    CHECK(round_trips("{1, 2, n = 2}"));
    CHECK(round_trips("{{}, {{}}, {x = {}}}"));
    CHECK(first_byte("{}") == 0x80);
    CHECK(first_byte("{1, 2, 3}") == 0x93);
    CHECK(first_byte("{[1] = 'x', [3] = 'z'}") == 0x82);
    CHECK(first_byte("{1, 2, n = 2}") == 0x83);
    CHECK(first_byte("{[2] = 'b', [1] = 'a'}") == 0x92);

    /* An array with a nil element (from another language) decodes with luasock.null there, and
     * so does a map with a nil value: the entry stays. A nil on its own stays nil. */
    const char *err;
    CHECK(codec_decode(L, BYTES("\x93\x01\xc0\x03"), false, &err) == CODEC_OK);
    CHECK(lua_istable(L, -1) && lua_rawlen(L, -1) == 3);
    CHECK(lua_rawgeti(L, -1, 1) == LUA_TNUMBER && lua_rawgeti(L, -2, 2) == LUA_TLIGHTUSERDATA
          && lua_rawgeti(L, -3, 3) == LUA_TNUMBER);
    CHECK(lvalues_kind(L, -2) == LV_NULL);
    CHECK(lua_tointeger(L, -1) == 3);
    lua_pop(L, 4);
    CHECK(codec_decode(L, BYTES("\x81\xa1k\xc0"), false, &err) == CODEC_OK);
    CHECK(lua_getfield(L, -1, "k") == LUA_TLIGHTUSERDATA && lvalues_kind(L, -1) == LV_NULL);
    lua_pop(L, 2);
    CHECK(codec_decode(L, BYTES("\xc0"), false, &err) == CODEC_OK && lua_isnil(L, -1));
    lua_pop(L, 1);
    CHECK(round_trips("{1, luasock.null, 3}"));
    CHECK(round_trips("{k = luasock.null}"));
    CHECK(encodes_as("{luasock.null, 1}", "92c001"));
    CHECK(encodes_as("luasock.null", "c0"));

    /* A shared subtable is not a cycle. */
    CHECK(round_trips("local s = {1}; return {s, s, k = s}"));
}

static void test_python_bytes(void)
{
    CHECK(encodes_as("0", "00"));
    CHECK(encodes_as("127", "7f"));
    CHECK(encodes_as("128", "cc80"));
    CHECK(encodes_as("65535", "cdffff"));
    CHECK(encodes_as("65536", "ce00010000"));
    CHECK(encodes_as("2^31 | 0", "ce80000000"));
    CHECK(encodes_as("2^32 | 0", "cf0000000100000000"));
    CHECK(encodes_as("math.maxinteger", "cf7fffffffffffffff"));
    CHECK(encodes_as("-1", "ff"));
    CHECK(encodes_as("-32", "e0"));
    CHECK(encodes_as("-33", "d0df"));
    CHECK(encodes_as("-129", "d1ff7f"));
    CHECK(encodes_as("-32769", "d2ffff7fff"));
    CHECK(encodes_as("-2147483649", "d3ffffffff7fffffff"));
    CHECK(encodes_as("math.mininteger", "d38000000000000000"));
    CHECK(encodes_as("1.5", "cb3ff8000000000000"));
    CHECK(encodes_as("1.0", "cb3ff0000000000000"));
    CHECK(encodes_as("-0.0", "cb8000000000000000"));
    CHECK(encodes_as("nil", "c0"));
    CHECK(encodes_as("true", "c3"));
    CHECK(encodes_as("false", "c2"));
    CHECK(encodes_as("''", "a0"));
    CHECK(encodes_as("'h\\u{E9}llo'", "a668c3a96c6c6f"));
    CHECK(encodes_as("'a\\0b'", "a3610062"));
    CHECK(encodes_as("'\\0\\255z'", "c40300ff7a"));
    CHECK(encodes_as("string.rep('a', 32)",
                     "d9206161616161616161616161616161616161616161616161616161616161616161"));
    CHECK(encodes_as("{}", "80"));
    CHECK(encodes_as("{1, 2, 3}", "93010203"));
    CHECK(encodes_as("{a = 1}", "81a16101"));
    CHECK(encodes_as("{{1, {2}}, {k = {true, false}}}", "929201910281a16b92c3c2"));
}

static void test_decode_edges(void)
{
    const char *err = NULL;
    int top = lua_gettop(L);

    /* packb(2**64 - 1): no Lua integer holds it, so it comes back as the nearest float. */
    CHECK(codec_decode(L, BYTES("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), false, &err) == CODEC_OK);
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 18446744073709551616.0);
    lua_pop(L, 1);

    CHECK(codec_decode(L, BYTES("\xca\x3f\xc0\x00\x00"), false, &err) == CODEC_OK); /* float32 1.5 */
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 1.5);
    lua_pop(L, 1);

    /* An int8 holding a positive number. */
    CHECK(codec_decode(L, BYTES("\xd0\x05"), false, &err) == CODEC_OK);
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 5);
    lua_pop(L, 1);

    CHECK(codec_decode(L, BYTES("\xa3" "a\0b"), false, &err) == CODEC_OK);
    CHECK(lua_rawlen(L, -1) == 3 && memcmp(lua_tostring(L, -1), "a\0b", 3) == 0);
    lua_pop(L, 1);

    /* A nil key is refused (it does not become luasock.null), as is a NaN one. */
    CHECK(codec_decode(L, BYTES("\x81\xc0\x01"), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "bad map key");
    CHECK(codec_decode(L, BYTES("\x82\x01\x02\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01"), false, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "bad map key");
    /* ext values decode to luasock.ext in both modes. */
    CHECK(codec_decode(L, BYTES("\xd4\x01\x02"), false, &err) == CODEC_OK);
    CHECK(lvalues_kind(L, -1) == LV_EXT);
    lua_pop(L, 1);
    CHECK(codec_decode(L, BYTES("\x92\x01\xc7\x01\xfb\x00"), false, &err) == CODEC_OK);
    CHECK(lua_rawgeti(L, -1, 2) == LUA_TTABLE && lvalues_kind(L, -1) == LV_EXT);
    {
        int type;
        size_t n;
        const char *data = lvalues_ext(L, -1, &type, &n);
        CHECK(type == -5 && n == 1 && data[0] == 0);
    }
    lua_pop(L, 2);
    CHECK(codec_decode(L, BYTES("\x92\xc1\x01"), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "malformed");
    CHECK(codec_decode(L, BYTES("\x92\x01"), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "malformed");
    CHECK(codec_decode(L, BYTES("\x01\x02"), false, &err) == CODEC_ERROR); /* two values, not one */
    CHECK_STR(err, "malformed");
    CHECK(codec_decode(L, BYTES("\xdd\xff\xff\xff\xff"), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "malformed");
    CHECK(codec_decode(L, "", 0, false, &err) == CODEC_ERROR);
    CHECK(lua_gettop(L) == top);
}

static void test_frame_pieces(void)
{
    struct buf out = {0};
    const char *err;
    size_t frame_len = 0;
    CHECK(encode_lua("{1, 'two', {three = 3.0}, {4, {5}}, string.rep('x', 40)}", &out, &defaults,
                     &err) == CODEC_OK);
    size_t len = buf_len(&out);
    bool more_until_complete = true;
    for (size_t n = 0; n < len; n++) {
        if (codec_frame(buf_head(&out), n, &defaults, &frame_len, &err) != CODEC_MORE)
            more_until_complete = false;
    }
    CHECK(more_until_complete);
    CHECK(codec_frame(buf_head(&out), len, &defaults, &frame_len, &err) == CODEC_OK);
    CHECK(frame_len == len);

    /* Two values back to back: the first frame ends exactly where the second begins. */
    CHECK(encode_lua("{x = 'second'}", &out, &defaults, &err) == CODEC_OK);
    CHECK(codec_frame(buf_head(&out), buf_len(&out), &defaults, &frame_len, &err) == CODEC_OK);
    CHECK(frame_len == len);
    CHECK(codec_frame(buf_head(&out) + len, buf_len(&out) - len, &defaults, &frame_len, &err)
          == CODEC_OK);
    CHECK(frame_len == buf_len(&out) - len);
    CHECK(codec_decode(L, buf_head(&out) + len, frame_len, false, &err) == CODEC_OK);
    CHECK(lua_getfield(L, -1, "x") == LUA_TSTRING && strcmp(lua_tostring(L, -1), "second") == 0);
    lua_pop(L, 2);
    buf_free(&out);

    CHECK(codec_frame("", 0, &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\x92\x01"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xcb\x00\x00"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xda\x00"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xa5" "abc"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\x80\x01"), &defaults, &frame_len, &err) == CODEC_OK);
    CHECK(frame_len == 1);
}

static void test_frame_refusals(void)
{
    const char *err = NULL;
    size_t frame_len;
    CHECK(codec_frame(BYTES("\xc1"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "malformed");
    CHECK(codec_frame(BYTES("\x93\x01\xc1"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "malformed");
    /* ext values frame with the same limits as bin. */
    CHECK(codec_frame(BYTES("\xd6\xff"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xd6\xff\x00\x00\x00"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xd6\xff\x00\x00\x00\x01"), &defaults, &frame_len, &err)
          == CODEC_OK && frame_len == 6);
    CHECK(codec_frame(BYTES("\xc7\x02\x05"), &defaults, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\xc7\x00\x05"), &defaults, &frame_len, &err) == CODEC_OK
          && frame_len == 3);
    CHECK(codec_frame(BYTES("\xc9\xff\xff\xff\xff\x05"), &defaults, &frame_len, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\xc9\x00\x10\x00\x00\x05"), &defaults, &frame_len, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "too large");

    /* Hostile headers are refused from the header alone, never answered with "more". */
    CHECK(codec_frame(BYTES("\xdd\xff\xff\xff\xff"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\xdf\x80\x00\x00\x00"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\xdb\xff\xff\xff\xff"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\xc6\x00\x10\x00\x00"), &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK(codec_frame(BYTES("\x92\x01\xdd\x00\x10\x00\x00"), &defaults, &frame_len, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "too large");

    /* With max_size 10: a 10-byte value fits, 11 bytes do not, and neither does a header whose
     * entries (a byte each at least) would take the value past 10, counting its siblings. */
    struct codec_limits small = {10, 100, CODEC_DEFAULT_MAX_ITEMS};
    CHECK(codec_frame(BYTES("\xa9" "123456789"), &small, &frame_len, &err) == CODEC_OK);
    CHECK(frame_len == 10);
    CHECK(codec_frame(BYTES("\xaa" "123456789"), &small, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\x99\x01"), &small, &frame_len, &err) == CODEC_MORE);
    CHECK(codec_frame(BYTES("\x9a\x01"), &small, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(codec_frame(BYTES("\x95\x01\x01\x01\x95"), &small, &frame_len, &err) == CODEC_ERROR);
    CHECK(codec_frame(BYTES("\x85\x01"), &small, &frame_len, &err) == CODEC_ERROR);
    CHECK(codec_frame(BYTES("\x92\xcb\x00\x00\x00\x00\x00\x00\x00\x00"), &small, &frame_len, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "too large");
    struct codec_limits none = {0, 100, CODEC_DEFAULT_MAX_ITEMS};
    CHECK(codec_frame("", 0, &none, &frame_len, &err) == CODEC_ERROR);
}

static void test_depth(void)
{
    static char bytes[512];
    const char *err = NULL;
    size_t frame_len, len;
    int top = lua_gettop(L);

    len = nested(bytes, CODEC_DEFAULT_MAX_DEPTH, false);
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_OK && frame_len == len);
    len = nested(bytes, CODEC_DEFAULT_MAX_DEPTH + 1, false);
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "nesting too deep");
    len = nested(bytes, CODEC_DEFAULT_MAX_DEPTH + 1, true);
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, "nesting too deep");

    /* Every depth up to the limit decodes, exact or not (msgpack-c's unpacker, which stopped at
     * 32 levels, is no longer used). */
    int depths[] = {1, 31, 32, 33, 34, 64, 65, 99, CODEC_DEFAULT_MAX_DEPTH};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        for (int maps = 0; maps <= 1; maps++) {
            len = nested(bytes, depths[i], maps);
            CHECK(decodes_nested(bytes, len, depths[i], false));
            CHECK(decodes_nested(bytes, len, depths[i], true));
        }
    }
    CHECK(codec_decode(L, BYTES("\x81\x01\x81\xc0\x01"), false, &err) == CODEC_ERROR);
    CHECK(lua_gettop(L) == top);

    /* Deep and wide: every level has siblings before and after the way down. */
    CHECK(round_trips("local t = {'leaf'}; for i = 1, 99 do t = {i, t, 'x', k = {i}} end; "
                      "return t"));
    CHECK(round_trips("local t = {}; for i = 1, 99 do t = {t, {i}} end; return t"));
    CHECK(round_trips("local t = 1; for i = 1, 100 do t = {t} end; return t"));
}

/* Frames data byte by byte with one framer, as a value trickling in: the status once all of it
 * is there. */
static enum codec_status frame_trickled(const char *data, size_t len,
                                        const struct codec_limits *limits, const char **err)
{
    struct codec_framer f;
    codec_framer_init(&f);
    size_t frame_len;
    enum codec_status st = CODEC_MORE;
    for (size_t n = 1; n <= len && st == CODEC_MORE; n++)
        st = codec_framer_scan(&f, data, n, limits, &frame_len, err);
    codec_framer_release(&f);
    return st;
}

/* An array32 of count copies of the byte `element`, then `tail`: a value of one MiB at most. */
static char *array32(uint32_t count, char element, const char *tail, size_t tail_len,
                     size_t *len)
{
    *len = 5 + (size_t)count + tail_len;
    char *bytes = malloc(*len);
    uint32_t entries = count + (tail_len > 0);
    bytes[0] = '\xdd';
    for (int i = 0; i < 4; i++)
        bytes[1 + i] = (char)(entries >> (24 - 8 * i));
    memset(bytes + 5, element, count);
    memcpy(bytes + 5 + count, tail, tail_len);
    return bytes;
}

/* max_object_items: every value counts (the value itself, array elements, map keys and map
 * values, at any depth), and a header promising more entries than fit is refused at once. */
static void test_items(void)
{
    const char *err = NULL;
    size_t frame_len, len;
    struct codec_limits three = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH, 3};
    struct codec_limits one = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH, 1};
    CHECK(codec_frame(BYTES("\x01"), &one, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x90"), &one, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x80"), &one, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x91"), &one, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    CHECK(codec_frame(BYTES("\x92\x01\x02"), &three, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x81\x01\x02"), &three, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x91\x91\x01"), &three, &frame_len, &err) == CODEC_OK);
    CHECK(codec_frame(BYTES("\x92\x90\x80"), &three, &frame_len, &err) == CODEC_OK);
    err = NULL;
    CHECK(codec_frame(BYTES("\x93"), &three, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    err = NULL;
    CHECK(codec_frame(BYTES("\x82"), &three, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    err = NULL;
    CHECK(codec_frame(BYTES("\x92\x91"), &three, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    err = NULL;
    CHECK(codec_frame(BYTES("\x81\x91"), &three, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);

    /* Trickled in, the count goes on where it stopped. */
    const char seven_items[] = "\x82\x01\x02\x03\x92\x04\x05"; /* {1 = 2, 3 = {4, 5}} */
    struct codec_limits seven = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH, 7};
    struct codec_limits six = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH, 6};
    CHECK(frame_trickled(BYTES(seven_items), &seven, &err) == CODEC_OK);
    err = NULL;
    CHECK(frame_trickled(BYTES(seven_items), &six, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);

    /* The value: a MiB of empty maps in an array32 is refused from its 5-byte header. */
    char *bytes = array32(CODEC_DEFAULT_MAX_SIZE - 5, '\x80', "", 0, &len);
    err = NULL;
    CHECK(codec_frame(bytes, 5, &defaults, &frame_len, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    free(bytes);
    bytes = array32(CODEC_DEFAULT_MAX_ITEMS, '\xc0', "", 0, &len);
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_ERROR);
    free(bytes);

    /* The costliest value the defaults let through: as many empty maps as fit in the item
     * budget (a 56-byte table and a 16-byte array slot each), and a bin value with the rest of
     * the MiB. Decoded, it holds under 8 MiB of Lua heap, where the MiB of maps held 72. */
    static char tail[CODEC_DEFAULT_MAX_SIZE];
    uint32_t maps = CODEC_DEFAULT_MAX_ITEMS - 2;
    size_t bin = CODEC_DEFAULT_MAX_SIZE - 5 - maps - 5;
    tail[0] = '\xc6';
    for (int i = 0; i < 4; i++)
        tail[1 + i] = (char)(bin >> (24 - 8 * i));
    bytes = array32(maps, '\x80', tail, 5 + bin, &len);
    CHECK(len == CODEC_DEFAULT_MAX_SIZE);
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_OK && frame_len == len);
    lua_gc(L, LUA_GCCOLLECT);
    size_t before = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    CHECK(codec_decode(L, bytes, len, false, &err) == CODEC_OK);
    size_t after = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    printf("the costliest value at the default limits: %zu bytes of Lua heap\n", after - before);
    CHECK(after - before < 8 * (size_t)CODEC_DEFAULT_MAX_SIZE);
    CHECK(lua_rawlen(L, -1) == maps + 1);
    lua_pop(L, 1);
    free(bytes);

    /* ext values (in both modes) and bin in exact mode become wrapper tables: an array of
     * fixext 2 values, each with data of its own so that no string is shared, costs the most of
     * those per byte. */
    uint32_t exts = CODEC_DEFAULT_MAX_ITEMS - 1;
    len = 5 + 4 * (size_t)exts;
    bytes = malloc(len);
    bytes[0] = '\xdd';
    for (int i = 0; i < 4; i++)
        bytes[1 + i] = (char)(exts >> (24 - 8 * i));
    for (uint32_t i = 0; i < exts; i++) {
        char *ext = bytes + 5 + 4 * (size_t)i;
        ext[0] = '\xd5';
        ext[1] = 7;
        ext[2] = (char)(i >> 8);
        ext[3] = (char)i;
    }
    CHECK(codec_frame(bytes, len, &defaults, &frame_len, &err) == CODEC_OK && frame_len == len);
    lua_gc(L, LUA_GCCOLLECT);
    before = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    CHECK(codec_decode(L, bytes, len, true, &err) == CODEC_OK);
    after = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    printf("the costliest ext value at the default limits: %zu bytes of Lua heap\n",
           after - before);
    CHECK(after - before < 16 * (size_t)CODEC_DEFAULT_MAX_SIZE);
    lua_pop(L, 1);
    free(bytes);
}

static void test_encode_refusals(void)
{
    struct buf out = {0};
    const char *err = NULL;
    int top = lua_gettop(L);

    CHECK(encode_lua("print", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cannot encode a function");
    CHECK(encode_lua("coroutine.create(print)", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cannot encode a thread");
    CHECK(encode_lua("{io.stdout}", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cannot encode a userdata");
    CHECK(encode_lua("local t = {}; t.self = t; return t", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cycle in table");
    CHECK(encode_lua("local a = {}; a[1] = {{a}}; return {x = a}", &out, &defaults, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "cycle in table");
    CHECK(encode_lua("local t = {}; t[t] = 1; return t", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cycle in table");
    CHECK(encode_lua("local t = 1; for i = 1, 100 do t = {t} end; return t", &out, &defaults,
                     &err) == CODEC_OK);
    buf_free(&out);
    CHECK(encode_lua("local t = 1; for i = 1, 101 do t = {t} end; return t", &out, &defaults,
                     &err) == CODEC_ERROR);
    CHECK_STR(err, "nesting too deep");
    CHECK(encode_lua("local t = 1; for i = 1, 101 do t = {k = t} end; return t", &out, &defaults,
                     &err) == CODEC_ERROR);
    CHECK_STR(err, "nesting too deep");

    struct codec_limits small = {.max_size = 10, .max_depth = 100};
    CHECK(encode_lua("'123456789'", &out, &small, &err) == CODEC_OK && buf_len(&out) == 10);
    buf_free(&out);
    CHECK(encode_lua("'1234567890'", &out, &small, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(encode_lua("{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}", &out, &small, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");
    CHECK(encode_lua("string.rep('x', 2 * 1024 * 1024)", &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "too large");

    /* A failed encode leaves the buffer as it was: empty and holding no storage here ... */
    CHECK(out.data == NULL && buf_len(&out) == 0);
    /* ... and with the earlier bytes intact (and nothing more) there. */
    CHECK(buf_append(&out, "abc", 3) == 0);
    CHECK(encode_lua("{1, 2, string.rep('y', 40000), print}", &out, &defaults, &err)
          == CODEC_ERROR);
    CHECK(buf_len(&out) == 3 && memcmp(buf_head(&out), "abc", 3) == 0);
    CHECK(encode_lua("{1, 2}", &out, &defaults, &err) == CODEC_OK);
    CHECK(hex_equals(&out, "616263920102"));
    buf_free(&out);
    CHECK(lua_gettop(L) == top);
}

/* Encodes the value, decodes it exactly and encodes that again: the same bytes. */
static bool reencodes(const char *code)
{
    struct buf first = {0}, second = {0};
    const char *err = "";
    int top = lua_gettop(L);
    push_lua(code);
    bool ok = codec_encode(L, -1, &first, &defaults, &err) == CODEC_OK
              && codec_decode(L, buf_head(&first), buf_len(&first), true, &err) == CODEC_OK
              && codec_encode(L, -1, &second, &defaults, &err) == CODEC_OK
              && buf_len(&first) == buf_len(&second)
              && memcmp(buf_head(&first), buf_head(&second), buf_len(&first)) == 0;
    if (!ok)
        fprintf(stderr, "exact round trip of %s: %s\n", code, err);
    lua_settop(L, top);
    buf_free(&first);
    buf_free(&second);
    return ok;
}

/* Decodes the hex bytes exactly and checks that encoding gives them back. */
static bool exact_bytes(const char *hex)
{
    char bytes[256];
    size_t len = strlen(hex) / 2;
    for (size_t i = 0; i < len; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
            return false;
        bytes[i] = (char)byte;
    }
    struct buf out = {0};
    const char *err = "";
    bool ok = codec_decode(L, bytes, len, true, &err) == CODEC_OK
              && codec_encode(L, -1, &out, &defaults, &err) == CODEC_OK && hex_equals(&out, hex);
    if (!ok)
        fprintf(stderr, "exact bytes %s: %s\n", hex, err);
    lua_settop(L, lua_gettop(L) - 1);
    buf_free(&out);
    return ok;
}

/* The kind of the value that the hex bytes decode to, exactly or not. */
static enum lvalue_kind decoded_kind(const char *bytes, size_t len, bool exact)
{
    const char *err;
    if (codec_decode(L, bytes, len, exact, &err) != CODEC_OK)
        return (enum lvalue_kind)-1;
    enum lvalue_kind kind = lvalues_kind(L, -1);
    lua_pop(L, 1);
    return kind;
}

static void test_markers(void)
{
    /* Markers say what a table is, whatever its keys; unmarked tables keep their rules. */
    CHECK(encodes_as("luasock.array({})", "90"));
    CHECK(encodes_as("luasock.map({})", "80"));
    CHECK(encodes_as("luasock.tuple({})", "90"));
    CHECK(encodes_as("luasock.set({})", "80"));
    CHECK(encodes_as("{}", "80"));
    CHECK(encodes_as("luasock.array({1, 2})", "920102"));
    CHECK(encodes_as("luasock.tuple({1, 'a'})", "9201a161"));
    CHECK(encodes_as("luasock.map({'hi'})", "8101a26869"));
    CHECK(encodes_as("luasock.set({x = true})", "81a178c3"));
    CHECK(encodes_as("luasock.set({x = 'anything'})", "81a178c3"));
    CHECK(encodes_as("luasock.array({1, luasock.null, 3})", "9301c003"));
    CHECK(encodes_as("luasock.array({1, 2, x = 'dropped'})", "920102"));
    CHECK(encodes_as("{luasock.array({}), luasock.map({})}", "929080"));

    /* The wrappers. */
    CHECK(encodes_as("luasock.bytes('abc')", "c403616263"));
    CHECK(encodes_as("luasock.bytes('')", "c400"));
    CHECK(encodes_as("luasock.uint64('18446744073709551615')", "cfffffffffffffffff"));
    CHECK(encodes_as("luasock.uint64(math.maxinteger)", "cf7fffffffffffffff"));
    CHECK(encodes_as("luasock.uint64('9223372036854775808')", "cf8000000000000000"));
    CHECK(encodes_as("luasock.uint64(5)", "05"));
    CHECK(encodes_as("luasock.ext(5, 'a')", "d40561"));
    CHECK(encodes_as("luasock.ext(-1, '\\0\\0\\0\\1')", "d6ff00000001"));
    CHECK(encodes_as("luasock.ext(-1, string.rep('\\0', 8))", "d7ff0000000000000000"));
    CHECK(encodes_as("luasock.ext(-1, string.rep('\\0', 12))", "c70cff000000000000000000000000"));
    CHECK(encodes_as("luasock.ext(5, 'abc')", "c70305616263"));
    CHECK(encodes_as("luasock.ext(127, '')", "c7007f"));
    CHECK(encodes_as("luasock.ext(-128, string.rep('z', 16))",
                     "d8807a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a"));
    CHECK(first_byte("luasock.ext(1, string.rep('z', 256))") == 0xc8);
    CHECK(encodes_as("{[luasock.bytes('k')] = luasock.uint64(1)}", "81c4016b01"));
    /* A wrapper whose slots someone changed reads as empty, as lvalues.h says. */
    CHECK(encodes_as("local b = luasock.bytes('x'); rawset(b, 1, 5); return b", "c400"));

    /* Depth and cycles count marked tables; wrappers are values, not containers. */
    struct buf out = {0};
    const char *err = NULL;
    CHECK(encode_lua("local t = luasock.bytes('x'); for i = 1, 100 do t = luasock.array({t}) end; "
                     "return t", &out, &defaults, &err) == CODEC_OK);
    buf_free(&out);
    CHECK(encode_lua("local t = 1; for i = 1, 101 do t = luasock.map({t}) end; return t", &out,
                     &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "nesting too deep");
    CHECK(encode_lua("local t = luasock.array({}); t[1] = t; return t", &out, &defaults, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "cycle in table");
    CHECK(encode_lua("luasock.set({[{}] = true, [print] = true})", &out, &defaults, &err)
          == CODEC_ERROR);
    CHECK_STR(err, "cannot encode a function");

    /* luasock.null is the only light userdata that encodes. */
    lua_pushlightuserdata(L, &out);
    CHECK(codec_encode(L, -1, &out, &defaults, &err) == CODEC_ERROR);
    CHECK_STR(err, "cannot encode a userdata");
    lua_pop(L, 1);
    CHECK(out.data == NULL);
}

static void test_exact(void)
{
    /* Exactly, containers come back marked, bin as bytes, big uint64 as uint64, ext as ext. */
    CHECK(decoded_kind(BYTES("\x90"), true) == LV_ARRAY);
    CHECK(decoded_kind(BYTES("\x80"), true) == LV_MAP);
    CHECK(decoded_kind(BYTES("\x82\x01\xa1" "a\x02\xa1" "b"), true) == LV_MAP);
    CHECK(decoded_kind(BYTES("\xc4\x01z"), true) == LV_BYTES);
    CHECK(decoded_kind(BYTES("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), true) == LV_UINT64);
    CHECK(decoded_kind(BYTES("\xcf\x80\x00\x00\x00\x00\x00\x00\x00"), true) == LV_UINT64);
    CHECK(decoded_kind(BYTES("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff"), true) == LV_OTHER);
    CHECK(decoded_kind(BYTES("\xd6\xff\x00\x00\x00\x01"), true) == LV_EXT);
    CHECK(decoded_kind(BYTES("\xa1z"), true) == LV_OTHER);
    /* Plainly, as before: unmarked tables, bin as a string, big uint64 as a float. */
    CHECK(decoded_kind(BYTES("\x90"), false) == LV_OTHER);
    CHECK(decoded_kind(BYTES("\xc4\x01z"), false) == LV_OTHER);
    const char *err;
    CHECK(codec_decode(L, BYTES("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), true, &err) == CODEC_OK);
    CHECK(lvalues_uint64(L, -1) == UINT64_MAX);
    lua_pop(L, 1);

    /* Exact values encode back to the bytes they came from (in their shortest forms, as
     * Python's packb writes them). */
    CHECK(exact_bytes("90"));
    CHECK(exact_bytes("80"));
    CHECK(exact_bytes("9190"));
    CHECK(exact_bytes("8101a26869"));
    CHECK(exact_bytes("81a16bc0"));
    CHECK(exact_bytes("93c0c0c0"));
    CHECK(exact_bytes("c403616263"));
    CHECK(exact_bytes("c400"));
    CHECK(exact_bytes("a3616263"));
    CHECK(exact_bytes("81c4016b01"));
    CHECK(exact_bytes("cfffffffffffffffff"));
    CHECK(exact_bytes("cf8000000000000000"));
    CHECK(exact_bytes("cf7fffffffffffffff"));
    CHECK(exact_bytes("d38000000000000000"));
    CHECK(exact_bytes("cb8000000000000000"));
    CHECK(exact_bytes("cb7ff8000000000000"));
    CHECK(exact_bytes("d6ff00000001"));
    CHECK(exact_bytes("d7ff0000000000000000"));
    CHECK(exact_bytes("c70cff000000000000000000000000"));
    CHECK(exact_bytes("c70305616263"));
    CHECK(exact_bytes("92d40561c7007f"));
    CHECK(exact_bytes("c0"));
    CHECK(exact_bytes("c3"));
    /* float32 decodes to a Lua float and goes back as the same number in a float64. */
    CHECK(codec_decode(L, BYTES("\xca\x3f\xc0\x00\x00"), true, &err) == CODEC_OK);
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 1.5);
    lua_pop(L, 1);

    CHECK(reencodes("luasock.array({})"));
    CHECK(reencodes("luasock.map({'x', 'y'})"));
    CHECK(reencodes("luasock.array({luasock.bytes('\\0'), luasock.uint64('18446744073709551615'), "
                    "luasock.ext(-1, '\\0\\0\\0\\0\\0\\0\\0\\1'), luasock.null, 1.0, 1, 'text'})"));
    CHECK(reencodes("{{}, {{}}, {x = {}}}"));
    CHECK(reencodes("local t = 1; for i = 1, 100 do t = luasock.array({t}) end; return t"));
}

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    lvalues_open(L);
    lua_setglobal(L, "luasock");
    if (luaL_dostring(L, same_lua) != LUA_OK)
        return 1;
    test_scalars();
    test_strings();
    test_tables();
    test_python_bytes();
    test_decode_edges();
    test_frame_pieces();
    test_frame_refusals();
    test_depth();
    test_items();
    test_encode_refusals();
    test_markers();
    test_exact();
    lua_close(L);
    buf_pool_drain();
    return check_report();
}
