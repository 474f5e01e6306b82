/* lngx.h -- luasock.ngxcore, the C half of require "luasock.ngx" (lngx.c). */
#ifndef LNGX_H
#define LNGX_H

#include <lua.h>

/* Registers luasock.ngxcore in package.preload: its PCRE2 contexts are made only by scripts
 * that require it. */
void lngx_preload(lua_State *L);

#endif
