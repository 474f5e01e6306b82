-- line.lua: the benchmark's line-protocol handler (bench/run's line workload): reads one line
-- and sends it back with its newline, until the client leaves.
-- Run: build/luasock serve bench/line.lua --listen 127.0.0.1:0
local M = {}

function M.handle(conn)
  while true do
    local line = conn:receive("*l")
    if not line then
      return
    end
    conn:send(line, "\n")
  end
end

return M
