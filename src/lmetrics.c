/* lmetrics.c -- luasock.metrics.counter, gauge and histogram, and their :inc, :set and :observe.
 *
 * A metric's userdata only points into the registry (metrics.h), which lives until exit: asking
 * for the same name again, after a reload say, gives the same figures. */
#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "lmetrics.h"
#include "metrics.h"

#define METRIC_MT "luasock.metric"

static const double default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const char *const type_names[] = {"counter", "gauge", "histogram"};

static struct metric *tometric(lua_State *L)
{
    return *(struct metric **)luaL_checkudata(L, 1, METRIC_MT);
}

/* Reads the list of label names at idx (nil: none) into labels. */
static size_t check_label_names(lua_State *L, int idx, const char *what, const char **labels)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    if (n > METRIC_MAX_LABELS)
        luaL_error(L, "%s: at most %d labels", what, METRIC_MAX_LABELS);
    for (lua_Integer i = 1; i <= n; i++) {
        const char *name = lua_rawgeti(L, idx, i) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1); /* the string stays alive in the table */
        const char *why = name != NULL ? metrics_check_name(name, true)
                                       : "a label name must be a string";
        if (why != NULL)
            luaL_error(L, "%s: bad label name '%s': %s", what, name ? name : "?", why);
        if (strcmp(name, "le") == 0 || strcmp(name, "quantile") == 0 ||
            strcmp(name, "worker") == 0)
            luaL_error(L, "%s: label name '%s' is reserved", what, name);
        for (lua_Integer j = 1; j < i; j++)
            if (strcmp(labels[j - 1], name) == 0)
                luaL_error(L, "%s: label '%s' given twice", what, name);
        labels[i - 1] = name;
    }
    return (size_t)n;
}

static size_t check_buckets(lua_State *L, int idx, double *bounds)
{
    if (lua_isnoneornil(L, idx)) {
        memcpy(bounds, default_buckets, sizeof default_buckets);
        return sizeof default_buckets / sizeof default_buckets[0];
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    if (n < 1 || n > METRIC_MAX_BUCKETS)
        luaL_error(L, "luasock.metrics.histogram: from 1 to %d buckets", METRIC_MAX_BUCKETS);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int isnum;
        double bound = lua_tonumberx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum || !isfinite(bound) || (i > 1 && bound <= bounds[i - 2]))
            luaL_error(L, "luasock.metrics.histogram: buckets must be finite numbers in "
                          "increasing order");
        bounds[i - 1] = bound;
    }
    return (size_t)n;
}

static int define(lua_State *L, enum metric_type type)
{
    char what[64];
    snprintf(what, sizeof what, "luasock.metrics.%s", type_names[type]);
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_checkstring(L, 2);
    const char *why = metrics_check_name(name, false);
    if (why != NULL)
        return luaL_error(L, "%s: bad metric name '%s': %s", what, name, why);
    if (strncmp(name, "luasock_", 8) == 0 || strncmp(name, "process_", 8) == 0)
        return luaL_error(L, "%s: '%s': the prefixes luasock_ and process_ are the server's",
                          what, name);
    const char *labels[METRIC_MAX_LABELS];
    double bounds[METRIC_MAX_BUCKETS];
    size_t bucket_count = type == METRIC_HISTOGRAM ? check_buckets(L, 3, bounds) : 0;
    size_t label_count = check_label_names(L, type == METRIC_HISTOGRAM ? 4 : 3, what, labels);
    struct metric **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, METRIC_MT);
    const char *err;
    *box = metrics_define(type, name, help, labels, label_count, bounds, bucket_count, &err);
    if (*box == NULL)
        return luaL_error(L, "%s: '%s': %s", what, name, err);
    return 1;
}

static int metrics_counter(lua_State *L)
{
    return define(L, METRIC_COUNTER);
}

static int metrics_gauge(lua_State *L)
{
    return define(L, METRIC_GAUGE);
}

static int metrics_histogram(lua_State *L)
{
    return define(L, METRIC_HISTOGRAM);
}

/* The series that the labels table at idx names: one value per label name, no other key. */
static struct metric_series *check_series(lua_State *L, struct metric *m, int idx)
{
    const char *values[METRIC_MAX_LABELS];
    if (m->label_count > 0 || !lua_isnoneornil(L, idx))
        luaL_checktype(L, idx, LUA_TTABLE);
    for (size_t i = 0; i < m->label_count; i++) {
        lua_getfield(L, idx, m->labels[i]);
        int type = lua_type(L, -1);
        if (type == LUA_TNIL)
            luaL_error(L, "%s: missing label '%s'", m->name, m->labels[i]);
        if (type != LUA_TSTRING && type != LUA_TNUMBER)
            luaL_error(L, "%s: label '%s' must be a string or a number", m->name, m->labels[i]);
        values[i] = lua_tostring(L, -1);
        lua_replace(L, idx + 1 + (int)i); /* keeps the string alive */
    }
    size_t keys = 0;
    if (!lua_isnoneornil(L, idx)) {
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            keys++;
            lua_pop(L, 1);
        }
    }
    if (keys != m->label_count)
        luaL_error(L, "%s: labels must be exactly %d (%s%s)", m->name, (int)m->label_count,
                   m->label_count > 0 ? m->labels[0] : "none", m->label_count > 1 ? ", ..." : "");
    struct metric_series *s = metrics_series(m, values);
    if (s == NULL)
        luaL_error(L, "%s: not enough memory for a new series", m->name);
    return s;
}

/* Room on the stack for the label values check_series keeps above idx. */
static void make_room(lua_State *L, int idx)
{
    lua_settop(L, idx + METRIC_MAX_LABELS);
}

static int metric_inc(lua_State *L)
{
    struct metric *m = tometric(L);
    if (m->type == METRIC_HISTOGRAM)
        return luaL_error(L, "%s is a histogram: use observe", m->name);
    double n = luaL_optnumber(L, 2, 1);
    if (!isfinite(n) || (m->type == METRIC_COUNTER && n < 0))
        return luaL_error(L, "%s: a counter only goes up: inc(%f)", m->name, n);
    make_room(L, 3);
    metrics_add(check_series(L, m, 3), n);
    return 0;
}

static int metric_set(lua_State *L)
{
    struct metric *m = tometric(L);
    if (m->type != METRIC_GAUGE)
        return luaL_error(L, "%s is a %s: only a gauge can be set", m->name, type_names[m->type]);
    double v = luaL_checknumber(L, 2);
    make_room(L, 3);
    check_series(L, m, 3)->value = v;
    return 0;
}

static int metric_observe(lua_State *L)
{
    struct metric *m = tometric(L);
    if (m->type != METRIC_HISTOGRAM)
        return luaL_error(L, "%s is a %s: only a histogram observes", m->name,
                          type_names[m->type]);
    double v = luaL_checknumber(L, 2);
    if (isnan(v))
        return luaL_error(L, "%s: observe(nan)", m->name);
    make_room(L, 3);
    metrics_observe(m, check_series(L, m, 3), v);
    return 0;
}

static int metric_tostring(lua_State *L)
{
    struct metric *m = tometric(L);
    lua_pushfstring(L, "luasock.metric (%s %s)", type_names[m->type], m->name);
    return 1;
}

void lmetrics_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"inc", metric_inc}, {"set", metric_set}, {"observe", metric_observe}, {NULL, NULL}};
    static const luaL_Reg functions[] = {{"counter", metrics_counter},
                                         {"gauge", metrics_gauge},
                                         {"histogram", metrics_histogram},
                                         {NULL, NULL}};
    if (luaL_newmetatable(L, METRIC_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, metric_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "metrics");
}
