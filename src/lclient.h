/* lclient.h -- adds resolve, set_nameservers and connect_address to the table on top of L. */
#ifndef LCLIENT_H
#define LCLIENT_H

#include <lua.h>

void lclient_open(lua_State *L);

#endif
