-- tls_echo.lua: examples/echo.lua over TLS, with the development certificate (paths in `tls`
-- are relative to this script's directory). The core does the handshake before handle runs, so
-- echo.lua's handler serves TLS unchanged.
-- Run: scripts/devcert && build/luasock serve examples/tls_echo.lua
-- Try: openssl s_client -connect 127.0.0.1:9443 -CAfile build/devcert/ca.pem -quiet
local echo = require "echo"

return {
  listen = "tls:127.0.0.1:9443",
  tls = { cert = "../build/devcert/server.pem", key = "../build/devcert/server.key" },
  handle = echo.handle,
}
