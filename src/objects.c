/* objects.c -- one interface over the object codecs; see objects.h. MessagePack and pickle are
 * C (codec.c, pickle.c); JSON lines call lua-cjson through scripts/luasock/json.lua, which the
 * loader or conn:setoption loads before a connection speaks JSON. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "errors.h"
#include "lvalues.h"
#include "objects.h"
#include "pickle.h"

const char *const object_codec_names[] = {"msgpack", "pickle", "json", NULL};

#define ERR_LINE_TOO_LONG "line too long"
#define ERR_JSON_NOT_LOADED "json: luasock.json is not loaded"

struct object_scanner {
    enum object_codec codec;
    union {
        struct codec_framer msgpack;
        struct pickle_scanner pickle;
        size_t searched; /* JSON: bytes already known to hold no "\n" */
    } u;
};

struct object_scanner *object_scanner_new(enum object_codec codec)
{
    struct object_scanner *s = malloc(sizeof *s);
    if (s == NULL)
        return NULL;
    s->codec = codec;
    if (codec == OBJECT_MSGPACK)
        codec_framer_init(&s->u.msgpack);
    else if (codec == OBJECT_PICKLE)
        pickle_scanner_init(&s->u.pickle);
    else
        s->u.searched = 0;
    return s;
}

void object_scanner_free(struct object_scanner *s)
{
    if (s == NULL)
        return;
    if (s->codec == OBJECT_MSGPACK)
        codec_framer_release(&s->u.msgpack);
    else if (s->codec == OBJECT_PICKLE)
        pickle_scanner_release(&s->u.pickle);
    free(s);
}

/* A JSON value is one line: JSON escapes a newline inside a string, so the first "\n" ends it. */
static enum codec_status scan_line(size_t *searched, const char *data, size_t len,
                                   size_t max_line, size_t *frame_len, const char **err)
{
    if (*searched > len)
        *searched = 0;
    const char *newline = memchr(data + *searched, '\n', len - *searched);
    if (newline != NULL && (size_t)(newline - data) <= max_line) {
        *frame_len = (size_t)(newline - data) + 1;
        return CODEC_OK;
    }
    *searched = len;
    if (len > max_line) {
        *err = ERR_LINE_TOO_LONG;
        return CODEC_ERROR;
    }
    return CODEC_MORE;
}

enum codec_status object_scan(struct object_scanner *s, const char *data, size_t len,
                              const struct codec_limits *limits, size_t *frame_len,
                              const char **err)
{
    if (s->codec == OBJECT_MSGPACK)
        return codec_framer_scan(&s->u.msgpack, data, len, limits, frame_len, err);
    if (s->codec == OBJECT_PICKLE)
        return pickle_scan(&s->u.pickle, data, len, limits, frame_len, err);
    return scan_line(&s->u.searched, data, len, limits->max_size, frame_len, err);
}

/* Pushes luasock.json's function `name`, or returns false if the module is not loaded. */
static bool push_json_function(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "luasock.json");
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return false;
    }
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    return true;
}

/* The message of a failed JSON call, kept until the next one (the caller copies it). */
static char json_error[200];

static const char *keep_error(lua_State *L)
{
    const char *message = lua_tostring(L, -1);
    snprintf(json_error, sizeof json_error, "%s", message != NULL ? message : "json: error");
    return json_error;
}

/* Calls luasock.json's `name` with the value on top (popped), leaving its result on the stack,
 * or returns CODEC_ERROR with its message. Raises out of memory. */
static enum codec_status call_json(lua_State *L, const char *name, const char **err)
{
    if (!push_json_function(L, name)) {
        lua_pop(L, 1);
        *err = ERR_JSON_NOT_LOADED;
        return CODEC_ERROR;
    }
    lua_insert(L, -2);
    int status = lua_pcall(L, 1, 2, 0);
    /* Out of memory is the handler's, as when MessagePack decodes: raised on its thread, the
     * value staying buffered for another try. */
    if (status == LUA_ERRMEM)
        lua_error(L);
    if (status != LUA_OK || lua_isnil(L, -2)) {
        *err = keep_error(L);
        lua_pop(L, status != LUA_OK ? 1 : 2);
        return CODEC_ERROR;
    }
    lua_pop(L, 1);
    return CODEC_OK;
}

static enum codec_status decode_json(lua_State *L, const char *data, size_t len,
                                     const char **err)
{
    len -= len > 0 && data[len - 1] == '\n';
    len -= len > 0 && data[len - 1] == '\r';
    lua_pushlstring(L, data, len);
    enum codec_status status = call_json(L, "decode", err);
    if (status == CODEC_OK && lvalues_kind(L, -1) == LV_NULL) {
        /* A top-level null is nil, as a MessagePack nil is. */
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return status;
}

enum codec_status object_decode(lua_State *L, enum object_codec codec, const char *data,
                                size_t len, bool exact, const char **err, bool *recoverable)
{
    *recoverable = false;
    if (codec == OBJECT_MSGPACK)
        return codec_decode(L, data, len, exact, err);
    if (codec == OBJECT_PICKLE)
        return pickle_decode(L, data, len, exact, err);
    enum codec_status status = decode_json(L, data, len, err);
    *recoverable = status == CODEC_ERROR;
    return status;
}

/* One JSON line: luasock.json's text of the value, then "\n". */
static enum codec_status encode_json(lua_State *L, int idx, struct buf *out,
                                     const struct codec_limits *limits, const char **err)
{
    lua_pushvalue(L, idx);
    if (call_json(L, "encode", err) != CODEC_OK)
        return CODEC_ERROR;
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    enum codec_status status = CODEC_ERROR;
    char *to = NULL;
    if (len >= limits->max_size)
        *err = ERR_TOO_LARGE;
    else if ((to = buf_reserve(out, len + 1)) == NULL)
        *err = errno == ENOBUFS ? ERR_NO_BUFFERS : ERR_NO_MEMORY;
    if (to != NULL) {
        memcpy(to, text, len);
        to[len] = '\n';
        buf_commit(out, len + 1);
        status = CODEC_OK;
    }
    lua_pop(L, 1);
    return status;
}

enum codec_status object_encode(lua_State *L, enum object_codec codec, int idx, struct buf *out,
                                const struct codec_limits *limits, const char **err)
{
    if (codec == OBJECT_MSGPACK)
        return codec_encode(L, idx, out, limits, err);
    if (codec == OBJECT_PICKLE)
        return pickle_encode(L, idx, out, limits, err);
    return encode_json(L, lua_absindex(L, idx), out, limits, err);
}
