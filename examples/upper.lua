-- upper.lua: one request per connection, like the simplest tutorial servers: reads whatever
-- arrives first (no newline needed, like recv(1024)), replies with it upper-cased, and closes.
local M = { listen = "127.0.0.1:9092" }

function M.handle(conn)
  local data = conn:receiveany(1024)
  if data then
    conn:send(data:upper())
  end
  conn:close()
end

return M
