/* container.h -- from an embedded libev watcher back to the struct that holds it. */
#ifndef CONTAINER_H
#define CONTAINER_H

#include <stddef.h>

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
