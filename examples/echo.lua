-- echo.lua: sends every chunk a client sends straight back, until the client leaves.
-- Run: build/luasock serve examples/echo.lua [--listen 127.0.0.1:9090]
local M = { listen = "127.0.0.1:9090" }

function M.handle(conn)
  while true do
    local data = conn:receiveany(65536)
    if not data then
      return
    end
    conn:send(data)
  end
end

return M
