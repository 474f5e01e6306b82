-- conn_spec.lua -- the connection object: close, shutdown, addresses, ids, tostring, timeouts,
-- `<close>` variables, setoption and half-closed connections.
local socket = require "socket"
local helper = require "helper"

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

-- Ends each connection the way its first line says and logs what on_close got.
local CLOSER_SOURCE = [[
  local M = { high_water = 16384 }
  function M.handle(conn)
    report(conn, conn:id())
    local how = conn:receive()
    if how == "throw" then error("thrown on purpose")
    elseif how == "close" then conn:close()
    elseif how == "wait" then conn:receive()
    elseif how == "flood" then
      conn:settimeouts(nil, 0.3, nil)
      while conn:send(string.rep("f", 65536)) do end
    end
  end
  function M.on_close(conn, reason)
    luasock.log("info", "on_close conn " .. conn:id(), reason)
    local id_ok = conn:id() and "id ok" or "no id"
    local read_ok = pcall(conn.receive, conn) and conn:receive() and "receive worked"
      or "receive failed"
    local sent = pcall(conn.send, conn, "x") and conn:send("x") and "send worked"
      or "send failed"
    luasock.log("info", "on_close details conn " .. conn:id(), id_ok .. ", " .. read_ok .. ", "
      .. sent)
  end
  return M]]

local function expect(client, ...)
  assert.same(table.pack(...), helper.read_report(client))
end

describe("conn:close", function()
  after_each(helper.cleanup)

  it("returns true, is idempotent, delivers queued output and ends reads", function()
    local server = serve([[
      return { handle = function(conn)
        conn:send("bye\n")
        local first, second = conn:close(), conn:close()
        local ok, data, err = pcall(conn.receive, conn)
        luasock.log("info", "close", tostring(first), tostring(second),
          "receive after close", tostring(ok), tostring(data), tostring(err))
      end }]])
    local client = server:connect()
    assert.equal("bye", client:receive())
    local data, err = helper.read_all(client)
    assert.equal("", data)
    assert.equal("closed", err)
    local ok, data_after, err_after = server:wait_log(
      "close true true receive after close (%S+) (%S+) (%S+)")
    -- Reading a closed connection may raise (ok false) or return nil, "closed"; never data.
    assert.is_truthy(ok == "false" or (data_after == "nil" and err_after == "closed"),
      "receive after close gave " .. ok .. " " .. data_after .. " " .. err_after)
    client:close()
    server:stop()
  end)

  it("wakes a coroutine waiting to read with nil, 'closed'", function()
    local server = serve([[
      return { handle = function(conn)
        luasock.spawn(function()
          local data, err = conn:receive()
          luasock.log("info", "waiting reader got", tostring(data), tostring(err))
        end)
        luasock.sleep(0.1)
        conn:close()
      end }]])
    local client = server:connect()
    assert.equal("nil closed", server:wait_log("waiting reader got (%S+ %S+)"))
    client:close()
    server:stop()
  end)
end)

describe("conn:close of other connections in the middle of their reads", function()
  after_each(helper.cleanup)

  -- Each victim's first line names a read; the bytes after it (in the same packet) are a part
  -- of what that read needs. The victim's handler reads on, registered in `reading` while its
  -- read waits, and logs what the read returned once another handler has closed it. A "close"
  -- connection waits until every victim waits, closes them all (twice), and reports how many.
  local SOURCE = [[
    local reading = {}
    local reads = {
      line = function(conn) return conn:receive("*l") end,
      count = function(conn) return conn:receive(10) end,
      ["until"] = function(conn) return conn:receiveuntil("--") end,
      all = function(conn) return conn:receive("*a") end,
      any = function(conn) return conn:receiveany() end,
      object = function(conn) return conn:receive_object() end,
    }
    return { handle = function(conn)
      local first = conn:receive()
      if first == "close" then
        local want = tonumber(conn:receive())
        local n
        repeat
          luasock.sleep(0.01)
          n = 0
          for _ in pairs(reading) do n = n + 1 end
        until n == want
        local closed = 0
        for victim in pairs(reading) do
          if victim:close() and victim:close() then closed = closed + 1 end
        end
        report(conn, closed)
        return
      end
      reading[conn] = first
      local data, err, partial = reads[first](conn)
      reading[conn] = nil
      luasock.log("info", "victim " .. first .. ":", q(data), q(err), q(partial))
      -- the closed connection stays closed: a second read cannot wait
      local again, again_err = conn:receive()
      luasock.log("info", "victim " .. first .. " again:", q(again), q(again_err))
    end }]]

  it("ends each read with nil, 'closed'; the peers see EOF; the server serves on", function()
    local server = serve(SOURCE)
    -- what each victim sends after its first line; the read returns it as its partial (but an
    -- object read, which returns no partial), as it would on the peer's close
    local partial = {
      line = "abc", count = "abc", ["until"] = "ab-", all = "abc", any = "",
      object = "\x92\x01",
    }
    local victims = {}
    for kind, bytes in pairs(partial) do
      local client = server:connect()
      assert(client:send(kind .. "\n" .. bytes))
      victims[kind] = client
    end
    local closer = server:connect()
    assert(closer:send("close\n6\n"))
    assert.same(table.pack(6), helper.read_report(closer))
    for kind, client in pairs(victims) do
      local data, err, got = server:wait_log("victim " .. kind .. ": (%S+) (%S+) ([^\n]*)\n")
      assert.equal("nil", data, kind)
      assert.equal('"closed"', err, kind)
      assert.equal(kind == "object" and "nil" or '"' .. partial[kind] .. '"', got, kind)
      assert.equal('nil "closed"', server:wait_log("victim " .. kind .. " again: ([^\n]*)\n"))
      local rest, how = helper.read_all(client)
      assert.equal("", rest, kind)
      assert.equal("closed", how, kind)
      client:close()
    end
    closer:close()
    local fresh = server:connect()
    assert(fresh:send("line\nafter\n"))
    server:wait_log('victim line: "after" nil nil')
    fresh:close()
    assert.is_nil(server:log():find("[error]", 1, true), server:log())
    server:stop()
  end)
end)

describe("conn:shutdown", function()
  after_each(helper.cleanup)

  it("('send') gives the client EOF while the client can still send", function()
    local server = serve([[
      return { handle = function(conn)
        conn:send("last\n")
        local ok = conn:shutdown("send")
        local line = conn:receive()
        luasock.log("info", "shutdown", tostring(ok), "then got", line)
      end }]])
    local client = server:connect()
    assert.equal("last", client:receive())
    local _, err = client:receive()
    assert.equal("closed", err)
    assert(client:send("ping\n"))
    assert.equal("true then got ping", server:wait_log("shutdown (.- then got %S+)"))
    client:close()
    server:stop()
  end)

  it("defaults to 'send'", function()
    local server = serve([[
      return { handle = function(conn)
        conn:send("x\n")
        local ok = conn:shutdown()
        luasock.log("info", "shutdown", tostring(ok), "then got", conn:receive())
      end }]])
    local client = server:connect()
    assert.equal("x", client:receive())
    assert.equal("closed", select(2, client:receive()))
    assert(client:send("pong\n"))
    assert.equal("true then got pong", server:wait_log("shutdown (.- then got %S+)"))
    client:close()
    server:stop()
  end)

  it("('receive') and ('both') return true, and a bad 'how' raises", function()
    local server = serve([[
      return { handle = function(conn)
        local bad = pcall(conn.shutdown, conn, "sideways")
        conn:send("before\n")
        local receive = conn:shutdown("receive")
        local data, err = conn:receive()
        luasock.log("info", "bad", tostring(bad), "receive", tostring(receive),
          "read", tostring(data), tostring(err), "both", tostring(conn:shutdown("both")))
      end }]])
    local client = server:connect()
    assert.equal("before", client:receive())
    local log = server:wait_log("bad %S+ receive [^\n]*")
    assert.equal("bad false receive true read nil closed both true", log)
    client:close()
    server:stop()
  end)
end)

describe("connection identity", function()
  after_each(helper.cleanup)

  local source = [[
    return { handle = function(conn)
      local peer_host, peer_port = conn:peer()
      local host, port = conn:local_address()
      report(conn, peer_host, peer_port, host, port, conn:id(), math.type(conn:id()),
        tostring(conn))
      conn:receive()
    end }]]

  it("peer(), local_address(), id() and tostring(conn) describe the connection", function()
    local server = serve(source)
    local first, second = server:connect(), server:connect()
    local a, b = helper.read_report(first), helper.read_report(second)
    for _, pair in ipairs { { first, a }, { second, b } } do
      local client, result = pair[1], pair[2]
      local client_host, client_port = client:getsockname()
      assert.equal(client_host, result[1])
      assert.equal(tonumber(client_port), result[2])
      assert.equal("127.0.0.1", result[3])
      assert.equal(server.port, result[4])
      assert.equal("integer", result[6])
      assert.equal("conn " .. result[5], result[7])
    end
    assert.are_not.equal(a[5], b[5])
    first:close()
    second:close()
    server:stop()
  end)
end)

describe("timeouts", function()
  after_each(helper.cleanup)

  -- Asserts a timed-out read report: nil, "timeout", and an elapsed time near `seconds`.
  local function expect_timeout(client, seconds)
    local result = helper.read_report(client)
    assert.same({ nil, "timeout" }, { result[1], result[2] })
    assert.is_true(result[3] >= seconds * 0.75 and result[3] < seconds + 2,
      "timed out after " .. tostring(result[3]) .. " s")
  end

  local source = [[
    local function timed(conn)
      local t0 = luasock.now()
      local data, err = conn:receive()
      report(conn, data, err, luasock.now() - t0)
    end
    return { idle_timeout = 0.3, handle = function(conn)
      timed(conn)                          -- idle_timeout
      conn:settimeout(0.2)
      timed(conn)
      conn:settimeouts(nil, nil, 0.4)
      timed(conn)
      conn:settimeouts(nil, 5, nil)        -- read timeout unchanged
      timed(conn)
      conn:settimeout(-1)
      timed(conn)                          -- no timeout: waits for the client
      conn:settimeout(false)
      timed(conn)
    end }]]

  it("idle_timeout, settimeout, settimeouts, and negative/false for none", function()
    local server = serve(source)
    local client = server:connect()
    expect_timeout(client, 0.3)
    expect_timeout(client, 0.2)
    expect_timeout(client, 0.4)
    expect_timeout(client, 0.4)
    socket.sleep(0.8)  -- longer than every timeout set before: only "no timeout" survives it
    assert(client:send("late\n"))
    assert.equal("late", helper.read_report(client)[1])
    socket.sleep(0.8)
    assert(client:send("later\n"))
    assert.equal("later", helper.read_report(client)[1])
    client:close()
    server:stop()
  end)
end)

describe("a read that completes in time", function()
  after_each(helper.cleanup)

  it("cancels its timeout: later sleeps and reads are not cut short", function()
    local server = serve([[
      return { handle = function(conn)
        conn:settimeout(0.3)
        report(conn, conn:receive())
        local t0 = luasock.now()
        report(conn, luasock.sleep(0.6), luasock.now() - t0)
        report(conn, conn:receive())
        conn:settimeout(1.5)
        t0 = luasock.now()
        report(conn, conn:receive(), luasock.now() - t0)
      end }]])
    local client = server:connect()
    assert(client:send("a\n"))
    assert.same(table.pack("a"), helper.read_report(client))
    local slept = helper.read_report(client)
    assert.is_true(slept[1])
    assert.is_true(slept[2] >= 0.55, "the sleep ended after " .. slept[2] .. " s")
    assert(client:send("b\n"))
    assert.same(table.pack("b"), helper.read_report(client))
    socket.sleep(0.6)  -- longer than the first timeout, shorter than the second
    assert(client:send("c\n"))
    local late = helper.read_report(client)
    assert.equal("c", late[1])
    assert.is_true(late[2] >= 0.5, "read returned after " .. late[2] .. " s")
    client:close()
    server:stop()
  end)
end)

describe("a <close> variable", function()
  after_each(helper.cleanup)

  it("closes the connection at the end of its block", function()
    local server = serve([[
      return { handle = function(conn)
        do
          local c <close> = conn
          c:send("in block\n")
        end
        local data, err = conn:receive()
        luasock.log("info", "after block", tostring(data), tostring(err))
      end }]])
    local client = server:connect()
    assert.equal("in block", client:receive())
    assert.equal("closed", select(2, client:receive()))
    assert.equal("nil closed", server:wait_log("after block (%S+ %S+)"))
    client:close()
    server:stop()
  end)
end)

describe("conn:setoption", function()
  after_each(helper.cleanup)

  it("overrides max_line, max_all and high_water per connection; bad names raise", function()
    local server = serve([[
      return { handle = function(conn)
        local kind = conn:receive()
        if kind == "line" then
          report(conn, conn:setoption("max_line", 8))
          report(conn, conn:receive())
          report(conn, conn:receive())
        elseif kind == "all" then
          local set = conn:setoption("max_all", 10)
          local data, err = conn:receive("*a")
          luasock.log("info", "max_all", tostring(set), "result", tostring(data), tostring(err))
        else
          report(conn, conn:setoption("high_water", 1024))
          report(conn, (pcall(conn.setoption, conn, "bogus", 1)))
          report(conn, (pcall(conn.setoption, conn, "max_line", "lots")))
        end
      end }]])
    local line = server:connect()
    assert(line:send("line\n123456789\nabc\n"))
    expect(line, true)
    expect(line, nil, "line too long", "12345678")
    expect(line, "abc")
    line:close()

    local all = server:connect()
    assert(all:send("all\n" .. string.rep("a", 20)))
    assert.equal("true result nil too large", server:wait_log("max_all (%S+ result %S+ %S+ %S+)"))
    all:close()

    local other = server:connect()
    assert(other:send("other\n"))
    expect(other, true)
    expect(other, false)
    expect(other, false)
    other:close()
    server:stop()
  end)

  it("leaves other connections with the script's limits", function()
    local server = serve([[
      return { max_line = 32, handle = function(conn)
        if conn:receive() == "shrink" then conn:setoption("max_line", 4) end
        report(conn, conn:receive())
      end }]])
    local shrunk = server:connect()
    assert(shrunk:send("shrink\nlonger than four\n"))
    expect(shrunk, nil, "line too long", "long")
    local other = server:connect()
    assert(other:send("keep\nlonger than four\n"))
    expect(other, "longer than four")
    shrunk:close()
    other:close()
    server:stop()
  end)
end)

describe("a half-closed connection", function()
  after_each(helper.cleanup)

  it("lets the handler read '*a' and still send a reply", function()
    local server = serve([[
      return { handle = function(conn)
        local data = assert(conn:receive("*a"))
        conn:send("got ", #data, " bytes\n", data:reverse())
      end }]])
    local client = server:connect()
    local data = string.rep("0123456789", 1000) .. "end"
    assert(client:send(data))
    assert(client:shutdown("send"))
    assert.equal("got " .. #data .. " bytes", client:receive())
    local rest, err = helper.read_all(client)
    assert.equal(data:reverse(), rest)
    assert.equal("closed", err)
    client:close()
    server:stop()
  end)
end)

describe("on_close", function()
  after_each(helper.cleanup)

  local source = CLOSER_SOURCE

  -- Connects, says how the handler should end, and returns the reason on_close logged for it.
  local function reason_for(server, how, before, after)
    local client = server:connect(1, before)
    local id = helper.read_report(client)[1]
    assert(client:send(how .. "\n"))
    if after then after(client) end
    local reason = server:wait_log("on_close conn " .. id .. " (%S+)")
    client:close()
    return reason, id
  end

  it("gets 'closed' when the handler returns, throws or closes", function()
    local server = serve(source)
    for _, how in ipairs { "return", "throw", "close" } do
      assert.equal("closed", (reason_for(server, how)))
    end
    server:stop()
  end)

  it("gets 'reset' when the peer resets", function()
    local server = serve(source)
    local reason = reason_for(server, "wait", nil, function(client)
      assert(client:setoption("linger", { on = true, timeout = 0 }))
      client:close()
    end)
    assert.equal("reset", reason)
    server:stop()
  end)

  it("gets 'timeout' when a send times out", function()
    local server = serve(source)
    local reason = reason_for(server, "flood", function(client)
      assert(client:setoption("recv-buffer-size", 4096))
    end)
    assert.equal("timeout", reason)
    server:stop()
  end)

  it("runs once per connection; the connection cannot be used in it but id() works", function()
    local server = serve(source)
    local _, id = reason_for(server, "return")
    local details = server:wait_log("on_close details conn " .. id .. " ([^\n]*)")
    assert.equal("id ok, receive failed, send failed", details)
    local other = server:connect()
    helper.read_report(other)
    other:close()
    server:wait_log("on_close conn %d+ closed.*on_close conn %d+ closed")
    assert.equal(1, server:count_log("on_close conn " .. id .. " "))
    server:stop()
  end)
end)
