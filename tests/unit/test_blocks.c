/* Unit tests for blocks.c, the Lua state's allocator: every size keeps its bytes and its
 * alignment, resizes keep the contents across the small/large boundary, a freed small block is
 * reused by the next one of its size, and a Lua state runs on it (guard_alloc) through heavy
 * garbage and closes cleanly. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>

#include "blocks.h"
#include "check.h"
#include "guard.h"

#ifdef __SANITIZE_ADDRESS__
#define POOLED 0 /* blocks.c hands everything to malloc so that ASan sees it */
#else
#define POOLED 1
#endif

#define MAX_TRIED 700

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return 0;
    return 1;
}

static void test_every_size(void)
{
    static unsigned char *blocks[MAX_TRIED + 1];
    int aligned = 1, kept = 1;
    for (size_t n = 1; n <= MAX_TRIED; n++) {
        blocks[n] = blocks_realloc(NULL, 0, n);
        CHECK(blocks[n] != NULL);
        aligned &= (uintptr_t)blocks[n] % 8 == 0;
        fill(blocks[n], n, (unsigned)n);
    }
    for (size_t n = 1; n <= MAX_TRIED; n++) {
        kept &= intact(blocks[n], n, (unsigned)n);
        blocks_free(blocks[n], n);
    }
    CHECK(aligned);
    CHECK(kept);
}

static void test_reuse(void)
{
    void *a = blocks_realloc(NULL, 0, 90);
    blocks_free(a, 90);
    void *b = blocks_realloc(NULL, 0, 95); /* the same 8-byte class: 89 to 96 bytes */
    if (POOLED) {
        CHECK(a == b);
        CHECK(blocks_realloc(b, 95, 92) == b); /* resizing within the class stays put */
    }
    void *c = blocks_realloc(b, POOLED ? 92 : 95, 200);
    CHECK(c != NULL);
    blocks_free(c, 200);
}

static void test_resize_keeps_contents(void)
{
    const size_t sizes[] = {24, 100, 512, 513, 4000, 513, 512, 40, 8};
    unsigned char *p = blocks_realloc(NULL, 0, sizes[0]);
    fill(p, sizes[0], 3);
    int kept = 1;
    for (size_t i = 1; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t old = sizes[i - 1], now = sizes[i];
        p = blocks_realloc(p, old, now);
        CHECK(p != NULL);
        kept &= intact(p, old < now ? old : now, 3);
        fill(p, now, 3);
    }
    CHECK(kept);
    blocks_free(p, sizes[sizeof sizes / sizeof sizes[0] - 1]);
}

static void test_lua_state(void)
{
    lua_State *L = lua_newstate(guard_alloc, NULL);
    CHECK(L != NULL);
    luaL_openlibs(L);
    const char *script =
        "local kept, s = {}, 0\n"
        "for i = 1, 200000 do\n"
        "  local t = { i, tostring(i) .. string.rep('x', i % 300) }\n"
        "  if i % 1000 == 0 then kept[#kept + 1] = t end\n"
        "end\n"
        "for _, t in ipairs(kept) do\n"
        "  if t[2] ~= tostring(t[1]) .. string.rep('x', t[1] % 300) then error('lost ' .. t[1]) end\n"
        "  s = s + t[1]\n"
        "end\n"
        "return s";
    int ok = luaL_dostring(L, script) == LUA_OK;
    if (!ok)
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    CHECK(ok);
    CHECK(lua_tointeger(L, -1) == 20100000);
    lua_close(L);
    CHECK(guard_memory_in_use() == 0);
}

int main(void)
{
    test_every_size();
    test_reuse();
    test_resize_keeps_contents();
    test_lua_state();
    blocks_release();
    return check_report();
}
