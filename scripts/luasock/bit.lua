-- luasock.bit: LuaJIT's `bit` module on Lua 5.4's integer operators, for libraries written for
-- OpenResty (require "luasock.ngx" makes `require "bit"` load it). Every operation works on 32
-- bits and returns a signed 32-bit number, as LuaJIT's does: bit.bnot(0) is -1, bit.lshift(1, 31)
-- is -2147483648, bit.tohex(-1) is "ffffffff".
local bit = {}

local floor, tointeger = math.floor, math.tointeger

-- The 32-bit value of x, wrapped modulo 2^32, as a signed number.
local function tobit(x)
  local n = type(x) == "number" and (tointeger(x) or tointeger(floor(x + 0.5)))
  if not n then
    error("bad argument to 'bit' (number expected, got " .. type(x) .. ")", 3)
  end
  n = n & 0xffffffff
  if n >= 0x80000000 then
    n = n - 0x100000000
  end
  return n
end

function bit.tobit(x)
  return tobit(x)
end

function bit.bnot(x)
  return tobit(~tobit(x))
end

local function fold(op)
  return function(x, ...)
    local result = tobit(x)
    for i = 1, select("#", ...) do
      result = op(result, tobit((select(i, ...))))
    end
    return tobit(result)
  end
end

bit.band = fold(function(a, b) return a & b end)
bit.bor = fold(function(a, b) return a | b end)
bit.bxor = fold(function(a, b) return a ~ b end)

function bit.lshift(x, n)
  return tobit(tobit(x) << (tobit(n) & 31))
end

function bit.rshift(x, n)
  return tobit((tobit(x) & 0xffffffff) >> (tobit(n) & 31))
end

-- Lua's >> is logical on 64 bits; the sign-extended upper half shifts the sign bit in.
function bit.arshift(x, n)
  return tobit(tobit(x) >> (tobit(n) & 31))
end

function bit.rol(x, n)
  local v, s = tobit(x) & 0xffffffff, tobit(n) & 31
  return tobit(v << s | v >> (32 - s))
end

function bit.ror(x, n)
  local v, s = tobit(x) & 0xffffffff, tobit(n) & 31
  return tobit(v >> s | v << (32 - s))
end

function bit.bswap(x)
  local v = tobit(x) & 0xffffffff
  return tobit((v & 0xff) << 24 | (v & 0xff00) << 8 | (v >> 8) & 0xff00 | v >> 24)
end

-- tohex(x [, n]): n hex digits (default 8) of x's low bits; a negative n gives upper case.
function bit.tohex(x, n)
  n = n and tobit(n) or 8
  local upper = n < 0
  n = math.min(math.abs(n), 8)
  local text = string.format(upper and "%08X" or "%08x", tobit(x) & 0xffffffff)
  return text:sub(9 - n)
end

return bit
