-- prefix.lua: the tutorials' first line server. Greets the client, then answers every line
-- with "OK..." followed by the line, until the client leaves.
local M = { listen = "127.0.0.1:9091" }

function M.handle(conn)
  conn:send("Welcome to the server. Type something and hit enter\n")
  while true do
    local line = conn:receive("*l")
    if not line then
      return
    end
    conn:send("OK...", line, "\n")
  end
end

return M
