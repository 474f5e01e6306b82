/* ltls.c -- TLS for Lua: contexts from option tables, conn:starttls, conn:tls, conn:tls_session.
 *
 * An option table is read into a C struct first (raising on a wrong type: a programmer's
 * mistake), with its strings kept alive on the stack; the OpenSSL objects are made afterwards,
 * by code that cannot raise, so that a raise never leaves one behind. Problems with the files
 * (missing, unreadable, a key that does not match its certificate) are expected failures:
 * "tls FILE: reason", with FILE as the script wrote it. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "errors.h"
#include "lconn.h"
#include "lresult.h"
#include "ltls.h"
#include "net.h"
#include "task.h"
#include "tls.h"

#define CLIENT_CONTEXT_MT "luasock.tls_client_context"
#define SESSION_MT "luasock.tls_session"
#define CLIENT_CACHE "luasock.tls_client_contexts"
#define MAX_CERTS 16
#define ALPN_MAX 255

struct alpn {
    unsigned char wire[ALPN_MAX]; /* each protocol's length byte, then its name */
    size_t len;
};

struct server_opts {
    const char *cert[MAX_CERTS], *key[MAX_CERTS];             /* paths to open */
    const char *cert_shown[MAX_CERTS], *key_shown[MAX_CERTS]; /* as the script wrote them */
    int count;
    const char *ca, *ca_shown;
    bool verify_client, tickets, strict_sni;
    int min_version;
    const char *ciphers, *ciphersuites;
    struct alpn alpn;
};

struct client_opts {
    bool verify;
    const char *ca, *cert, *key;
    const char *server_name;
    struct alpn alpn;
    SSL_SESSION *session;
};

/* The other certificates of a context that has several (chosen by SNI), owned by the first's
 * context as its ex_data. */
struct sni_list {
    bool strict; /* a name that none of them has fails the handshake */
    int count;
    SSL_CTX *ctx[];
};

static SSL_CTX *server_ctx;
static const char *cli_cert, *cli_key;
static bool listeners_need_context;
static int sni_index = -1, alpn_index = -1;
/* The files of the context in use, for --watch; and the script's directory for starttls. */
static char *files[2 * MAX_CERTS + 1];
static int file_count;
static char *script_dir;

void ltls_set_command_line(const char *cert, const char *key)
{
    cli_cert = cert;
    cli_key = key;
}

SSL_CTX *ltls_server_context(void)
{
    return server_ctx;
}

SSL_CTX *ltls_require_server_context(void)
{
    listeners_need_context = true;
    return server_ctx;
}

int ltls_files(const char **paths, int max)
{
    int n = 0;
    for (; n < file_count && n < max; n++)
        paths[n] = files[n];
    return n;
}

/* ---- reading option tables ---- */

/* Pushes path made relative to dir (unless it is absolute), and returns it. */
static const char *resolve(lua_State *L, const char *dir, const char *path)
{
    if (path[0] == '/' || dir == NULL)
        return lua_pushstring(L, path);
    return lua_pushfstring(L, "%s/%s", dir, path);
}

/* t.name as a string (left on the stack, with its resolved path above it when dir is given),
 * or NULL when it is nil. */
static const char *string_field(lua_State *L, int t, const char *name)
{
    int type = lua_getfield(L, t, name);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (type != LUA_TSTRING)
        luaL_error(L, "tls.%s must be a string, not %s", name, luaL_typename(L, -1));
    return lua_tostring(L, -1);
}

static bool bool_field(lua_State *L, int t, const char *name, bool fallback)
{
    int type = lua_getfield(L, t, name);
    lua_pop(L, 1);
    if (type == LUA_TNIL)
        return fallback;
    if (type != LUA_TBOOLEAN)
        luaL_error(L, "tls.%s must be true or false", name);
    lua_getfield(L, t, name);
    bool value = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return value;
}

static void read_alpn(lua_State *L, int t, struct alpn *alpn)
{
    alpn->len = 0;
    int type = lua_getfield(L, t, "alpn");
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type != LUA_TTABLE)
        luaL_error(L, "tls.alpn must be a list of protocol names");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        if (lua_type(L, -1) != LUA_TSTRING || len == 0 || alpn->len + 1 + len > ALPN_MAX)
            luaL_error(L, "tls.alpn[%d] must be a protocol name (the list fits %d bytes)",
                       (int)i, ALPN_MAX);
        alpn->wire[alpn->len++] = (unsigned char)len;
        memcpy(alpn->wire + alpn->len, name, len);
        alpn->len += len;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* One {cert=, key=} pair into o (its strings stay on the stack). */
static void read_pair(lua_State *L, int t, const char *dir, struct server_opts *o)
{
    if (o->count == MAX_CERTS)
        luaL_error(L, "tls.certs: at most %d certificates", MAX_CERTS);
    const char *cert = string_field(L, t, "cert"), *key = string_field(L, t, "key");
    if (cert == NULL || key == NULL)
        luaL_error(L, "tls: a certificate needs both 'cert' and 'key'");
    o->cert_shown[o->count] = cert;
    o->key_shown[o->count] = key;
    o->cert[o->count] = resolve(L, dir, cert);
    o->key[o->count] = resolve(L, dir, key);
    o->count++;
}

/* The server options of table t (relative paths from dir). Raises on a wrong type. */
static void read_server_opts(lua_State *L, int t, const char *dir, struct server_opts *o)
{
    luaL_checkstack(L, 5 * MAX_CERTS + 16, "tls options"); /* 5 values per certificate */
    *o = (struct server_opts){.tickets = true, .min_version = TLS1_2_VERSION};
    if (lua_getfield(L, t, "certs") == LUA_TTABLE) {
        int certs = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, certs);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, certs, i) != LUA_TTABLE)
                luaL_error(L, "tls.certs[%d] must be a table {cert = ..., key = ...}", (int)i);
            read_pair(L, lua_gettop(L), dir, o);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "tls.certs must be a list of {cert = ..., key = ...}");
    } else {
        lua_getfield(L, t, "cert");
        bool has_cert = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (has_cert)
            read_pair(L, t, dir, o);
    }
    if ((o->ca_shown = string_field(L, t, "ca")) != NULL)
        o->ca = resolve(L, dir, o->ca_shown);
    o->verify_client = bool_field(L, t, "verify_client", false);
    o->tickets = bool_field(L, t, "session_tickets", true);
    o->strict_sni = bool_field(L, t, "strict_sni", false);
    o->ciphers = string_field(L, t, "ciphers");
    o->ciphersuites = string_field(L, t, "ciphersuites");
    const char *version = string_field(L, t, "min_version");
    if (version != NULL) {
        if (strcmp(version, "1.2") == 0)
            o->min_version = TLS1_2_VERSION;
        else if (strcmp(version, "1.3") == 0)
            o->min_version = TLS1_3_VERSION;
        else
            luaL_error(L, "tls.min_version must be \"1.2\" or \"1.3\", not \"%s\"", version);
    }
    read_alpn(L, t, &o->alpn);
}

/* ---- building contexts (never raises) ---- */

static bool readable_file(const char *path, const char *shown, char *err, size_t size)
{
    if (access(path, R_OK) == 0)
        return true;
    snprintf(err, size, "tls %s: %s", shown, errors_string(errno));
    return false;
}

static void free_sni_list(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct sni_list *list = ptr;
    if (list == NULL)
        return;
    for (int i = 0; i < list->count; i++)
        SSL_CTX_free(list->ctx[i]);
    free(list);
}

static void free_alpn(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

/* The server's choice: the first of its protocols that the client offers; none is no error. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    struct alpn *alpn = arg;
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, outlen, alpn->wire, (unsigned int)alpn->len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

static bool has_name(SSL_CTX *ctx, const char *name)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    return cert != NULL && X509_check_host(cert, name, 0, 0, NULL) == 1;
}

/* SNI: the first certificate whose names match (wildcards included), else the first one. */
static int select_certificate(SSL *ssl, int *alert, void *arg)
{
    struct sni_list *list = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || has_name(SSL_get_SSL_CTX(ssl), name))
        return SSL_TLSEXT_ERR_OK;
    for (int i = 0; i < list->count; i++) {
        if (has_name(list->ctx[i], name)) {
            SSL_set_SSL_CTX(ssl, list->ctx[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    if (!list->strict)
        return SSL_TLSEXT_ERR_OK;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static bool ex_indexes(void)
{
    if (sni_index < 0)
        sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_sni_list);
    if (alpn_index < 0)
        alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_alpn);
    return sni_index >= 0 && alpn_index >= 0;
}

/* What every certificate's context of a server shares: versions, ciphers, tickets, client
 * certificates and ALPN. */
static bool configure_server(SSL_CTX *ctx, const struct server_opts *o, char *err, size_t size)
{
    tls_tune_context(ctx, true);
    SSL_CTX_set_min_proto_version(ctx, o->min_version);
    if (o->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, o->ciphers) != 1) {
        tls_error_text(err, size, "tls ciphers: ", NULL);
        return false;
    }
    if (o->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1) {
        tls_error_text(err, size, "tls ciphersuites: ", NULL);
        return false;
    }
    if (!o->tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (o->ca != NULL) {
        char prefix[300];
        snprintf(prefix, sizeof prefix, "tls %s: ", o->ca_shown);
        STACK_OF(X509_NAME) *names = NULL;
        if (!readable_file(o->ca, o->ca_shown, err, size))
            return false;
        if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1 ||
            (names = SSL_load_client_CA_file(o->ca)) == NULL) {
            tls_error_text(err, size, prefix, NULL);
            return false;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (o->verify_client)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    if (o->alpn.len > 0) {
        struct alpn *alpn = malloc(sizeof *alpn);
        if (alpn == NULL) {
            snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
            return false;
        }
        *alpn = o->alpn;
        SSL_CTX_set_ex_data(ctx, alpn_index, alpn);
        SSL_CTX_set_alpn_select_cb(ctx, select_alpn, alpn);
    }
    return true;
}

static bool load_pair(SSL_CTX *ctx, const char *cert, const char *cert_shown, const char *key,
                      const char *key_shown, char *err, size_t size)
{
    char prefix[300];
    if (!readable_file(cert, cert_shown, err, size) || !readable_file(key, key_shown, err, size))
        return false;
    snprintf(prefix, sizeof prefix, "tls %s: ", cert_shown);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_error_text(err, size, prefix, NULL);
        return false;
    }
    snprintf(prefix, sizeof prefix, "tls %s: ", key_shown);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, size, "tls %s: %s is not the key of this certificate", cert_shown,
                     key_shown);
        } else {
            tls_error_text(err, size, prefix, NULL);
        }
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(prefix, sizeof prefix, "tls %s: ", cert_shown);
        tls_error_text(err, size, prefix, NULL);
        return false;
    }
    return true;
}

static SSL_CTX *server_context(const struct server_opts *o, int i, char *err, size_t size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return NULL;
    }
    if (!configure_server(ctx, o, err, size) ||
        !load_pair(ctx, o->cert[i], o->cert_shown[i], o->key[i], o->key_shown[i], err, size)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The context of the first certificate, which holds the others for SNI. */
static SSL_CTX *build_server(const struct server_opts *o, char *err, size_t size)
{
    if (o->count == 0) {
        snprintf(err, size, "tls: no certificate: set tls = { cert = FILE, key = FILE } in the "
                            "script, or give --tls-cert and --tls-key");
        return NULL;
    }
    if (!ex_indexes()) {
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return NULL;
    }
    SSL_CTX *first = server_context(o, 0, err, size);
    if (first == NULL || (o->count == 1 && !o->strict_sni))
        return first;
    struct sni_list *list = calloc(1, sizeof *list + (size_t)o->count * sizeof(SSL_CTX *));
    if (list == NULL) {
        SSL_CTX_free(first);
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return NULL;
    }
    list->strict = o->strict_sni;
    SSL_CTX_set_ex_data(first, sni_index, list);
    for (int i = 1; i < o->count; i++) {
        if ((list->ctx[list->count] = server_context(o, i, err, size)) == NULL) {
            SSL_CTX_free(first);
            return NULL;
        }
        list->count++;
    }
    SSL_CTX_set_tlsext_servername_callback(first, select_certificate);
    SSL_CTX_set_tlsext_servername_arg(first, list);
    return first;
}

/* ---- the script's context ---- */

struct configuring {
    struct server_opts opts;
    bool present; /* the script has a tls table, or the command line a certificate */
};

/* Runs protected: reads the settings' tls table (at index 1) into the struct at index 2. */
static int read_script_tls(lua_State *L)
{
    struct configuring *c = lua_touserdata(L, 2);
    const char *dir = lua_tostring(L, 3);
    bool has_table = lua_getfield(L, 1, "tls") == LUA_TTABLE;
    if (has_table)
        read_server_opts(L, lua_gettop(L), dir, &c->opts);
    else
        c->opts = (struct server_opts){.tickets = true, .min_version = TLS1_2_VERSION};
    if (cli_cert != NULL) {
        c->opts.count = 1;
        c->opts.cert[0] = c->opts.cert_shown[0] = cli_cert;
        c->opts.key[0] = c->opts.key_shown[0] = cli_key;
    }
    c->present = has_table || cli_cert != NULL;
    /* The strings the struct points to stay on this stack: the caller builds before it pops. */
    return 0;
}

static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(len + 1);
    if (dir != NULL) {
        memcpy(dir, slash == NULL ? "." : path, len);
        dir[len] = '\0';
    }
    return dir;
}

static void keep_files(const struct server_opts *o)
{
    for (int i = 0; i < file_count; i++)
        free(files[i]);
    file_count = 0;
    for (int i = 0; i < o->count; i++) {
        files[file_count++] = strdup(o->cert[i]);
        files[file_count++] = strdup(o->key[i]);
    }
    if (o->ca != NULL)
        files[file_count++] = strdup(o->ca);
    for (int i = 0; i < file_count; i++)
        if (files[i] == NULL) /* out of memory: watch what could be kept */
            files[i--] = files[--file_count];
}

int ltls_configure(lua_State *L, const char *script, char *err, size_t size)
{
    char *dir = directory_of(script);
    if (dir == NULL) {
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return -1;
    }
    free(script_dir);
    script_dir = dir;
    int top = lua_gettop(L);
    struct configuring c;
    lua_pushcfunction(L, read_script_tls);
    lua_pushvalue(L, top);
    lua_pushlightuserdata(L, &c);
    lua_pushstring(L, dir);
    if (lua_pcall(L, 3, LUA_MULTRET, 0) != LUA_OK) {
        snprintf(err, size, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    /* The client certificates and CAs are read again too: they may have been renewed. */
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, CLIENT_CACHE);
    SSL_CTX *ctx = NULL;
    if (c.present || listeners_need_context)
        ctx = build_server(&c.opts, err, size);
    if (ctx != NULL)
        keep_files(&c.opts);
    lua_settop(L, top);
    if (ctx == NULL && (c.present || listeners_need_context))
        return -1;
    SSL_CTX_free(server_ctx);
    server_ctx = ctx;
    return 0;
}

/* ---- client contexts, cached by their files ---- */

static void read_client_opts(lua_State *L, int t, struct client_opts *o)
{
    *o = (struct client_opts){.verify = true};
    if (lua_type(L, t) != LUA_TTABLE)
        return;
    o->verify = bool_field(L, t, "verify", true);
    o->ca = string_field(L, t, "ca");
    o->cert = string_field(L, t, "cert");
    o->key = string_field(L, t, "key");
    o->server_name = string_field(L, t, "server_name");
    if ((o->cert == NULL) != (o->key == NULL))
        luaL_error(L, "tls: a client certificate needs both 'cert' and 'key'");
    read_alpn(L, t, &o->alpn);
    if (lua_getfield(L, t, "session") != LUA_TNIL) {
        SSL_SESSION **session = luaL_testudata(L, -1, SESSION_MT);
        if (session == NULL)
            luaL_error(L, "tls.session must be a value from conn:tls_session()");
        o->session = *session;
    }
}

static bool build_client(SSL_CTX *ctx, const struct client_opts *o, char *err, size_t size)
{
    char prefix[300];
    tls_tune_context(ctx, false);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (o->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca == NULL) {
            SSL_CTX_set_default_verify_paths(ctx);
        } else {
            if (!readable_file(o->ca, o->ca, err, size))
                return false;
            snprintf(prefix, sizeof prefix, "tls %s: ", o->ca);
            if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
                tls_error_text(err, size, prefix, NULL);
                return false;
            }
        }
    }
    return o->cert == NULL || load_pair(ctx, o->cert, o->cert, o->key, o->key, err, size);
}

static int client_context_gc(lua_State *L)
{
    SSL_CTX **ctx = luaL_checkudata(L, 1, CLIENT_CONTEXT_MT);
    SSL_CTX_free(*ctx);
    *ctx = NULL;
    return 0;
}

/* The client context for o's verification and files: from the cache, or made (and cached).
 * Returns NULL with err; pushes one value either way. */
static SSL_CTX *client_context(lua_State *L, const struct client_opts *o, char *err, size_t size)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, CLIENT_CACHE);
    lua_pushfstring(L, "%d\n%s\n%s\n%s", o->verify, o->ca ? o->ca : "", o->cert ? o->cert : "",
                    o->key ? o->key : "");
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TUSERDATA) {
        SSL_CTX **cached = lua_touserdata(L, -1);
        lua_replace(L, -3);
        lua_pop(L, 1);
        return *cached;
    }
    lua_pop(L, 1);
    SSL_CTX **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, CLIENT_CONTEXT_MT);
    *box = SSL_CTX_new(TLS_client_method());
    if (*box == NULL) {
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
    } else if (!build_client(*box, o, err, size)) {
        SSL_CTX_free(*box);
        *box = NULL;
    } else {
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, -5);
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
    return *box;
}

int ltls_check_client_options(lua_State *L)
{
    struct client_opts o;
    luaL_checktype(L, 1, LUA_TTABLE);
    read_client_opts(L, 1, &o);
    return 0;
}

/* Host-name checking and SNI for the name the client expects. */
static bool expect_name(SSL *ssl, const struct client_opts *o)
{
    const char *name = o->server_name;
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!literal && SSL_set_tlsext_host_name(ssl, name) != 1)
        return false;
    if (!o->verify)
        return true;
    if (literal)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    return SSL_set1_host(ssl, name) == 1;
}

/* ---- the methods ---- */

/* Closes c and returns nil, err: a starttls that fails leaves no half-secured stream. */
static int refuse(lua_State *L, struct conn *c, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    conn_close(c);
    return 2;
}

static SSL *client_ssl(lua_State *L, struct conn *c, int opts, char *err, size_t size)
{
    struct client_opts o;
    read_client_opts(L, opts, &o);
    char peer[64];
    int port;
    if (o.server_name == NULL) {
        if (net_host_port(&c->peer.sa, c->peer_len, peer, sizeof peer, &port) < 0)
            snprintf(peer, sizeof peer, "localhost");
        o.server_name = peer;
    }
    SSL_CTX *ctx = client_context(L, &o, err, size);
    if (ctx == NULL)
        return NULL;
    SSL *ssl = tls_new(ctx, c->fd, false);
    if (ssl == NULL || !expect_name(ssl, &o) ||
        (o.alpn.len > 0 && SSL_set_alpn_protos(ssl, o.alpn.wire, (unsigned)o.alpn.len) != 0) ||
        (o.session != NULL && SSL_set_session(ssl, o.session) != 1)) {
        SSL_free(ssl);
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return NULL;
    }
    return ssl;
}

static SSL *server_ssl(lua_State *L, struct conn *c, int opts, char *err, size_t size)
{
    if (lua_isnoneornil(L, opts)) {
        if (server_ctx == NULL) {
            snprintf(err, size, "tls: no certificate: set tls = { cert = FILE, key = FILE } in "
                                "the script, or pass the options to starttls");
            return NULL;
        }
        SSL *ssl = tls_new(server_ctx, c->fd, true);
        if (ssl == NULL)
            snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
        return ssl;
    }
    struct server_opts o;
    read_server_opts(L, opts, script_dir, &o);
    SSL_CTX *ctx = build_server(&o, err, size);
    if (ctx == NULL)
        return NULL;
    SSL *ssl = tls_new(ctx, c->fd, true);
    SSL_CTX_free(ctx); /* the SSL holds it */
    if (ssl == NULL)
        snprintf(err, size, "tls: %s", ERR_NO_MEMORY);
    return ssl;
}

/* conn:starttls([opts [, timeout]]) -> true | nil, err */
static int conn_starttls(lua_State *L)
{
    struct conn *c = lconn_check(L);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = lua_isnoneornil(L, 3) ? c->set->read_timeout
                                           : task_opttimeout(L, 3, "conn:starttls");
    if (c->tls != NULL)
        return luaL_error(L, "conn %I: tls is already on", (lua_Integer)c->id);
    if (c->state != CONN_OPEN)
        return push_error(L, c->state == CONN_CONNECTING ? ERR_CLOSED : c->close_reason);
    if (c->reading || !task_waiters_empty(&c->writer))
        return luaL_error(L, "conn %I: starttls while another coroutine reads or sends",
                          (lua_Integer)c->id);
    task_check_wait(L, "conn:starttls");
    /* Bytes that came before the handshake were sent in plaintext after the request to switch:
     * whoever sent them, they must not be taken as part of the secured stream. */
    if (buf_len(&c->in) > 0)
        return refuse(L, c, "tls: plaintext arrived after the request to start tls");
    char err[256];
    SSL *ssl = c->outgoing ? client_ssl(L, c, 2, err, sizeof err)
                           : server_ssl(L, c, 2, err, sizeof err);
    if (ssl == NULL)
        return refuse(L, c, err);
    return conn_handshake(c, L, ssl, timeout);
}

static SSL *secured_ssl(struct conn *c)
{
    return c->tls != NULL && c->tls->secured ? c->tls->ssl : NULL;
}

static void set_string(lua_State *L, const char *field, const char *value)
{
    if (value == NULL)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, field);
}

/* "Dec  1 00:00:00 2027 GMT", as openssl x509 -enddate shows it. */
static void set_time(lua_State *L, const char *field, const ASN1_TIME *t)
{
    struct tm tm;
    char text[64];
    if (ASN1_TIME_to_tm(t, &tm) == 1 && strftime(text, sizeof text, "%b %e %H:%M:%S %Y GMT", &tm))
        set_string(L, field, text);
}

static void set_peer_certificate(lua_State *L, SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer == NULL)
        return;
    char name[512];
    set_string(L, "subject", X509_NAME_oneline(X509_get_subject_name(peer), name, sizeof name));
    set_string(L, "issuer", X509_NAME_oneline(X509_get_issuer_name(peer), name, sizeof name));
    set_time(L, "not_after", X509_get0_notAfter(peer));
    lua_pushboolean(L, SSL_get_verify_result(ssl) == X509_V_OK);
    lua_setfield(L, -2, "verified");
}

/* conn:tls() -> {version, cipher, server_name, alpn, resumed, [subject, issuer, not_after,
 * verified]} | nil on a plaintext connection */
static int conn_tls(lua_State *L)
{
    SSL *ssl = secured_ssl(lconn_check(L));
    if (ssl == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 9);
    set_string(L, "version", SSL_get_version(ssl));
    set_string(L, "cipher", SSL_get_cipher_name(ssl));
    set_string(L, "server_name", SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len > 0) {
        lua_pushlstring(L, (const char *)alpn, alpn_len);
        lua_setfield(L, -2, "alpn");
    }
    lua_pushboolean(L, SSL_session_reused(ssl));
    lua_setfield(L, -2, "resumed");
    set_peer_certificate(L, ssl);
    return 1;
}

static int session_gc(lua_State *L)
{
    SSL_SESSION **session = luaL_checkudata(L, 1, SESSION_MT);
    SSL_SESSION_free(*session);
    *session = NULL;
    return 0;
}

/* conn:tls_session() -> session | nil: for {tls = {session = s}} on a later connect. */
static int conn_tls_session(lua_State *L)
{
    SSL *ssl = secured_ssl(lconn_check(L));
    SSL_SESSION **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, SESSION_MT);
    if (ssl != NULL)
        *box = SSL_get1_session(ssl);
    if (*box == NULL || !SSL_SESSION_is_resumable(*box))
        lua_pushnil(L);
    return 1;
}

static const luaL_Reg methods[] = {
    {"starttls", conn_starttls},
    {"tls", conn_tls},
    {"tls_session", conn_tls_session},
    {NULL, NULL},
};

void ltls_open(lua_State *L)
{
    luaL_newmetatable(L, CLIENT_CONTEXT_MT);
    lua_pushcfunction(L, client_context_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, SESSION_MT);
    lua_pushcfunction(L, session_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setfuncs(L, methods, 0);
}
