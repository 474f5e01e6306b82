-- udp_spec.lua -- UDP: udp: listeners with a datagram(data, peer) callback (examples/udp_echo.lua,
-- a script serving TCP and UDP at once) and luasock.udp() sockets in `luasock run` scripts and
-- handlers (sendto/receivefrom, setpeername/send/receive, timeouts, bad addresses).
local socket = require "socket"
local helper = require "helper"

local fill = helper.fill

-- Runs a client script; requires exit 0; returns the decoded reports.
local run = helper.run_reports

-- The host and port of the server's UDP listener ("udp:HOST:PORT" in its listening line).
local function udp_address(server)
  for _, listener in ipairs(server.listeners) do
    local host = listener.host and listener.host:match("^udp:(.+)$")
    if host then return host, listener.port end
  end
  error("the server has no udp: listener")
end

-- A LuaSocket UDP socket connected to the server's UDP listener.
local function udp_client(server)
  local client = assert(socket.udp())
  assert(client:settimeout(helper.IO_TIMEOUT))
  assert(client:setpeername(udp_address(server)))
  return client
end

-- `n` bytes that change along their length, so a cut or reordered datagram shows.
local function pattern(n)
  local parts, length = {}, 0
  local i = 0
  while length < n do
    i = i + 1
    parts[#parts + 1] = string.format("%06d.", i)
    length = length + 7
  end
  return table.concat(parts):sub(1, n)
end

describe("examples/udp_echo.lua on --listen udp:127.0.0.1:0", function()
  after_each(helper.cleanup)

  it("echoes every datagram, empty and 60000-byte ones included", function()
    local server = helper.start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0" })
    assert.equal("127.0.0.1", (udp_address(server)))
    local client = udp_client(server)
    for _, datagram in ipairs { "hello", "", pattern(60000), "\0binary\255\r\n", "x" } do
      assert.equal(#datagram, client:send(datagram))
      local echoed, err = client:receive(65536)
      assert.equal(#datagram, echoed and #echoed, tostring(err))
      assert.equal(datagram, echoed)
    end
    server:stop()
  end)

  it("answers each datagram to its sender, from the listening port", function()
    local server = helper.start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0" })
    local host, port = udp_address(server)
    local clients = {}
    for i = 1, 3 do
      clients[i] = assert(socket.udp())
      assert(clients[i]:setsockname("127.0.0.1", 0))
      assert(clients[i]:settimeout(helper.IO_TIMEOUT))
      assert(clients[i]:sendto("from " .. i, host, port))
    end
    for i = 3, 1, -1 do
      local data, from_host, from_port = clients[i]:receivefrom(65536)
      assert.same({ "from " .. i, host, port }, { data, from_host, from_port })
    end
    server:stop()
  end)
end)

describe("a script with handle and datagram", function()
  after_each(helper.cleanup)

  it("serves TCP and UDP at once, sharing its state", function()
    local server = helper.start(helper.handler([[
      local last = "none"
      return {
        handle = function(conn)
          for line in function() return conn:receive() end do
            conn:send("tcp:", line, " last=", last, "\n")
          end
        end,
        datagram = function(data, peer)
          last = data
          peer:reply("udp:" .. data .. " from " .. peer.host .. ":" .. peer.port)
        end,
      }]]), { listen = { "127.0.0.1:0", "udp:127.0.0.1:0" } })
    local tcp = server:connect(1)
    assert(tcp:send("first\n"))
    assert.equal("tcp:first last=none", tcp:receive())
    local udp = udp_client(server)
    local _, udp_port = udp:getsockname()
    assert(udp:send("ping"))
    assert.equal("udp:ping from 127.0.0.1:" .. udp_port, udp:receive())
    assert(tcp:send("second\n"))
    assert.equal("tcp:second last=ping", tcp:receive())
    tcp:close()
    server:stop()
  end)

  it("runs each datagram in its own coroutine, so a slow one holds up no other", function()
    local server = helper.start(helper.handler([[
      return { datagram = function(data, peer)
        if data == "slow" then luasock.sleep(0.5) end
        peer:reply(data)
      end }]]), { listen = "udp:127.0.0.1:0" })
    local client = udp_client(server)
    assert(client:send("slow"))
    assert(client:send("fast"))
    assert.equal("fast", client:receive())
    assert.equal("slow", client:receive())
    server:stop()
  end)
end)

describe("luasock.udp()", function()
  after_each(helper.cleanup)

  it("sends to and receives from an address; receivefrom times out", function()
    local server = helper.start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0" })
    local reports = run(fill([[
      local u = luasock.udp()
      u:settimeout(5)
      report(stdout, u:sendto("ping", "127.0.0.1", ${PORT}))
      report(stdout, u:receivefrom())
      local host, port = u:getsockname()
      report(stdout, host, math.type(port), port > 0)
      local quiet = luasock.udp()
      report(stdout, quiet:setsockname("127.0.0.1", 0))
      local quiet_host, quiet_port = quiet:getsockname()
      quiet:settimeout(0.2)
      local started = luasock.now()
      local data, err = quiet:receivefrom()
      report(stdout, data, err, luasock.now() - started)
      report(stdout, u:sendto("to quiet", quiet_host, quiet_port))
      quiet:settimeout(5)
      local got, from_host, from_port = quiet:receivefrom()
      report(stdout, got, from_host, from_port == port)
      report(stdout, quiet:close(), u:close())
    ]], { PORT = server.port }))
    assert.same(table.pack(4), reports[1])
    assert.same(table.pack("ping", "127.0.0.1", server.port), reports[2])
    assert.same(table.pack("0.0.0.0", "integer", true), reports[3])
    assert.same(table.pack(true), reports[4])
    assert.same(table.pack(nil, "timeout", reports[5][3]), reports[5])
    assert.is_true(reports[5][3] >= 0.15 and reports[5][3] < 2, "waited " .. reports[5][3])
    assert.same(table.pack(8), reports[6])
    assert.same(table.pack("to quiet", "127.0.0.1", true), reports[7])
    assert.same(table.pack(true, true), reports[8])
    server:stop()
  end)

  it("sends and receives on a connected socket", function()
    local server = helper.start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0" })
    local reports = run(fill([[
      local u = luasock.udp()
      report(stdout, u:setpeername("127.0.0.1", ${PORT}))
      u:settimeout(5)
      report(stdout, u:send("hello"), u:receive())
      report(stdout, u:send("truncated"), u:receive(4))
      report(stdout, u:send(""), u:receive())
      local host, port = u:getsockname()
      report(stdout, host, port > 0)
      u:settimeout(0.1)
      report(stdout, u:receive())
      report(stdout, u:close(), u:close())
    ]], { PORT = server.port }))
    assert.same(table.pack(true), reports[1])
    assert.same(table.pack(5, "hello"), reports[2])
    assert.same(table.pack(9, "trun"), reports[3])
    assert.same(table.pack(0, ""), reports[4])
    assert.same(table.pack("127.0.0.1", true), reports[5])
    assert.same(table.pack(nil, "timeout"), reports[6])
    assert.same(table.pack(true, true), reports[7])
    server:stop()
  end)

  it("wakes a waiting receiver with nil, 'closed' when closed", function()
    local reports = run([[
      local u = luasock.udp()
      assert(u:setsockname("127.0.0.1", 0))
      u:settimeout(5)
      local waiting = false
      local waiter = luasock.spawn(function()
        waiting = true
        return u:receivefrom()
      end)
      for _ = 1, 100 do
        if waiting then break end
        luasock.sleep(0)
      end
      local started = luasock.now()
      u:close()
      report(stdout, waiter:join())
      report(stdout, luasock.now() - started < 1)
    ]])
    assert.same(table.pack(true, nil, "closed"), reports[1])
    assert.same(table.pack(true), reports[2])
  end)

  it("raises for an address that is not an IP address and port", function()
    local reports = run([[
      local u = luasock.udp()
      report(stdout, pcall(u.sendto, u, "x", "localhost", 53))
      report(stdout, pcall(u.sendto, u, "x", "127.0.0.1", 70000))
      report(stdout, pcall(u.setpeername, u, "999.1.1.1", 5))
      report(stdout, pcall(u.setsockname, u, "nonsense", 0))
      report(stdout, pcall(u.sendto, u, "x", "127.0.0.1"))
    ]])
    for i, want in ipairs { "localhost", "70000", "999.1.1.1", "nonsense", "" } do
      assert.equal(false, reports[i][1])
      assert.equal("string", type(reports[i][2]))
      assert.is_truthy(reports[i][2]:find(want, 1, true), reports[i][2])
    end
  end)

  it("works in a handler, next to the connection it serves", function()
    local echo = helper.start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0" })
    local server = helper.start(helper.handler(fill([[
      return { handle = function(conn)
        local u <close> = luasock.udp()
        u:settimeout(5)
        for line in function() return conn:receive() end do
          u:sendto(line:upper(), "127.0.0.1", ${PORT})
          report(conn, u:receivefrom())
        end
      end }]], { PORT = echo.port })))
    local client = server:connect()
    for _, word in ipairs { "one", "two" } do
      assert(client:send(word .. "\n"))
      assert.same(table.pack(word:upper(), "127.0.0.1", echo.port), helper.read_report(client))
    end
    client:close()
    server:stop()
    echo:stop()
  end)
end)

describe("a udp: listener's socket, peer.socket (issue 13 item 3)", function()
  after_each(helper.cleanup)

  -- Each datagram naming a call makes the handler try it on peer.socket (with a short timeout)
  -- and report what it got; a datagram sent right behind it must still get its own answer.
  local SCRIPT = [[
    local calls = {
      receivefrom = function(s) return s:receivefrom() end,
      receive = function(s) return s:receive() end,
      close = function(s) return s:close() end,
      ["<close>"] = function(s) local closing <close> = s end,
      setpeername = function(s) return s:setpeername("127.0.0.1", 9) end,
      setsockname = function(s) return s:setsockname("127.0.0.1", 0) end,
    }
    return { datagram = function(data, peer)
      local to_peer = { send = function(_, ...) return peer:reply(table.concat { ... }) end }
      peer.socket:settimeout(0.1)
      if calls[data] then
        report(to_peer, data, pcall(calls[data], peer.socket))
      elseif data == "unprotected" then
        peer.socket:receivefrom()
        peer:reply("not reached")
      elseif data == "sendto" then
        report(to_peer, data, peer.socket:sendto("by sendto", peer.host, peer.port))
      else
        peer:reply("echo " .. data)
      end
    end }]]

  local function refusal(call, port)
    local method = call == "<close>" and "close" or call
    local why = (call == "receivefrom" or call == "receive")
      and "its datagrams go to the script's datagram function"
      or "it serves every peer until the server stops"
    return string.format("udp:%s: udp socket 127.0.0.1:%d is a listener: %s", method, port, why)
  end

  it("refuses reads, close and rebinding with a clear error; the datagram behind is answered",
    function()
    local server = helper.start(helper.handler(SCRIPT), { listen = "udp:127.0.0.1:0" })
    local _, port = udp_address(server)
    local client = udp_client(server)
    for _, call in ipairs { "receivefrom", "receive", "close", "<close>", "setpeername",
      "setsockname" } do
      -- Back to back, so the second is queued when the first one's handler runs: the old code's
      -- receivefrom took it from the listener (and its answer never came).
      assert(client:send(call))
      assert(client:send("behind " .. call))
      local got = {}
      for _ = 1, 2 do
        local reply, err = client:receive()
        assert(reply, "a reply is missing after " .. call .. ": " .. tostring(err))
        got[#got + 1] = reply
      end
      table.sort(got) -- "behind ..." comes after the report line, whose first byte is a quote
      local report = helper.decode_report(got[1])
      assert.same({ call, false, 3 }, { report[1], report[2], report.n })
      assert.matches("^[^ ]+:%d+: " .. helper.literal(refusal(call, port)) .. "$", report[3])
      assert.equal("echo behind " .. call, got[2])
    end
    assert(client:send("sendto"))
    assert.equal("by sendto", client:receive())
    assert.same(table.pack("sendto", 9), helper.decode_report(assert(client:receive())))
    server:stop()
  end)

  it("a handler that calls receivefrom with a timeout fails alone; the server answers after",
    function()
    local server = helper.start(helper.handler(SCRIPT), { listen = "udp:127.0.0.1:0" })
    local _, port = udp_address(server)
    local client = udp_client(server)
    assert(client:send("unprotected"))
    assert(client:send("ping"))
    assert.equal("echo ping", client:receive())
    server:wait_log(helper.literal(refusal("receivefrom", port)))
    -- Another client, after the failed handler's timeout has long passed.
    socket.sleep(0.3)
    local other = udp_client(server)
    assert(other:send("still there?"))
    assert.equal("echo still there?", other:receive())
    assert(client:send("pong"))
    assert.equal("echo pong", client:receive())
    client:settimeout(0.2)
    assert.same({ nil, "timeout" }, { client:receive() }) -- and "not reached" never came
    server:stop()
  end)
end)

describe("max_datagram_tasks (issue 13 item 5)", function()
  after_each(helper.cleanup)

  -- TCP echo and a datagram handler that waits, in one process whose memory cap is 8 MiB above
  -- what it holds at start: a datagram task costs about 1.3 KiB, so the default 1000 of them
  -- fit easily, and the 20,000 of a flood would not.
  local SCRIPT = [[
    local M = {}
    function M.start()
      M.max_memory = math.floor(collectgarbage("count") * 1024) + 8 * 1024 * 1024
    end
    function M.handle(conn)
      for line in function() return conn:receive() end do conn:send(line, "\n") end
    end
    function M.datagram(data, peer)
      luasock.sleep(60)
    end
    return M]]

  it("drops datagrams beyond 1000 waiting handlers, with a log line; TCP is served throughout",
    function()
    local server = helper.start(helper.handler(SCRIPT),
      { listen = { "127.0.0.1:0", "udp:127.0.0.1:0" } })
    local tcp = server:connect(1)
    local udp = udp_client(server)
    local sent = 0
    for burst = 1, 200 do
      for _ = 1, 100 do
        sent = sent + 1
        assert(udp:send("datagram " .. sent))
      end
      local started = socket.gettime()
      assert(tcp:send("echo " .. burst .. "\n"))
      local line, err = tcp:receive()
      assert.equal("echo " .. burst, line, "the TCP echo failed after " .. sent
        .. " datagrams: " .. tostring(err) .. "; log:\n" .. server:log())
      assert.is_true(socket.gettime() - started < 1, "the TCP echo took over 1 s")
    end
    local dropped = tonumber(server:wait_log("udp 127%.0%.0%.1:" .. select(2, udp_address(server))
      .. ": dropped (%d+) datagrams: 1000 datagram handlers are running %(max_datagram_tasks%)"))
    assert.is_true(dropped > 0 and dropped <= sent - 1000, "dropped " .. dropped)
    assert.equal(0, server:count_log("not enough memory"))
    -- A fresh TCP connection is served as well.
    local other = server:connect(1)
    assert(other:send("fresh\n"))
    assert.equal("fresh", other:receive())
    other:close()
    tcp:close()
    server:stop()
  end)

  it("must be an integer of at least 1", function()
    for _, bad in ipairs { "0", "1.5", "'10'" } do
      local path = helper.handler("return { max_datagram_tasks = " .. bad
        .. ", datagram = function() end }")
      local code, _, err = helper.run { "check", path }
      assert.equal(1, code, "max_datagram_tasks = " .. bad .. " was accepted")
      assert.matches("'max_datagram_tasks' must be an integer of at least 1", err)
    end
    assert.equal(0, (helper.run { "check", helper.handler(
      "return { max_datagram_tasks = 1, datagram = function() end }") }))
  end)
end)
