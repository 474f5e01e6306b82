-- luasock.ngx_re: OpenResty's ngx.re (match, find, gmatch, sub, gsub) on PCRE2, which
-- luasock.ngx installs as ngx.re. The semantics are lua-resty-core's (resty/core/regex.lua):
-- captures tables with [0], false for groups that did not take part, named groups by name (a
-- list of values under option "D"), ctx.pos in and out, an empty match moving the next search
-- on by one character, errors as nil and a message. Compiled patterns are C userdata
-- (luasock.ngxcore.regex); every pattern is cached, "o" or not, in a bounded cache.
local core = require "luasock.ngxcore"

local M = {}

local byte, sub, concat = string.byte, string.sub, table.concat

-- Two generations of at most CACHE_SIZE compiled patterns each: a hit in the old one moves the
-- pattern to the new one, and when the new one is full the old one is dropped. A working set
-- that fits stays compiled; a stream of one-off patterns costs at most 2 * CACHE_SIZE of them.
local CACHE_SIZE = 512
local cache, old_cache, cached = {}, {}, 0

-- Shared by every exec: 0-based match offsets, read back before anything can yield or call
-- into ngx.re again (a gsub replacement function may).
local offsets = {}

local function remember(key, entry)
  if cached >= CACHE_SIZE then
    old_cache, cache, cached = cache, {}, 0
  end
  cache[key] = entry
  cached = cached + 1
  return entry
end

local KNOWN_OPTIONS = "[aDijJmosuUx]"

-- pattern .. options -> the compiled entry {re =, captures =, names = {{group, name}, ...},
-- dup =, utf =}, or nil and a message. Raises for an unknown option letter as OpenResty does;
-- level points at the caller of the ngx.re function.
local function compile(regex, options, level)
  if type(regex) ~= "string" then
    error("bad argument #2 (string expected, got " .. type(regex) .. ")", level)
  end
  options = options or ""
  if type(options) ~= "string" then
    error("bad argument #3 (string expected, got " .. type(options) .. ")", level)
  end
  local key = regex .. "\0" .. options
  local entry = cache[key]
  if entry then
    return entry
  end
  entry = old_cache[key]
  if entry then
    return remember(key, entry)
  end
  for i = 1, #options do
    local letter = sub(options, i, i)
    if letter == "d" then
      return nil, 'regex option "d" (DFA mode) is not supported in luasock'
    elseif not letter:find(KNOWN_OPTIONS) then
      error('unknown flag "' .. letter .. '" (flags "' .. options .. '")', level)
    end
  end
  local re, err = core.regex(regex, (options:gsub("o", "")))
  if not re then
    return nil, err
  end
  local names = {}
  for group, name in pairs(re:names()) do
    names[#names + 1] = { group, name }
  end
  table.sort(names, function(a, b) return a[1] < b[1] end)
  entry = { re = re, captures = re:captures(), names = names, dup = options:find("D", 1, true),
            utf = options:find("[uU]") }
  return remember(key, entry)
end

-- The captures table of the last exec (n groups set, counting the whole match).
local function captures(entry, subject, n, res)
  res = res or {}
  for i = 0, entry.captures do
    local from = offsets[2 * i + 1]
    res[i] = i < n and from >= 0 and sub(subject, from + 1, offsets[2 * i + 2]) or false
  end
  for _, named in ipairs(entry.names) do
    local group, name = named[1], named[2]
    local value = res[group]
    if not entry.dup then
      res[name] = value
    elseif value then
      local list = res[name] or {}
      list[#list + 1] = value
      res[name] = list
    end
  end
  return res
end

-- Where to search after an empty match at offset `at`: one byte on, or one whole character in
-- UTF-8 mode (a start inside a character is an error to PCRE2).
local function step(entry, subject, at)
  local next = at + 1
  if entry.utf then
    while next < #subject and byte(subject, next + 1) >= 0x80 and byte(subject, next + 1) < 0xC0 do
      next = next + 1
    end
  end
  return next
end

local function start(ctx)
  local pos = ctx and ctx.pos
  if not pos or pos <= 0 then
    return 0
  end
  return pos - 1
end

function M.match(subject, regex, options, ctx, res)
  subject = tostring(subject)
  local entry, err = compile(regex, options, 3)
  if not entry then
    return nil, err
  end
  local n
  n, err = entry.re:exec(subject, start(ctx), offsets)
  if not n then
    if err then
      return nil, err
    end
    return nil
  end
  if ctx then
    ctx.pos = offsets[2] + 1
  end
  return captures(entry, subject, n, res)
end

function M.find(subject, regex, options, ctx, nth)
  subject = tostring(subject)
  local entry, err = compile(regex, options, 3)
  if not entry then
    return nil, nil, err
  end
  local n
  n, err = entry.re:exec(subject, start(ctx), offsets)
  if not n then
    if err then
      return nil, nil, err
    end
    return nil
  end
  if ctx then
    ctx.pos = offsets[2] + 1
  end
  nth = nth and nth > 0 and nth or 0
  if nth > entry.captures then
    return nil, nil, "nth out of bound"
  end
  local from = offsets[2 * nth + 1]
  if nth >= n or from < 0 then
    return nil, nil
  end
  return from + 1, offsets[2 * nth + 2]
end

function M.gmatch(subject, regex, options)
  subject = tostring(subject)
  local entry, err = compile(regex, options, 3)
  if not entry then
    return nil, err
  end
  local pos = 0
  return function()
    if not pos then
      return nil
    end
    local n, failure = entry.re:exec(subject, pos, offsets)
    if not n then
      pos = nil
      return nil, failure
    end
    local from, to = offsets[1], offsets[2]
    local m = captures(entry, subject, n)
    pos = to
    if to == from then
      pos = step(entry, subject, to)
      if pos > #subject then
        pos = nil
      end
    end
    return m
  end
end

local function template_error(replace, why)
  return nil, 'failed to compile the replacement template "' .. replace .. '": ' .. why
end

-- The named groups called `name`, in group order, or nil.
local function groups_named(entry, name)
  local groups
  for _, named in ipairs(entry.names) do
    if named[2] == name then
      groups = groups or {}
      groups[#groups + 1] = named[1]
    end
  end
  return groups
end

-- A replacement string -> a list of literal strings and group references (a group number, or a
-- list of numbers for a name), or nil and a message. $0, $1, ${1} and $$ as lua-nginx-module's
-- templates; $name and ${name} are luasock's addition (OpenResty refuses them).
local function parse_template(replace, entry)
  local parts, i = {}, 1
  while i <= #replace do
    local dollar = replace:find("$", i, true)
    if not dollar then
      parts[#parts + 1] = sub(replace, i)
      break
    end
    if dollar > i then
      parts[#parts + 1] = sub(replace, i, dollar - 1)
    end
    local after
    if sub(replace, dollar + 1, dollar + 1) == "$" then
      parts[#parts + 1], after = "$", dollar + 2
    else
      local inside
      if sub(replace, dollar + 1, dollar + 1) == "{" then
        inside, after = replace:match("^{([%w_]*)}()", dollar + 1)
        if not inside then
          return template_error(replace, "the closing bracket is missing")
        end
      else
        inside, after = replace:match("^(%d+)()", dollar + 1)
        if not inside then
          inside, after = replace:match("^([%a_][%w_]*)()", dollar + 1)
        end
      end
      if not inside or inside == "" then
        return template_error(replace, "invalid capturing variable name found")
      end
      if inside:find("^%d+$") then
        parts[#parts + 1] = tonumber(inside)
      else
        local groups = groups_named(entry, inside)
        if not groups then
          return template_error(replace, 'no group named "' .. inside .. '"')
        end
        parts[#parts + 1] = groups
      end
    end
    i = after
  end
  return parts
end

local function group_text(subject, n, group)
  local from = offsets[2 * group + 1]
  if group < n and from and from >= 0 then
    return sub(subject, from + 1, offsets[2 * group + 2])
  end
  return ""
end

local function expand(parts, subject, n)
  local out = {}
  for k, part in ipairs(parts) do
    if type(part) == "string" then
      out[k] = part
    elseif type(part) == "number" then
      out[k] = group_text(subject, n, part)
    else
      out[k] = ""
      for _, group in ipairs(part) do
        if group < n and offsets[2 * group + 1] >= 0 then
          out[k] = group_text(subject, n, group)
          break
        end
      end
    end
  end
  return concat(out)
end

local function substitute(subject, regex, replace, options, global)
  subject = tostring(subject)
  local entry, err = compile(regex, options, 4)
  if not entry then
    return nil, nil, err
  end
  local parts
  if type(replace) ~= "function" then
    replace = tostring(replace)
    parts, err = parse_template(replace, entry)
    if not parts then
      return nil, nil, err
    end
  end
  local out, count, pos, copied = {}, 0, 0, 0
  while true do
    local n, failure = entry.re:exec(subject, pos, offsets)
    if not n then
      if failure then
        return nil, nil, failure
      end
      break
    end
    count = count + 1
    local from, to = offsets[1], offsets[2]
    out[#out + 1] = sub(subject, copied + 1, from)
    if parts then
      out[#out + 1] = expand(parts, subject, n)
    else
      out[#out + 1] = tostring(replace(captures(entry, subject, n)))
    end
    copied, pos = to, to
    if to == from then
      pos = step(entry, subject, to)
      if pos > #subject then
        break
      end
    end
    if not global then
      break
    end
  end
  if count == 0 then
    return subject, 0
  end
  out[#out + 1] = sub(subject, copied + 1)
  return concat(out), count
end

function M.sub(subject, regex, replace, options)
  return substitute(subject, regex, replace, options, false)
end

function M.gsub(subject, regex, replace, options)
  return substitute(subject, regex, replace, options, true)
end

return M
