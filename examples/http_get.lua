-- http_get.lua: the classic first client program. Resolves HOST, connects, sends an HTTP/1.0
-- GET for PATH and prints the response (status line, headers, body), handling every error.
-- Run: build/luasock run examples/http_get.lua HOST [PORT] [PATH]
local luasock = require "luasock"
local http_fetch = require "http_fetch"

local host, port, path = arg[1], tonumber(arg[2] or "80"), arg[3] or "/"
if not host or not port or math.type(port) ~= "integer" then
  io.stderr:write("usage: luasock run examples/http_get.lua HOST [PORT] [PATH]\n")
  return 2
end

local function fail(what, err)
  io.stderr:write(("http_get: %s %s:%d: %s\n"):format(what, host, port, err))
  return 1
end

local conn, err = luasock.connect(host, port, { timeout = 10 })
if not conn then
  return fail("connect", err)
end
return http_fetch.get(conn, host, path, fail)
