-- send_spec.lua -- conn:send: arguments, byte counts, backpressure, send timeouts and delivery of
-- output queued just before a handler ends.
local socket = require "socket"
local helper = require "helper"

local MiB = 1024 * 1024

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

-- Lua source of `chunk(i)`: 64 KiB whose content names i, so lost or reordered bytes show.
local CHUNK_SOURCE = [[
  local function chunk(i) return string.rep(string.format("%07d\n", i), 8192) end
]]
local chunk = load(CHUNK_SOURCE .. " return chunk")()

-- The bytes of chunks 1..n, as the handlers below send them.
local function chunks(n)
  local parts = {}
  for i = 1, n do parts[i] = chunk(i) end
  return table.concat(parts)
end

-- Shrinks a client's receive buffer before it connects, so a non-reading client stalls the
-- server's sends after little data.
local function small_rcvbuf(client)
  assert(client:setoption("recv-buffer-size", 4096))
end

-- Asserts that `got` equals `want` without printing megabytes when it does not.
local function assert_bytes(want, got)
  if got == want then return end
  local at = 1
  while at <= #want and got:byte(at) == want:byte(at) do at = at + 1 end
  error(string.format("got %d bytes instead of %d; first difference at byte %d", #got, #want,
    at), 2)
end

describe("conn:send arguments", function()
  after_each(helper.cleanup)

  it("sends strings, numbers and arrays in order and returns the byte count", function()
    local server = serve([[
      return { handle = function(conn)
        local n = conn:send("a", 1, { "b", 2, "c" }, 3.5, "\n")
        report(conn, n)
        report(conn, conn:send(""))
        report(conn, conn:send({}))
        report(conn, conn:send(string.rep("z", 100000)))
      end }]])
    local client = server:connect()
    assert.equal("a1b2c3.5", client:receive())
    assert.same(table.pack(9), helper.read_report(client))
    assert.same(table.pack(0), helper.read_report(client))
    assert.same(table.pack(0), helper.read_report(client))
    assert.equal(string.rep("z", 100000), client:receive(100000))
    assert.same(table.pack(100000), helper.read_report(client))
    client:close()
    server:stop()
  end)

  it("raises for arguments that are not strings, numbers or arrays of them", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, (pcall(conn.send, conn, true)))
        report(conn, (pcall(conn.send, conn, { "x", {} })))
        report(conn, (pcall(conn.send, conn, "x", print)))
        report(conn, "alive")
      end }]])
    local client = server:connect()
    for _ = 1, 3 do
      local line = client:receive()
      assert.equal("false", line)
    end
    assert.same(table.pack("alive"), helper.read_report(client))
    client:close()
    server:stop()
  end)
end)

describe("send backpressure", function()
  after_each(helper.cleanup)

  local source = CHUNK_SOURCE .. [[
    local status = { sent = 0, done = false }
    return { high_water = 16384, handle = function(conn)
      local command = conn:receive()
      if command == "big" then
        for i = 1, 128 do
          local n, err = conn:send(chunk(i))
          if not n then status.err = err break end
          status.sent = status.sent + n
        end
        status.done = true
      elseif command == "status" then
        report(conn, status.sent, status.done, status.err)
      end
    end }]]

  -- Asks the server for the status of the big sender on a new connection.
  local function status(server)
    local client = server:connect()
    assert(client:send("status\n"))
    local result = helper.read_report(client)
    client:close()
    return result
  end

  -- 8 MiB in 64 KiB chunks: more than loopback's kernel buffers take (about 3 MiB here).
  it("suspends the sender while others are served; every byte arrives in order", function()
    local server = serve(source)
    local reader = server:connect(1, small_rcvbuf)
    assert(reader:send("big\n"))
    -- Wait until the sender makes no progress for 0.3 s: the kernel buffers are full.
    local stalled = helper.eventually(function()
      local before = status(server)
      socket.sleep(0.3)
      local after = status(server)
      return after[1] > 0 and after[1] == before[1] and after
    end, 10, "the sender to stall")
    assert.is_false(stalled[2], "the handler finished sending without the client reading")
    assert.is_true(stalled[1] < 8 * MiB)
    local data = reader:receive(8 * MiB)
    assert_bytes(chunks(128), data or "")
    local final = helper.eventually(function()
      local result = status(server)
      return result[2] and result
    end, 5, "the sender to finish")
    assert.same(table.pack(8 * MiB, true, nil), final)
    reader:close()
    server:stop()
  end)
end)

describe("send timeout", function()
  after_each(helper.cleanup)

  local function check_timeout(source)
    local server = serve(CHUNK_SOURCE .. source)
    local reader = server:connect(1, small_rcvbuf)
    assert(reader:send("go\n"))
    local err, elapsed = server:wait_log("send failed: (%S+) after ([%d.]+) s", 10)
    assert.equal("timeout", err)
    elapsed = tonumber(elapsed)
    assert.is_true(elapsed >= 0.25 and elapsed < 3, "send waited " .. elapsed .. " s")
    local data, read_err = helper.read_all(reader)
    assert.is_true(#data < 128 * 65536, "every byte arrived although the send timed out")
    assert.is_truthy(read_err == "closed" or read_err:find("reset"), read_err)
    reader:close()
    server:stop()
  end

  local sender = [[
    local function handle(conn)
      conn:receive()
      for i = 1, 128 do
        local t0 = luasock.now()
        local n, err = conn:send(chunk(i))
        if not n then
          luasock.log("info", "send failed: " .. err .. " after", luasock.now() - t0, "s")
          return
        end
      end
      luasock.log("info", "send never failed")
    end
  ]]

  it("from settimeouts returns nil, 'timeout' on a stalled peer and closes", function()
    check_timeout(sender .. [[
      return { high_water = 16384, handle = function(conn)
        conn:settimeouts(nil, 0.3, nil)
        handle(conn)
      end }]])
  end)

  it("from the script's send_timeout returns nil, 'timeout' on a stalled peer", function()
    check_timeout(sender .. [[
      return { high_water = 16384, send_timeout = 0.3, handle = handle }]])
  end)
end)

describe("output queued when a handler ends", function()
  after_each(helper.cleanup)

  local source = CHUNK_SOURCE .. [[
    return { high_water = 8 * 1024 * 1024, handle = function(conn)
      local how = conn:receive()
      for i = 1, 16 do conn:send(chunk(i)) end
      luasock.log("info", "ending by", how)
      if how == "close" then conn:close()
      elseif how == "error" then error("ending with queued output") end
    end }]]

  for _, how in ipairs { "return", "close", "error" } do
    it("is fully delivered after " .. how, function()
      local server = serve(source)
      local client = server:connect(1, small_rcvbuf)
      assert(client:send(how .. "\n"))
      server:wait_log("ending by " .. how)
      local data, err = helper.read_all(client)
      assert_bytes(chunks(16), data)
      assert.equal("closed", err)
      client:close()
      server:stop()
    end)
  end
end)

describe("a closing connection with a stalled peer", function()
  after_each(helper.cleanup)

  it("gives up flushing after the send timeout", function()
    local server = serve(CHUNK_SOURCE .. [[
      return { high_water = 16 * 1024 * 1024, send_timeout = 0.3, handle = function(conn)
        conn:receive()
        for i = 1, 128 do conn:send(chunk(i)) end
        luasock.log("info", "handler returns with output queued")
      end }]])
    local reader = server:connect(1, small_rcvbuf)
    assert(reader:send("go\n"))
    server:wait_log("handler returns with output queued")
    socket.sleep(1)  -- well past the 0.3 s send timeout, with nobody reading
    local data, err = helper.read_all(reader)
    assert.is_true(#data < 8 * MiB, "all 8 MiB arrived: the flush never gave up")
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    reader:close()
    server:stop()
  end)
end)

describe("conn:post", function()
  after_each(helper.cleanup)

  -- "listen" connections wait to be posted to; "post N" posts N 64 KiB chunks to every waiting
  -- connection and reports what each post returned, how long posting took, and the results of
  -- one more post after them.
  local source = CHUNK_SOURCE .. [[
    local waiting = {}
    return { max_queue = 1024 * 1024, high_water = 16384, handle = function(conn)
      local command = conn:receive()
      if command == "listen" then
        waiting[conn] = true
        conn:send("listening\n")
        conn:receive()
        waiting[conn] = nil
        return
      end
      local count = tonumber(command:match("^post (%d+)$"))
      local results, t0 = {}, luasock.now()
      for target in pairs(waiting) do
        for i = 1, count do
          local n, err = target:post(chunk(i))
          results[#results + 1] = n or err
          if not n then break end
        end
        local n, err = target:post("x")
        results[#results + 1] = n or err
      end
      report(conn, luasock.now() - t0, table.concat(results, " "))
    end }]]

  local function listener(server)
    local client = server:connect(1, small_rcvbuf)
    assert(client:send("listen\n"))
    assert.equal("listening", client:receive())
    return client
  end

  local function post(server, count)
    local client = server:connect()
    assert(client:send("post " .. count .. "\n"))
    local result = helper.read_report(client)
    client:close()
    return result[1], result[2]
  end

  it("queues for another connection without suspending and returns the bytes", function()
    local server = serve(source)
    local target = listener(server)
    local elapsed, results = post(server, 8)  -- 512 KiB: far above high_water, below max_queue
    assert.equal(string.rep("65536 ", 8) .. "1", results)
    assert.is_true(elapsed < 0.5, "post waited " .. elapsed .. " s")
    assert_bytes(chunks(8) .. "x", target:receive(8 * 65536 + 1) or "")
    target:close()
    server:stop()
  end)

  it("closes a peer whose queue passes max_queue with 'overflow'; then 'closed'", function()
    local server = serve(source)
    local target = listener(server)
    local mark = server:mark()
    local _, results = post(server, 64)  -- 4 MiB to a client that does not read
    local words = {}
    for word in results:gmatch("%S+") do words[#words + 1] = word end
    assert.equal("closed", words[#words])
    assert.equal("overflow", words[#words - 1])
    assert.is_true(#words - 2 < 64, "every chunk was accepted")
    server:wait_log("[^\n]*max_queue", 5, mark)  -- the log line names the limit
    local data, err = helper.read_all(target)
    assert.is_true(#data < 64 * 65536)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    target:close()
    local other = listener(server)
    local _, again = post(server, 1)
    assert.equal("65536 1", again)
    other:close()
    server:stop()
  end)
end)

describe("conn:drain and the output limits of post", function()
  after_each(helper.cleanup)

  -- A slack for the timing bounds below, generous enough for an AddressSanitizer build.
  local SLACK = 1.5

  -- "listen" makes the connection the target (it then waits until the client closes); any
  -- other first line runs `work(conn, target)` from the script, which reports its results.
  local function target_server(settings, work)
    return serve(CHUNK_SOURCE .. [[
    local target
    local function work(conn, target) ]] .. work .. "\n" .. [[ end
    return { ]] .. settings .. [[, handle = function(conn)
      if conn:receive() == "listen" then
        target = conn
        conn:send("listening\n")
        conn:receive()
        return
      end
      work(conn, target)
    end }]])
  end

  local function listener(server, before)
    local client = server:connect(1, before or small_rcvbuf)
    assert(client:send("listen\n"))
    assert.equal("listening", client:receive())
    return client
  end

  local function command(server)
    local client = server:connect()
    assert(client:send("go\n"))
    return client
  end

  it("post returns the bytes queued and the queue level; drain waits for the mark", function()
    local server = target_server("max_queue = 64 * 1024 * 1024, soft_queue_seconds = false", [[
      report(conn, target:post(string.rep("d", 8 * 1024 * 1024)))
      report(conn, target:post("e"))
      report(conn, target:drain(65536, 10))
      local ok, err = pcall(string.gsub, "x", ".", function() target:drain(1e9) end)
      report(conn, ok, err)  -- needs no wait: works even where it could not wait]])
    local target = listener(server)
    local client = command(server)
    assert.same(table.pack(8 * MiB, 8 * MiB), helper.read_report(client))
    assert.same(table.pack(1, 8 * MiB + 1), helper.read_report(client))
    assert_bytes(string.rep("d", 8 * MiB) .. "e", target:receive(8 * MiB + 1))
    local drained = helper.read_report(client)
    assert.equal(1, drained.n)
    assert.is_true(math.type(drained[1]) == "integer" and drained[1] <= 65536, drained[1])
    assert.same(table.pack(true, "x"), helper.read_report(client))
    target:close()
    client:close()
    server:stop()
  end)

  it("drain times out, raises where it cannot wait, and is woken by the close", function()
    local server = target_server("max_queue = 64 * 1024 * 1024, soft_queue_seconds = false", [[
      target:post(string.rep("d", 8 * 1024 * 1024))
      local t0 = luasock.now()
      local n, err = target:drain(0, 0.3)
      report(conn, n, err, luasock.now() - t0)
      report(conn, pcall(string.gsub, "x", ".", function() target:drain(0) end))
      local waiters = {}
      for i, mark in ipairs({ 0, 4 * 1024 * 1024 }) do
        waiters[i] = luasock.spawn(function() return target:drain(mark) end)
      end
      conn:send("waiting\n")
      for i = 1, 2 do report(conn, waiters[i]:join()) end]])
    local target = listener(server)
    local client = command(server)
    local timed_out = helper.read_report(client)
    assert.same({ nil, "timeout" }, { timed_out[1], timed_out[2] })
    assert.is_true(timed_out[3] >= 0.25 and timed_out[3] < 0.3 + SLACK, timed_out[3])
    local refused = helper.read_report(client)
    assert.equal(false, refused[1])
    assert.matches("conn:drain cannot wait inside a C function", refused[2])
    assert.equal("waiting", client:receive())
    target:close()  -- the target's handler reads "closed" and ends: its connection closes
    for _ = 1, 2 do
      local woken = helper.read_report(client)
      assert.same({ true, nil }, { woken[1], woken[2] })
      assert.is_truthy(woken[3] == "closed" or woken[3] == "reset", woken[3])
    end
    client:close()
    server:stop()
  end)

  it("drain is woken by a graceful shutdown", function()
    local server = target_server("max_queue = 64 * 1024 * 1024, soft_queue_seconds = false", [[
      target:post(string.rep("d", 8 * 1024 * 1024))
      conn:send("waiting\n")
      local t0 = luasock.now()
      local n, err = target:drain(0)
      report(conn, n, err, luasock.now() - t0)]])
    listener(server)  -- the target, which never reads
    local client = command(server)
    assert.equal("waiting", client:receive())
    local started = socket.gettime()
    server:signal("TERM")
    local woken = helper.read_report(client)
    assert.same({ nil, "shutting down" }, { woken[1], woken[2] })
    assert.is_true(socket.gettime() - started < 2, "drain was woken late")
    client:close()
    server:stop()
  end)

  -- Issue 13 item 10: only max_queue existed, so a reader a little behind was dropped as soon
  -- as a burst passed it, like one that never reads.
  it("drops a peer that stays above soft_queue for soft_queue_seconds, not before", function()
    local server = target_server("max_queue = 64 * 1024 * 1024, soft_queue = 131072, " ..
      "soft_queue_seconds = 0.5", [[
      local first_above, first_stayed
      while true do
        local n, level = target:post(chunk(1))
        local now = luasock.now()
        if not n then
          report(conn, level, now - first_above, now - first_stayed)
          return
        end
        if level > 131072 then first_above = first_above or now end
        if level - n > 131072 then first_stayed = first_stayed or now end
        luasock.sleep(0.02)
      end]])
    local target = listener(server)
    local client = command(server)
    client:settimeout(30)
    local result = helper.read_report(client)
    -- Dropped in the timer: the next post finds it closed.
    assert.equal("closed", result[1])
    assert.is_true(result[2] >= 0.5, "dropped " .. result[2] .. " s after first going above")
    assert.is_true(result[3] <= 0.5 + SLACK, "dropped only " .. result[3] .. " s after it "
      .. "stayed above")
    server:wait_log("%[warn%] conn %d+: disconnected: the peer is not reading: %d+ bytes " ..
      "queued for more than 0%.5 s %(soft_queue 131072%)")
    target:close()
    client:close()
    server:stop()
  end)

  -- A client that reads 16 KiB every 20 ms while 256 KiB are posted every 20 ms.
  local function slow_reader_log(settings, pattern)
    local server = target_server(settings, [[
      while target:post(chunk(1), chunk(2), chunk(3), chunk(4)) do luasock.sleep(0.02) end
      conn:send("dropped\n")]])
    local target = listener(server)
    local client = command(server)
    client:settimeout(30)
    while target:receive(16384) do socket.sleep(0.02) end  -- the reader's pace, not a wait
    assert.equal("dropped", client:receive())
    server:wait_log(pattern)
    target:close()
    client:close()
    server:stop()
  end

  it("logs a peer that reads, but too slowly, as such: soft_queue", function()
    slow_reader_log("max_queue = 64 * 1024 * 1024, soft_queue = 131072, soft_queue_seconds = 0.5",
      "%[warn%] conn %d+: disconnected: the peer is reading too slowly: %d+ bytes queued for " ..
      "more than 0%.5 s %(soft_queue 131072%)")
  end)

  it("logs a peer that reads, but too slowly, as such: max_queue", function()
    slow_reader_log("max_queue = 1024 * 1024, soft_queue_seconds = false",
      "%[warn%] conn %d+: disconnected: the peer is reading too slowly: %d+ bytes queued, " ..
      "over max_queue 1048576")
  end)
end)
