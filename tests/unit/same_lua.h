/* same_lua.h -- a Lua function for the codec unit tests: same(a, b), deep equality that tells
 * integers from floats and 0.0 from -0.0, and compares metatables (the markers and wrappers of
 * lvalues.h), so that a decoded value must match the expected one exactly. */
#ifndef SAME_LUA_H
#define SAME_LUA_H

#define SAME_LUA                                                                           \
    "function same(a, b)\n"                                                                \
    "  if type(a) ~= type(b) then return false end\n"                                      \
    "  if type(a) == 'number' then\n"                                                      \
    "    return math.type(a) == math.type(b) and a == b and (a ~= 0 or 1/a == 1/b)\n"      \
    "  end\n"                                                                              \
    "  if type(a) ~= 'table' then return a == b end\n"                                     \
    "  if getmetatable(a) ~= getmetatable(b) then return false end\n"                      \
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"           \
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"                    \
    "  return true\n"                                                                      \
    "end\n"

#endif
