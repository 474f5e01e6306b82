-- luasock: the module handlers get from require "luasock". Most of it is C (luasock.core:
-- sleep, now, spawn, log, resolve, ...); what reads better in Lua lives here: connecting to a
-- host name by trying each of its addresses in turn.
local core = require "luasock.core"

local luasock = {}
for name, value in pairs(core) do
  luasock[name] = value
end
luasock.connect_address = nil
luasock.spawn_service = nil

local DEFAULT_CONNECT_TIMEOUT = 30

-- luasock.connect(host, port [, {timeout = s, bind = address}]) -> conn | nil, err
-- One overall timeout covers the lookup and every address tried.
function luasock.connect(host, port, opts)
  assert(type(host) == "string", "bad argument #1 to 'connect' (string expected)")
  assert(math.type(port) == "integer", "bad argument #2 to 'connect' (integer port expected)")
  opts = opts or {}
  local timeout = opts.timeout or DEFAULT_CONNECT_TIMEOUT
  -- A NaN deadline would never pass: refused here, where the caller's line is one level up.
  if timeout ~= timeout then
    error("luasock.connect: timeout is NaN; expected seconds, or nil or math.huge for none", 2)
  end
  local deadline = core.now() + timeout
  local addresses, err = core.resolve(host, { timeout = timeout })
  if not addresses then
    return nil, err
  end
  if #addresses == 0 then
    return nil, "host not found"
  end
  for _, address in ipairs(addresses) do
    local left = deadline - core.now()
    if left <= 0 then
      return nil, "timeout"
    end
    local conn
    conn, err = core.connect_address(address, port, left, opts.bind)
    if conn then
      return conn
    end
  end
  return nil, err
end

return luasock
