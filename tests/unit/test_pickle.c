/* Unit tests for pickle.c: pickles made by Python 3's pickle for every protocol, in plain and
 * exact mode; the refused opcodes; memo, stack, length, depth and item limits; truncated and
 * trickled input; and the encoder (round trips, limits, out left as it was). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "same_lua.h"
#include "errors.h"
#include "lvalues.h"
#include "pickle.h"

#define BYTES(s) (s), sizeof(s) - 1

struct fixture {
    int protocol;
    size_t len;
    const char *data;
};

/* Made by Python 3's pickle.dumps (protocol in the name). */
static const struct fixture tutorial[] = {
    {0, 31,
    "\x28\x64\x70\x30\x0a\x49\x31\x0a\x56\x68\x69\x0a\x70\x31\x0a\x73\x49\x32\x0a\x56\x74\x68\x65\x72"
    "\x65\x0a\x70\x32\x0a\x73\x2e"},
    {1, 31,
    "\x7d\x71\x00\x28\x4b\x01\x58\x02\x00\x00\x00\x68\x69\x71\x01\x4b\x02\x58\x05\x00\x00\x00\x74\x68"
    "\x65\x72\x65\x71\x02\x75\x2e"},
    {2, 33,
    "\x80\x02\x7d\x71\x00\x28\x4b\x01\x58\x02\x00\x00\x00\x68\x69\x71\x01\x4b\x02\x58\x05\x00\x00\x00"
    "\x74\x68\x65\x72\x65\x71\x02\x75\x2e"},
    {3, 33,
    "\x80\x03\x7d\x71\x00\x28\x4b\x01\x58\x02\x00\x00\x00\x68\x69\x71\x01\x4b\x02\x58\x05\x00\x00\x00"
    "\x74\x68\x65\x72\x65\x71\x02\x75\x2e"},
    {4, 33,
    "\x80\x04\x95\x16\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x4b\x01\x8c\x02\x68\x69\x94\x4b\x02\x8c"
    "\x05\x74\x68\x65\x72\x65\x94\x75\x2e"},
    {5, 33,
    "\x80\x05\x95\x16\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x4b\x01\x8c\x02\x68\x69\x94\x4b\x02\x8c"
    "\x05\x74\x68\x65\x72\x65\x94\x75\x2e"},
};
/* [None, True, False, 0, -1, 255, 65536, -2147483648, 2147483648, 9223372036854775807, -9223372036854775808, 1.5, -0.0, 'héllo \\ \n', '😀', (1, 2), {'k': [1]}, (), [], {}], and for protocols 4 and 5 {3} and frozenset({4}) too. */
static const struct fixture mixed[] = {
    {0, 219,
    "\x28\x6c\x70\x30\x0a\x4e\x61\x49\x30\x31\x0a\x61\x49\x30\x30\x0a\x61\x49\x30\x0a\x61\x49\x2d\x31"
    "\x0a\x61\x49\x32\x35\x35\x0a\x61\x49\x36\x35\x35\x33\x36\x0a\x61\x49\x2d\x32\x31\x34\x37\x34\x38"
    "\x33\x36\x34\x38\x0a\x61\x4c\x32\x31\x34\x37\x34\x38\x33\x36\x34\x38\x4c\x0a\x61\x4c\x39\x32\x32"
    "\x33\x33\x37\x32\x30\x33\x36\x38\x35\x34\x37\x37\x35\x38\x30\x37\x4c\x0a\x61\x4c\x2d\x39\x32\x32"
    "\x33\x33\x37\x32\x30\x33\x36\x38\x35\x34\x37\x37\x35\x38\x30\x38\x4c\x0a\x61\x46\x31\x2e\x35\x0a"
    "\x61\x46\x2d\x30\x2e\x30\x0a\x61\x56\x68\xe9\x6c\x6c\x6f\x20\x5c\x75\x30\x30\x35\x63\x20\x5c\x75"
    "\x30\x30\x30\x61\x0a\x70\x31\x0a\x61\x56\x5c\x55\x30\x30\x30\x31\x66\x36\x30\x30\x0a\x70\x32\x0a"
    "\x61\x28\x49\x31\x0a\x49\x32\x0a\x74\x70\x33\x0a\x61\x28\x64\x70\x34\x0a\x56\x6b\x0a\x70\x35\x0a"
    "\x28\x6c\x70\x36\x0a\x49\x31\x0a\x61\x73\x61\x28\x74\x61\x28\x6c\x70\x37\x0a\x61\x28\x64\x70\x38"
    "\x0a\x61\x2e"},
    {1, 171,
    "\x5d\x71\x00\x28\x4e\x49\x30\x31\x0a\x49\x30\x30\x0a\x4b\x00\x4a\xff\xff\xff\xff\x4b\xff\x4a\x00"
    "\x00\x01\x00\x4a\x00\x00\x00\x80\x4c\x32\x31\x34\x37\x34\x38\x33\x36\x34\x38\x4c\x0a\x4c\x39\x32"
    "\x32\x33\x33\x37\x32\x30\x33\x36\x38\x35\x34\x37\x37\x35\x38\x30\x37\x4c\x0a\x4c\x2d\x39\x32\x32"
    "\x33\x33\x37\x32\x30\x33\x36\x38\x35\x34\x37\x37\x35\x38\x30\x38\x4c\x0a\x47\x3f\xf8\x00\x00\x00"
    "\x00\x00\x00\x47\x80\x00\x00\x00\x00\x00\x00\x00\x58\x0a\x00\x00\x00\x68\xc3\xa9\x6c\x6c\x6f\x20"
    "\x5c\x20\x0a\x71\x01\x58\x04\x00\x00\x00\xf0\x9f\x98\x80\x71\x02\x28\x4b\x01\x4b\x02\x74\x71\x03"
    "\x7d\x71\x04\x58\x01\x00\x00\x00\x6b\x71\x05\x5d\x71\x06\x4b\x01\x61\x73\x29\x5d\x71\x07\x7d\x71"
    "\x08\x65\x2e"},
    {2, 135,
    "\x80\x02\x5d\x71\x00\x28\x4e\x88\x89\x4b\x00\x4a\xff\xff\xff\xff\x4b\xff\x4a\x00\x00\x01\x00\x4a"
    "\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00"
    "\x00\x00\x00\x00\x00\x00\x80\x47\x3f\xf8\x00\x00\x00\x00\x00\x00\x47\x80\x00\x00\x00\x00\x00\x00"
    "\x00\x58\x0a\x00\x00\x00\x68\xc3\xa9\x6c\x6c\x6f\x20\x5c\x20\x0a\x71\x01\x58\x04\x00\x00\x00\xf0"
    "\x9f\x98\x80\x71\x02\x4b\x01\x4b\x02\x86\x71\x03\x7d\x71\x04\x58\x01\x00\x00\x00\x6b\x71\x05\x5d"
    "\x71\x06\x4b\x01\x61\x73\x29\x5d\x71\x07\x7d\x71\x08\x65\x2e"},
    {3, 135,
    "\x80\x03\x5d\x71\x00\x28\x4e\x88\x89\x4b\x00\x4a\xff\xff\xff\xff\x4b\xff\x4a\x00\x00\x01\x00\x4a"
    "\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00"
    "\x00\x00\x00\x00\x00\x00\x80\x47\x3f\xf8\x00\x00\x00\x00\x00\x00\x47\x80\x00\x00\x00\x00\x00\x00"
    "\x00\x58\x0a\x00\x00\x00\x68\xc3\xa9\x6c\x6c\x6f\x20\x5c\x20\x0a\x71\x01\x58\x04\x00\x00\x00\xf0"
    "\x9f\x98\x80\x71\x02\x4b\x01\x4b\x02\x86\x71\x03\x7d\x71\x04\x58\x01\x00\x00\x00\x6b\x71\x05\x5d"
    "\x71\x06\x4b\x01\x61\x73\x29\x5d\x71\x07\x7d\x71\x08\x65\x2e"},
    {4, 137,
    "\x80\x04\x95\x7e\x00\x00\x00\x00\x00\x00\x00\x5d\x94\x28\x4e\x88\x89\x4b\x00\x4a\xff\xff\xff\xff"
    "\x4b\xff\x4a\x00\x00\x01\x00\x4a\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff"
    "\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x47\x3f\xf8\x00\x00\x00\x00\x00\x00"
    "\x47\x80\x00\x00\x00\x00\x00\x00\x00\x8c\x0a\x68\xc3\xa9\x6c\x6c\x6f\x20\x5c\x20\x0a\x94\x8c\x04"
    "\xf0\x9f\x98\x80\x94\x4b\x01\x4b\x02\x86\x94\x7d\x94\x8c\x01\x6b\x94\x5d\x94\x4b\x01\x61\x73\x29"
    "\x5d\x94\x7d\x94\x8f\x94\x28\x4b\x03\x90\x28\x4b\x04\x91\x94\x65\x2e"},
    {5, 137,
    "\x80\x05\x95\x7e\x00\x00\x00\x00\x00\x00\x00\x5d\x94\x28\x4e\x88\x89\x4b\x00\x4a\xff\xff\xff\xff"
    "\x4b\xff\x4a\x00\x00\x01\x00\x4a\x00\x00\x00\x80\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff"
    "\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x47\x3f\xf8\x00\x00\x00\x00\x00\x00"
    "\x47\x80\x00\x00\x00\x00\x00\x00\x00\x8c\x0a\x68\xc3\xa9\x6c\x6c\x6f\x20\x5c\x20\x0a\x94\x8c\x04"
    "\xf0\x9f\x98\x80\x94\x4b\x01\x4b\x02\x86\x94\x7d\x94\x8c\x01\x6b\x94\x5d\x94\x4b\x01\x61\x73\x29"
    "\x5d\x94\x7d\x94\x8f\x94\x28\x4b\x03\x90\x28\x4b\x04\x91\x94\x65\x2e"},
};
/* [b'\x00bin', bytearray(b'ba')]: protocol 5 writes BYTEARRAY8, 3 and 4 a GLOBAL. */
static const char bytes5[] =
    "\x80\x05\x95\x18\x00\x00\x00\x00\x00\x00\x00\x5d\x94\x28\x43\x04\x00\x62\x69\x6e\x94\x96\x02\x00"
    "\x00\x00\x00\x00\x00\x00\x62\x61\x94\x65\x2e";
static const char bytes3[] =
    "\x80\x03\x5d\x71\x00\x43\x04\x00\x62\x69\x6e\x71\x01\x61\x2e";
/* An object whose __reduce__ is (os.system, ('echo pwned',)). */
static const char evil0[] =
    "\x63\x70\x6f\x73\x69\x78\x0a\x73\x79\x73\x74\x65\x6d\x0a\x70\x30\x0a\x28\x56\x65\x63\x68\x6f\x20"
    "\x70\x77\x6e\x65\x64\x0a\x70\x31\x0a\x74\x70\x32\x0a\x52\x70\x33\x0a\x2e";
static const char evil4[] =
    "\x80\x04\x95\x25\x00\x00\x00\x00\x00\x00\x00\x8c\x05\x70\x6f\x73\x69\x78\x94\x8c\x06\x73\x79\x73"
    "\x74\x65\x6d\x94\x93\x94\x8c\x0a\x65\x63\x68\x6f\x20\x70\x77\x6e\x65\x64\x94\x85\x94\x52\x94\x2e"
    "";
/* l = [1]; [l, l] */
static const char shared[] =
    "\x80\x02\x5d\x71\x00\x28\x5d\x71\x01\x4b\x01\x61\x68\x01\x65\x2e";
static const char u64max[] =
    "\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00\x2e";
static const char u64over[] =
    "\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01\x2e";
static const char u63text[] =
    "\x4c\x39\x32\x32\x33\x33\x37\x32\x30\x33\x36\x38\x35\x34\x37\x37\x35\x38\x30\x38\x4c\x0a\x2e";

static lua_State *L;
static const struct codec_limits defaults = {CODEC_DEFAULT_MAX_SIZE, CODEC_DEFAULT_MAX_DEPTH,
                                             CODEC_DEFAULT_MAX_ITEMS};

static const char same_lua[] =
    SAME_LUA
    "null, array, map, tuple, set, bytes, uint64 = luasock.null, luasock.array, luasock.map,\n"
    "  luasock.tuple, luasock.set, luasock.bytes, luasock.uint64\n";

static void push_lua(const char *code)
{
    char chunk[2048];
    snprintf(chunk, sizeof chunk, "return %s", code);
    if (luaL_dostring(L, chunk) != LUA_OK) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        CHECK(false);
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

static bool same_top2(void)
{
    lua_getglobal(L, "same");
    lua_insert(L, -3);
    lua_call(L, 2, 1);
    bool ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* Decodes and compares with the Lua expression want. */
static void decodes_to(const char *data, size_t len, bool exact, const char *want, int line)
{
    const char *err = NULL;
    int top = lua_gettop(L);
    if (pickle_decode(L, data, len, exact, &err) != CODEC_OK) {
        fprintf(stderr, "line %d: decode failed: %s\n", line, err);
        CHECK(false);
        return;
    }
    push_lua(want);
    if (!same_top2()) {
        fprintf(stderr, "line %d: decoded value differs from %s\n", line, want);
        CHECK(false);
    }
    CHECK(lua_gettop(L) == top);
}
#define DECODES_TO(...) decodes_to(__VA_ARGS__, __LINE__)

/* Scans (and decodes) and expects the error err. */
static void refused(const char *data, size_t len, const char *err_want, int line)
{
    struct pickle_scanner s;
    size_t n = 0;
    const char *err = NULL;
    pickle_scanner_init(&s);
    enum codec_status st = pickle_scan(&s, data, len, &defaults, &n, &err);
    pickle_scanner_release(&s);
    if (st != CODEC_ERROR || strcmp(err, err_want) != 0) {
        fprintf(stderr, "line %d: scan said %d (%s), not %s\n", line, st, err ? err : "",
                err_want);
        CHECK(false);
    }
    int top = lua_gettop(L);
    err = NULL;
    CHECK(pickle_decode(L, data, len, false, &err) == CODEC_ERROR && err != NULL);
    CHECK(lua_gettop(L) == top);
}
#define REFUSED(...) refused(__VA_ARGS__, __LINE__)

static const char tutorial_lua[] = "{[1] = 'hi', [2] = 'there'}";
static const char mixed_lua[] =
    "{null, true, false, 0, -1, 255, 65536, -2147483648, 2147483648, math.maxinteger,"
    " math.mininteger, 1.5, -0.0, 'h\\u{e9}llo \\\\ \\n', '\\u{1f600}', {1, 2}, {k = {1}}, {}, {},"
    " {}}";
static const char mixed_exact_lua[] =
    "array{null, true, false, 0, -1, 255, 65536, -2147483648, 2147483648, math.maxinteger,"
    " math.mininteger, 1.5, -0.0, 'h\\u{e9}llo \\\\ \\n', '\\u{1f600}', tuple{1, 2},"
    " map{k = array{1}}, tuple{}, array{}, map{}}";

static void test_python_fixtures(void)
{
    for (size_t i = 0; i < sizeof tutorial / sizeof tutorial[0]; i++) {
        DECODES_TO(tutorial[i].data, tutorial[i].len, false, tutorial_lua);
        DECODES_TO(tutorial[i].data, tutorial[i].len, true, "map{[1] = 'hi', [2] = 'there'}");
    }
    for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++) {
        char want[1024];
        bool sets = mixed[i].protocol >= 4;
        snprintf(want, sizeof want, "(function() local t = %s %s return t end)()", mixed_lua,
                 sets ? "t[21] = {[3] = true}; t[22] = {[4] = true}" : "");
        DECODES_TO(mixed[i].data, mixed[i].len, false, want);
        snprintf(want, sizeof want, "(function() local t = %s %s return t end)()",
                 mixed_exact_lua, sets ? "t[21] = set{[3] = true}; t[22] = set{[4] = true}" : "");
        DECODES_TO(mixed[i].data, mixed[i].len, true, want);
    }
    DECODES_TO(BYTES(bytes5), false, "{'\\0bin', 'ba'}");
    DECODES_TO(BYTES(bytes5), true, "array{bytes('\\0bin'), bytes('ba')}");
    DECODES_TO(BYTES(bytes3), true, "array{bytes('\\0bin')}");
    /* The memo: the same table twice. */
    const char *err = NULL;
    CHECK(pickle_decode(L, BYTES(shared), false, &err) == CODEC_OK);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    CHECK(lua_istable(L, -1) && lua_rawequal(L, -1, -2));
    lua_pop(L, 3);
}

static void test_ints(void)
{
    DECODES_TO(BYTES(u64max), true, "uint64('18446744073709551615')");
    DECODES_TO(BYTES(u63text), true, "uint64('9223372036854775808')");
    REFUSED(BYTES("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."), "pickle: malformed argument");
    const char *err = NULL;
    CHECK(pickle_decode(L, BYTES(u64max), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "pickle: integer out of range (64 bits)");
    CHECK(pickle_decode(L, BYTES(u64over), true, &err) == CODEC_ERROR);
    DECODES_TO(BYTES("\x8a\x00."), false, "0");
    DECODES_TO(BYTES("\x8a\x01\xff."), false, "-1");
    DECODES_TO(BYTES("\x8a\x0a\x00\x00\x00\x00\x00\x00\x00\x80\xff\xff."), false,
               "math.mininteger");
    DECODES_TO(BYTES("\x8b\x03\x00\x00\x00\x01\x00\x00."), false, "1");
    DECODES_TO(BYTES("I-5\n."), false, "-5");
    DECODES_TO(BYTES("I01\n."), false, "true");
    DECODES_TO(BYTES("L12L\n."), false, "12");
    REFUSED(BYTES("I1x\n."), "pickle: malformed argument");
    DECODES_TO(BYTES("Finf\n."), false, "math.huge");
    DECODES_TO(BYTES("F-1e+300\n."), false, "-1e300");
    REFUSED(BYTES("F1.5z\n."), "pickle: malformed argument");
    DECODES_TO(BYTES("V\\u00e9\\\\u\\U0001F600\xff\n."), false, "'\\u{e9}\\\\\\\\u\\u{1f600}\\u{ff}'");
    REFUSED(BYTES("V\\u00\n."), "pickle: malformed argument");
    REFUSED(BYTES("V\\U00110000\n."), "pickle: malformed argument");
    /* None is nil at the top, luasock.null in containers; a None or NaN key has no Lua form. */
    CHECK(pickle_decode(L, BYTES("N."), false, &err) == CODEC_OK && lua_isnil(L, -1));
    lua_pop(L, 1);
    CHECK(pickle_decode(L, BYTES("}(NK\x01u."), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "pickle: dict key or set member is None or NaN (no Lua table key)");
    CHECK(pickle_decode(L, BYTES("\x8f(G\x7f\xf8\x00\x00\x00\x00\x00\x00\x90."), false, &err)
          == CODEC_ERROR);
    CHECK(lua_gettop(L) == 0);
}

static void test_refused(void)
{
    static const struct {
        const char *op, *name;
    } ops[] = {{"c", "GLOBAL"}, {"\x93", "STACK_GLOBAL"}, {"R", "REDUCE"}, {"b", "BUILD"},
               {"i", "INST"}, {"o", "OBJ"}, {"\x81", "NEWOBJ"}, {"\x92", "NEWOBJ_EX"},
               {"\x82", "EXT1"}, {"\x83", "EXT2"}, {"\x84", "EXT4"}, {"P", "PERSID"},
               {"Q", "BINPERSID"}, {"\x97", "NEXT_BUFFER"}, {"\x98", "READONLY_BUFFER"}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char data[16], want[80];
        /* Refused where it stands, whatever follows. */
        int n = snprintf(data, sizeof data, "\x80\x04N%s", ops[i].op);
        snprintf(want, sizeof want, "pickle: opcode %s not allowed (plain data only)", ops[i].name);
        REFUSED(data, (size_t)n, want);
    }
    REFUSED(BYTES(evil0), "pickle: opcode GLOBAL not allowed (plain data only)");
    REFUSED(BYTES(evil4), "pickle: opcode STACK_GLOBAL not allowed (plain data only)");
    REFUSED(BYTES("\xff"), "pickle: unknown opcode");
    REFUSED(BYTES("\x80\x04\x00"), "pickle: unknown opcode");
    REFUSED(BYTES("S'a'\n."), "pickle: opcode STRING not supported");
    REFUSED(BYTES("\x80\x06N."), "pickle: unsupported protocol (0 to 5)");
}

static void test_stack_and_memo(void)
{
    REFUSED(BYTES("\x80\x04h\x00."), "pickle: GET of a memo slot never PUT");
    REFUSED(BYTES("\x80\x04N\x94j\x01\x00\x00\x00."), "pickle: GET of a memo slot never PUT");
    REFUSED(BYTES("g7\n."), "pickle: GET of a memo slot never PUT");
    REFUSED(BYTES("Np1x\n."), "pickle: malformed argument");
    REFUSED(BYTES("Np-1\n."), "pickle: malformed argument");
    REFUSED(BYTES("Np4294967296\n."), "pickle: malformed argument");
    REFUSED(BYTES("p1\n."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("Na."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("NNa."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("}K\x01" "a."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("](K\x01K\x02u."), "pickle: stack underflow or wrong kind of value");
    REFUSED(BYTES("}(K\x01u."), "pickle: a dict needs keys and values in pairs");
    REFUSED(BYTES("K\x01t."), "pickle: no MARK");
    REFUSED(BYTES("(."), "pickle: stack underflow or wrong kind of value");
    /* MEMOIZE fills len(memo), as Python's; PUT 5 then MEMOIZE is slot 1. */
    DECODES_TO(BYTES("K\x07q\x05K\x08\x94(h\x05h\x01t."), false, "{7, 8}");
    /* POP with nothing since the MARK pops the MARK, as Python's does. */
    DECODES_TO(BYTES("K\x01(0\x85."), false, "{1}");
    DECODES_TO(BYTES("K\x01(K\x02" "1."), false, "1");
    /* A list that holds itself (Python makes these): Lua holds it too. */
    const char *err = NULL;
    CHECK(pickle_decode(L, BYTES("]\x94h\x00" "a."), false, &err) == CODEC_OK);
    lua_rawgeti(L, -1, 1);
    CHECK(lua_rawequal(L, -1, -2));
    lua_pop(L, 2);
}

static void test_limits(void)
{
    /* Lengths are refused as soon as they are read, before their bytes. */
    REFUSED(BYTES("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f"), ERR_TOO_LARGE);
    REFUSED(BYTES("\x80\x04\x8e\x00\x00\x10\x00\x00\x00\x00\x00"), ERR_TOO_LARGE);
    REFUSED(BYTES("\x80\x04\x96\x01\x00\x10\x00\x00\x00\x00\x00"), ERR_TOO_LARGE);
    REFUSED(BYTES("\x80\x04X\xff\xff\xff\xff"), ERR_TOO_LARGE);
    REFUSED(BYTES("\x80\x04\x95\x00\x00\x10\x00\x00\x00\x00\x00"), ERR_TOO_LARGE);
    REFUSED(BYTES("\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x05hello."),
            "pickle: opcode crosses the end of its FRAME");
    REFUSED(BYTES("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00\x00\x00\x00\x00"
                  "\x00N."),
            "pickle: opcode crosses the end of its FRAME");
    struct codec_limits small = {16, 3, 5};
    struct pickle_scanner s;
    size_t n = 0;
    const char *err = NULL;
    pickle_scanner_init(&s);
    CHECK(pickle_scan(&s, BYTES("\x8c\x10"), &small, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, ERR_TOO_LARGE);
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("V0123456789abcde"), &small, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, ERR_TOO_LARGE);
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("V0123456789abc"), &small, &n, &err) == CODEC_MORE);
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("]]]a."), &small, &n, &err) == CODEC_OK && n == 5);
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("]]]]aaa."), &small, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, "pickle: nesting too deep");
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("((((N."), &small, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, "pickle: nesting too deep");
    pickle_scanner_release(&s);
    CHECK(pickle_scan(&s, BYTES("NNNNNN."), &small, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    pickle_scanner_release(&s);
    /* More memo slots than values pushed. */
    CHECK(pickle_scan(&s, BYTES("Nq\x01q\x02."), &defaults, &n, &err) == CODEC_ERROR);
    CHECK_STR(err, CODEC_ERR_TOO_MANY_ITEMS);
    pickle_scanner_release(&s);
    /* Deep nesting at the server's limits: 100 lists in lists pass, 101 do not. */
    char deep[512];
    for (int depth = 100; depth <= 101; depth++) {
        memset(deep, ']', (size_t)depth);
        memset(deep + depth, 'a', (size_t)depth - 1);
        deep[2 * depth - 1] = '.';
        enum codec_status st = pickle_scan(&s, deep, (size_t)(2 * depth), &defaults, &n, &err);
        CHECK(st == (depth == 100 ? CODEC_OK : CODEC_ERROR));
        pickle_scanner_release(&s);
    }
}

/* A pickle given a byte at a time: CODEC_MORE until its last byte, and the scanner never goes
 * back (its position only grows). Then truncations: decoding any prefix fails. */
static void test_trickle(void)
{
    for (size_t f = 0; f < sizeof mixed / sizeof mixed[0]; f++) {
        struct pickle_scanner s;
        size_t n = 0, last = 0;
        const char *err = NULL;
        bool ok = true;
        pickle_scanner_init(&s);
        for (size_t len = 0; len <= mixed[f].len; len++) {
            enum codec_status st = pickle_scan(&s, mixed[f].data, len, &defaults, &n, &err);
            ok = ok && s.pos >= last && (len < mixed[f].len ? st == CODEC_MORE : st == CODEC_OK);
            last = s.pos;
            if (len < mixed[f].len) {
                ok = ok && pickle_decode(L, mixed[f].data, len, false, &err) == CODEC_ERROR;
                ok = ok && lua_gettop(L) == 0;
            }
        }
        CHECK(ok && n == mixed[f].len);
        pickle_scanner_release(&s);
    }
    /* Fewer bytes than it scanned (a text argument's included): it starts over. */
    struct pickle_scanner s;
    size_t n = 0;
    const char *err = NULL;
    pickle_scanner_init(&s);
    CHECK(pickle_scan(&s, BYTES("NVabcdef"), &defaults, &n, &err) == CODEC_MORE);
    CHECK(pickle_scan(&s, BYTES("NVab"), &defaults, &n, &err) == CODEC_MORE);
    CHECK(pickle_scan(&s, BYTES("NVab\n."), &defaults, &n, &err) == CODEC_OK && n == 6);
    pickle_scanner_release(&s);
    CHECK(pickle_decode(L, BYTES("N.N"), false, &err) == CODEC_ERROR);
    CHECK_STR(err, "pickle: bytes after STOP");
}

static void encodes_back(const char *code, const char *want, bool exact, int line)
{
    struct buf out = {0};
    const char *err = NULL;
    push_lua(code);
    if (pickle_encode(L, -1, &out, &defaults, &err) != CODEC_OK) {
        fprintf(stderr, "line %d: encode failed: %s\n", line, err);
        CHECK(false);
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    decodes_to(buf_head(&out), buf_len(&out), exact, want, line);
    buf_free(&out);
}
#define ENCODES_BACK(code, want, exact) encodes_back(code, want, exact, __LINE__)

static void test_encode(void)
{
    struct buf out = {0};
    const char *err = NULL;
    /* The tutorial's dict, byte for byte (Python 3's pickle.loads reads it: tests/clients). */
    push_lua("map{[1] = 'hi'}");
    CHECK(pickle_encode(L, -1, &out, &defaults, &err) == CODEC_OK);
    lua_pop(L, 1);
    CHECK(buf_len(&out) == 12 && memcmp(buf_head(&out), "\x80\x04}(K\x01\x8c\x02hiu.", 12) == 0);
    buf_free(&out);
    ENCODES_BACK(mixed_exact_lua, mixed_exact_lua, true);
    ENCODES_BACK("{1, 'two', {x = 2.5}}", "array{1, 'two', map{x = 2.5}}", true);
    ENCODES_BACK("{}", "map{}", true);
    ENCODES_BACK("{bytes('\\xff'), '\\xfe', uint64('18446744073709551615'), 300, 70000, 1099511627776, -1099511627776,"
                 " -129, set{[7] = true, a = true}, nil}",
                 "array{bytes('\\xff'), bytes('\\xfe'), uint64('18446744073709551615'), 300, 70000, 1099511627776,"
                 " -1099511627776, -129, set{[7] = true, a = true}}", true);
    ENCODES_BACK("string.rep('z', 300)", "string.rep('z', 300)", false);
    ENCODES_BACK("{0/0 ~= 0/0, -math.huge}", "{true, -math.huge}", false);
    /* Refusals leave out as it was. */
    CHECK(buf_append(&out, "keep", 4) == 0);
    static const char *bad[] = {"print", "coroutine.create(print)", "io.stdout",
                                "(function() local t = {} t[1] = t return t end)()",
                                "{[{}] = 1}", "set{[array{}] = true}", "string.rep('x', 2^20)",
                                "luasock.ext(1, 'x')"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        push_lua(bad[i]);
        err = NULL;
        CHECK(pickle_encode(L, -1, &out, &defaults, &err) == CODEC_ERROR && err != NULL);
        CHECK(buf_len(&out) == 4 && memcmp(buf_head(&out), "keep", 4) == 0);
        lua_pop(L, 1);
    }
    push_lua("(function() local t = {} for i = 1, 99 do t = {t} end return t end)()");
    CHECK(pickle_encode(L, -1, &out, &defaults, &err) == CODEC_OK);
    lua_pop(L, 1);
    push_lua("(function() local t = {} for i = 1, 99 do t = {t} end return {t} end)()");
    CHECK(pickle_encode(L, -1, &out, &defaults, &err) == CODEC_ERROR);
    lua_pop(L, 1);
    CHECK(lua_gettop(L) == 0);
    buf_free(&out);
}

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    lvalues_open(L);
    lua_setglobal(L, "luasock");
    if (luaL_dostring(L, same_lua) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    test_python_fixtures();
    test_ints();
    test_refused();
    test_stack_and_memo();
    test_limits();
    test_trickle();
    test_encode();
    lua_close(L);
    return check_report();
}
