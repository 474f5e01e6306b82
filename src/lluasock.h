/* lluasock.h -- what the server tells the luasock module (lluasock.c). */
#ifndef LLUASOCK_H
#define LLUASOCK_H

/* From now on luasock.shutting_down() returns true. */
void lluasock_begin_shutdown(void);

#endif
