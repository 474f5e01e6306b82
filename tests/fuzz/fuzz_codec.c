/* fuzz_codec.c -- libFuzzer target for codec.c: framing, decoding and re-encoding MessagePack.
 *
 * The input is a byte stream as a peer might send it. codec_frame runs on it with the server's
 * limits (1 MiB, depth 100, 100000 items), with a deeper limit (depth 1000) and with a budget of
 * 16 items; each must agree with the server's wherever its own limit is not the question, and
 * codec.h's promises must hold: a frame is within the data and the size limit, "more" only below
 * the size limit, a frame one byte short is "more", a size limit one byte short is "too large".
 * A value accepted with the deeper limit is decoded into a fresh lua_State,
 * plainly and exactly (only a nil or NaN map key may be refused), re-encoded with codec_encode
 * (which must succeed), and the re-encoding must frame as one whole value, decode (in the same
 * mode) to a deep-equal Lua value and re-encode to the same length. Deep-equal includes the kind
 * of lvalues.h (null, marked array or map, bytes, uint64, ext), so in exact mode the types
 * survive the trip. Decoding with trailing bytes or a byte missing must fail and leave the Lua
 * stack as it was. */
#include <stdbool.h>
#include <string.h>

#include <lauxlib.h>

#include "codec.h"
#include "errors.h"
#include "fuzz.h"
#include "lvalues.h"

#define DEEP 1000
#define FEW_ITEMS 16

static const struct codec_limits server_limits = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH,
                                                   CODEC_DEFAULT_MAX_ITEMS};
static const struct codec_limits deep_limits = {CODEC_DEFAULT_MAX_SIZE, DEEP,
                                                CODEC_DEFAULT_MAX_ITEMS};
/* The server's limits but for max_items: inputs are small, so a small item budget is met. */
static const struct codec_limits few_items_limits = {CODEC_DEFAULT_MAX_SIZE,
                                                     CODEC_DEFAULT_MAX_DEPTH, FEW_ITEMS};
/* Re-encoding may grow a value (float32 becomes float64), so it gets room. */
static const struct codec_limits encode_limits = {64 * 1024 * 1024, DEEP, SIZE_MAX};

static bool same_value(lua_State *L, int a, int b);

/* Whether round_trip decodes exactly: there, the one change a trip may make is that a str that
 * is not UTF-8 (which Python never sends) is re-encoded, and so comes back, as bin. */
static bool exact_trip;

/* Keys that are tables cannot be looked up in the other table, so only their number is compared;
 * every other key must map to a deep-equal value in both. In an exact trip, a string key that b
 * lacks is taken to have come back as a bytes key, and so counts as one of b's table keys. */
static bool same_table(lua_State *L, int a, int b)
{
    FUZZ_CHECK(lua_checkstack(L, 6));
    size_t keys[2] = {0, 0}, table_keys[2] = {0, 0}, became_bytes = 0;
    int t[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        lua_pushnil(L);
        while (lua_next(L, t[i]) != 0) {
            lua_pop(L, 1);
            keys[i]++;
            table_keys[i] += lua_istable(L, -1);
        }
    }
    if (keys[0] != keys[1])
        return false;
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        if (!lua_istable(L, -2)) {
            lua_pushvalue(L, -2);
            bool missing = lua_rawget(L, b) == LUA_TNIL;
            bool same = exact_trip && missing && lua_type(L, -3) == LUA_TSTRING;
            became_bytes += same;
            same = same || same_value(L, -2, -1);
            lua_pop(L, 1);
            if (!same) {
                lua_pop(L, 2);
                return false;
            }
        }
        lua_pop(L, 1);
    }
    return table_keys[0] + became_bytes == table_keys[1];
}

static bool same_bytes(lua_State *L, int a, int b)
{
    size_t la, lb;
    const char *sa = lua_tolstring(L, a, &la), *sb = lvalues_bytes(L, b, &lb);
    return la == lb && memcmp(sa, sb, la) == 0;
}

/* Deep equality that tells integers from floats, 0.0 from -0.0 and one kind of lvalues.h from
 * another, and takes NaN as itself. */
static bool same_value(lua_State *L, int a, int b)
{
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    if (exact_trip && lua_type(L, a) == LUA_TSTRING && lvalues_kind(L, b) == LV_BYTES)
        return same_bytes(L, a, b);
    int type = lua_type(L, a);
    if (type != lua_type(L, b) || lvalues_kind(L, a) != lvalues_kind(L, b))
        return false;
    switch (type) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) != lua_isinteger(L, b))
            return false;
        if (lua_isinteger(L, a))
            return lua_tointeger(L, a) == lua_tointeger(L, b);
        {
            lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
            if (x != x)
                return y != y;
            return memcmp(&x, &y, sizeof x) == 0;
        }
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case LUA_TTABLE:
        return same_table(L, a, b);
    default: /* nil, booleans and luasock.null: nothing else is decoded */
        return lua_rawequal(L, a, b);
    }
}

/* An exact-size copy, so that ASan catches a read past the bytes given. */
static char *copy_of(const char *bytes, size_t n)
{
    char *data = malloc(n);
    FUZZ_CHECK(data != NULL || n == 0);
    if (n > 0)
        memcpy(data, bytes, n);
    return data;
}

static void check_frame(const char *data, size_t len, const struct codec_limits *limits,
                        enum codec_status st, size_t frame_len, const char *err)
{
    if (st == CODEC_OK) {
        FUZZ_CHECK(frame_len >= 1 && frame_len <= len && frame_len <= limits->max_size);
        /* The value alone frames the same; a byte less is not there yet; a size limit a byte
         * smaller refuses it. */
        size_t again = 0;
        FUZZ_CHECK(codec_frame(data, frame_len, limits, &again, &err) == CODEC_OK
                   && again == frame_len);
        FUZZ_CHECK(codec_frame(data, frame_len - 1, limits, &again, &err) == CODEC_MORE);
        struct codec_limits smaller = {frame_len - 1, limits->max_depth, limits->max_items};
        err = NULL;
        FUZZ_CHECK(codec_frame(data, len, &smaller, &again, &err) == CODEC_ERROR);
        FUZZ_CHECK(err != NULL && strcmp(err, ERR_TOO_LARGE) == 0);
    } else if (st == CODEC_MORE) {
        FUZZ_CHECK(len < limits->max_size);
    } else {
        FUZZ_CHECK(st == CODEC_ERROR && err != NULL && err[0] != '\0');
    }
}

/* Decodes data[0..len) (one framed value), re-encodes it and checks the round trip. */
static void round_trip(const char *data, size_t len, size_t total, bool exact)
{
    lua_State *L = luaL_newstate();
    FUZZ_CHECK(L != NULL);
    lua_newtable(L);
    lvalues_open(L);
    lua_pop(L, 1);
    exact_trip = exact;
    const char *err = NULL;

    /* Not exactly one value: refused, with nothing pushed. */
    if (total > len) {
        char *longer = copy_of(data, total);
        FUZZ_CHECK(codec_decode(L, longer, total, exact, &err) == CODEC_ERROR && err != NULL);
        FUZZ_CHECK(lua_gettop(L) == 0);
        free(longer);
    }
    char *shorter = copy_of(data, len - 1);
    FUZZ_CHECK(codec_decode(L, shorter, len - 1, exact, &err) == CODEC_ERROR && err != NULL);
    FUZZ_CHECK(lua_gettop(L) == 0);
    free(shorter);

    char *value = copy_of(data, len);
    err = NULL;
    enum codec_status st = codec_decode(L, value, len, exact, &err);
    free(value);
    if (st != CODEC_OK) {
        /* The only framed values Lua cannot hold: a map with a nil or NaN key. */
        FUZZ_CHECK(st == CODEC_ERROR && err != NULL);
        if (strcmp(err, "bad map key") != 0) {
            fprintf(stderr, "decoding a framed value failed: %s\n", err);
            FUZZ_CHECK(!"a framed value decodes");
        }
        FUZZ_CHECK(lua_gettop(L) == 0);
        lua_close(L);
        return;
    }
    FUZZ_CHECK(lua_gettop(L) == 1);

    struct buf first = {0}, second = {0};
    err = NULL;
    if (codec_encode(L, 1, &first, &encode_limits, &err) != CODEC_OK) {
        fprintf(stderr, "re-encoding a decoded value failed: %s\n", err);
        FUZZ_CHECK(!"a decoded value encodes");
    }
    FUZZ_CHECK(lua_gettop(L) == 1);

    char *bytes = copy_of(buf_head(&first), buf_len(&first));
    size_t frame_len = 0;
    FUZZ_CHECK(codec_frame(bytes, buf_len(&first), &encode_limits, &frame_len, &err) == CODEC_OK);
    FUZZ_CHECK(frame_len == buf_len(&first));
    err = NULL;
    if (codec_decode(L, bytes, frame_len, exact, &err) != CODEC_OK) {
        fprintf(stderr, "decoding a re-encoded value failed: %s\n", err);
        FUZZ_CHECK(!"a re-encoded value decodes");
    }
    free(bytes);
    FUZZ_CHECK(lua_gettop(L) == 2);
    FUZZ_CHECK(same_value(L, 1, 2));
    FUZZ_CHECK(lua_gettop(L) == 2);

    FUZZ_CHECK(codec_encode(L, 2, &second, &encode_limits, &err) == CODEC_OK);
    FUZZ_CHECK(buf_len(&second) == buf_len(&first));

    buf_free(&first);
    buf_free(&second);
    lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
    char *data = copy_of((const char *)input, size);
    size_t len_server = 0, len_deep = 0;
    const char *err_server = NULL, *err_deep = NULL;
    enum codec_status server = codec_frame(data, size, &server_limits, &len_server, &err_server);
    enum codec_status deep = codec_frame(data, size, &deep_limits, &len_deep, &err_deep);
    check_frame(data, size, &server_limits, server, len_server, err_server);
    check_frame(data, size, &deep_limits, deep, len_deep, err_deep);

    /* The limits differ only in depth, so they agree unless depth is what the server refused. */
    if (server != CODEC_ERROR || strcmp(err_server, "nesting too deep") != 0) {
        FUZZ_CHECK(deep == server);
        if (server == CODEC_OK)
            FUZZ_CHECK(len_deep == len_server);
        else if (server == CODEC_ERROR)
            FUZZ_CHECK(strcmp(err_deep, err_server) == 0);
    }

    /* Likewise with a budget of FEW_ITEMS, unless the items are what it refused. */
    size_t len_few = 0;
    const char *err_few = NULL;
    enum codec_status few = codec_frame(data, size, &few_items_limits, &len_few, &err_few);
    check_frame(data, size, &few_items_limits, few, len_few, err_few);
    if (few != CODEC_ERROR || strcmp(err_few, CODEC_ERR_TOO_MANY_ITEMS) != 0) {
        FUZZ_CHECK(few == server);
        if (server == CODEC_OK)
            FUZZ_CHECK(len_few == len_server);
        else if (server == CODEC_ERROR)
            FUZZ_CHECK(strcmp(err_few, err_server) == 0);
    }

    if (deep == CODEC_OK) {
        round_trip(data, len_deep, size, false);
        round_trip(data, len_deep, size, true);
    }
    free(data);
    return 0;
}
