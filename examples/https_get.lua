-- https_get.lua: examples/http_get.lua over TLS. Connects to HOST with its certificate verified
-- against the system's CAs (or only those of FILE, with --cafile: for a test or development
-- server, e.g. build/devcert/ca.pem from scripts/devcert) and its name checked against HOST,
-- sends an HTTP/1.0 GET for PATH and prints the response (status line, headers, body).
-- Run: build/luasock run examples/https_get.lua [--cafile FILE] HOST [PORT] [PATH]
local luasock = require "luasock"
local http_fetch = require "http_fetch"

local cafile, first = nil, 1
if arg[1] == "--cafile" then
  cafile, first = arg[2], 3
end
local host, port, path = arg[first], tonumber(arg[first + 1] or "443"), arg[first + 2] or "/"
if (first == 3 and not cafile) or not host or not port or math.type(port) ~= "integer" then
  io.stderr:write("usage: luasock run examples/https_get.lua [--cafile FILE] HOST [PORT] [PATH]\n")
  return 2
end

local function fail(what, err)
  io.stderr:write(("https_get: %s %s:%d: %s\n"):format(what, host, port, err))
  return 1
end

local conn, err = luasock.connect(host, port,
  { timeout = 10, tls = cafile and { ca = cafile } or true })
if not conn then
  return fail("connect", err)
end
return http_fetch.get(conn, port == 443 and host or host .. ":" .. port, path, fail)
