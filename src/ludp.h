/* ludp.h -- UDP sockets for Lua (ludp.c): luasock.udp() and the server's udp: listeners. */
#ifndef LUDP_H
#define LUDP_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "net.h"

#define LUDP_DEFAULT_MAX_TASKS 1000

/* The most datagram(data, peer) tasks alive at once in this process (max_datagram_tasks):
 * datagrams beyond it are dropped, counted and logged. */
void ludp_set_max_tasks(size_t max);

/* Registers the metatables and adds udp() to the module table on top of L. */
void ludp_open(lua_State *L);

/* Binds addr and calls the function in the registry at datagram_ref as fn(data, peer) in a new
 * task for every datagram. Returns 0 with the bound address in name, or -1 with "listen TEXT:
 * cause" in err. The socket lives until the Lua state is closed. for_workers: the caller is the
 * --workers parent, which never reads: the workers it forks share the socket, and each reads
 * from it after udp_start_listeners_in_worker. */
int ludp_listen(lua_State *L, const char *text, const struct net_addr *addr, int datagram_ref,
                bool for_workers, char *name, size_t name_size, char *err, size_t err_size);

#endif
