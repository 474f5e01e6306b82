-- luasock.ngx_string: OpenResty's string functions (ngx.md5, ngx.encode_base64, ngx.escape_uri,
-- ...), copied into `ngx` by luasock.ngx. The digests, CRC-32 and base64 are C (luasock.ngxcore);
-- what is here follows lua-nginx-module and lua-resty-core: the same argument coercions (nil is
-- "", other values go through tostring), the same escape tables, MySQL's quoting.
local core = require "luasock.ngxcore"

local M = {}

-- resty.core's coercion for most of these: nil or false is "", anything else tostring'd.
local function text(s)
  if type(s) == "string" then
    return s
  end
  return s and tostring(s) or ""
end

function M.md5(s)
  return core.md5(text(s))
end

function M.md5_bin(s)
  return core.md5_bin(text(s))
end

function M.sha1_bin(s)
  return core.sha1_bin(text(s))
end

-- nginx has two CRC-32 loops (one for short strings); both compute the same CRC.
function M.crc32_short(s)
  return core.crc32(text(s))
end

M.crc32_long = M.crc32_short

function M.encode_base64(s, no_padding)
  if no_padding ~= nil and type(no_padding) ~= "boolean" then
    error("boolean argument only", 2)
  end
  return core.encode_base64(text(s), no_padding)
end

-- Returns nil for input that is not base64 (nginx's rules: see lngx.c).
function M.decode_base64(s)
  if type(s) ~= "string" then
    error("string argument only", 2)
  end
  return (core.decode_base64(s))
end

-- What each escape_uri type escapes, as lua-nginx-module's tables (ngx_http_lua_escape_uri):
-- 0 a whole URI, 1 query arguments, 2 (the default) a URI component: everything but letters,
-- digits and - . _ ~ ! ' ( ) *.
local ESCAPED = {
  [0] = "[\0-\32#%%?\127-\255]",
  [1] = "[\0-\32#%%+?\127-\255]",
  [2] = "[^A-Za-z0-9%-._~!'()*]",
}

local function hex(c)
  return string.format("%%%02X", c:byte())
end

function M.escape_uri(s, kind)
  kind = kind or 2
  if type(kind) ~= "number" then
    error('"type" is not number', 2)
  end
  local class = ESCAPED[kind]
  if not class then
    error('"type" ' .. kind .. " is not supported in luasock (0, 1 and 2 are)", 2)
  end
  return (text(s):gsub(class, hex))
end

-- "+" becomes a space and %XX its byte; a "%" without two hex digits after it stays. "+" goes
-- first, so a "%2B" still decodes to "+".
function M.unescape_uri(s)
  return (text(s):gsub("%+", " "):gsub("%%(%x%x)", function(digits)
    return string.char(tonumber(digits, 16))
  end))
end

local SQL_ESCAPES = {
  ["\0"] = "\\0", ["\b"] = "\\b", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\26"] = "\\Z", ["\\"] = "\\\\", ["'"] = "\\'", ['"'] = '\\"',
}

-- A MySQL string literal: quoted, with the bytes MySQL treats specially backslash-escaped.
function M.quote_sql_str(...)
  if select("#", ...) ~= 1 then
    error("expecting one argument", 2)
  end
  local s = ...
  if type(s) ~= "string" and type(s) ~= "number" then
    error("bad argument #1 to 'quote_sql_str' (string expected, got " .. type(s) .. ")", 2)
  end
  return "'" .. tostring(s):gsub("[\0\b\n\r\t\26\\'\"]", SQL_ESCAPES) .. "'"
end

return M
