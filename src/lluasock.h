/* lluasock.h -- what the server tells the luasock module (lluasock.c). */
#ifndef LLUASOCK_H
#define LLUASOCK_H

#include <lua.h>

/* From now on luasock.shutting_down() returns true. */
void lluasock_begin_shutdown(void);

/* `luasock serve`: the global print writes a log line at info instead of to stdout. */
void lluasock_route_print(lua_State *L);

/* Sets luasock.worker (this process's number, 1..count; 0 in the --workers parent) and
 * luasock.workers (count), in the module and in the copy scripts already required. */
void lluasock_set_worker(lua_State *L, int id, int count);

/* Sets luasock.pubsub_url (serve --pubsub), before the script loads. */
void lluasock_set_pubsub_url(lua_State *L, const char *url);

#endif
