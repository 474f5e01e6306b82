-- examples_spec.lua -- the example scripts in examples/ behave as their comments promise. The
-- TLS ones (issue 14) are checked with certificates from scripts/devcert in temp directories:
-- tls_echo.lua with a LuaSec client, https_get.lua against `openssl s_server -HTTP` (verified,
-- and refused for each reason a certificate fails) and against a luasock TLS server that shows
-- the request it got.
local helper = require "helper"
local devcert = require "devcert"

local GREETING = "Welcome to the server. Type something and hit enter"

describe("examples/echo.lua", function()
  after_each(helper.cleanup)

  it("echoes lines and raw chunks until the client leaves", function()
    local server = helper.start("examples/echo.lua")
    local client = server:connect()
    assert(client:send("hello\n"))
    assert.equal("hello", client:receive())
    assert(client:send("no newline"))
    assert.equal("no newline", client:receive(10))
    local big = string.rep("0123456789", 20000)
    assert(client:send(big))
    assert.equal(big, client:receive(#big))
    assert(client:shutdown("send"))
    local rest, err = helper.read_all(client)
    assert.equal("", rest)
    assert.equal("closed", err)
    client:close()
    server:stop()
  end)
end)

describe("examples/prefix.lua", function()
  after_each(helper.cleanup)

  it("greets, then answers every line with OK... and the line", function()
    local server = helper.start("examples/prefix.lua")
    local client = server:connect()
    assert.equal(GREETING, client:receive())
    for _, line in ipairs { "first", "", "with spaces and\ttabs", "crlf" } do
      assert(client:send(line .. (line == "crlf" and "\r\n" or "\n")))
      assert.equal("OK..." .. line, client:receive())
    end
    assert(client:send("one\ntwo\n"))
    assert.equal("OK...one", client:receive())
    assert.equal("OK...two", client:receive())
    assert(client:shutdown("send"))
    assert.equal("closed", select(2, helper.read_all(client)))
    client:close()
    server:stop()
  end)
end)

describe("examples/upper.lua", function()
  after_each(helper.cleanup)

  it("replies to whatever arrives first in upper case, then closes", function()
    local server = helper.start("examples/upper.lua")
    local client = server:connect()
    assert(client:send("hello there"))
    local reply, err = helper.read_all(client)
    assert.equal("HELLO THERE", reply)
    assert.equal("closed", err)
    client:close()
    server:stop()
  end)

  it("serves one request per connection, many connections in a row", function()
    local server = helper.start("examples/upper.lua")
    for i = 1, 5 do
      local client = server:connect()
      assert(client:send("request " .. i .. "\n"))
      assert.equal("REQUEST " .. i .. "\n", (helper.read_all(client)))
      client:close()
    end
    server:stop()
  end)
end)

describe("examples/tls_echo.lua", function()
  after_each(helper.cleanup)

  -- The example (and echo.lua, whose handler it uses) beside a build/devcert/ of its own, as
  -- `scripts/devcert` makes it.
  local function start_example()
    local root = helper.tmpdir()
    assert(os.execute("mkdir " .. helper.shell_quote(root .. "/examples")))
    for _, name in ipairs({ "tls_echo.lua", "echo.lua" }) do
      helper.write_file(root .. "/examples/" .. name, helper.read_file("examples/" .. name))
    end
    local certs = devcert.make(nil, root .. "/build/devcert")
    return helper.start(root .. "/examples/tls_echo.lua", { listen = "tls:127.0.0.1:0" }), certs
  end

  it("echoes over TLS with the development certificate, verified against its CA", function()
    local server, certs = start_example()
    local client = server:connect()
    client = assert(devcert.wrap(client, certs.ca))
    assert(client:send("hello\n"))
    assert.equal("hello", client:receive())
    local big = string.rep("0123456789", 20000)
    assert(client:send(big))
    assert.equal(big, client:receive(#big))
    client:close()
    server:stop()
  end)

  it("never runs the handler for a client that does not speak TLS", function()
    local server = start_example()
    local client = server:connect()
    assert(client:send("hello\n"))
    local data = helper.read_all(client)
    assert.is_nil(data:find("hello", 1, true), "echoed in plain text: " .. data)
    client:close()
    server:stop()
  end)
end)

-- Starts an `openssl s_server -HTTP` in `dir` (each file there is a complete response) with the
-- certificate `certs`; returns it with the port it took.
local function start_s_server(certs, dir)
  local out = helper.tmpdir() .. "/s_server.out"
  local server = helper.spawn(("openssl s_server -HTTP -accept 127.0.0.1:0 -cert %s -key %s "
    .. ">%s 2>&1 </dev/null"):format(helper.shell_quote(certs.cert),
    helper.shell_quote(certs.key), helper.shell_quote(out)), { dir = dir })
  server.port = tonumber(helper.eventually(function()
    return helper.read_file(out):match("ACCEPT 127%.0%.0%.1:(%d+)")
  end, 5, "openssl s_server's ACCEPT line"))
  return server
end

local function https_get(...)
  return helper.run { "run", "examples/https_get.lua", ... }
end

-- A response with a body holding every byte value and many "\r\n\r\n".
local function response(status)
  local parts = {}
  for i = 0, 49999 do parts[#parts + 1] = string.char(i % 256, i * 7 % 256, 13, 10) end
  local body = table.concat(parts)
  return ("HTTP/1.0 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n")
    :format(status, #body) .. body
end

describe("examples/https_get.lua", function()
  after_each(helper.cleanup)

  it("verifies the server against --cafile, prints the exact response and exits 0", function()
    local certs = devcert.make()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/file.bin", response("200 OK"))
    local server = start_s_server(certs, dir)
    local code, out, err = https_get("--cafile", certs.ca, "localhost", server.port, "/file.bin")
    assert.equal(0, code, err)
    local want = response("200 OK")
    assert.equal(#want, #out)
    assert.is_true(want == out, "stdout differs from the response")
    assert.equal("", err)
  end)

  it("prints a 404 response and exits 1", function()
    local certs = devcert.make()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/missing", "HTTP/1.0 404 Not Found\r\n\r\nno such file\n")
    local server = start_s_server(certs, dir)
    local code, out = https_get("--cafile", certs.ca, "localhost", server.port, "/missing")
    assert.equal(1, code)
    assert.equal("HTTP/1.0 404 Not Found\r\n\r\nno such file\n", out)
  end)

  it("sends a GET with Host (and its port) and Connection: close, verifying an IP address",
    function()
    local certs = devcert.make()
    local script = helper.script(helper.fill([[
      return { tls = { cert = "${CERT}", key = "${KEY}" }, handle = function(conn)
        local head = assert(conn:receiveuntil("\r\n\r\n"))
        conn:send("HTTP/1.0 200 OK\r\nContent-Length: ", #head, "\r\n\r\n", head)
      end }]], { CERT = certs.cert, KEY = certs.key }))
    local server = helper.start(script, { listen = "tls:127.0.0.1:0" })
    local code, out, err = https_get("--cafile", certs.ca, "127.0.0.1", server.port, "/a?b=c")
    assert.equal(0, code, err)
    local head = ("GET /a?b=c HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close"):format(
      server.port)
    assert.equal(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s"):format(#head, head), out)
    server:stop()
  end)

  it("refuses a certificate it cannot verify, saying why, and exits 1", function()
    local certs, other = devcert.make(), devcert.make()
    local elsewhere = devcert.make { "elsewhere.test" }
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/file.bin", response("200 OK"))
    local issued = start_s_server(certs, dir)
    local self_signed = start_s_server(devcert.self_signed(), dir)
    local misnamed = start_s_server(elsewhere, dir)
    for _, case in ipairs {
      { issued, "unable to get local issuer certificate" }, -- the system's CAs
      { issued, "unable to get local issuer certificate", other.ca },
      { self_signed, "self-signed certificate" },
      { self_signed, "self-signed certificate", certs.ca },
      { misnamed, "hostname mismatch", elsewhere.ca },
    } do
      local server, reason, ca = case[1], case[2], case[3]
      local args = { "localhost", server.port, "/file.bin" }
      if ca then table.insert(args, 1, "--cafile") table.insert(args, 2, ca) end
      local code, out, err = https_get(table.unpack(args))
      assert.equal(1, code, err)
      assert.equal("", out)
      assert.equal(("https_get: connect localhost:%d: certificate verify failed: %s\n"):format(
        server.port, reason), err)
    end
  end)

  it("reports a refused connection on stderr and exits 1", function()
    local port = helper.free_port()
    local code, out, err = https_get("localhost", port)
    assert.equal(1, code)
    assert.equal("", out)
    assert.equal("https_get: connect localhost:" .. port .. ": connection refused\n", err)
  end)

  for _, args in ipairs { {}, { "--cafile" }, { "localhost", "https" }, { "localhost", "443.5" },
    { "--cafile", "ca.pem", "localhost", "x" } } do
    it("exits 2 with its usage for arguments {" .. table.concat(args, ", ") .. "}", function()
      local code, out, err = https_get(table.unpack(args))
      assert.equal(2, code)
      assert.equal("", out)
      assert.is_truthy(err:find("usage: luasock run examples/https_get.lua", 1, true), err)
    end)
  end
end)
