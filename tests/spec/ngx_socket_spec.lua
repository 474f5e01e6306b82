-- ngx_socket_spec.lua -- require "luasock.ngx" (issue 15): OpenResty's cosockets and the rest of
-- `ngx` that its libraries use, run as `luasock run` client scripts against real luasock
-- servers: ms timeouts, receiveuntil's iterator (OpenResty's own documented example), the
-- keep-alive pool seen from the server's side, unix sockets, UDP, sslhandshake against a TLS
-- listener, and the LuaJIT-isms (bit, table.new, unpack, module names, ffi's refusal).
local helper = require "helper"
local devcert = require "devcert"

local fill = helper.fill

-- A line server: "N line" back (N: the connection's number), "count" gives how many
-- connections it accepted, "stream" sends OpenResty's receiveuntil example, "quit" closes.
local BACKEND = [[
  local accepted = 0
  return { handle = function(conn)
    accepted = accepted + 1
    local n = accepted
    while true do
      local line = conn:receive("*l")
      if not line or line == "quit" then return end
      if line == "stream" then
        conn:send("hello, world! -agentzh\r\n--abcedhb blah blah\n")
      elseif line == "flood" then
        conn:send("head|", string.rep("x", 3 * 1024 * 1024))
      elseif line == "silence" then
        conn:receive("*l")
      else
        conn:send(line == "count" and tostring(accepted) or n .. " " .. line, "\n")
      end
    end
  end }
]]

local function run(source, vars, opts)
  opts = opts or {}
  opts.prelude = "local ngx = require 'luasock.ngx'; "
  return helper.run_reports(fill(source, vars or {}), opts)
end

describe("ngx.socket.tcp", function()
  local server
  before_each(function()
    server = helper.start(helper.handler(BACKEND))
  end)
  after_each(helper.cleanup)

  it("connects, sends strings and nested arrays, and reads lines, counts and what is left", function()
    local reports = run([[
      local sock = ngx.socket.tcp()
      report(stdout, sock:connect("127.0.0.1", ${PORT}))
      report(stdout, sock:send({ "a", { "b", 1, { true } } }, nil))
      sock:send("\n")
      report(stdout, sock:receive())
      sock:send("xyz\n")
      report(stdout, sock:receive(2), sock:receive("*l"))
      sock:send("more\n")
      report(stdout, sock:receiveany(100))
      sock:send("quit\n")
      report(stdout, sock:receive("*a"))
      report(stdout, sock:close(), sock:close())
      report(stdout, sock:send("x"))
    ]], { PORT = server.port })
    assert.same(table.pack(1), reports[1])
    assert.same(table.pack(7), reports[2])
    assert.same(table.pack("1 ab1true"), reports[3])
    assert.same(table.pack("1 ", "xyz"), reports[4])
    assert.same(table.pack("1 more\n"), reports[5])
    assert.same(table.pack(""), reports[6])
    assert.same(table.pack(1, nil, "closed"), reports[7])
    assert.same(table.pack(nil, "closed"), reports[8])
  end)

  it("takes timeouts in milliseconds: a silent peer times out after 100 ms, and the socket stays usable", function()
    local reports = run([[
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      sock:settimeout(100)
      sock:send("silence\n")
      local started = ngx.now()
      local data, err = sock:receive()
      report(stdout, data, err, ngx.now() - started)
      sock:settimeouts(1000, 1000, 1000)
      sock:send("\nping\n")
      report(stdout, sock:receive())
    ]], { PORT = server.port })
    assert.is_nil(reports[1][1])
    assert.equal("timeout", reports[1][2])
    assert.is_true(reports[1][3] >= 0.09 and reports[1][3] < 0.9, "waited " .. reports[1][3] .. " s")
    assert.same(table.pack("1 ping"), reports[2])
  end)

  it("gives receiveuntil's iterator, with OpenResty's documented example of reading in pieces", function()
    local reports = run([[
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      sock:send("stream\n")
      local reader = sock:receiveuntil("\r\n--abcedhb")
      while true do
        local data, err = reader(4)
        if not data then
          report(stdout, "done", err)
          break
        end
        report(stdout, data)
      end
      report(stdout, sock:receive())
      sock:send("x--y--z\n")
      local until_dashes = sock:receiveuntil("--")
      report(stdout, until_dashes(), sock:receiveuntil("--", { inclusive = true })())
      report(stdout, sock:receive())
    ]], { PORT = server.port })
    local chunks = {}
    for i = 1, 6 do chunks[i] = reports[i][1] end
    assert.same({ "hell", "o, w", "orld", "! -a", "gent", "zh" }, chunks)
    assert.same(table.pack("done", nil), reports[7])
    assert.same(table.pack(" blah blah"), reports[8])
    assert.same(table.pack("1 x", "y--"), reports[9])
    assert.same(table.pack("z"), reports[10])
  end)

  it("reuses connections through setkeepalive: one server connection serves ten requests", function()
    local reports = run([[
      for i = 1, 10 do
        local sock = ngx.socket.tcp()
        assert(sock:connect("127.0.0.1", ${PORT}, { pool = "lines", pool_size = 5 }))
        local reused = sock:getreusedtimes()
        sock:send("r" .. i .. "\n")
        report(stdout, sock:receive(), reused)
        assert(sock:setkeepalive(10000, 5))
      end
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      sock:send("count\n")
      report(stdout, sock:receive(), sock:getreusedtimes())
    ]], { PORT = server.port })
    for i = 1, 10 do
      assert.same(table.pack("1 r" .. i, i - 1), reports[i])
    end
    -- The last connect used another pool name (host:port): a second connection.
    assert.same(table.pack("2", 0), reports[11])
  end)

  it("stops a record kept in Lua at 1 MiB: 'line too long', that socket closed, the server serving", function()
    local reports = run([[
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      sock:send("flood\n")
      report(stdout, sock:receiveuntil("|")(100))
      local data, err, partial = sock:receiveuntil("never")()
      report(stdout, data, err, #partial > 1024 * 1024, sock:receive())
      local other = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      other:send("still\n")
      report(stdout, other:receive())
    ]], { PORT = server.port })
    assert.same(table.pack("head"), reports[1])
    assert.same(table.pack(nil, "line too long", true, nil, "closed"), reports[2])
    assert.same(table.pack("2 still"), reports[3])
  end)

  it("refuses to park a connection with unread data, and closes it", function()
    local reports = run([[
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      sock:send("stream\n")
      sock:receiveuntil("world")(3)
      report(stdout, sock:setkeepalive())
      report(stdout, sock:receive())
    ]], { PORT = server.port })
    assert.same(table.pack(nil, "unread data in buffer"), reports[1])
    assert.same(table.pack(nil, "closed"), reports[2])
  end)

  it("connects to unix: paths", function()
    local path = helper.dir() .. "/lines.sock"
    local unix_server = helper.start(helper.handler(BACKEND), { listen = "unix:" .. path })
    local reports = run([[
      local sock = ngx.socket.tcp()
      report(stdout, sock:connect("unix:${PATH}"))
      sock:send("hi\n")
      report(stdout, sock:receive())
      assert(sock:setkeepalive())
      report(stdout, sock:connect("unix:${PATH}", { pool = nil }), sock:getreusedtimes())
    ]], { PATH = path })
    assert.same(table.pack(1), reports[1])
    assert.same(table.pack("1 hi"), reports[2])
    assert.same(table.pack(1, 1), reports[3])
    unix_server:stop()
  end)

  it("reports connection refused and unknown hosts as OpenResty does: nil and the error", function()
    local port = helper.free_port()
    local reports = run([[
      local sock = ngx.socket.tcp()
      report(stdout, sock:connect("127.0.0.1", ${FREE}))
      report(stdout, sock:receive())
    ]], { FREE = port })
    assert.same(table.pack(nil, "connection refused"), reports[1])
    assert.same(table.pack(nil, "closed"), reports[2])
  end)
end)

describe("ngx.socket.tcp's sslhandshake", function()
  after_each(helper.cleanup)

  it("upgrades to TLS, verifying only when asked, and is not redone on a pooled connection", function()
    local cert = devcert.make({ "localhost" })
    local script = helper.handler(fill([[
      return {
        tls = { cert = "${CERT}", key = "${KEY}" },
        handle = function(conn)
          while true do
            local line = conn:receive("*l")
            if not line then return end
            conn:send((conn:tls() and "tls " or "plain ") .. line, "\n")
          end
        end,
      }
    ]], { CERT = cert.cert, KEY = cert.key }))
    local server = helper.start(script, { listen = "tls:127.0.0.1:0" })
    local reports = run([[
      local sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      local session, err = sock:sslhandshake(nil, "localhost", true)
      report(stdout, session, err)
      ngx.socket.set_trusted_certificate("${CA}")
      sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      session, err = sock:sslhandshake(nil, "localhost", true)
      report(stdout, session ~= nil, err)
      sock:send("one\n")
      report(stdout, sock:receive())
      assert(sock:setkeepalive())
      sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}))
      report(stdout, sock:getreusedtimes(), sock:sslhandshake(false, "localhost", true))
      sock:send("two\n")
      report(stdout, sock:receive())
      sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}, { pool = "other" }))
      report(stdout, sock:sslhandshake(false, "wrong.example", true))
      sock = assert(ngx.socket.connect("127.0.0.1", ${PORT}, { pool = "other" }))
      report(stdout, sock:sslhandshake(false, "wrong.example", false))
    ]], { PORT = server.port, CA = cert.ca })
    assert.same(table.pack(nil, "certificate verify failed: unable to get local issuer certificate"),
      reports[1])
    -- A session (once TLS 1.3's ticket has come; true until then), as OpenResty returns.
    assert.same(table.pack(true, nil), reports[2])
    assert.same(table.pack("tls one"), reports[3])
    assert.same(table.pack(1, true), reports[4])
    assert.same(table.pack("tls two"), reports[5])
    assert.same(table.pack(nil, "certificate verify failed: hostname mismatch"), reports[6])
    assert.same(table.pack(true), reports[7])
    server:stop()
  end)
end)

describe("ngx.socket.udp", function()
  after_each(helper.cleanup)

  it("sends and receives datagrams on a connected socket, with a ms timeout", function()
    local script = helper.handler([[
      return { datagram = function(data, peer)
        peer.socket:sendto("echo " .. data, peer.host, peer.port)
      end }
    ]])
    local server = helper.start(script, { listen = "udp:127.0.0.1:0" })
    local reports = run([[
      local udp = ngx.socket.udp()
      udp:settimeout(2000)
      report(stdout, udp:setpeername("localhost", ${PORT}))
      report(stdout, udp:send({ "he", "llo" }))
      report(stdout, udp:receive())
      local quiet = ngx.socket.udp()
      quiet:settimeout(50)
      quiet:setpeername("127.0.0.1", ${FREE})
      report(stdout, quiet:receive())
      report(stdout, udp:close(), udp:close())
    ]], { PORT = server.port, FREE = helper.free_port() })
    assert.same(table.pack(1), reports[1])
    assert.same(table.pack(1), reports[2])
    assert.same(table.pack("echo hello"), reports[3])
    assert.is_nil(reports[4][1])
    assert.same(table.pack(1, nil, "closed"), reports[5])
    server:stop()
  end)
end)

describe("the rest of ngx", function()
  after_each(helper.cleanup)

  it("installs the global, bit, table.new/clear, unpack and both module names", function()
    local dir = helper.dir()
    helper.script("return { seen = ngx ~= nil, null = ngx.null }", dir .. "/uses_ngx.lua")
    local reports = run([[
      package.path = "${DIR}/?.lua;" .. package.path
      local module = require "uses_ngx"
      report(stdout, module.seen, module.null == require("luasock.redis").null)
      local bit = require "bit"
      report(stdout, bit.bnot(0), bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-8, 1),
        bit.band(0xff, 0x0f, 0x3), bit.bor(1, 2, 4), bit.bxor(5, 3), bit.tohex(255),
        bit.tohex(-1, -4), bit.tobit(2^32 + 5))
      local t = require("table.new")(10, 0)
      t.a, t[1] = 1, 2
      table.clear(t)
      report(stdout, next(t), unpack({ 1, 2 }))
      report(stdout, require("resty.redis") == require("nginx.redis"),
        type(require("resty.redis").new))
      report(stdout, pcall(require, "resty.nothing_like_this"))
    ]], { DIR = dir })
    assert.same(table.pack(true, true), reports[1])
    assert.same(table.pack(-1, -2147483648, 15, -4, 3, 7, 6, "000000ff", "FFFF", 5), reports[2])
    assert.same(table.pack(nil, 1, 2), reports[3])
    assert.same(table.pack(true, "function"), reports[4])
    assert.is_false(reports[5][1])
    assert.matches("module 'resty.nothing_like_this' not found", reports[5][2], 1, true)
    assert.matches("no file for 'nginx.nothing_like_this' either", reports[5][2], 1, true)
  end)

  it("raises 'is not available in luasock' for HTTP-only calls, when called, not when looked up", function()
    local reports = run([[
      local get_headers = ngx.req.get_headers
      report(stdout, type(get_headers), pcall(get_headers))
      report(stdout, pcall(function() return ngx.header["Content-Type"] end))
      report(stdout, pcall(ngx.say, "hi"))
      report(stdout, pcall(function() return ngx.var.uri end))
    ]])
    assert.same(table.pack("function", false, "ngx.req.get_headers is not available in luasock"),
      reports[1])
    assert.is_false(reports[2][1])
    assert.matches(":3: ngx.header.Content-Type is not available in luasock", reports[2][2], 1, true)
    assert.same(table.pack(false, "ngx.say is not available in luasock"), reports[3])
    assert.is_false(reports[4][1])
    assert.matches(":5: ngx.var.uri is not available in luasock", reports[4][2], 1, true)
  end)

  it("runs light threads and timers as tasks: spawn, wait for the first, kill, timer.at", function()
    local reports = run([[
      local slow = ngx.thread.spawn(function() ngx.sleep(5) return "slow" end)
      local fast = ngx.thread.spawn(function(a) ngx.sleep(0.01) return a * 2, "fast" end, 21)
      report(stdout, ngx.thread.wait(slow, fast))
      report(stdout, ngx.thread.kill(slow))
      report(stdout, ngx.thread.wait(slow))
      local failing = ngx.thread.spawn(function() error("boom", 0) end)
      report(stdout, ngx.thread.wait(failing))
      local fired = luasock.queue()
      report(stdout, ngx.timer.at(0.01, function(premature, v) fired:push(v .. tostring(premature)) end, "x"))
      report(stdout, fired:pop(2))
      ngx.ctx.mine = 1
      local other = ngx.thread.spawn(function() return ngx.ctx.mine end)
      report(stdout, ngx.thread.wait(other))
      report(stdout, ngx.config.ngx_lua_version >= 9011, ngx.worker.count(), ngx.worker.id(),
        math.type(ngx.worker.pid()), ngx.time() == math.floor(ngx.now()))
    ]])
    assert.same(table.pack(true, 42, "fast"), reports[1])
    assert.same(table.pack(true), reports[2])
    assert.same(table.pack(nil, "already waited or killed"), reports[3])
    assert.same(table.pack(false, "boom"), reports[4])
    assert.same(table.pack(true), reports[5])
    assert.same(table.pack("xfalse"), reports[6])
    assert.same(table.pack(true, nil), reports[7])
    assert.same(table.pack(true, 1, 0, "integer", true), reports[8])
  end)

  it("logs at luasock's levels, the arguments joined without separators", function()
    local script = helper.script(helper.RUN_PRELUDE .. [[
      local ngx = require "luasock.ngx"
      ngx.log(ngx.ERR, "failed: ", 42, " ", nil, " ", true)
      ngx.log(ngx.WARN, "careful")
      ngx.log(ngx.NOTICE, "noted")
      ngx.log(ngx.DEBUG, "hidden at the default level")
    ]])
    local code, _, err = helper.run({ "run", script })
    assert.equal(0, code, err)
    assert.matches("%[error%] failed: 42 nil true", err)
    assert.matches("%[warn%] careful", err)
    assert.matches("%[info%] noted", err)
    assert.not_matches("hidden", err)
  end)

  it("raises where a cosocket cannot wait instead of blocking the loop", function()
    local script = helper.script(fill([[
      local ngx = require "luasock.ngx"
      local sock = ngx.socket.tcp()
      sock:connect("127.0.0.1", ${PORT})
    ]], { PORT = helper.free_port() }))
    local code, _, err = helper.run({ "check", script })
    assert.equal(1, code)
    -- At the script's line (3), not inside the runtime.
    assert.matches(":3: sock:connect must be called from a handler", err, 1, true)
  end)
end)
