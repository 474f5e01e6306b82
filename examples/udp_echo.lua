-- udp_echo.lua: echoes each datagram back to its sender, like the tutorials' UDP server on
-- port 8888 (their Python client does sendto/recvfrom against it).
-- Run: build/luasock serve examples/udp_echo.lua [--listen udp:127.0.0.1:8888]
local M = { listen = "udp:127.0.0.1:8888" }

function M.datagram(data, peer)
  peer:reply(data)
end

return M
