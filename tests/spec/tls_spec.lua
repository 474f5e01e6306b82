-- tls_spec.lua -- issue 14 (TLS): LuaSec (Debian's lua-sec, over LuaSocket) as the client of
-- luasock TLS servers (lines, "*l", "*a" and counts; receiveuntil, receiveany and receive_object
-- on the server side; an 8 MiB send to a slow reader; read timeouts; a plaintext client), and
-- luasock as a TLS client (`luasock run` scripts with luasock.connect's tls option) of luasock
-- and of `openssl s_server`: verification against a CA and of IP addresses, refusal of a
-- self-signed certificate and of a wrong host name unless verify = false, "tls: wrong version
-- number", client certificates (and a renewed one after a reload), ALPN, half-close, bad
-- options raised before connecting, session reuse with conn:tls_session(), "tls handshake
-- timeout" from a peer that never answers the ClientHello; and conn:starttls on both sides,
-- refusing plaintext that came after the request (command injection).
--
-- Every test makes its certificates with scripts/devcert in its temp directory (a CA, a server
-- certificate for localhost, 127.0.0.1 and ::1, and a client certificate); the scripts are
-- written beside them, so the `tls` tables name them relative to the script.
local socket = require "socket"
local ssl = require "ssl"
local helper = require "helper"

local fill = helper.fill

-- Makes the test's certificates in helper.dir(); returns that directory.
local function certs()
  local dir = helper.dir()
  if not helper.read_file(dir .. "/ca.pem"):find("CERTIFICATE", 1, true) then
    local ok = os.execute("scripts/devcert " .. helper.shell_quote(dir) .. " localhost >/dev/null")
    assert(ok, "scripts/devcert failed")
  end
  return dir
end

-- A self-signed pair self.pem/self.key for localhost and 127.0.0.1 in the test's directory.
local function self_signed()
  local dir = certs()
  local ok = os.execute("cd " .. helper.shell_quote(dir) .. " && openssl req -x509 -new "
    .. "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout self.key -out self.pem "
    .. "-days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
    .. ">/dev/null 2>&1")
  assert(ok, "openssl req -x509 failed")
end

-- Starts `source` (after helper.PRELUDE, with ${NAME}s from vars) on a tls:127.0.0.1:0 listener
-- (or opts.listen).
local function tls_server(source, vars, opts)
  certs()
  opts = opts or {}
  opts.listen = opts.listen or "tls:127.0.0.1:0"
  return helper.start(helper.handler(fill(source, vars or {})), opts)
end

-- Wraps a connected LuaSocket client in LuaSec, verifying the peer against the test CA, and
-- completes the handshake (SNI localhost).
local function wrap(tcp)
  local conn = assert(ssl.wrap(tcp, { mode = "client", protocol = "any", verify = "peer",
    cafile = certs() .. "/ca.pem", options = { "all", "no_sslv2", "no_sslv3" } }))
  conn:sni("localhost")
  conn:settimeout(helper.IO_TIMEOUT)
  local ok, err = conn:dohandshake()
  assert(ok, "LuaSec handshake failed: " .. tostring(err))
  return conn
end

-- A LuaSec connection to `server`.
local function luasec(server)
  return wrap(server:connect())
end

-- Starts `openssl s_server -rev` (answers every line reversed) with the devcert server pair;
-- returns its port.
local function s_server()
  local dir = certs()
  local out = helper.tmpdir() .. "/s_server.out"
  helper.spawn(string.format("openssl s_server -accept 127.0.0.1:0 -rev -cert %s -key %s >%s "
    .. "2>&1 </dev/null", helper.shell_quote(dir .. "/server.pem"),
    helper.shell_quote(dir .. "/server.key"), helper.shell_quote(out)))
  return tonumber(helper.eventually(function()
    return helper.read_file(out):match("ACCEPT 127%.0%.0%.1:(%d+)")
  end, helper.START_TIMEOUT, "s_server's ACCEPT line"))
end

-- Runs RUN_PRELUDE .. source (with ${NAME}s from vars, and ${CA} set to the test CA) with
-- `luasock run`; requires exit 0 and returns the decoded report lines.
local function run(source, vars)
  local all = { CA = certs() .. "/ca.pem", DIR = certs() }
  for name, value in pairs(vars or {}) do all[name] = value end
  return helper.run_reports(fill(source, all), { timeout = 60 })
end

-- The server pair as a script's tls table (relative to the script, which is beside it).
local TLS = [[{ cert = "server.pem", key = "server.key" }]]

-- Reports conn:tls() as (version, cipher, server_name, alpn, resumed, subject, issuer,
-- verified), or the single value "plaintext".
local REPORT_TLS = [[
  local function report_tls(conn)
    local t = conn:tls()
    if t == nil then return report(conn, "plaintext") end
    return report(conn, t.version, t.cipher, t.server_name, t.alpn, t.resumed, t.subject,
      t.issuer, t.verified)
  end
]]

-- A handler that reports conn:tls() and then echoes lines.
local ECHO = REPORT_TLS .. [[
  return {
    tls = ${TLS},
    handle = function(conn)
      report_tls(conn)
      while true do
        local line = conn:receive("*l")
        if not line then return end
        conn:send(line, "\n")
      end
    end,
  }]]

describe("a TLS server with a LuaSec client", function()
  after_each(helper.cleanup)

  it("echoes lines, then serves '*l', a count and '*a' up to close_notify", function()
    local server = tls_server(REPORT_TLS .. [[
      return {
        tls = ${TLS},
        handle = function(conn)
          report_tls(conn)
          while true do
            local line = conn:receive("*l")
            if not line or line == "done" then break end
            conn:send(line, "\n")
          end
          conn:send("abc\r\n", "12345", "tail without newline")
          conn:close()
        end,
      }]], { TLS = TLS })
    local client = luasec(server)
    local info = helper.read_report(client)
    assert.equal(client:info("protocol"), info[1])
    assert.equal(client:info("cipher"), info[2])
    assert.equal("localhost", info[3])
    for _, line in ipairs({ "hello", "", string.rep("x", 5000), "tabs\tand  spaces" }) do
      assert.equal(line, helper.ask(client, line))
    end
    assert(client:send("done\n"))
    assert.equal("abc", client:receive("*l"))
    assert.equal("12345", client:receive(5))
    assert.equal("tail without newline", client:receive("*a"))
    client:close()
  end)

  it("is read with receiveuntil, receiveany and receive_object on the server side", function()
    local server = tls_server([[
      return {
        tls = ${TLS},
        handle = function(conn)
          report(conn, conn:receiveuntil("--END--"))
          report(conn, conn:receiveany(3))
          local value, err = conn:receive_object()
          report(conn, type(value), value and value[1], value and value[2], value and value[3],
            value and value.n, err)
          report(conn, conn:receive(4))
          local rest, err = conn:receive("*a")
          luasock.log("info", "rest: " .. tostring(rest) .. ", " .. tostring(err))
        end,
      }]], { TLS = TLS })
    local client = luasec(server)
    assert(client:send("hello--END--xyz"))
    assert.same(table.pack("hello"), helper.read_report(client))
    assert.same(table.pack("xyz"), helper.read_report(client))
    -- MessagePack [1, "two", true], then four bytes of text.
    assert(client:send("\x93\x01\xa3two\xc3" .. "tail"))
    assert.same(table.pack("table", 1, "two", true, nil, nil), helper.read_report(client))
    assert.same(table.pack("tail"), helper.read_report(client))
    assert(client:send("the rest"))
    client:close() -- LuaSec sends close_notify: the server's "*a" ends there, with the data
    server:wait_log("rest: the rest, nil")
    server:stop()
  end)

  it("sends 8 MiB with backpressure to a LuaSec client that reads slowly", function()
    local server = tls_server([[
      return {
        tls = ${TLS},
        handle = function(conn)
          local filler = string.rep("y", 65536 - 8)
          local total, suspended = 0, 0
          for i = 1, 128 do
            local before = luasock.now()
            local n, err = conn:send(string.format("%08d", i), filler)
            if not n then return report(conn, "send failed", i, err) end
            total = total + n
            if luasock.now() > before then suspended = suspended + 1 end
          end
          report(conn, total, suspended)
        end,
      }]], { TLS = TLS })
    local client = luasec(server)
    local started = socket.gettime()
    for i = 1, 128 do
      local block, err = client:receive(65536)
      assert(block, "block " .. i .. ": " .. tostring(err))
      assert.equal(string.format("%08d", i), block:sub(1, 8))
      assert.equal(string.rep("y", 65536 - 8), block:sub(9))
      socket.sleep(0.005)
    end
    local result = helper.read_report(client)
    assert.equal(8 * 1024 * 1024, result[1])
    assert.is_true(result[2] > 0, "no send suspended: the 8 MiB were queued at once")
    assert.is_true(socket.gettime() - started < 30)
    client:close()
  end)

  it("times a read out over TLS and keeps the connection usable", function()
    local server = tls_server([[
      return {
        tls = ${TLS},
        handle = function(conn)
          conn:settimeout(0.3)
          local started = luasock.now()
          local line, err, partial = conn:receive("*l")
          report(conn, line, err, partial, luasock.now() - started)
          conn:settimeout(5)
          report(conn, conn:receive("*l"))
        end,
      }]], { TLS = TLS })
    local client = luasec(server)
    assert(client:send("part"))
    local timed_out = helper.read_report(client)
    assert.same({ nil, "timeout", "part" }, { timed_out[1], timed_out[2], timed_out[3] })
    assert.is_true(timed_out[4] >= 0.25 and timed_out[4] < 3, "took " .. timed_out[4] .. " s")
    assert(client:send("rest\n"))
    assert.same(table.pack("rest"), helper.read_report(client))
    client:close()
  end)

  it("closes a plaintext client without running the handler, and serves the next", function()
    local server = tls_server(ECHO, { TLS = TLS }, { args = { "--log-level", "debug" } })
    local plain = server:connect()
    assert(plain:send("hello\n"))
    local data, err = helper.read_all(plain)
    assert.is_nil(data:find("hello", 1, true))
    assert.is_truthy(err == "closed" or err == "connection reset by peer", err)
    plain:close()
    server:wait_log("tls handshake failed: ")
    local client = luasec(server)
    assert.equal("TLSv1.3", helper.read_report(client)[1])
    assert.equal("again", helper.ask(client, "again"))
    client:close()
  end)
end)

describe("luasock.connect with tls", function()
  after_each(helper.cleanup)

  it("connects to a luasock TLS server with the test CA, and ALPN is agreed", function()
    local server = tls_server(ECHO, {
      TLS = [[{ cert = "server.pem", key = "server.key", alpn = { "h2", "http/1.1" } }]] })
    local reports = run([[
      local conn, err = luasock.connect("127.0.0.1", ${PORT},
        { tls = { ca = "${CA}", server_name = "localhost", alpn = { "http/1.1" } } })
      report(stdout, conn ~= nil, err)
      report(stdout, conn:receive("*l"))
      conn:send("hello\n")
      report(stdout, conn:receive("*l"))
      local t = conn:tls()
      report(stdout, t.version, t.alpn, t.subject, t.issuer, t.verified, type(t.not_after))
    ]], { PORT = server.port })
    assert.same(table.pack(true, nil), reports[1])
    local seen = helper.decode_report(reports[2][1])
    assert.same({ "TLSv1.3", "localhost", "http/1.1" }, { seen[1], seen[3], seen[4] })
    assert.same(table.pack("hello"), reports[3])
    assert.same(table.pack("TLSv1.3", "http/1.1", "/CN=localhost", "/CN=luasock development CA",
      true, "string"), reports[4])
    server:stop()
  end)

  it("connects to openssl s_server", function()
    local port = s_server()
    local reports = run([[
      local conn, err = luasock.connect("127.0.0.1", ${PORT},
        { tls = { ca = "${CA}", server_name = "localhost" } })
      report(stdout, conn ~= nil, err)
      conn:send("hello\n")
      report(stdout, conn:receive("*l"))
      conn:send(string.rep("abc", 1000), "\n")
      report(stdout, conn:receive("*l") == string.rep("cba", 1000))
      report(stdout, conn:tls().version)
    ]], { PORT = port })
    assert.same(table.pack(true, nil), reports[1])
    assert.same(table.pack("olleh"), reports[2])
    assert.same(table.pack(true), reports[3])
    assert.same(table.pack("TLSv1.3"), reports[4])
  end)

  it("checks an IP address host against the certificate's IP address", function()
    local port = s_server()
    local reports = run([[
      local conn, err = luasock.connect("127.0.0.1", ${PORT}, { tls = { ca = "${CA}" } })
      report(stdout, conn ~= nil, err)
    ]], { PORT = port })
    assert.same(table.pack(true, nil), reports[1])
  end)

  it("refuses a self-signed certificate unless verify = false", function()
    self_signed()
    local server = tls_server(ECHO, { TLS = [[{ cert = "self.pem", key = "self.key" }]] })
    local reports = run([[
      for _, tls in ipairs({ { ca = "${CA}", server_name = "localhost" }, true,
                             { verify = false } }) do
        local conn, err = luasock.connect("127.0.0.1", ${PORT}, { tls = tls })
        report(stdout, conn ~= nil, err)
        if conn then
          report(stdout, conn:receive("*l") ~= nil, conn:tls().verified)
          conn:close()
        end
      end
    ]], { PORT = server.port })
    assert.same(table.pack(false, "certificate verify failed: self-signed certificate"),
      reports[1])
    assert.same(table.pack(false, "certificate verify failed: self-signed certificate"),
      reports[2])
    assert.same(table.pack(true, nil), reports[3])
    assert.same(table.pack(true, false), reports[4])
    server:stop()
  end)

  it("refuses a wrong host name unless verify = false", function()
    local server = tls_server(ECHO, { TLS = TLS })
    local reports = run([[
      for _, verify in ipairs({ true, false }) do
        local conn, err = luasock.connect("127.0.0.1", ${PORT},
          { tls = { ca = "${CA}", server_name = "wrong.test", verify = verify } })
        report(stdout, conn ~= nil, err)
        if conn then
          local seen = conn:receive("*l")
          report(stdout, seen)
          conn:close()
        end
      end
    ]], { PORT = server.port })
    assert.same(table.pack(false, "certificate verify failed: hostname mismatch"), reports[1])
    assert.same(table.pack(true, nil), reports[2])
    assert.equal("wrong.test", helper.decode_report(reports[3][1])[3])
    server:stop()
  end)

  it("says 'tls: wrong version number' for a plaintext server", function()
    local server = helper.start("examples/prefix.lua")
    local reports = run([[
      report(stdout, luasock.connect("127.0.0.1", ${PORT},
        { timeout = 5, tls = { ca = "${CA}", server_name = "localhost" } }))
    ]], { PORT = server.port })
    assert.same(table.pack(nil, "tls: wrong version number"), reports[1])
    server:stop()
  end)

  it("presents a client certificate to a server that requires one", function()
    local server = tls_server(ECHO, { TLS = [[{ cert = "server.pem", key = "server.key",
      ca = "ca.pem", verify_client = true }]] })
    local reports = run([[
      local conn, err = luasock.connect("127.0.0.1", ${PORT}, { tls = { ca = "${CA}",
        server_name = "localhost", cert = "${DIR}/client.pem", key = "${DIR}/client.key" } })
      report(stdout, conn ~= nil, err)
      report(stdout, conn:receive("*l"))
      conn:close()
      -- Without one: refused (in TLS 1.3 the client may see it only on its first read).
      conn, err = luasock.connect("127.0.0.1", ${PORT},
        { tls = { ca = "${CA}", server_name = "localhost" } })
      local line
      if conn then line, err = conn:receive("*l") end
      report(stdout, line, type(err))
    ]], { PORT = server.port })
    assert.same(table.pack(true, nil), reports[1])
    local seen = helper.decode_report(reports[2][1])
    assert.same({ "/CN=luasock development client", "/CN=luasock development CA", true },
      { seen[6], seen[7], seen[8] })
    assert.same(table.pack(nil, "string"), reports[3])
    server:stop()
  end)

  it("uses a renewed client certificate after a reload", function()
    local dir = certs()
    local function install_client_pair(cn)
      local ok = os.execute("(cd " .. helper.shell_quote(dir) .. " && openssl genpkey -algorithm EC "
        .. "-pkeyopt ec_paramgen_curve:P-256 -out new.key && openssl req -new -key new.key "
        .. "-subj " .. helper.shell_quote("/CN=" .. cn) .. " -out new.csr && "
        .. "printf 'extendedKeyUsage=clientAuth\\n' >new.ext && openssl x509 -req -in new.csr "
        .. "-CA ca.pem -CAkey ca.key -set_serial " .. math.random(1000, 9999999) .. " -days 30 "
        .. "-extfile new.ext -out new.pem && mv new.key mine.key && mv new.pem mine.pem) "
        .. ">/dev/null 2>&1")
      assert(ok, "could not issue a client certificate")
    end
    install_client_pair("first client")
    local backend = tls_server([[
      return { tls = ${TLS}, handle = function(conn) conn:send(conn:tls().subject, "\n") end }]],
      { TLS = [[{ cert = "server.pem", key = "server.key", ca = "ca.pem",
                  verify_client = true }]] })
    local front = helper.start(helper.handler(fill([[
      return { handle = function(conn)
        conn:receive("*l")
        local backend, err = luasock.connect("127.0.0.1", ${PORT}, { tls = { ca = "${DIR}/ca.pem",
          server_name = "localhost", cert = "${DIR}/mine.pem", key = "${DIR}/mine.key" } })
        conn:send(backend and backend:receive("*l") or err, "\n")
      end }]], { PORT = backend.port, DIR = dir })))
    local function backend_saw()
      local client = front:connect()
      local subject = helper.ask(client, "go")
      client:close()
      return subject
    end
    assert.equal("/CN=first client", backend_saw())
    install_client_pair("renewed client")
    local mark = front:mark()
    front:signal("HUP")
    front:wait_log("%[info%] reloaded ", 5, mark)
    assert.equal("/CN=renewed client", backend_saw())
    front:stop()
    backend:stop()
  end)

  it("reuses a session from conn:tls_session(): resumed on both sides", function()
    local server = tls_server(ECHO, { TLS = TLS })
    local reports = run([[
      local tls = { ca = "${CA}", server_name = "localhost" }
      local first = assert(luasock.connect("127.0.0.1", ${PORT}, { tls = tls }))
      report(stdout, first:receive("*l"))
      first:send("x\n")
      first:receive("*l")
      local session = first:tls_session()
      report(stdout, type(session), first:tls().resumed)
      first:close()
      tls.session = session
      local second = assert(luasock.connect("127.0.0.1", ${PORT}, { tls = tls }))
      report(stdout, second:receive("*l"))
      report(stdout, second:tls().resumed)
      second:close()
    ]], { PORT = server.port })
    assert.is_false(helper.decode_report(reports[1][1])[5])
    assert.same(table.pack("userdata", false), reports[2])
    assert.is_true(helper.decode_report(reports[3][1])[5], "the server saw no resumption")
    assert.same(table.pack(true), reports[4])
    server:stop()
  end)

  it("half-closes: shutdown('send') ends the server's '*a', and its answer still arrives",
    function()
    local server = tls_server([[
      return {
        tls = ${TLS},
        handle = function(conn)
          local data, err = conn:receive("*a")
          conn:send(string.upper(data or err))
        end,
      }]], { TLS = TLS })
    local reports = run([[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT},
        { tls = { ca = "${CA}", server_name = "localhost" } }))
      conn:send("hello over tls")
      report(stdout, conn:shutdown("send"))
      report(stdout, conn:receive("*a"))
    ]], { PORT = server.port })
    assert.same(table.pack(true), reports[1])
    assert.same(table.pack("HELLO OVER TLS"), reports[2])
    server:stop()
  end)

  it("checks the host as the name by default: localhost, and the address ::1", function()
    local server = tls_server(ECHO, { TLS = TLS }, { listen = { "tls:127.0.0.1:0", "tls:[::1]:0" } })
    local reports = run([[
      for _, target in ipairs({ { "localhost", ${PORT} }, { "::1", ${PORT_SIX} } }) do
        local conn, err = luasock.connect(target[1], target[2], { tls = { ca = "${CA}" } })
        report(stdout, conn ~= nil, err)
        if conn then report(stdout, conn:receive("*l")) end
      end
    ]], { PORT = server.listeners[1].port, PORT_SIX = server.listeners[2].port })
    assert.same(table.pack(true, nil), reports[1])
    assert.equal("localhost", helper.decode_report(reports[2][1])[3])
    assert.same(table.pack(true, nil), reports[3])
    assert.is_nil(helper.decode_report(reports[4][1])[3]) -- no SNI for an address
    server:stop()
  end)

  it("raises for bad tls options before it connects", function()
    local server = tls_server([[
      return { tls = ${TLS}, handle = function(conn) report(conn, conn:id()) end }]],
      { TLS = TLS })
    local reports = run([[
      for _, port in ipairs({ ${CLOSED}, ${PORT} }) do
        for _, tls in ipairs({ { alpn = "h2" }, { cert = "${DIR}/client.pem" },
                               { session = "x" }, { verify = "yes" } }) do
          report(stdout, pcall(luasock.connect, "127.0.0.1", port, { tls = tls }))
        end
      end
      local conn = assert(luasock.connect("127.0.0.1", ${PORT},
        { tls = { ca = "${CA}", server_name = "localhost" } }))
      report(stdout, conn:receive("*l"))
    ]], { PORT = server.port, CLOSED = helper.free_port() })
    local messages = { "tls.alpn must be a list of protocol names",
      "tls: a client certificate needs both 'cert' and 'key'",
      "tls.session must be a value from conn:tls_session()",
      "tls.verify must be true or false" }
    for i, message in ipairs(messages) do
      for _, result in ipairs({ reports[i], reports[i + #messages] }) do
        assert.is_false(result[1], "no error for " .. message .. ": " .. tostring(result[2]))
        assert.is_truthy(tostring(result[2]):find(message, 1, true), result[2])
      end
    end
    -- The server's first connection is the good one: the bad ones never connected.
    assert.same(table.pack(1), helper.decode_report(reports[2 * #messages + 1][1]))
    server:stop()
  end)

  it("gives 'tls handshake timeout' when the server never answers the ClientHello", function()
    -- A listening socket that nobody accepts from: the kernel completes the TCP handshake,
    -- and the ClientHello is never answered.
    local silent = assert(socket.bind("127.0.0.1", 0))
    local _, port = silent:getsockname()
    local started = socket.gettime()
    local reports = run([[
      local began = luasock.now()
      local conn, err = luasock.connect("127.0.0.1", ${PORT},
        { timeout = 0.5, tls = { ca = "${CA}", server_name = "localhost" } })
      report(stdout, conn, err, luasock.now() - began)
    ]], { PORT = port })
    silent:close()
    assert.same({ nil, "tls handshake timeout" }, { reports[1][1], reports[1][2] })
    assert.is_true(reports[1][3] >= 0.45 and reports[1][3] < 3,
      "the handshake timed out after " .. reports[1][3] .. " s")
    assert.is_true(socket.gettime() - started < 10)
  end)
end)

-- A plaintext server with the TLS settings for conn:starttls: a line "STARTTLS" is answered
-- "GO", then the connection goes on over TLS; every other line is reported back with whether
-- it came over TLS.
local STARTTLS_SERVER = [[
  return {
    tls = ${TLS},
    handle = function(conn)
      while true do
        local line = conn:receive("*l")
        if not line then return end
        if line == "STARTTLS" then
          conn:send("GO\n")
          local ok, err = conn:starttls()
          if not ok then return luasock.log("info", "starttls failed: " .. err) end
          local t = conn:tls()
          report(conn, "upgraded", t.version, t.server_name)
        else
          report(conn, line, conn:tls() and "tls" or "plain")
        end
      end
    end,
  }]]

describe("conn:starttls", function()
  after_each(helper.cleanup)

  it("upgrades an accepted plaintext connection for a LuaSec client", function()
    local server = tls_server(STARTTLS_SERVER, { TLS = TLS }, { listen = "127.0.0.1:0" })
    local tcp = server:connect()
    assert(tcp:send("before\n"))
    assert.same(table.pack("before", "plain"), helper.read_report(tcp))
    assert(tcp:send("STARTTLS\n"))
    assert.equal("GO", tcp:receive("*l"))
    local client = wrap(tcp)
    assert.same(table.pack("upgraded", "TLSv1.3", "localhost"), helper.read_report(client))
    assert(client:send("after\n"))
    assert.same(table.pack("after", "tls"), helper.read_report(client))
    client:close()
    server:stop()
  end)

  it("upgrades an outgoing plaintext connection", function()
    local server = tls_server(STARTTLS_SERVER, { TLS = TLS }, { listen = "127.0.0.1:0" })
    local reports = run([[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      report(stdout, conn:tls(), conn:tls_session())
      conn:send("STARTTLS\n")
      report(stdout, conn:receive("*l"))
      report(stdout, conn:starttls({ ca = "${CA}", server_name = "localhost" }))
      report(stdout, conn:receive("*l"))
      conn:send("after\n")
      report(stdout, conn:receive("*l"))
      report(stdout, conn:tls().version, conn:tls().verified)
    ]], { PORT = server.port })
    assert.same(table.pack(nil, nil), reports[1])
    assert.same(table.pack("GO"), reports[2])
    assert.same(table.pack(true), reports[3])
    assert.same(table.pack("upgraded", "TLSv1.3", "localhost"),
      helper.decode_report(reports[4][1]))
    assert.same(table.pack("after", "tls"), helper.decode_report(reports[5][1]))
    assert.same(table.pack("TLSv1.3", true), reports[6])
    server:stop()
  end)

  it("fails and closes the connection when the upgrade's verification fails", function()
    local server = tls_server(STARTTLS_SERVER, { TLS = TLS },
      { listen = "127.0.0.1:0", args = { "--log-level", "debug" } })
    local reports = run([[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      conn:send("STARTTLS\n")
      report(stdout, conn:receive("*l"))
      report(stdout, conn:starttls({ ca = "${CA}", server_name = "wrong.test" }))
      report(stdout, conn:send("more\n"))
    ]], { PORT = server.port })
    assert.same(table.pack("GO"), reports[1])
    assert.same(table.pack(nil, "certificate verify failed: hostname mismatch"), reports[2])
    assert.same(table.pack(nil, "closed"), reports[3])
    server:wait_log("%[info%] starttls failed: ")
    server:stop()
  end)

  it("refuses plaintext that came after STARTTLS (no command injection)", function()
    local server = tls_server(STARTTLS_SERVER, { TLS = TLS }, { listen = "127.0.0.1:0" })
    local tcp = server:connect()
    assert(tcp:send("STARTTLS\nINJECTED\n"))
    assert.equal("GO", tcp:receive("*l"))
    local rest, err = helper.read_all(tcp)
    assert.equal("", rest)
    assert.is_truthy(err == "closed" or err == "connection reset by peer", err)
    server:wait_log("%[info%] starttls failed: tls: plaintext arrived after the request to "
      .. "start tls")
    assert.equal(0, server:count_log("INJECTED"))
    server:stop()
  end)

  it("refuses plaintext that came before the upgrade on an outgoing connection", function()
    local server = helper.start(helper.handler([[
      return { handle = function(conn)
        conn:receive("*l")
        conn:send("GO\nINJECTED\n")
        conn:receive("*a")
      end }]]))
    local reports = run([[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      conn:send("STARTTLS\n")
      report(stdout, conn:receive("*l"))
      report(stdout, conn:starttls({ ca = "${CA}", server_name = "localhost" }))
      report(stdout, conn:receive("*l"))
    ]], { PORT = server.port })
    assert.same(table.pack("GO"), reports[1])
    assert.same(table.pack(nil, "tls: plaintext arrived after the request to start tls"),
      reports[2])
    assert.same({ nil, "closed" }, { reports[3][1], reports[3][2] })
    server:stop()
  end)

  it("upgrades with the options given to starttls in a script without a tls table", function()
    local dir = certs()
    local server = helper.start(helper.handler(fill([[
      return { handle = function(conn)
        if conn:receive("*l") == "bare" then
          local ok, err = conn:starttls()
          return luasock.log("info", "bare starttls: " .. tostring(ok) .. ", " .. err)
        end
        conn:send("GO\n")
        assert(conn:starttls({ cert = "${DIR}/server.pem", key = "${DIR}/server.key" }))
        report(conn, conn:tls().version)
      end }]], { DIR = dir })))
    local bare = server:connect()
    assert(bare:send("bare\n"))
    assert.equal("", (helper.read_all(bare)))
    server:wait_log("bare starttls: nil, " .. helper.literal("tls: no certificate: set tls = "
      .. "{ cert = FILE, key = FILE } in the script, or pass the options to starttls"))
    local tcp = server:connect()
    assert(tcp:send("with options\n"))
    assert.equal("GO", tcp:receive("*l"))
    local client = wrap(tcp)
    assert.same(table.pack("TLSv1.3"), helper.read_report(client))
    client:close()
    server:stop()
  end)
end)
