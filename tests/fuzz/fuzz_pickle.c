/* fuzz_pickle.c -- libFuzzer target for pickle.c: scanning, decoding and re-encoding pickles.
 *
 * The input is a byte stream as a peer might send it. pickle_scan runs on it whole with the
 * server's limits, and again fed a byte at a time (for inputs up to 4 KiB), and both must agree;
 * pickle.h's promises must hold: a pickle found is within the data and the size limit, "more"
 * only below the size limit, a pickle one byte short is "more", a size limit one byte short is
 * "too large". A pickle found is decoded into a fresh lua_State in plain and exact mode (only a
 * None or NaN key, or in plain mode an int above 2^63-1, may be refused) and must leave the
 * stack as it was on failure; a decoded value is re-encoded (refused only for what a pickle can
 * build and our encoder does not write back: cycles and deep sharing through the memo, tables
 * as keys), and that encoding must scan as one pickle, decode, and encode again to the same
 * length. Decoding a byte less, or with a trailing byte, must fail. */
#include <stdbool.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "fuzz.h"
#include "lvalues.h"
#include "pickle.h"

#define TRICKLE_MAX 4096

static const struct codec_limits server_limits = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH,
                                                   CODEC_DEFAULT_MAX_ITEMS};
/* Re-encoding writes a value shared through the memo (or DUP) once per use, so a few hundred
 * bytes can stand for an exponentially large tree: 2 MiB (twice the server's max_object)
 * keeps each trip quick; above it the encoder's "too large" is the answer checked. A 64 MiB
 * bound let one 608-byte input of DUPs take more than libFuzzer's 12 s (regressions/pickle/). */
static const struct codec_limits encode_limits = {2 * 1024 * 1024, CODEC_DEFAULT_MAX_DEPTH,
                                                  SIZE_MAX};

static char *copy_of(const char *bytes, size_t n)
{
    char *data = malloc(n ? n : 1);
    FUZZ_CHECK(data != NULL);
    if (n > 0)
        memcpy(data, bytes, n);
    return data;
}

static enum codec_status scan(const char *data, size_t len, const struct codec_limits *limits,
                              size_t *frame_len, const char **err)
{
    struct pickle_scanner s;
    pickle_scanner_init(&s);
    enum codec_status st = pickle_scan(&s, data, len, limits, frame_len, err);
    pickle_scanner_release(&s);
    return st;
}

static void check_scan(const char *data, size_t len, enum codec_status st, size_t frame_len,
                       const char *err)
{
    const struct codec_limits *limits = &server_limits;
    if (st == CODEC_OK) {
        FUZZ_CHECK(frame_len >= 1 && frame_len <= len && frame_len <= limits->max_size);
        FUZZ_CHECK(data[frame_len - 1] == '.');
        size_t again = 0;
        FUZZ_CHECK(scan(data, frame_len, limits, &again, &err) == CODEC_OK && again == frame_len);
        FUZZ_CHECK(scan(data, frame_len - 1, limits, &again, &err) == CODEC_MORE);
        struct codec_limits smaller = {frame_len - 1, limits->max_depth, limits->max_items};
        err = NULL;
        FUZZ_CHECK(scan(data, len, &smaller, &again, &err) == CODEC_ERROR);
        FUZZ_CHECK(err != NULL && strcmp(err, ERR_TOO_LARGE) == 0);
    } else if (st == CODEC_MORE) {
        FUZZ_CHECK(len < limits->max_size);
    } else {
        FUZZ_CHECK(st == CODEC_ERROR && err != NULL && err[0] != '\0');
    }
}

/* The same pickle fed a byte at a time: the same answer, and CODEC_MORE before it. */
static void check_trickle(const char *data, size_t len, enum codec_status whole,
                          size_t whole_len, const char *whole_err)
{
    struct pickle_scanner s;
    size_t frame_len = 0;
    const char *err = NULL;
    enum codec_status st = CODEC_MORE;
    pickle_scanner_init(&s);
    for (size_t n = 0; n <= len && st == CODEC_MORE; n++)
        st = pickle_scan(&s, data, n, &server_limits, &frame_len, &err);
    FUZZ_CHECK(st == whole);
    if (st == CODEC_OK)
        FUZZ_CHECK(frame_len == whole_len);
    if (st == CODEC_ERROR)
        FUZZ_CHECK(strcmp(err, whole_err) == 0);
    pickle_scanner_release(&s);
}

static bool is(const char *err, const char *want)
{
    return err != NULL && strcmp(err, want) == 0;
}

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    FUZZ_CHECK(L != NULL);
    lua_newtable(L);
    lvalues_open(L);
    lua_pop(L, 1);
    return L;
}

/* Decodes data[0..len) (one pickle) and, if it decodes, re-encodes it and checks the trip. */
static void round_trip(const char *data, size_t len, size_t total, const char *input, bool exact)
{
    lua_State *L = new_state();
    const char *err = NULL;
    char *shorter = copy_of(data, len - 1);
    FUZZ_CHECK(pickle_decode(L, shorter, len - 1, exact, &err) == CODEC_ERROR && err != NULL);
    FUZZ_CHECK(lua_gettop(L) == 0);
    free(shorter);
    if (total > len) {
        char *longer = copy_of(input, len + 1);
        FUZZ_CHECK(pickle_decode(L, longer, len + 1, exact, &err) == CODEC_ERROR);
        FUZZ_CHECK(lua_gettop(L) == 0);
        free(longer);
    }

    err = NULL;
    if (pickle_decode(L, data, len, exact, &err) != CODEC_OK) {
        FUZZ_CHECK(lua_gettop(L) == 0);
        if (!is(err, "pickle: dict key or set member is None or NaN (no Lua table key)")
            && !(is(err, "pickle: integer out of range (64 bits)") && !exact)) {
            fprintf(stderr, "decoding a scanned pickle failed: %s\n", err);
            FUZZ_CHECK(!"a scanned pickle decodes");
        }
        lua_close(L);
        return;
    }
    FUZZ_CHECK(lua_gettop(L) == 1);

    struct buf first = {0}, second = {0};
    err = NULL;
    if (pickle_encode(L, 1, &first, &encode_limits, &err) != CODEC_OK) {
        FUZZ_CHECK(buf_len(&first) == 0 && lua_gettop(L) == 1);
        lua_close(L);
        return;
    }
    char *bytes = copy_of(buf_head(&first), buf_len(&first));
    size_t frame_len = 0;
    FUZZ_CHECK(scan(bytes, buf_len(&first), &encode_limits, &frame_len, &err) == CODEC_OK);
    FUZZ_CHECK(frame_len == buf_len(&first));
    err = NULL;
    if (pickle_decode(L, bytes, frame_len, exact, &err) != CODEC_OK) {
        fprintf(stderr, "decoding a re-encoded value failed: %s\n", err);
        FUZZ_CHECK(!"a re-encoded value decodes");
    }
    free(bytes);
    FUZZ_CHECK(pickle_encode(L, 2, &second, &encode_limits, &err) == CODEC_OK);
    if (exact)
        FUZZ_CHECK(buf_len(&second) == buf_len(&first));
    buf_free(&first);
    buf_free(&second);
    lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size)
{
    char *data = copy_of((const char *)input, size);
    size_t len = 0;
    const char *err = NULL;
    enum codec_status st = scan(data, size, &server_limits, &len, &err);
    check_scan(data, size, st, len, err);
    if (size <= TRICKLE_MAX)
        check_trickle(data, size, st, len, err);
    if (st == CODEC_OK) {
        char *value = copy_of(data, len);
        round_trip(value, len, size, data, false);
        round_trip(value, len, size, data, true);
        free(value);
    }
    free(data);
    return 0;
}
