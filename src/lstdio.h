/* lstdio.h -- luasock.stdin, luasock.stdout and luasock.stderr (`luasock run` only). */
#ifndef LSTDIO_H
#define LSTDIO_H

#include <lua.h>

/* Adds luasock.core.stdio to the table on top of L. */
void lstdio_open(lua_State *L);

/* Makes the streams available: `luasock run` calls it first, before anything is opened (it
 * puts /dev/null in place of a closed descriptor 0, 1 or 2); elsewhere they are refused. */
void lstdio_enable(void);

/* At exit, before conn_finish_closing: closes stdout and stderr gracefully, so that what was
 * queued on them goes out. */
void lstdio_flush(void);

/* After conn_finish_closing: waits until the threads have written all of it. */
void lstdio_join(void);

#endif
