-- errors_spec.lua -- a server that stays healthy through handler errors, binary garbage, endless
-- lines, stalled peers and resets.
local helper = require "helper"

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

-- Echoes lines; "boom" throws on line 4 of the script (PRELUDE shares line 1).
local THROWER = [[
return { handle = function(conn)
  conn:send(tostring(conn:id()), "\n")
  for line in function() return conn:receive() end do
    if line == "boom" then error("handler blew up") end
    conn:send(line, "\n")
  end
end }]]

describe("a handler that throws", function()
  after_each(helper.cleanup)

  it("is logged with file:line, a traceback, conn id and peer; others go on", function()
    local server = serve(THROWER)
    local bystander = server:connect()
    assert(bystander:receive())
    assert(bystander:send("before\n"))
    assert.equal("before", bystander:receive())

    local victim = server:connect()
    local id = victim:receive()
    local _, victim_port = victim:getsockname()
    assert(victim:send("boom\n"))
    local data, err = helper.read_all(victim)
    assert.equal("", data)
    assert.equal("closed", err)
    victim:close()

    server:wait_log("handler blew up")
    local log = server:log()
    assert.is_truthy(log:find("handler%d+%.lua:4: handler blew up"), log)
    assert.is_truthy(log:find("traceback", 1, true), log)
    assert.is_truthy(log:find("conn " .. id .. "%f[%D]"), log)
    assert.is_truthy(log:find("127.0.0.1", 1, true), log)
    assert.is_truthy(log:find("%f[%d]" .. victim_port .. "%f[%D]"), "no peer port in " .. log)

    assert(bystander:send("after\n"))
    assert.equal("after", bystander:receive())
    bystander:close()
    local fresh = server:connect()
    assert(fresh:receive())
    assert(fresh:send("fresh\n"))
    assert.equal("fresh", fresh:receive())
    fresh:close()
    server:stop()
  end)

  it("is logged with the peer address even after both sides have closed", function()
    local server = serve([[
      return { handle = function(conn)
        conn:receive()
        conn:receive()                -- the client has closed
        conn:shutdown("send")
        error("late failure")
      end }]])
    local client = server:connect()
    local _, port = client:getsockname()
    assert(client:send("bye\n"))
    client:close()
    local line = server:wait_log("[^\n]*late failure")
    assert.is_truthy(line:find("127.0.0.1", 1, true) and line:find("%f[%d]" .. port .. "%f[%D]"),
      "no peer address in: " .. line)
    server:stop()
  end)

  it("with a non-string error value is logged and survived", function()
    local server = serve([[
      return { handle = function(conn)
        if conn:receive() == "table" then error({ code = 42 }) end
        report(conn, "fine")
      end }]])
    local victim = server:connect()
    assert(victim:send("table\n"))
    assert.equal("closed", select(2, helper.read_all(victim)))
    victim:close()
    assert.is_true(server:count_log("%[error%]") >= 1, server:log())
    local client = server:connect()
    assert(client:send("plain\n"))
    assert.same(table.pack("fine"), helper.read_report(client))
    client:close()
    server:stop()
  end)
end)

describe("a connection whose peer or handler is gone", function()
  after_each(helper.cleanup)

  it("can be written to after the peer left without harming the server", function()
    local server = serve([[
      return { handle = function(conn)
        if conn:receive() ~= "leave" then report(conn, "served") return end
        luasock.sleep(0.2)
        local results = {}
        for i = 1, 3 do
          local n, err = conn:send(string.rep("w", 100000))
          results[i] = tostring(n) .. "/" .. tostring(err)
          luasock.sleep(0.05)
        end
        luasock.log("info", "writes after the peer left:", table.concat(results, " "))
      end }]])
    local leaver = server:connect()
    assert(leaver:send("leave\n"))
    leaver:close()
    local results = server:wait_log("writes after the peer left: ([^\n]*)")
    assert.is_truthy(results:find("nil/"), "every send succeeded: " .. results)
    local client = server:connect()
    assert(client:send("hello\n"))
    assert.same(table.pack("served"), helper.read_report(client))
    client:close()
    server:stop()
  end)

  it("is safe to use from another handler after its own handler ended", function()
    local server = serve([[
      local previous
      return { handle = function(conn)
        if previous then
          local old = previous
          report(conn, pcall(old.send, old, "late"))
          report(conn, pcall(old.receive, old))
          report(conn, pcall(old.peer, old))
          report(conn, pcall(old.close, old))
          report(conn, tostring(old) == "conn " .. old:id())
        end
        previous = conn
        report(conn, "done")
      end }]])
    local first = server:connect()
    assert.same(table.pack("done"), helper.read_report(first))
    assert.equal("closed", select(2, helper.read_all(first)))
    first:close()
    local second = server:connect()
    -- Each call may raise (false, message) or fail softly (true, nil, err); it must not succeed
    -- in sending or reading, and the server must survive.
    local send = helper.read_report(second)
    assert.is_truthy(send[1] == false or send[2] == nil, "send on an ended connection worked")
    local receive = helper.read_report(second)
    assert.is_truthy(receive[1] == false or receive[2] == nil, "receive worked")
    helper.read_report(second)  -- peer(): any answer will do
    helper.read_report(second)  -- close(): any answer will do
    assert.same(table.pack(true), helper.read_report(second))
    assert.same(table.pack("done"), helper.read_report(second))
    second:close()
    server:stop()
  end)
end)

describe("binary garbage", function()
  after_each(helper.cleanup)

  it("is echoed back exactly by examples/echo.lua", function()
    local server = helper.start("examples/echo.lua")
    local client = server:connect()
    local all_bytes = {}
    for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
    local blocks = { table.concat(all_bytes):rep(16) }
    math.randomseed(1234)
    for b = 2, 64 do
      local bytes = {}
      for i = 1, 4096 do bytes[i] = string.char(math.random(0, 255)) end
      blocks[b] = table.concat(bytes)
    end
    for b, block in ipairs(blocks) do
      assert(client:send(block))
      local echoed, err = client:receive(#block)
      assert.is_truthy(echoed, "block " .. b .. ": " .. tostring(err))
      assert.is_true(echoed == block, "block " .. b .. " came back changed")
    end
    client:close()
    server:stop()
  end)
end)

describe("an endless line", function()
  after_each(helper.cleanup)

  it("gets 'line too long' and the server stays healthy", function()
    local server = serve([[
      return { handle = function(conn)
        while true do
          local line, err, partial = conn:receive()
          if not line and err ~= "line too long" then return end
          report(conn, line, err, partial and #partial)
        end
      end }]])
    local client = server:connect()
    local block = string.rep("x", 65536)
    for _ = 1, 64 do assert(client:send(block)) end  -- 4 MiB, no newline
    assert.same(table.pack(nil, "line too long", 8192), helper.read_report(client))
    assert(client:send("\nhello\n"))
    assert.same(table.pack("hello", nil, nil), helper.read_report(client))
    client:close()
    local other = server:connect()
    assert(other:send("short\n"))
    assert.same(table.pack("short", nil, nil), helper.read_report(other))
    other:close()
    server:stop()
  end)
end)

describe("a stalled peer", function()
  after_each(helper.cleanup)

  it("does not block other clients", function()
    local server = helper.start("examples/prefix.lua")
    local silent = server:connect()
    local half_line = server:connect()
    assert(half_line:receive())
    assert(half_line:send("no newline yet"))
    for i = 1, 5 do
      local client = server:connect()
      assert.equal("Welcome to the server. Type something and hit enter", client:receive())
      assert(client:send("client " .. i .. "\n"))
      assert.equal("OK...client " .. i, client:receive())
      client:close()
    end
    assert(half_line:send(", now\n"))
    assert.equal("OK...no newline yet, now", half_line:receive())
    silent:close()
    half_line:close()
    server:stop()
  end)
end)

describe("a peer that resets", function()
  after_each(helper.cleanup)

  local function reset(client)
    assert(client:setoption("linger", { on = true, timeout = 0 }))
    client:close()
  end

  it("gives a waiting reader 'reset' or 'closed' and the server goes on", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive())
        local data, err = conn:receive()
        luasock.log("info", "after reset:", tostring(data), tostring(err))
      end }]])
    local client = server:connect()
    assert(client:send("hi\n"))
    assert.same(table.pack("hi"), helper.read_report(client))
    reset(client)
    local data, err = server:wait_log("after reset: (%S+) (%S+)")
    assert.equal("nil", data)
    assert.is_truthy(err == "reset" or err == "closed", "got " .. err)
    local other = server:connect()
    assert(other:send("next\n"))
    assert.same(table.pack("next"), helper.read_report(other))
    other:close()
    server:stop()
  end)

  it("during a blocked send ends that send with an error and the server goes on", function()
    local server = serve([[
      return { high_water = 16384, handle = function(conn)
        if conn:receive() ~= "flood" then report(conn, "served") return end
        local chunk = string.rep("f", 65536)
        for _ = 1, 256 do
          local n, err = conn:send(chunk)
          if not n then luasock.log("info", "flood ended:", err) return end
        end
        luasock.log("info", "flood ended: never")
      end }]])
    local client = server:connect(1, function(c) c:setoption("recv-buffer-size", 4096) end)
    assert(client:send("flood\n"))
    assert(client:receive(1000))  -- the flood has started
    reset(client)
    local err = server:wait_log("flood ended: (%S+)")
    assert.is_truthy(err == "reset" or err == "closed", "got " .. err)
    local other = server:connect()
    assert(other:send("hello\n"))
    assert.same(table.pack("served"), helper.read_report(other))
    other:close()
    server:stop()
  end)

  it("at once for 20 handlers suspended in send ends every send; nothing is left behind",
    function()
    local FLOODS = 20
    local server = serve([[
      local waiting = {} -- the floods suspended in send right now
      return { high_water = 16384, handle = function(conn)
        local line = conn:receive()
        if line == "waiting" then
          local n = 0
          for _ in pairs(waiting) do n = n + 1 end
          report(conn, n)
          return
        end
        if line ~= "flood" then report(conn, "served") return end
        local chunk = string.rep("f", 65536)
        for _ = 1, 1024 do
          -- set and cleared in one resume unless the send suspends
          waiting[conn] = true
          local n, err = conn:send(chunk)
          waiting[conn] = nil
          if not n then luasock.log("info", "flood ended:", err) return end
        end
        luasock.log("info", "flood ended: never")
      end }]])
    local function waiting()
      local client = server:connect()
      local n = tonumber(helper.ask(client, "waiting"))
      client:close()
      return n
    end
    local fds_before = server:fd_count()
    local floods = {}
    for i = 1, FLOODS do
      floods[i] = server:connect(1, function(c) c:setoption("recv-buffer-size", 4096) end)
      assert(floods[i]:send("flood\n"))
      assert(floods[i]:receive(1000)) -- its flood has started
    end
    helper.eventually(function() return waiting() == FLOODS end, 10,
      "all " .. FLOODS .. " floods to be suspended in send")
    for _, client in ipairs(floods) do reset(client) end
    helper.eventually(function() return server:count_log("flood ended: ") == FLOODS end, 10,
      FLOODS .. " 'flood ended' lines")
    for err in server:log():gmatch("flood ended: (%S+)") do
      assert.is_truthy(err == "reset" or err == "closed", "a flood ended with " .. err)
    end
    assert.equal(0, waiting())
    local other = server:connect()
    assert(other:send("hello\n"))
    assert.same(table.pack("served"), helper.read_report(other))
    other:close()
    helper.eventually(function() return server:fd_count() <= fds_before end, 5,
      "the server to close the floods' sockets")
    assert.is_nil(server:log():find("[error]", 1, true), server:log())
    server:stop()
  end)
end)
