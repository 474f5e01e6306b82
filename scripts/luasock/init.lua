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

-- The client tls options for host: a copy with the name to check, by default host itself.
local function tls_options(tls, host)
  local options = {}
  if type(tls) == "table" then
    for name, value in pairs(tls) do
      options[name] = value
    end
  elseif tls ~= true then
    error("luasock.connect: tls must be true or a table of options", 3)
  end
  options.server_name = options.server_name or host
  return options
end

-- luasock.connect(host, port [, {timeout = s, bind = address, tls = true | {...}}])
--   -> conn | nil, err
-- One overall timeout covers the lookup, every address tried and the TLS handshake.
function luasock.connect(host, port, opts)
  assert(type(host) == "string", "bad argument #1 to 'connect' (string expected)")
  assert(math.type(port) == "integer", "bad argument #2 to 'connect' (integer port expected)")
  opts = opts or {}
  local tls = opts.tls and tls_options(opts.tls, host)
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
    if conn and not tls then
      return conn
    end
    if conn then
      local ok
      ok, err = conn:starttls(tls, math.max(deadline - core.now(), 0))
      if ok then
        return conn
      end
      return nil, err
    end
  end
  return nil, err
end

return luasock
