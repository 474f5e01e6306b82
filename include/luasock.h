/* luasock.h -- what C code outside the luasock core may use.
 *
 * The core is a libev event loop that runs Lua 5.4 connection handlers in coroutines. C modules
 * that extend it (a codec, a protocol parser) load into the same Lua state with
 * luaopen_luasock's siblings and log through luasock_log, so their lines look like the core's.
 * The luasock binary exports what this header declares, and only that (luasock.exports), so a
 * module loaded with require resolves these symbols without linking anything of luasock's. */
#ifndef LUASOCK_H
#define LUASOCK_H

#include <lua.h>

#define LUASOCK_VERSION "0.1.0"

enum luasock_log_level {
    LUASOCK_LOG_DEBUG,
    LUASOCK_LOG_INFO,
    LUASOCK_LOG_WARN,
    LUASOCK_LOG_ERROR
};

/* Writes one timestamped line to stderr if level is at or above the configured level. */
void luasock_log(enum luasock_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Opens the Lua module that handlers get from require "luasock". */
int luaopen_luasock(lua_State *L);

#endif
