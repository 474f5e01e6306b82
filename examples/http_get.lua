-- http_get.lua: the classic first client program. Resolves HOST, connects, sends an HTTP/1.0
-- GET for PATH and prints the response (status line, headers, body), handling every error.
-- Run: build/luasock run examples/http_get.lua HOST [PORT] [PATH]
local luasock = require "luasock"

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
conn:settimeout(10)
conn:send("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\nConnection: close\r\n\r\n")

local head
head, err = conn:receiveuntil("\r\n\r\n")
if not head then
  return fail("read headers from", err)
end
io.write(head, "\r\n\r\n")

local body, partial
body, err, partial = conn:receive("*a")
io.write(body or partial)
if not body then
  return fail("read body from", err)
end
conn:close()
return head:match("^HTTP/%d%.%d 2%d%d") and 0 or 1
