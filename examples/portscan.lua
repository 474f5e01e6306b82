-- portscan.lua: checks a range of TCP ports on a host concurrently, each with its own connect
-- timeout, and prints the open ones in order.
-- Run: build/luasock run examples/portscan.lua HOST FROM TO [TIMEOUT_SECONDS]
local luasock = require "luasock"

local WORKERS = 100

local host, from, to = arg[1], math.tointeger(tonumber(arg[2])), math.tointeger(tonumber(arg[3]))
local timeout = tonumber(arg[4] or "1")
if not host or not from or not to or from < 1 or to > 65535 or from > to then
  io.stderr:write("usage: luasock run examples/portscan.lua HOST FROM TO [TIMEOUT_SECONDS]\n")
  return 2
end

-- Resolve once, so every worker connects to the same address without asking the resolver.
local addresses, err = luasock.resolve(host)
if not addresses then
  io.stderr:write(("portscan: %s: %s\n"):format(host, err))
  return 1
end
local address = addresses[1]

local open = {}
local next_port = from

local function worker()
  while next_port <= to do
    local port = next_port
    next_port = next_port + 1
    local conn = luasock.connect(address, port, { timeout = timeout })
    if conn then
      open[#open + 1] = port
      conn:close()
    end
  end
end

local workers = {}
for i = 1, math.min(WORKERS, to - from + 1) do
  workers[i] = luasock.spawn(worker)
end
for _, task in ipairs(workers) do
  task:join()
end

table.sort(open)
for _, port in ipairs(open) do
  print(("%s:%d open"):format(host, port))
end
print(("%d of %d ports open"):format(#open, to - from + 1))
return 0
