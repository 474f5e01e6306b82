-- luasock: the module handlers get from require "luasock". Most of it is C (luasock.core:
-- sleep, now, spawn, log, resolve, ...); what reads better in Lua lives here: connecting to a
-- host name by trying each of its addresses in turn, through the keep-alive pools.
local core = require "luasock.core"
local pool = require "luasock.pool"

local luasock = {}
for name, value in pairs(core) do
  luasock[name] = value
end
for _, internal in ipairs({ "connect_address", "check_tls", "spawn_service", "park", "unpark",
                            "parked", "pool_name", "reused", "conn_methods", "interrupt",
                            "listener_callback", "check_wait", "stdio" }) do
  luasock[internal] = nil
end

local methods = core.conn_methods()
methods.setkeepalive = pool.setkeepalive
methods.reused = core.reused

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
  -- Called through pcall, the C check's message carries no position: error() adds the caller's.
  local ok, err = pcall(core.check_tls, options)
  if not ok then
    error(err, 3)
  end
  return options
end

-- Connects to one of host's addresses, then does the TLS handshake if asked, all within one
-- overall timeout.
local function connect(host, port, opts, tls, timeout, name)
  local deadline = core.now() + timeout
  local addresses, err
  if host:sub(1, 5) == "unix:" then
    addresses = { host }
  else
    addresses, err = core.resolve(host, { timeout = timeout })
  end
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
    conn, err = core.connect_address(address, port, left, opts.bind, name)
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

-- luasock.connect(host, port [, {timeout = s, bind = address, tls = true | {...}, pool = name}])
--   -> conn | nil, err; host may be "unix:/path", without a port.
-- A connection parked under the pool name (conn:setkeepalive) is taken back if there is one.
-- Otherwise one overall timeout covers the lookup, every address tried and the TLS handshake.
function luasock.connect(host, port, opts)
  -- Argument errors blame the caller's line (level 2), not this file.
  if type(host) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(host) .. ")", 2)
  end
  if host:sub(1, 5) == "unix:" then
    if type(port) == "table" then
      port, opts = nil, port
    end
    port = port or 0
  end
  if math.type(port) ~= "integer" or (port ~= 0 or host:sub(1, 5) ~= "unix:")
      and (port < 1 or port > 65535) then
    error("bad argument #2 to 'connect' (integer port 1 to 65535 expected)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local timeout = opts.timeout or DEFAULT_CONNECT_TIMEOUT
  if type(timeout) ~= "number" or (opts.bind ~= nil and type(opts.bind) ~= "string") then
    error("luasock.connect: timeout must be a number of seconds and bind an address string", 2)
  end
  -- A NaN deadline would never pass: refused here, where the caller's line is one level up.
  if timeout ~= timeout then
    error("luasock.connect: timeout is NaN; expected seconds, or nil or math.huge for none", 2)
  end
  local tls = opts.tls and tls_options(opts.tls, host)
  local name = pool.name(host, port, opts)
  local parked = pool.take(name)
  if parked then
    return parked
  end
  -- Here rather than in the C below it, so that the error names the caller's line.
  core.check_wait("luasock.connect", 2)
  return connect(host, port, opts, tls, timeout, name)
end

-- luasock.every(seconds, fn, ...) -> task: calls fn(...) every `seconds`, the first time one
-- period from now, at a fixed rate (a call that overruns its period is followed at once by the
-- next, and the calls it made late are not made up). An error in fn is logged and the calls go
-- on: one failed cleanup should not end all later ones. task:cancel() stops it.
function luasock.every(seconds, fn, ...)
  if type(seconds) ~= "number" or not (seconds > 0 and seconds < math.huge) then
    error("luasock.every: seconds must be a positive finite number, got " .. tostring(seconds), 2)
  end
  if type(fn) ~= "function" then
    error("luasock.every: fn must be a function, got " .. type(fn), 2)
  end
  local args = table.pack(...)
  return core.spawn(function()
    local due = core.now() + seconds
    while true do
      core.sleep(math.max(due - core.now(), 0))
      local ok, err = pcall(fn, table.unpack(args, 1, args.n))
      if not ok then
        core.log("error", "luasock.every: " .. tostring(err))
      end
      due = math.max(due + seconds, core.now())
    end
  end)
end

-- luasock.stdin, luasock.stdout and luasock.stderr (`luasock run` only) are connections made
-- when first used, so that a script that never reads standard input leaves it to others.
local STREAMS = { stdin = true, stdout = true, stderr = true }
setmetatable(luasock, {
  __index = function(_, name)
    if STREAMS[name] then
      local conn, err = core.stdio(name)
      if not conn then
        error(err, 2)
      end
      return conn
    end
  end,
})

return luasock
