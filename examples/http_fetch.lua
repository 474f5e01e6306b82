-- http_fetch.lua: the HTTP/1.0 GET that examples/http_get.lua and https_get.lua share, on a
-- connection they opened (plaintext or TLS, it reads the same): sends the request, prints the
-- response (status line, headers, body) and returns the exit status, 0 for a 2xx reply.
local M = {}

-- fail(what, err) reports an error and returns the exit status for it.
function M.get(conn, host_header, path, fail)
  conn:settimeout(10)
  conn:send("GET ", path, " HTTP/1.0\r\nHost: ", host_header, "\r\nConnection: close\r\n\r\n")

  local head, err = conn:receiveuntil("\r\n\r\n")
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
end

return M
