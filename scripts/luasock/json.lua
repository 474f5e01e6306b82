-- luasock.json: the JSON lines codec of receive_object and send_object (object_codec = "json"),
-- on lua-cjson (Debian's lua-cjson). One value per line: JSON escapes newlines inside strings,
-- so the line is the frame (its length limited by max_line). null is luasock.null, which is
-- cjson.null. JSON has no bytes, unsigned 64-bit or extension values: luasock.bytes, uint64 and
-- ext are refused rather than sent as something else.
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

-- The first value in v that JSON cannot say, or nil.
local function refused(v, depth)
  local kind = core.kind(v)
  if REFUSED[kind] then
    return "luasock." .. kind
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

-- decode(line) -> value | nil, "json: ..."
function M.decode(line)
  local value, err = json.decode(line)
  if value == nil then
    return nil, "json: " .. tostring(err)
  end
  return value
end

-- encode(value) -> text (one line) | nil, "json: ..."
function M.encode(value)
  local bad = refused(value, 0)
  if bad then
    return nil, "json: cannot encode a " .. bad .. " value"
  end
  local text, err = json.encode(value)
  if not text then
    return nil, "json: " .. tostring(err)
  end
  return text
end

return M
