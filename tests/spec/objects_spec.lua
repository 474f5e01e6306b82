-- objects_spec.lua -- MessagePack objects: conn:send_object, conn:receive_object,
-- luasock.encode and luasock.decode. Round trips of every type (math.type kept), values split
-- over many segments or packed into one, malformed and hostile input (only that connection is
-- closed, at once), encoding errors (nothing queued) and a receive timeout in mid-value.
local socket = require "socket"
local helper = require "helper"

-- Lua source of `dump(v)`: a canonical one-line text of a value, shared by the handlers and the
-- client so that both sides describe values the same way. Numbers keep their math.type and
-- floats are exact (%a, so -0.0 differs from 0.0); table keys are sorted by their dump. NULL is
-- luasock.null in the handler and a stand-in for it in the client; both dump as "null".
local DUMP_SOURCE = [[
  local NULL = package.loaded.luasock and package.loaded.luasock.null or {}
  local function dump(v)
    local kind = type(v)
    if v == NULL then
      return "null"
    elseif kind == "number" then
      if math.type(v) == "integer" then return "int:" .. string.format("%d", v) end
      return "float:" .. string.format("%a", v)
    elseif kind == "string" then
      return "str:" .. string.format("%q", v):gsub("\n", "n")
    elseif kind ~= "table" then
      return tostring(v)
    end
    local items = {}
    for key, value in pairs(v) do items[#items + 1] = dump(key) .. "=" .. dump(value) end
    table.sort(items)
    return "{" .. table.concat(items, ",") .. "}"
  end
]]
local dump, NULL = load(DUMP_SOURCE .. " return dump, NULL")()

-- The server of every test. The first line of a connection picks its mode:
--   echo: reports "ready", id; then for each value received reports "value", dump(value), err;
--         on an error it logs "conn N object error: ERR" and ends.
--   make: for each line EXPR, reports #luasock.encode(EXPR) (or nil, err), then send_object's
--         bytes and what send_object returned.
--   timeout: like echo, but the first receive_object times out after 0.2 s (reported as
--         "timeout") and later ones wait 5 s.
--   decode, encode, send: run the checks of luasock.decode, luasock.encode and send_object
--         (errors included) on fixed values, reporting each result.
local SERVER = DUMP_SOURCE .. [[
  local function echo(conn, first_timeout)
    report(conn, "ready", conn:id())
    if first_timeout then conn:settimeout(first_timeout) end
    while true do
      local value, err = conn:receive_object()
      if err == "timeout" and first_timeout then
        report(conn, "timeout")
        conn:settimeout(5)
      elseif err then
        luasock.log("info", tostring(conn) .. " object error: " .. err)
        return
      else
        report(conn, "value", dump(value), err)
      end
    end
  end

  local function make(conn)
    while true do
      local line = conn:receive()
      if not line then return end
      local value = load("return " .. line)()
      local bytes, err = luasock.encode(value)
      report(conn, bytes and #bytes, err)
      if bytes then report(conn, conn:send_object(value)) end
    end
  end

  local function nested(depth)
    local top = {}
    local inner = top
    for _ = 2, depth do inner[1] = {} inner = inner[1] end
    return top
  end

  local cycle = {}
  cycle.self = { cycle }
  local shared = { 1 }

  local function decode_checks(conn)
    local inputs = {
      "", "\x01\x02", "\xc0", "\xc1", "\xd4\x01\x00", "\x92\x01", "\xdd\xff\xff\xff\xff",
      string.rep("\x91", 101) .. "\xc0", string.rep("\x91", 100) .. "\xc0",
      "\xc5\x07\xd0" .. string.rep("x", 2000),
    }
    for _, bytes in ipairs(inputs) do
      local value, err = luasock.decode(bytes)
      report(conn, dump(value), err)
    end
  end

  local function encode_checks(conn)
    local values = {
      nil, true, false, 0, -1, 1.5, 0.0, "abc", "\x80\xff", {}, { 1, 2 }, { shared, shared },
      print, cycle, nested(101), string.rep("x", 2000), coroutine.create(print), conn,
    }
    for i = 1, 18 do report(conn, luasock.encode(values[i])) end
  end

  local function send_checks(conn)
    local values = {
      function() end, { "a", "b", print }, cycle, nested(101), string.rep("y", 2000),
      coroutine.create(print), conn, nested(100),
    }
    for _, value in ipairs(values) do report(conn, conn:send_object(value)) end
    report(conn, "still working")
    conn:send_object(42)
  end

  local modes = {
    echo = echo, make = make, decode = decode_checks, encode = encode_checks, send = send_checks,
    timeout = function(conn) echo(conn, 0.2) end,
  }

  return { max_object = 1024, handle = function(conn)
    modes[conn:receive()](conn)
  end }]]

local function serve()
  return helper.start(helper.handler(SERVER))
end

-- Connects in `mode`; for echo also reads the "ready" report and returns the id.
local function open(server, mode)
  local client = server:connect()
  assert(client:send(mode .. "\n"))
  if mode == "echo" then
    local ready = helper.read_report(client)
    assert.equal("ready", ready[1])
    return client, ready[2]
  end
  return client
end

-- Sends MessagePack bytes to an echo connection and returns the dump of the value it got.
local function echo_bytes(client, bytes)
  assert(client:send(bytes))
  local result = helper.read_report(client)
  assert.same(table.pack("value", result[2], nil), result)
  return result[2]
end

-- Asks a make connection for the bytes of the value of EXPR, sent by send_object.
local function make_bytes(client, expr)
  assert(client:send(expr .. "\n"))
  local size = helper.read_report(client)
  assert.is_number(size[1], "encode(" .. expr .. ") failed: " .. tostring(size[2]))
  local bytes = assert(client:receive(size[1]))
  assert.same(table.pack(size[1]), helper.read_report(client))
  return bytes
end

-- Lua expressions whose values must survive encode -> send_object -> receive_object unchanged.
local ROUND_TRIP = {
  "nil", "true", "false", "0", "-1", "1", "127", "128", "-32", "-33", "255", "256", "65535",
  "65536", "-2147483648", "4294967296", "math.maxinteger", "math.mininteger",
  "1.5", "0.0", "-0.0", "1.0", "-2.75", "math.pi", "1e308", "-1e308", "2.2250738585072014e-308",
  "4.9e-324", "math.huge", "-math.huge", "2^63", "{ 0, 0.0, 1, 1.0 }",
  '""', '"hello"', '"h\\195\\169llo, w\\195\\182rld"', '"\\0"', '"a\\0b\\0\\0"',
  '"\\128\\255\\192\\193"', "string.rep('z', 300)",
  "(function() local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end "
    .. "return table.concat(t) end)()",
  "{}", "{ {} }", "{ 1, 2, 3 }", "{ 1, { 2, { 3, { 4, {} } } } }",
  "{ a = 1, b = { c = { d = 'e' } } }", "{ 1, nil, 3 }", "{ nil, 2 }", "{ [0] = 'zero', 'one' }",
  "{ [-1] = 'minus one' }", "{ ['1'] = 'string key', [1] = 'integer key' }",
  "{ [true] = 'yes', [false] = 'no', [2.5] = 'float key' }",
  "{ list = { 1, 'two', 3.0, { four = 4 } }, empty = {}, flag = false }",
  "(function() local t = {} for i = 1, 100 do t[i] = i * i end return t end)()",
}

describe("objects round trip", function()
  after_each(helper.cleanup)

  it("keeps every type and math.type through encode, send_object and receive_object", function()
    local server = serve()
    local maker = open(server, "make")
    local echo = open(server, "echo")
    for _, expr in ipairs(ROUND_TRIP) do
      local want = dump(load("return " .. expr)())
      local bytes = make_bytes(maker, expr)
      assert.equal(want, echo_bytes(echo, bytes), "round trip of " .. expr)
    end
    maker:close()
    echo:close()
    server:stop()
  end)

  -- Hand-written MessagePack, so the decoder is checked against the format, not the encoder.
  local HAND_WRITTEN = {
    { "\xc0", nil }, { "\xc2", false }, { "\xc3", true },
    { "\x00", 0 }, { "\x7f", 127 }, { "\xff", -1 }, { "\xe0", -32 },
    { "\xcc\xff", 255 }, { "\xcd\x01\x00", 256 }, { "\xd0\x80", -128 },
    { "\xd1\x80\x00", -32768 }, { "\xce\xff\xff\xff\xff", 4294967295 },
    { "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", math.mininteger },
    { "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", math.maxinteger },
    { "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 2.0 ^ 64 },
    { "\xca\x3f\xc0\x00\x00", 1.5 }, { "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 1.5 },
    { "\xcb\x00\x00\x00\x00\x00\x00\x00\x00", 0.0 },
    { "\xcb\x80\x00\x00\x00\x00\x00\x00\x00", -0.0 },
    { "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 1.0 },
    { "\xa0", "" }, { "\xc4\x00", "" }, { "\xa3abc", "abc" },
    { "\xd9\x03a\x00b", "a\0b" }, { "\xc4\x04\x00\x80\xfe\xff", "\0\x80\xfe\xff" },
    { "\x90", {} }, { "\x80", {} }, { "\x93\x01\xc0\x03", { 1, NULL, 3 } },
    { "\x81\xa1k\xc0", { k = NULL } },
    -- ext values come as luasock.ext(type, data), whose slots are the type and the data
    { "\xd4\x01\x00", { 1, "\0" } }, { "\x92\x01\xc7\x01\xfb\x00", { 1, { -5, "\0" } } },
    { "\xd6\xff\x00\x00\x00\x01", { -1, "\0\0\0\1" } },
    { "\x82\xa1a\x01\xa1b\x92\x02\xcb\x40\x08\x00\x00\x00\x00\x00\x00", { a = 1, b = { 2, 3.0 } } },
    { "\x81\x01\xa3one", { "one" } },
  }

  it("decodes hand-written MessagePack of every type", function()
    local server = serve()
    local echo = open(server, "echo")
    for i, case in ipairs(HAND_WRITTEN) do
      local hex = case[1]:gsub(".", function(c) return string.format("%02x ", c:byte()) end)
      assert.equal(dump(case[2]), echo_bytes(echo, case[1]), "case " .. i .. ": " .. hex)
    end
    echo:close()
    server:stop()
  end)

  it("accepts a value of just under max_object and nesting of exactly 100", function()
    local server = serve()
    local echo = open(server, "echo")
    local big = string.rep("b", 1000)
    assert.equal(dump(big), echo_bytes(echo, "\xc5\x03\xe8" .. big))
    local deep = string.rep("\x91", 100) .. "\x2a"
    local want = string.rep("{int:1=", 100) .. "int:42" .. string.rep("}", 100)
    assert.equal(want, echo_bytes(echo, deep))
    local deep_maps = string.rep("\x81\xa1k", 100) .. "\x2a"
    local want_maps = string.rep('{str:"k"=', 100) .. "int:42" .. string.rep("}", 100)
    assert.equal(want_maps, echo_bytes(echo, deep_maps))
    echo:close()
    server:stop()
  end)

  it("passes str values and keys that are not UTF-8 through as their bytes", function()
    local server = serve()
    local echo = open(server, "echo")
    -- a lone continuation byte, an overlong "/", a surrogate, a code point above U+10FFFF, a
    -- truncated sequence, and 0xff
    local bad = { "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xe2\x82", "\xff" }
    for _, bytes in ipairs(bad) do
      local str = string.char(0xa0 + #bytes) .. bytes
      assert.equal(dump(bytes), echo_bytes(echo, str))
      assert.equal(dump({ [bytes] = bytes }), echo_bytes(echo, "\x81" .. str .. str))
    end
    -- and they go back out as bin, which a strict UTF-8 decoder would otherwise refuse
    local maker = open(server, "make")
    assert.equal("\xc4\x03\xed\xa0\x80", make_bytes(maker, '"\\237\\160\\128"'))
    maker:close()
    echo:close()
    server:stop()
  end)
end)

describe("objects on the stream", function()
  after_each(helper.cleanup)

  it("reassembles a value sent one byte per segment", function()
    local server = serve()
    local maker = open(server, "make")
    local expr = "{ name = 'a string of some length', list = { 1, 2.5, -3, { x = true } } }"
    local bytes = make_bytes(maker, expr)
    local echo = open(server, "echo")
    assert(echo:setoption("tcp-nodelay", true))
    for i = 1, #bytes - 1 do
      assert(echo:send(bytes:sub(i, i)))
      socket.sleep(0.003)
    end
    echo:settimeout(0.3)
    local early, err = echo:receive()
    assert.is_nil(early, "a reply came before the last byte: " .. tostring(early))
    assert.equal("timeout", err)
    echo:settimeout(helper.IO_TIMEOUT)
    assert.equal(dump(load("return " .. expr)()), echo_bytes(echo, bytes:sub(-1)))
    maker:close()
    echo:close()
    server:stop()
  end)

  it("takes two values (and a nil among them) out of one segment", function()
    local server = serve()
    local echo = open(server, "echo")
    assert(echo:send("\x92\x01\x02\xc0\xa2hi"))
    assert.same(table.pack("value", "{int:1=int:1,int:2=int:2}", nil), helper.read_report(echo))
    assert.same(table.pack("value", "nil", nil), helper.read_report(echo))
    assert.same(table.pack("value", 'str:"hi"', nil), helper.read_report(echo))
    echo:close()
    server:stop()
  end)

  it("keeps a partial value buffered when receive_object times out", function()
    local server = serve()
    local bytes = "\x83\xa1a\x01\xa1b\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xa1c\x92\xc3\xa0"
    local half = #bytes // 2
    local client = server:connect()
    -- The first half goes with the mode line, so it is there before the 0.2 s timeout starts.
    assert(client:send("timeout\n" .. bytes:sub(1, half)))
    assert.equal("ready", helper.read_report(client)[1])
    assert.same(table.pack("timeout"), helper.read_report(client))
    assert(client:send(bytes:sub(half + 1)))
    local want = dump({ a = 1, b = 1.5, c = { true, "" } })
    assert.same(table.pack("value", want, nil), helper.read_report(client))
    client:close()
    server:stop()
  end)
end)

describe("bad input to receive_object", function()
  after_each(helper.cleanup)

  -- Each case: bytes, the error the handler must get, whether the client closes after sending.
  local CASES = {
    { "byte 0xc1", "\xc1", "malformed" },
    { "an ext32 header of 4 GiB", "\xc9\xff\xff\xff\xff\x01", "too large" },
    { "an array header of 2^32-1 elements", "\xdd\xff\xff\xff\xff", "too large" },
    { "a map header of 2^32-1 pairs", "\xdf\xff\xff\xff\xff", "too large" },
    { "an array16 header of 2000 elements", "\xdc\x07\xd0", "too large" },
    { "a str32 header of 4 GiB", "\xdb\xff\xff\xff\xff", "too large" },
    { "a bin32 header of 4 GiB", "\xc6\xff\xff\xff\xff", "too large" },
    { "nesting of 101 arrays", string.rep("\x91", 101) .. "\xc0", "nesting too deep" },
    { "nesting of 101 maps", string.rep("\x81\x01", 101) .. "\xc0", "nesting too deep" },
    { "a map32 header of 2^32-1 pairs inside 99 arrays",
      string.rep("\x91", 99) .. "\xdf\xff\xff\xff\xff", "too large" },
    { "a nil map key", "\x81\xc0\x01", "bad map key" },
    { "a float64 NaN map key", "\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01", "bad map key" },
    { "a float32 NaN map key", "\x81\xca\x7f\xc0\x00\x00\x01", "bad map key" },
    { "a negative NaN map key after a good pair",
      "\x82\xa1k\x01\xcb\xff\xf8\x00\x00\x00\x00\x00\x01\x02", "bad map key" },
    { "a nil map key 50 levels down", string.rep("\x81\xa1k", 50) .. "\x81\xc0\x01",
      "bad map key" },
    { "a 2000-byte bin above max_object", "\xc5\x07\xd0" .. string.rep("x", 2000), "too large" },
    { "truncated input, then the client closes", "\x92\x01\xa5ab", "closed", true },
  }

  for _, case in ipairs(CASES) do
    local what, bytes, want, shut = case[1], case[2], case[3], case[4]
    it("closes only that connection at once on " .. what, function()
      local server = serve()
      local other = open(server, "echo")
      local bad, id = open(server, "echo")
      local started = socket.gettime()
      bad:send(bytes)  -- may fail with a reset when the server closes early
      if shut then bad:shutdown("send") end
      bad:settimeout(3)
      local data, err = helper.read_all(bad)
      local elapsed = socket.gettime() - started
      assert.equal("", data)
      assert.is_truthy(err == "closed" or err:find("reset"), "read ended with " .. err)
      assert.is_true(elapsed < 2, "the connection closed after " .. elapsed .. " s")
      assert.equal(want, server:wait_log("conn " .. id .. " object error: ([^\n]*)"))
      assert.equal("int:7", echo_bytes(other, "\x07"))
      bad:close()
      other:close()
      server:stop()
    end)
  end
end)

describe("luasock.decode, luasock.encode and send_object", function()
  after_each(helper.cleanup)

  -- Reads one report per expected pair and compares its first two values.
  local function expect_reports(client, what, expected)
    for i, want in ipairs(expected) do
      local got = helper.read_report(client)
      assert.same(want, { got[1], got[2] }, what .. " check " .. i)
    end
  end

  it("decode returns the value or nil and the error", function()
    local server = serve()
    local client = open(server, "decode")
    expect_reports(client, "decode", {
      { "nil", "truncated" }, { "nil", "trailing bytes after the value" }, { "nil" },
      { "nil", "malformed" }, { dump({ 1, "\0" }) }, { "nil", "truncated" },
      { "nil", "too large" }, { "nil", "nesting too deep" },
      { string.rep("{int:1=", 100) .. "null" .. string.rep("}", 100) }, { "nil", "too large" },
    })
    client:close()
    server:stop()
  end)

  it("encode returns MessagePack bytes or nil and the error", function()
    local server = serve()
    local client = open(server, "encode")
    expect_reports(client, "encode", {
      { "\xc0" }, { "\xc3" }, { "\xc2" }, { "\x00" }, { "\xff" },
      { "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00" }, { "\xcb\x00\x00\x00\x00\x00\x00\x00\x00" },
      { "\xa3abc" }, { "\xc4\x02\x80\xff" }, { "\x80" }, { "\x92\x01\x02" },
      { "\x92\x91\x01\x91\x01" }, { nil, "cannot encode a function" }, { nil, "cycle in table" },
      { nil, "nesting too deep" }, { nil, "too large" }, { nil, "cannot encode a thread" },
      { nil, "cannot encode a userdata" },
    })
    client:close()
    server:stop()
  end)

  it("send_object returns nil and the error, queues nothing, and the connection works", function()
    local server = serve()
    local client = open(server, "send")
    local errors = {
      "cannot encode a function", "cannot encode a function", "cycle in table",
      "nesting too deep", "too large", "cannot encode a thread", "cannot encode a userdata",
    }
    for i, err in ipairs(errors) do
      assert.same(table.pack(nil, err), helper.read_report(client), "send_object check " .. i)
    end
    assert.equal(string.rep("\x91", 99) .. "\x80", client:receive(100), "100 levels")
    assert.same(table.pack(100), helper.read_report(client), "send_object of 100 levels")
    assert.same(table.pack("still working"), helper.read_report(client))
    assert.equal("\x2a", client:receive(1))
    client:close()
    server:stop()
  end)
end)

describe("max_object_items (issue 13 item 7)", function()
  after_each(helper.cleanup)

  -- Reports, for every value it receives, how many items it has (itself and every array
  -- element, map key and map value in it, at any depth) and the Lua heap it took. "limit N"
  -- first sets the connection's max_object_items; "decode N" reports what luasock.decode says
  -- of an array32 of N empty maps.
  local ITEMS_SERVER = [[
    local function items(v)
      if type(v) ~= "table" then return 1 end
      local n, keys = 1, 0
      for key, value in pairs(v) do n, keys = n + items(key) + items(value), keys + 1 end
      if keys == #v then n = n - keys end -- an array: its indices are no items
      return n
    end
    local function heap()
      collectgarbage()
      collectgarbage()
      return collectgarbage("count") * 1024
    end
    local function maps(n) return "\xdd" .. string.pack(">I4", n) .. string.rep("\x80", n) end
    return { handle = function(conn)
      local command = conn:receive()
      local limit = command:match("^limit (%d+)$")
      local decode = command:match("^decode (%d+)$")
      if limit then assert(conn:setoption("max_object_items", tonumber(limit))) end
      if decode then
        local value, err = luasock.decode(maps(tonumber(decode)))
        return report(conn, value and items(value), err)
      end
      report(conn, "ready", conn:id())
      while true do
        local before = heap()
        local value, err = conn:receive_object()
        if err then
          luasock.log("info", tostring(conn) .. " object error: " .. err)
          return
        end
        report(conn, "value", items(value), heap() - before)
      end
    end }]]

  local TOO_MANY = "too many items (max_object_items)"
  local MiB = 1024 * 1024

  -- An array32 of n empty maps: n + 1 items in 5 + n bytes.
  local function maps(n)
    return "\xdd" .. string.pack(">I4", n) .. string.rep("\x80", n)
  end

  local function open_items(server, command)
    local client = server:connect()
    assert(client:send((command or "objects") .. "\n"))
    local ready = helper.read_report(client)
    assert.equal("ready", ready[1])
    return client, ready[2]
  end

  local function expect_value(client, items)
    local got = helper.read_report(client)
    assert.same({ "value", items }, { got[1], got[2] })
    return got[3]
  end

  it("refuses a MiB of empty maps from its header; the values before it and others are served",
    function()
    local server = helper.start(helper.handler(ITEMS_SERVER))
    local other = open_items(server)
    assert(other:send("\x92\x01\x02"))
    expect_value(other, 3)

    local bad, id = open_items(server)
    local hostile = maps(MiB - 5)
    assert.equal(MiB, #hostile)
    local started = socket.gettime()
    bad:send("\x81\xa1k\x93\x01\x02\x03" .. hostile) -- may fail with a reset when closed early
    expect_value(bad, 6)
    bad:settimeout(3)
    local data, err = helper.read_all(bad)
    assert.equal("", data)
    assert.is_truthy(err == "closed" or err:find("reset"), "read ended with " .. err)
    assert.is_true(socket.gettime() - started < 2, "the connection closed after "
      .. socket.gettime() - started .. " s")
    assert.equal(TOO_MANY, server:wait_log("conn " .. id .. " object error: ([^\n]*)"))
    server:wait_log("conn " .. id .. ": bad object from the peer: " .. helper.literal(TOO_MANY))
    bad:close()

    assert(other:send("\x91\xa2ok"))
    expect_value(other, 2)
    -- A value of exactly max_object_items (100000) is accepted: its cost is bounded.
    assert(other:send(maps(99999)))
    local heap = expect_value(other, 100000)
    assert.is_true(heap < 8 * MiB, "100000 items took " .. heap .. " bytes of heap")
    other:close()
    server:stop()
  end)

  it("is a per-connection option, and luasock.decode keeps to it", function()
    local server = helper.start(helper.handler(ITEMS_SERVER))
    local client, id = open_items(server, "limit 10")
    assert(client:send("\x99" .. string.rep("\x01", 9)))
    expect_value(client, 10)
    assert(client:send("\x9a" .. string.rep("\x01", 10)))
    assert.equal(TOO_MANY, server:wait_log("conn " .. id .. " object error: ([^\n]*)"))
    client:close()
    for n, want in pairs { [99999] = { 100000 }, [100000] = { nil, TOO_MANY },
                           [MiB - 5] = { nil, TOO_MANY } } do
      local decoder = server:connect()
      assert(decoder:send("decode " .. n .. "\n"))
      local got = helper.read_report(decoder)
      assert.same(want, { got[1], got[2] }, "decode of " .. n .. " empty maps")
      decoder:close()
    end
    server:stop()
  end)

  it("must be an integer of at least 1", function()
    for _, bad in ipairs { "0", "1.5", "'10'" } do
      local code, _, err = helper.run { "check", helper.handler("return { max_object_items = "
        .. bad .. ", handle = function() end }") }
      assert.equal(1, code, "max_object_items = " .. bad .. " was accepted")
      assert.matches("'max_object_items' must be an integer of at least 1", err)
    end
  end)
end)
