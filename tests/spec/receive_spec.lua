-- receive_spec.lua -- conn:receive, conn:receiveany and conn:receiveuntil against a real server.
--
-- Each test runs a tiny handler that performs reads and sends back what each returned with
-- `report` (one quoted line per call); the test asserts on those values.
local socket = require "socket"
local helper = require "helper"

-- Starts a server whose script is PRELUDE .. source.
local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

-- Sends `data` in several packets, `pause` seconds apart, so reads see it in pieces.
local function send_pieces(client, pieces, pause)
  client:setoption("tcp-nodelay", true)
  for _, piece in ipairs(pieces) do
    assert(client:send(piece))
    socket.sleep(pause or 0.02)
  end
end

-- Reads the next report and asserts it holds exactly the values in `expected` (a packed table).
local function expect(client, ...)
  assert.same(table.pack(...), helper.read_report(client))
end

describe("conn:receive line patterns", function()
  after_each(helper.cleanup)

  it("reads lines with '*l', 'l' and the default, LF and CRLF, keeping stray \\r", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive("*l"))
        report(conn, conn:receive("l"))
        report(conn, conn:receive())
        report(conn, conn:receive())
        report(conn, conn:receive())
        report(conn, conn:receive())
        report(conn, conn:receive())
      end }]])
    local client = server:connect()
    assert(client:send("one\ntwo\r\nthree\na\rb\r\r\n\rc\n\r\n\n"))
    expect(client, "one")
    expect(client, "two")
    expect(client, "three")
    expect(client, "a\rb\r")
    expect(client, "\rc")
    expect(client, "")
    expect(client, "")
    client:close()
    server:stop()
  end)

  it("reads a line arriving one byte at a time", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive())
        report(conn, conn:receiveuntil("\r\n\r\n"))
      end }]])
    local client = server:connect()
    local bytes = {}
    for c in ("hello world\r\nhead: 1\r\n\r\n"):gmatch(".") do bytes[#bytes + 1] = c end
    send_pieces(client, bytes, 0.003)
    expect(client, "hello world")
    expect(client, "head: 1")
    client:close()
    server:stop()
  end)
end)

describe("conn:receive(N)", function()
  after_each(helper.cleanup)

  it("returns exactly N bytes, waiting for them across packets; 0 gives ''", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive(5))
        report(conn, conn:receive(0))
        report(conn, conn:receive(6))
        report(conn, conn:receive(3))
      end }]])
    local client = server:connect()
    send_pieces(client, { "hel", "loworl", "d!\n\0", "z" })
    expect(client, "hello")
    expect(client, "")
    expect(client, "world!")
    expect(client, "\n\0z")
    client:close()
    server:stop()
  end)
end)

describe("conn:receive('*a')", function()
  after_each(helper.cleanup)

  local source = [[
    return { handle = function(conn)
      local pattern = conn:receive()
      local data, err, partial = conn:receive(pattern)
      report(conn, data and #data, err, partial)
      report(conn, data)
    end }]]

  for _, pattern in ipairs { "*a", "a" } do
    it("with '" .. pattern .. "' reads everything until the peer closes its side", function()
      local server = serve(source)
      local client = server:connect()
      local data = "x\ny\r\n\0z" .. string.rep("0123456789abcdef", 8192)
      assert(client:send(pattern .. "\n"))
      assert(client:send(data))
      assert(client:shutdown("send"))
      expect(client, #data, nil, nil)
      expect(client, data)
      client:close()
      server:stop()
    end)
  end

  it("returns nil, 'too large' beyond max_all and closes the connection", function()
    local server = serve([[
      return { max_all = 1024, handle = function(conn)
        local data, err, partial = conn:receive("*a")
        luasock.log("info", "result", q(data), q(err), type(partial))
      end }]])
    local client = server:connect()
    assert(client:send(string.rep("z", 4096)))
    server:wait_log('result nil "too large" string')
    local _, err = helper.read_all(client)
    assert.is_truthy(err == "closed" or err:find("reset"), "unexpected error " .. err)
    client:close()
    server:stop()
  end)

  it("accepts max_all bytes arriving in pieces and refuses max_all + 1, the extra byte alone",
    function()
    local server = serve([[
      return { max_all = 1024, handle = function(conn)
        local data, err = conn:receive("*a")
        luasock.log("info", "result", q(data and #data), q(err))
      end }]])
    local exact = server:connect()
    send_pieces(exact, { string.rep("a", 1000), string.rep("b", 24) })
    assert(exact:shutdown("send"))
    server:wait_log("result 1024 nil")
    local over = server:connect()
    send_pieces(over, { string.rep("a", 1000), string.rep("b", 24), "c" })
    server:wait_log('result nil "too large"')
    local data, err = helper.read_all(over)
    assert.equal("", data)
    assert.is_truthy(err == "closed" or err:find("reset"), "unexpected error " .. err)
    assert.equal(1, server:count_log("result 1024 nil"))
    exact:close()
    over:close()
    server:stop()
  end)

  it("accepts exactly max_all bytes", function()
    local server = serve([[
      return { max_all = 1024, handle = function(conn)
        local data, err = conn:receive("*a")
        report(conn, data and #data, err)
      end }]])
    local client = server:connect()
    assert(client:send(string.rep("z", 1024)))
    assert(client:shutdown("send"))
    expect(client, 1024, nil)
    client:close()
    server:stop()
  end)
end)

describe("conn:receiveany", function()
  after_each(helper.cleanup)

  it("returns at least 1 and at most max bytes of what has arrived", function()
    local server = serve([[
      return { handle = function(conn)
        local got, sizes = {}, {}
        while #table.concat(got) < 16 do
          local data, err = conn:receiveany(4)
          if not data then report(conn, nil, err) return end
          got[#got + 1], sizes[#sizes + 1] = data, #data
        end
        report(conn, table.concat(got), math.min(table.unpack(sizes)),
          math.max(table.unpack(sizes)))
      end }]])
    local client = server:connect()
    assert(client:send("0123456789abcdef"))
    local result = helper.read_report(client)
    assert.equal("0123456789abcdef", result[1])
    assert.is_true(result[2] >= 1, "a chunk was empty")
    assert.is_true(result[3] <= 4, "a chunk was longer than max")
    client:close()
    server:stop()
  end)

  it("defaults to at most 65536 bytes and waits when nothing has arrived", function()
    local server = serve([[
      return { handle = function(conn)
        conn:send("ready\n")
        local first = conn:receiveany()
        report(conn, #first)
        local total = #first
        while total < 200000 do
          local data, err = conn:receiveany()
          if not data then report(conn, nil, err) return end
          if #data > 65536 then report(conn, "too long", #data) return end
          total = total + #data
        end
        report(conn, total)
        report(conn, conn:receiveany(10))
      end }]])
    local client = server:connect()
    assert.equal("ready", client:receive())
    assert(client:send(string.rep("a", 100)))
    expect(client, 100)
    assert(client:send(string.rep("b", 200000 - 100)))
    expect(client, 200000)
    assert(client:shutdown("send"))
    expect(client, nil, "closed", "")
    client:close()
    server:stop()
  end)
end)

describe("conn:receiveuntil", function()
  after_each(helper.cleanup)

  it("finds a delimiter whose start repeats inside the data", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receiveuntil("\r\n\r\n"))
        report(conn, conn:receiveuntil("aab"))
        report(conn, conn:receiveuntil("abcabd"))
        report(conn, conn:receiveuntil("||"))
        report(conn, conn:receiveuntil("||"))
        report(conn, conn:receive())
      end }]])
    local client = server:connect()
    assert(client:send("a\r\n\rb\r\n\r\naaababcabcabd||rest||tail\n"))
    expect(client, "a\r\n\rb")
    expect(client, "a")
    expect(client, "abc")
    expect(client, "")
    expect(client, "rest")
    expect(client, "tail")
    client:close()
    server:stop()
  end)

  it("finds a delimiter split across packets", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receiveuntil("\r\n\r\n"))
        report(conn, conn:receiveuntil("\r\n\r\n"))
        report(conn, conn:receiveuntil("\r\n\r\n"))
      end }]])
    local client = server:connect()
    send_pieces(client, { "first\r\n", "\r", "\nsecond\r\n\r", "\n", "a\r\n\rb\r", "\n\r\n" })
    expect(client, "first")
    expect(client, "second")
    expect(client, "a\r\n\rb")
    client:close()
    server:stop()
  end)
end)

describe("conn:receiveuntil with overlapping delimiters split across packets", function()
  after_each(helper.cleanup)

  -- Streams in which a partial match of the delimiter fails and the real match begins inside
  -- it (so the search must resume before the end of what it already scanned), with the record
  -- each must give.
  local CASES = {
    { "aab", "aaaab", "aa" },
    { "abcabd", "abcabcabd", "abc" },
    { "\r\n\r\n", "x\r\n\r\r\n\r\n", "x\r\n\r" },
    { "||", "a|b||", "a|b" },
    { "aXaXb", "aXaXaXb", "aX" },
  }

  for _, case in ipairs(CASES) do
    local delimiter, stream, record = case[1], case[2], case[3]
    it(string.format("finds %q in %q split in two at every byte, and one byte at a time",
      delimiter, stream), function()
      local server = serve(string.format([[
        return { handle = function(conn)
          while report(conn, conn:receiveuntil(%q)) do end
        end }]], delimiter))
      local client = server:connect()
      for at = 1, #stream - 1 do
        send_pieces(client, { stream:sub(1, at), stream:sub(at + 1) })
        expect(client, record)
      end
      local bytes = {}
      for byte in stream:gmatch(".") do bytes[#bytes + 1] = byte end
      send_pieces(client, bytes, 0.003)
      expect(client, record)
      -- Nothing of the stream was left behind: the next record starts clean.
      assert(client:send("next" .. delimiter))
      expect(client, "next")
      client:close()
      server:stop()
    end)
  end
end)

describe("mixed read patterns on one connection", function()
  after_each(helper.cleanup)

  it("neither lose nor reorder bytes", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive())
        report(conn, conn:receive(5))
        report(conn, conn:receiveuntil("||"))
        report(conn, conn:receive("*l"))
        report(conn, conn:receiveany(3))
        report(conn, conn:receive(2))
        report(conn, conn:receive("*a"))
      end }]])
    local client = server:connect()
    send_pieces(client, { "line1\nABC", "DEfoo|", "|bar\r", "\nxyz", "12", "rest\n", "end" })
    assert(client:shutdown("send"))
    expect(client, "line1")
    expect(client, "ABCDE")
    expect(client, "foo")
    expect(client, "bar")
    local any = helper.read_report(client)[1]
    assert.is_true(#any >= 1 and #any <= 3 and ("xyz"):sub(1, #any) == any,
      "receiveany(3) returned " .. tostring(any))
    local rest = ("xyz12rest\nend"):sub(#any + 1)
    expect(client, rest:sub(1, 2))
    expect(client, rest:sub(3))
    client:close()
    server:stop()
  end)
end)

describe("the prefix argument", function()
  after_each(helper.cleanup)

  it("is prepended to lines, counted reads and '*a'", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, conn:receive("*l", "pre-"))
        report(conn, conn:receive(3, "X"))
        report(conn, conn:receive("*a", "P"))
      end }]])
    local client = server:connect()
    assert(client:send("line\nabcrest\n"))
    assert(client:shutdown("send"))
    expect(client, "pre-line")
    expect(client, "Xabc")
    expect(client, "Prest\n")
    client:close()
    server:stop()
  end)
end)

describe("partial results", function()
  after_each(helper.cleanup)

  it("on close: nil, 'closed', the bytes so far (line, N, until)", function()
    local server = serve([[
      return { handle = function(conn)
        local kind = conn:receive()
        if kind == "line" then report(conn, conn:receive())
        elseif kind == "count" then report(conn, conn:receive(10))
        else report(conn, conn:receiveuntil("--")) end
      end }]])
    for _, kind in ipairs { "line", "count", "until" } do
      local client = server:connect()
      assert(client:send(kind .. "\nabc"))
      assert(client:shutdown("send"))
      expect(client, nil, "closed", "abc")
      client:close()
    end
    server:stop()
  end)

  it("on close by a client that closes completely", function()
    local server = serve([[
      return { handle = function(conn)
        local data, err, partial = conn:receive()
        luasock.log("info", "result", q(data), q(err), q(partial))
      end }]])
    local client = server:connect()
    assert(client:send("abc"))
    client:close()
    server:wait_log('result nil "closed" "abc"')
    server:stop()
  end)

  it("on timeout: nil, 'timeout', the bytes so far; the connection stays usable", function()
    local server = serve([[
      return { handle = function(conn)
        conn:settimeout(0.2)
        local t0 = luasock.now()
        local data, err, partial = conn:receive()
        report(conn, data, err, partial, luasock.now() - t0)
        report(conn, conn:receive())
        report(conn, conn:receive(5))
        report(conn, conn:receive(3))
      end }]])
    local client = server:connect()
    assert(client:send("abc"))
    local result = helper.read_report(client)
    assert.same({ nil, "timeout", "abc" }, { result[1], result[2], result[3] })
    assert.is_true(result[4] >= 0.15 and result[4] < 2, "timed out after " .. result[4] .. " s")
    assert(client:send("def\nxy"))
    expect(client, "def")
    expect(client, nil, "timeout", "xy")
    assert(client:send("123"))
    expect(client, "123")
    client:close()
    server:stop()
  end)
end)

describe("max_line", function()
  after_each(helper.cleanup)

  local lines = [[
    return { max_line = 16, handle = function(conn)
      while report(conn, conn:receive()) do end
    end }]]
  local records = [[
    return { max_line = 16, handle = function(conn)
      while report(conn, conn:receiveuntil("||")) do end
    end }]]

  it("gives 'line too long' with the first max_line bytes, then reads the next line", function()
    local server = serve(lines)
    local client = server:connect()
    assert(client:send("short\n" .. string.rep("x", 40) .. "\nnext\n"))
    expect(client, "short")
    expect(client, nil, "line too long", string.rep("x", 16))
    expect(client, "next")
    client:close()
    server:stop()
  end)

  it("allows exactly max_line bytes before LF or CRLF", function()
    local server = serve(lines)
    local client = server:connect()
    local exact = string.rep("e", 16)
    assert(client:send(exact .. "\n" .. exact .. "\r\n" .. exact .. "!\nok\n"))
    expect(client, exact)
    expect(client, exact)
    expect(client, nil, "line too long", exact)
    expect(client, "ok")
    client:close()
    server:stop()
  end)

  it("decides max_line - 1, max_line and max_line + 1 alike when \\r\\n is split across packets",
    function()
    local server = serve(lines)
    local client = server:connect()
    for _, size in ipairs { 15, 16, 17 } do
      local body = string.rep(string.char(96 + size - 14), size)
      -- "\r" and "\n" apart, then the body and "\r\n" apart
      for _, pieces in ipairs { { body .. "\r", "\n" }, { body, "\r\n" } } do
        send_pieces(client, pieces)
        if size <= 16 then
          expect(client, body)
        else
          expect(client, nil, "line too long", body:sub(1, 16))
        end
        -- the next line starts clean: the rest of a long one was skipped, "\n" included
        assert(client:send("ok\n"))
        expect(client, "ok")
      end
    end
    -- A "\r" as the 17th byte that is not followed by "\n" is data: the line is too long.
    send_pieces(client, { string.rep("r", 16) .. "\r", "x\n" })
    expect(client, nil, "line too long", string.rep("r", 16))
    assert(client:send("ok\n"))
    expect(client, "ok")
    client:close()
    server:stop()
  end)

  it("skips the rest of a long line that arrives after the error", function()
    local server = serve(lines)
    local client = server:connect()
    assert(client:send(string.rep("x", 20)))
    expect(client, nil, "line too long", string.rep("x", 16))
    send_pieces(client, { string.rep("x", 30), string.rep("x", 100) .. "\nnext\n" })
    expect(client, "next")
    client:close()
    server:stop()
  end)

  it("applies to receiveuntil, with the delimiter split around the skipped part", function()
    local server = serve(records)
    local client = server:connect()
    assert(client:send(string.rep("y", 40) .. "|"))
    expect(client, nil, "line too long", string.rep("y", 16))
    assert(client:send("|ok||"))
    expect(client, "ok")
    client:close()
    server:stop()
  end)
end)

describe("read misuse", function()
  after_each(helper.cleanup)

  it("raises for an invalid pattern or argument", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, (pcall(conn.receive, conn, "*x")))
        report(conn, (pcall(conn.receive, conn, -1)))
        report(conn, (pcall(conn.receive, conn, {})))
        report(conn, (pcall(conn.receiveuntil, conn, {})))
        report(conn, (pcall(conn.receiveany, conn, "many")))
        report(conn, conn:receive())
      end }]])
    local client = server:connect()
    for _ = 1, 5 do expect(client, false) end
    assert(client:send("still fine\n"))
    expect(client, "still fine")
    client:close()
    server:stop()
  end)

  it("raises when a second coroutine reads while the first is waiting", function()
    local server = serve([[
      return { handle = function(conn)
        luasock.spawn(function()
          local ok, err = pcall(conn.receive, conn)
          luasock.log("info", "second reader", tostring(ok), tostring(err))
        end)
        report(conn, conn:receive())
      end }]])
    local client = server:connect()
    server:wait_log("second reader false")
    assert(client:send("first\n"))
    expect(client, "first")
    client:close()
    server:stop()
  end)
end)
