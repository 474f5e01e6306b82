-- luasock.ffi: the part of LuaJIT's ffi that OpenResty libraries use for byte buffers
-- (nginx.websocket.protocol: ffi.typeof("char[?]"), ffi.new, indexing, ffi.string), which
-- luasock.ngx installs as require "ffi". The buffers are luasock.ngxcore's: zeroed, indexed from
-- 0, values stored & 0xff and read back as C's char (signed on x86) or unsigned char; unlike
-- LuaJIT's, an index or length outside the buffer raises. Any other field or C type raises
-- "ffi is not available in luasock: <what was asked>", since Lua 5.4 cannot call C this way.
local core = require "luasock.ngxcore"

local ffi = {}

local function refuse(what)
  error("ffi is not available in luasock: " .. what, 3)
end

-- Element types we have, and whether they read back signed.
local ELEMENTS = { char = true, int8_t = true, ["unsigned char"] = false, uint8_t = false }

local ctype_mt = {}
local ctypes = {} -- declaration -> ctype

local function new(ctype, n)
  local size = ctype.size
  if not size then
    n = math.tointeger(n)
    if not n or n < 0 then
      error("ffi.new: " .. ctype.name .. " needs a size (a non-negative integer), got "
        .. tostring(n), 3)
    end
    size = n
  end
  return core.bytes(size, ctype.signed)
end

ctype_mt.__index = { new = new }
ctype_mt.__call = function(ctype, n)
  return new(ctype, n)
end
ctype_mt.__tostring = function(ctype)
  return "ctype<" .. ctype.name .. ">"
end

-- "char[?]", "unsigned char[16]", ... -> its ctype, or nil for anything else.
local function parse(decl)
  local element, size = decl:match("^%s*(%a[%w_ ]-)%s*%[%s*([%d?]*)%s*%]%s*$")
  local signed = element and ELEMENTS[element:gsub("%s+", " ")]
  if signed == nil or size == "" then
    return nil
  end
  local key = element:gsub("%s+", " ") .. "[" .. size .. "]"
  if not ctypes[key] then
    ctypes[key] = setmetatable({ name = key, signed = signed, size = tonumber(size) }, ctype_mt)
  end
  return ctypes[key]
end

local function describe(name, decl)
  return string.format("%s(%q)", name, tostring(decl))
end

function ffi.typeof(decl)
  if getmetatable(decl) == ctype_mt then
    return decl
  end
  local ctype = type(decl) == "string" and parse(decl)
  if not ctype then
    refuse(describe("ffi.typeof", decl))
  end
  return ctype
end

function ffi.new(decl, n, ...)
  local ctype = getmetatable(decl) == ctype_mt and decl or type(decl) == "string" and parse(decl)
  if not ctype then
    refuse(describe("ffi.new", decl))
  end
  if select("#", ...) > 0 then
    refuse("ffi.new with initial values")
  end
  return new(ctype, n)
end

-- len as an integer from 0 to size, or raises naming `what` (a string, a buffer).
local function check_length(len, size, what)
  local n = math.tointeger(len)
  if not n or n < 0 or n > size then
    error("ffi.string: length " .. tostring(len) .. " out of range for " .. what .. " of " .. size
      .. " bytes", 3)
  end
  return n
end

-- ffi.string(buf [, len]): len bytes of a buffer (or of a Lua string), or a buffer up to its
-- first zero byte.
function ffi.string(buf, len)
  if type(buf) == "string" then
    if len == nil then
      return buf:match("^[^\0]*")
    end
    return buf:sub(1, check_length(len, #buf, "a string"))
  end
  if type(buf) ~= "userdata" then
    refuse("ffi.string of a " .. type(buf))
  end
  if len ~= nil then
    len = check_length(len, #buf, "a buffer")
  end
  local s = core.bytes_string(buf, len)
  return s
end

return setmetatable(ffi, {
  __index = function(_, key)
    refuse("ffi." .. tostring(key))
  end,
})
