/* lngx.c -- luasock.ngxcore: the parts of OpenResty's ngx API that need C. Digests (OpenSSL EVP),
 * CRC-32 (zlib), base64 (base64.c), compiled PCRE2 regexes for ngx.re
 * (scripts/luasock/ngx_re.lua), and the byte buffer behind the ffi subset's char[?]
 * (scripts/luasock/ffi.lua). Internal: scripts reach it through require "luasock.ngx". */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <pcre2.h>
#include <zlib.h>

#include "base64.h"
#include "guard.h"
#include "lngx.h"
#include "lresult.h"

#define REGEX_MT "luasock.ngx.regex"
#define BYTES_MT "luasock.ngx.bytes"
#define CONTEXTS_MT "luasock.ngx.pcre2"

/* OpenResty's default (lua_regex_match_limit 0 keeps PCRE's 10 million): a pattern that
 * backtracks catastrophically fails with "match limit exceeded" within about a second instead
 * of holding the loop for minutes. */
#define MATCH_LIMIT 10000000
/* PCRE2's backtracking frames beyond the first 20 KiB it keeps on the stack, in KiB; past this a
 * match fails with "heap limit exceeded" (PCRE2's own default is 20 GB). */
#define HEAP_LIMIT_KIB (64 * 1024)
/* The largest char[?], as LuaJIT's (just under 2 GiB). */
#define MAX_BYTES INT32_MAX

/* ---- PCRE2's memory ----------------------------------------------------------------------- */

/* PCRE2 allocates through luasock's allocator, so a regex's memory counts against max_memory
 * and a refusal comes back from PCRE2 as an error code, never an abort. guard_alloc wants the
 * old size when freeing, so each block carries its size in front. */
union header {
    size_t size;
    max_align_t align;
};

static void *pcre_malloc(PCRE2_SIZE size, void *ud)
{
    (void)ud;
    if (size > SIZE_MAX - sizeof(union header))
        return NULL;
    union header *h = guard_alloc(NULL, NULL, 0, sizeof *h + size);
    if (h == NULL)
        return NULL;
    h->size = size;
    return h + 1;
}

static void pcre_free(void *block, void *ud)
{
    (void)ud;
    if (block == NULL)
        return;
    union header *h = (union header *)block - 1;
    guard_alloc(NULL, h, sizeof *h + h->size, 0);
}

/* One set of contexts per Lua state, the upvalue of every function here. Compiled patterns keep
 * their own copy of the allocator functions, so they may outlive it. */
struct contexts {
    pcre2_general_context *general;
    pcre2_compile_context *compile;
    pcre2_match_context *match;
};

static int contexts_gc(lua_State *L)
{
    struct contexts *c = luaL_checkudata(L, 1, CONTEXTS_MT);
    pcre2_match_context_free(c->match);
    pcre2_compile_context_free(c->compile);
    pcre2_general_context_free(c->general);
    memset(c, 0, sizeof *c);
    return 0;
}

static void push_contexts(lua_State *L)
{
    struct contexts *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    luaL_newmetatable(L, CONTEXTS_MT);
    lua_pushcfunction(L, contexts_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    c->general = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
    if (c->general != NULL) {
        c->compile = pcre2_compile_context_create(c->general);
        c->match = pcre2_match_context_create(c->general);
    }
    if (c->compile == NULL || c->match == NULL)
        luaL_error(L, "luasock.ngxcore: no memory for the PCRE2 contexts");
    pcre2_set_match_limit(c->match, MATCH_LIMIT);
    pcre2_set_heap_limit(c->match, HEAP_LIMIT_KIB);
}

static struct contexts *tocontexts(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ---- Regexes ------------------------------------------------------------------------------ */

struct regex {
    pcre2_code *code;
    pcre2_match_data *match;
    uint32_t captures;
};

static struct regex *toregex(lua_State *L)
{
    return luaL_checkudata(L, 1, REGEX_MT);
}

/* ngx.re's option letters that change the pattern ("o" and "d" are ngx_re.lua's). "J" is PCRE1's
 * JavaScript mode, which PCRE2 splits into these three options. "U" trusts no UTF-8 either:
 * PCRE2_MATCH_INVALID_UTF makes invalid sequences simply fail to match. */
static void parse_options(lua_State *L, const char *options, uint32_t *flags, bool *jit)
{
    *flags = 0;
    *jit = false;
    for (const char *p = options; *p != '\0'; p++) {
        switch (*p) {
        case 'a': *flags |= PCRE2_ANCHORED; break;
        case 'i': *flags |= PCRE2_CASELESS; break;
        case 'm': *flags |= PCRE2_MULTILINE; break;
        case 's': *flags |= PCRE2_DOTALL; break;
        case 'x': *flags |= PCRE2_EXTENDED; break;
        case 'u': *flags |= PCRE2_UTF; break;
        case 'U': *flags |= PCRE2_UTF | PCRE2_MATCH_INVALID_UTF; break;
        case 'D': *flags |= PCRE2_DUPNAMES; break;
        case 'J': *flags |= PCRE2_ALT_BSUX | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_MATCH_UNSET_BACKREF; break;
        case 'j': *jit = true; break;
        default: luaL_error(L, "unknown regex option \"%c\" in \"%s\"", *p, options);
        }
    }
}

/* The message names the pattern by its first PATTERN_SHOWN bytes: a pattern too big for the
 * memory left must not need as much again for its error message. */
#define PATTERN_SHOWN 64

static int compile_error(lua_State *L, const char *pattern, size_t len, int code,
                         PCRE2_SIZE offset)
{
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(code, message, sizeof message);
    lua_pushnil(L);
    lua_pushlstring(L, pattern, len > PATTERN_SHOWN ? PATTERN_SHOWN : len);
    lua_pushfstring(L, "failed to compile regex \"%s%s\": %s at offset %I", lua_tostring(L, -1),
                    len > PATTERN_SHOWN ? "..." : "", (const char *)message, (lua_Integer)offset);
    lua_remove(L, -2);
    return 2;
}

/* ngxcore.regex(pattern [, options]) -> regex | nil, err. The userdata exists before the pattern
 * is compiled, so its __gc frees whatever was made if anything after raises. */
static int ngxcore_regex(lua_State *L)
{
    size_t len;
    const char *pattern = luaL_checklstring(L, 1, &len);
    const char *options = luaL_optstring(L, 2, "");
    struct contexts *c = tocontexts(L);
    uint32_t flags;
    bool jit;
    parse_options(L, options, &flags, &jit);
    struct regex *re = lua_newuserdatauv(L, sizeof *re, 0);
    memset(re, 0, sizeof *re);
    luaL_setmetatable(L, REGEX_MT);
    int code;
    PCRE2_SIZE offset;
    re->code = pcre2_compile((PCRE2_SPTR)pattern, len, flags, &code, &offset, c->compile);
    if (re->code == NULL)
        return compile_error(L, pattern, len, code, offset);
    /* Without JIT support (or memory for it) the interpreter runs the same pattern. */
    if (jit)
        pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    re->match = pcre2_match_data_create_from_pattern(re->code, c->general);
    if (re->match == NULL)
        return push_error(L, "failed to compile regex: no memory");
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &re->captures);
    return 1;
}

static int match_error(lua_State *L, int rc)
{
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    lua_pushnil(L);
    lua_pushfstring(L, "pcre_exec() failed: %d (%s)", rc, (const char *)message);
    return 2;
}

/* regex:exec(subject, start, offsets) -> n | nil | nil, err. Matches from the 0-based byte offset
 * start; on a match fills offsets[1..2 * (captures + 1)] with 0-based start and end offsets of
 * the whole match and each group (-1 for a group that did not take part) and returns n, the
 * number of groups up to the last one set, counting the whole match. */
static int regex_exec(lua_State *L)
{
    struct regex *re = toregex(L);
    size_t len;
    const char *subject = luaL_checklstring(L, 2, &len);
    lua_Integer start = luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_argcheck(L, start >= 0, 3, "negative offset");
    int rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, (PCRE2_SIZE)start, 0, re->match,
                         tocontexts(L)->match);
    if (rc == PCRE2_ERROR_NOMATCH) {
        lua_pushnil(L);
        return 1;
    }
    if (rc < 0)
        return match_error(L, rc);
    PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(re->match);
    for (uint32_t i = 0; i < 2 * (re->captures + 1); i++) {
        lua_pushinteger(L, ovector[i] == PCRE2_UNSET ? -1 : (lua_Integer)ovector[i]);
        lua_rawseti(L, 4, i + 1);
    }
    lua_pushinteger(L, rc);
    return 1;
}

/* regex:captures() -> the number of groups. */
static int regex_captures(lua_State *L)
{
    lua_pushinteger(L, toregex(L)->captures);
    return 1;
}

/* regex:names() -> {[group] = name} for the named groups; under option "D" several groups may
 * have the same name. */
static int regex_names(lua_State *L)
{
    struct regex *re = toregex(L);
    uint32_t count, size;
    PCRE2_SPTR table;
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &table);
    lua_createtable(L, 0, (int)count);
    for (uint32_t i = 0; i < count; i++) {
        PCRE2_SPTR entry = table + (size_t)i * size;
        lua_pushstring(L, (const char *)entry + 2);
        lua_rawseti(L, -2, (entry[0] << 8) | entry[1]);
    }
    return 1;
}

static int regex_gc(lua_State *L)
{
    struct regex *re = toregex(L);
    pcre2_match_data_free(re->match);
    pcre2_code_free(re->code);
    re->match = NULL;
    re->code = NULL;
    return 0;
}

static int regex_tostring(lua_State *L)
{
    lua_pushfstring(L, "luasock.ngx.regex (%p)", (void *)toregex(L));
    return 1;
}

/* ---- Digests, CRC-32, base64 ----------------------------------------------------------------- */

static int digest(lua_State *L, const EVP_MD *md, bool hex)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n;
    if (!EVP_Digest(s, len, out, &n, md, NULL))
        return push_error(L, "digest failed: no memory");
    if (!hex) {
        lua_pushlstring(L, (const char *)out, n);
        return 1;
    }
    static const char digits[] = "0123456789abcdef";
    char text[2 * EVP_MAX_MD_SIZE];
    for (unsigned int i = 0; i < n; i++) {
        text[2 * i] = digits[out[i] >> 4];
        text[2 * i + 1] = digits[out[i] & 15];
    }
    lua_pushlstring(L, text, 2 * (size_t)n);
    return 1;
}

static int ngxcore_md5(lua_State *L)
{
    return digest(L, EVP_md5(), true);
}

static int ngxcore_md5_bin(lua_State *L)
{
    return digest(L, EVP_md5(), false);
}

static int ngxcore_sha1_bin(lua_State *L)
{
    return digest(L, EVP_sha1(), false);
}

/* ngxcore.crc32(s) -> the CRC-32 (zlib's, as nginx's ngx_crc32_long and Python's zlib.crc32). */
static int ngxcore_crc32(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)crc32_z(0, (const Bytef *)s, len));
    return 1;
}

/* ngxcore.encode_base64(s [, no_padding]) -> the standard alphabet, "=" padded unless told. */
static int ngxcore_encode_base64(lua_State *L)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, BASE64_ENCODED_SIZE(len));
    luaL_pushresultsize(&b, base64_encode(out, s, len, !lua_toboolean(L, 2)));
    return 1;
}

/* ngxcore.decode_base64(s) -> bytes | nil (base64.h says what is invalid). */
static int ngxcore_decode_base64(lua_State *L)
{
    size_t len, n;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, BASE64_DECODED_SIZE(len));
    if (base64_decode(out, s, len, &n) < 0) {
        lua_pushnil(L);
        return 1;
    }
    luaL_pushresultsize(&b, n);
    return 1;
}

/* ---- Byte buffers (ffi's char[?]) -------------------------------------------------------------- */

/* A fixed-size zeroed array of bytes indexed from 0. Stores value & 0xff; reads back as C's char
 * does on x86 (-128..127) when signed, 0..255 otherwise. Unlike LuaJIT's, indexes are checked. */
struct bytes {
    size_t len;
    bool is_signed;
    unsigned char data[];
};

static struct bytes *tobytes(lua_State *L)
{
    return luaL_checkudata(L, 1, BYTES_MT);
}

/* ngxcore.bytes(n [, signed]) -> a buffer of n zero bytes. */
static int ngxcore_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= MAX_BYTES, 1, "size out of range");
    bool is_signed = lua_toboolean(L, 2);
    struct bytes *b = lua_newuserdatauv(L, offsetof(struct bytes, data) + (size_t)n, 0);
    b->len = (size_t)n;
    b->is_signed = is_signed;
    memset(b->data, 0, (size_t)n);
    luaL_setmetatable(L, BYTES_MT);
    return 1;
}

static size_t checkindex(lua_State *L, struct bytes *b)
{
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 0 || (lua_Unsigned)i >= b->len)
        luaL_error(L, "index %I out of range for a buffer of %I bytes", i, (lua_Integer)b->len);
    return (size_t)i;
}

static int bytes_index(lua_State *L)
{
    struct bytes *b = tobytes(L);
    unsigned v = b->data[checkindex(L, b)];
    lua_pushinteger(L, b->is_signed && v >= 128 ? (lua_Integer)v - 256 : (lua_Integer)v);
    return 1;
}

static int bytes_newindex(lua_State *L)
{
    struct bytes *b = tobytes(L);
    size_t i = checkindex(L, b);
    b->data[i] = (unsigned char)(luaL_checkinteger(L, 3) & 0xff);
    return 0;
}

static int bytes_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)tobytes(L)->len);
    return 1;
}

static int bytes_tostring(lua_State *L)
{
    struct bytes *b = tobytes(L);
    lua_pushfstring(L, "luasock.ngx.bytes[%I] (%p)", (lua_Integer)b->len, (void *)b);
    return 1;
}

/* ngxcore.bytes_string(buf [, len]) -> the first len bytes, or up to the first zero byte (the
 * whole buffer if none) as ffi.string reads a char array without a length. */
static int ngxcore_bytes_string(lua_State *L)
{
    struct bytes *b = tobytes(L);
    size_t len;
    if (lua_isnoneornil(L, 2)) {
        const unsigned char *end = memchr(b->data, 0, b->len);
        len = end != NULL ? (size_t)(end - b->data) : b->len;
    } else {
        lua_Integer n = luaL_checkinteger(L, 2);
        if (n < 0 || (lua_Unsigned)n > b->len)
            luaL_error(L, "length %I out of range for a buffer of %I bytes", n,
                       (lua_Integer)b->len);
        len = (size_t)n;
    }
    lua_pushlstring(L, (const char *)b->data, len);
    return 1;
}

/* ---- The module ------------------------------------------------------------------------------ */

static const luaL_Reg functions[] = {
    {"md5", ngxcore_md5},
    {"md5_bin", ngxcore_md5_bin},
    {"sha1_bin", ngxcore_sha1_bin},
    {"crc32", ngxcore_crc32},
    {"encode_base64", ngxcore_encode_base64},
    {"decode_base64", ngxcore_decode_base64},
    {"regex", ngxcore_regex},
    {"bytes", ngxcore_bytes},
    {"bytes_string", ngxcore_bytes_string},
    {NULL, NULL},
};

static const luaL_Reg regex_methods[] = {
    {"exec", regex_exec},
    {"captures", regex_captures},
    {"names", regex_names},
    {NULL, NULL},
};

static const luaL_Reg regex_metamethods[] = {
    {"__gc", regex_gc},
    {"__tostring", regex_tostring},
    {NULL, NULL},
};

static const luaL_Reg bytes_metamethods[] = {
    {"__index", bytes_index},
    {"__newindex", bytes_newindex},
    {"__len", bytes_len},
    {"__tostring", bytes_tostring},
    {NULL, NULL},
};

static int luaopen_ngxcore(lua_State *L)
{
    push_contexts(L);
    luaL_newmetatable(L, REGEX_MT);
    luaL_setfuncs(L, regex_metamethods, 0);
    luaL_newlibtable(L, regex_methods);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, regex_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, BYTES_MT);
    luaL_setfuncs(L, bytes_metamethods, 0);
    lua_pop(L, 1);
    luaL_newlibtable(L, functions);
    lua_insert(L, -2);
    luaL_setfuncs(L, functions, 1);
    return 1;
}

void lngx_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_ngxcore);
    lua_setfield(L, -2, "luasock.ngxcore");
    lua_pop(L, 1);
}
