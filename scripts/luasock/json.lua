-- luasock.json: the JSON lines codec of receive_object and send_object (object_codec = "json"),
-- on lua-cjson (Debian's lua-cjson). One value per line: JSON escapes newlines inside strings,
-- so the line is the frame (its length limited by max_line). null is luasock.null, which is
-- cjson.null. JSON has no bytes, unsigned 64-bit or extension values: luasock.bytes, uint64 and
-- ext are refused rather than sent as something else. lua-cjson 2.1.0 writes numbers with 14
-- significant digits and reads every number as a float: integers beyond 10^14 are refused
-- rather than rounded, and whole numbers read back as Lua integers.
local core = require "luasock.core"

local found, cjson = pcall(require, "cjson.safe")
if not found then
  error("object_codec \"json\" needs lua-cjson (Debian package lua-cjson): " .. tostring(cjson), 0)
end

local json = cjson.new()
json.decode_max_depth(100)
json.encode_max_depth(100)
-- A table with holes is sent as an object rather than refused.
json.encode_sparse_array(true)

local M = {}

local REFUSED = { bytes = true, uint64 = true, ext = true }
local MAX_EXACT_INTEGER = 10 ^ 14 -- what 14 significant digits hold exactly
local MAX_FLOAT_INTEGER = 2 ^ 53  -- whole floats below this are exact integers

-- The first value in v that JSON (as lua-cjson writes it) cannot say, or nil.
local function refused(v, depth)
  local kind = core.kind(v)
  if REFUSED[kind] then
    return "a luasock." .. kind .. " value"
  end
  if math.type(v) == "integer" and (v >= MAX_EXACT_INTEGER or v <= -MAX_EXACT_INTEGER) then
    return "the integer " .. v .. " (lua-cjson keeps 14 digits)"
  end
  if type(v) == "table" and depth < 100 then
    for key, value in next, v do
      local bad = refused(key, depth + 1) or refused(value, depth + 1)
      if bad then
        return bad
      end
    end
  end
end

local function whole(v)
  if math.type(v) == "float" and v > -MAX_FLOAT_INTEGER and v < MAX_FLOAT_INTEGER then
    return math.tointeger(v) or v
  end
  return v
end

-- Turns the whole numbers lua-cjson read as floats into integers, in place.
local function integers(t)
  for key, value in next, t do
    if type(value) == "table" then
      integers(value)
    else
      t[key] = whole(value)
    end
  end
end

-- decode(line) -> value | nil, "json: ..."
function M.decode(line)
  local value, err = json.decode(line)
  if value == nil then
    return nil, "json: " .. tostring(err)
  end
  if type(value) == "table" then
    integers(value)
  end
  return whole(value)
end

-- encode(value) -> text (one line) | nil, "json: ..."
function M.encode(value)
  local bad = refused(value, 0)
  if bad then
    return nil, "json: cannot encode " .. bad
  end
  local text, err = json.encode(value)
  if not text then
    return nil, "json: " .. tostring(err)
  end
  return text
end

return M
