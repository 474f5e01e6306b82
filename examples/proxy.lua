-- proxy.lua: a TCP relay. Every client connection is piped to a new connection to the
-- upstream, both ways, with backpressure (a slow side slows the other instead of filling
-- memory). When one side finishes sending, the other is told (half-close); when both
-- directions are done, or either fails, both connections are closed.
-- Run: UPSTREAM=127.0.0.1:9090 build/luasock serve examples/proxy.lua --listen 127.0.0.1:9095
local luasock = require "luasock"

local M = { listen = "127.0.0.1:9095", upstream = "127.0.0.1:9090" }

function M.start()
  M.upstream = os.getenv("UPSTREAM") or M.upstream
  M.upstream_host, M.upstream_port = M.upstream:match("^%[?([^%]]+)%]?:(%d+)$")
  assert(M.upstream_host, "UPSTREAM must be HOST:PORT, got " .. M.upstream)
  M.upstream_port = math.tointeger(tonumber(M.upstream_port))
end

-- Copies from one connection to the other until the source ends; returns why it ended.
local function pipe(from, to)
  while true do
    local data, err = from:receiveany(65536)
    if not data then
      return err
    end
    local sent
    sent, err = to:send(data)
    if not sent then
      return err
    end
  end
end

function M.handle(client)
  local upstream, err = luasock.connect(M.upstream_host, M.upstream_port, { timeout = 10 })
  if not upstream then
    luasock.log("warn", client, "upstream", M.upstream, err)
    return
  end
  local upward = luasock.spawn(function()
    local why = pipe(client, upstream)
    if why == "closed" then
      upstream:shutdown("send")
    end
    return why
  end)
  local why = pipe(upstream, client)
  if why == "closed" then
    client:shutdown("send")
  else
    client:close() -- a failure: stop the other direction too
    upstream:close()
  end
  upward:join()
end

return M
