-- pool_spec.lua -- keep-alive pools of outgoing connections (issue 15, the native API):
-- conn:setkeepalive parks a connection, luasock.connect with the same pool name takes it back;
-- the server at the other end counts its connections, so a reuse that opened a new one fails.
-- A parked connection is dropped when its peer closes or speaks, when its idle time is up, or
-- when the pool is full; it outlives the coroutine that parked it; TLS has pools of its own.
local helper = require "helper"

local fill = helper.fill

-- A line server that answers "N line" (N: the connection's number in the process), "count" with
-- how many connections it has accepted, and closes on "quit".
local BACKEND = [[
  local accepted = 0
  return { handle = function(conn)
    accepted = accepted + 1
    local n = accepted
    while true do
      local line = conn:receive("*l")
      if not line or line == "quit" then return end
      conn:send(line == "count" and tostring(accepted) or n .. " " .. line, "\n")
    end
  end }
]]

-- Runs RUN_PRELUDE .. source (with ${NAME}s filled) with `luasock run`; returns the decoded
-- report lines, requiring exit 0.
local function run(source, vars)
  return helper.run_reports(fill(source, vars))
end

-- A client script's helper: one request on conn, its answer.
local ASK = [[
  local function ask(conn, line)
    assert(conn:send(line, "\n"))
    return assert(conn:receive("*l"))
  end
]]

describe("conn:setkeepalive and luasock.connect's pools", function()
  after_each(helper.cleanup)

  it("hands the parked connection back: one connection serves five requests", function()
    local server = helper.start(helper.handler(BACKEND))
    local reports = run(ASK .. [[
      for i = 1, 5 do
        local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
        report(stdout, ask(conn, "r" .. i), conn:reused())
        assert(conn:setkeepalive(10))
      end
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      report(stdout, ask(conn, "count"))
    ]], { PORT = server.port })
    for i = 1, 5 do
      assert.same(table.pack("1 r" .. i, i - 1), reports[i])
    end
    assert.same(table.pack("1"), reports[6], "the server accepted more than one connection")
    server:stop()
  end)

  it("keeps a parked connection open after the coroutine that parked it has ended", function()
    local server = helper.start(helper.handler(BACKEND))
    local reports = run(ASK .. [[
      luasock.spawn(function()
        local conn = assert(luasock.connect("127.0.0.1", ${PORT}, { pool = "kept" }))
        ask(conn, "first")
        assert(conn:setkeepalive(10))
      end):join()
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}, { pool = "kept" }))
      report(stdout, conn:reused(), ask(conn, "second"))
    ]], { PORT = server.port })
    assert.same(table.pack(1, "1 second"), reports[1])
    server:stop()
  end)

  it("drops a parked connection whose peer closed, and one whose idle time is up", function()
    local server = helper.start(helper.handler(BACKEND))
    local reports = run(ASK .. [[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      conn:send("quit\n")              -- the server closes it while it is parked
      assert(conn:setkeepalive(10))
      luasock.sleep(0.3)
      conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      report(stdout, conn:reused(), ask(conn, "after close"))
      assert(conn:setkeepalive(0.2))
      luasock.sleep(0.5)
      conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      report(stdout, conn:reused(), ask(conn, "after idle"))
    ]], { PORT = server.port })
    assert.same(table.pack(0, "2 after close"), reports[1])
    assert.same(table.pack(0, "3 after idle"), reports[2])
    server:stop()
  end)

  it("keeps at most `size` connections per pool, closing the oldest", function()
    local server = helper.start(helper.handler(BACKEND))
    local reports = run(ASK .. [[
      local conns = {}
      for i = 1, 3 do
        conns[i] = assert(luasock.connect("127.0.0.1", ${PORT}, { pool = "small" }))
        ask(conns[i], "hello")
      end
      for i = 1, 3 do assert(conns[i]:setkeepalive(10, 2)) end
      local answers = {}
      for i = 1, 3 do
        local conn = assert(luasock.connect("127.0.0.1", ${PORT}, { pool = "small" }))
        answers[i] = ask(conn, "again") .. " reused " .. conn:reused()
      end
      report(stdout, table.unpack(answers))
    ]], { PORT = server.port })
    -- Newest first: connections 3 and 2 were kept, 1 was closed; the third connect is new.
    assert.same(table.pack("3 again reused 1", "2 again reused 1", "4 again reused 0"), reports[1])
    server:stop()
  end)

  it("refuses what cannot be reused: unread input, an accepted connection", function()
    local server = helper.start(helper.handler(BACKEND))
    local reports = run(ASK .. [[
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
      conn:send("one\ntwo\n")
      conn:receive("*l")
      luasock.sleep(0.1)
      conn:receiveany(1)              -- the rest of the second answer stays buffered
      report(stdout, conn:setkeepalive())
    ]], { PORT = server.port })
    assert.same(table.pack(nil, "unread data in buffer"), reports[1])
    server:stop()
    local echo = helper.start(helper.handler([[
      return { handle = function(conn) report(conn, conn:setkeepalive()) end }
    ]]))
    local client = echo:connect()
    assert.same(table.pack(nil, "not a connection made by luasock.connect"),
      helper.read_report(client))
    echo:stop()
  end)

  it("keeps TLS connections in pools of their own, reused without a new handshake", function()
    local dir = helper.dir()
    assert(os.execute("scripts/devcert " .. helper.shell_quote(dir) .. " >/dev/null"))
    local server = helper.start(helper.handler(fill([[
      local accepted = 0
      return { tls = { cert = "${DIR}/server.pem", key = "${DIR}/server.key" },
        handle = function(conn)
          accepted = accepted + 1
          local n = accepted
          while true do
            local line = conn:receive("*l")
            if not line then return end
            conn:send(n .. " " .. line .. " " .. conn:tls().version, "\n")
          end
        end }
    ]], { DIR = dir })), { listen = "tls:127.0.0.1:0" })
    local reports = run(ASK .. [[
      local tls = { ca = "${DIR}/ca.pem", server_name = "localhost" }
      for i = 1, 3 do
        local conn = assert(luasock.connect("127.0.0.1", ${PORT}, { tls = tls }))
        report(stdout, ask(conn, "t" .. i), conn:reused(), conn:tls() ~= nil)
        assert(conn:setkeepalive(10))
      end
      -- The same host and port without TLS finds no connection in the TLS pool.
      local plain = assert(luasock.connect("127.0.0.1", ${PORT}, { timeout = 1 }))
      report(stdout, plain:reused(), plain:tls() == nil)
    ]], { PORT = server.port, DIR = dir })
    for i = 1, 3 do
      assert.same(table.pack("1 t" .. i .. " TLSv1.3", i - 1, true), reports[i])
    end
    assert.same(table.pack(0, true), reports[4])
    server:stop()
  end)
end)
