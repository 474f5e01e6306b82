/* ltls.h -- TLS for Lua: the script's certificates, conn:starttls, conn:tls, conn:tls_session.
 *
 * The server context is built from the script's `tls` table (or --tls-cert and --tls-key) at
 * start and at every reload; a reload whose certificates do not load fails as a whole, and the
 * previous context keeps serving. Connections hold a reference to the context they began with. */
#ifndef LTLS_H
#define LTLS_H

#include <lua.h>
#include <lauxlib.h>
#include <openssl/ssl.h>

/* --tls-cert and --tls-key: they replace the script's cert and key (relative to the working
 * directory). Call before the first ltls_configure. */
void ltls_set_command_line(const char *cert, const char *key);

/* With the checked settings table (scripts/luasock/loader.lua) on top of L: builds the server
 * context from its `tls` field, and makes it the one new connections get. script: the script's
 * path, which relative paths are relative to. Once a tls: listener is open, a context is
 * required. Returns 0, or -1 with "tls FILE: reason" in err (the previous context stays). */
int ltls_configure(lua_State *L, const char *script, char *err, size_t size);

/* The context of accepted TLS connections, or NULL when the script has none. */
SSL_CTX *ltls_server_context(void);

/* For a tls: listener about to open: the context, which every reload must now provide; NULL
 * when there is none. */
SSL_CTX *ltls_require_server_context(void);

/* The certificate, key and CA files of the context in use (for --watch); returns how many were
 * put in paths (at most max). */
int ltls_files(const char **paths, int max);

/* Adds tls, starttls and tls_session to the connection methods table on top of L. */
void ltls_open(lua_State *L);

#endif
