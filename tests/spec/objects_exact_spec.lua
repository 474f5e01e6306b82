-- objects_exact_spec.lua -- MessagePack that survives the trip (issue 16), from the Lua side: the
-- markers (luasock.array, map, tuple, set), luasock.null, the bytes, uint64 and ext wrappers,
-- luasock.encode and luasock.decode(s, {exact = true}), and receive_object/send_object with
-- exact_objects (the script setting and conn:setoption). Plain mode is as before except that a nil
-- inside an array or map arrives as luasock.null, and ext values are accepted.
local helper = require "helper"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(byte) return string.char(tonumber(byte, 16)) end))
end

-- Runs `source` as a luasock run script whose `hex(s)` and `unhex(h)` are the ones above; returns
-- its reports.
local HEX_SOURCE = [[
  local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
  end
  local function unhex(h)
    return (h:gsub("%x%x", function(byte) return string.char(tonumber(byte, 16)) end))
  end
]]
local function run(source)
  return helper.run_reports(HEX_SOURCE .. source)
end

describe("luasock.encode", function()
  after_each(helper.cleanup)

  it("follows the markers, luasock.null and the wrappers", function()
    local reports = run([[
      local function enc(v) report(stdout, hex(assert(luasock.encode(v)))) end
      enc(luasock.array({}))
      enc(luasock.map({}))
      enc({})
      enc(luasock.map({ "a", "b" }))
      enc(luasock.tuple({ 1, "x" }))
      enc(luasock.set({ k = true }))
      enc({ luasock.null, 1 })
      enc({ k = luasock.null })
      enc(luasock.null)
      enc(luasock.bytes("abc"))
      enc(luasock.uint64("18446744073709551615"))
      enc(luasock.ext(5, "abc"))
      enc(luasock.ext(-1, "\0\0\0\1"))
      enc(luasock.array({ luasock.array({}) }))
      report(stdout, luasock.encode(io.stdout))
    ]])
    local want = {
      "90", "80", "80", "8201a16102a162", "9201a178", "81a16bc3", "92c001", "81a16bc0", "c0",
      "c403616263", "cfffffffffffffffff", "c70305616263", "d6ff00000001", "9190",
    }
    for i, h in ipairs(want) do assert.equal(h, reports[i][1], "value " .. i) end
    assert.same({ nil, "cannot encode a userdata" }, { reports[#want + 1][1], reports[#want + 1][2] })
  end)
end)

describe("luasock.decode", function()
  after_each(helper.cleanup)

  it("exactly, gives values that encode back to the same bytes", function()
    -- One-key maps only: a map's entries come back in the table's order.
    local cases = {
      "90", "80", "9190", "8101a26869", "81a16bc0", "93c0c0c0", "c403616263", "81c4016b01",
      "cfffffffffffffffff", "cf8000000000000000", "cf7fffffffffffffff", "d38000000000000000",
      "cb8000000000000000", "cb7ff0000000000000", "d6ff00000001", "d7ff0000000000000000",
      "c70cff000000000000000000000000", "c70305616263", "d40161", "92a3737472c403737472",
    }
    local reports = run(([[
      for _, h in ipairs({ %s }) do
        local v = assert(luasock.decode(unhex(h), { exact = true }))
        report(stdout, hex(assert(luasock.encode(v))), luasock.kind(v) or type(v))
      end
    ]]):format('"' .. table.concat(cases, '", "') .. '"'))
    local kinds = {
      "array", "map", "array", "map", "map", "array", "bytes", "map", "uint64", "uint64", "number",
      "number", "number", "number", "ext", "ext", "ext", "ext", "ext", "array",
    }
    for i, h in ipairs(cases) do
      assert.same({ h, kinds[i] }, { reports[i][1], reports[i][2] }, "case " .. i)
    end
  end)

  it("plainly, is as before except that nil in arrays and maps is luasock.null", function()
    local reports = run([[
      local function dec(h) return assert(luasock.decode(unhex(h))) end
      report(stdout, luasock.kind(dec("90")), type(dec("90")), next(dec("90")))
      report(stdout, dec("c403616263"))
      report(stdout, math.type(dec("cfffffffffffffffff")), dec("cfffffffffffffffff") == 2.0 ^ 64)
      local t = dec("9301c003")
      report(stdout, #t, t[2] == luasock.null, luasock.kind(t[2]))
      report(stdout, dec("81a16bc0").k == luasock.null)
      report(stdout, luasock.decode(unhex("c0")))
      local e = dec("d40561")
      report(stdout, luasock.kind(e), e.type, e.data)
      report(stdout, luasock.decode(unhex("81c001")))
    ]])
    assert.same({ nil, "table", nil }, { reports[1][1], reports[1][2], reports[1][3] })
    assert.equal("abc", reports[2][1])
    assert.same({ "float", true }, { reports[3][1], reports[3][2] })
    assert.same({ 3, true, "null" }, { reports[4][1], reports[4][2], reports[4][3] })
    assert.is_true(reports[5][1])
    assert.is_nil(reports[6][1])
    assert.same({ "ext", 5, "a" }, { reports[7][1], reports[7][2], reports[7][3] })
    assert.same({ nil, "bad map key" }, { reports[8][1], reports[8][2] })
  end)

  it("gives wrappers that behave as values", function()
    local reports = run([[
      local b = assert(luasock.decode(unhex("c403616263"), { exact = true }))
      report(stdout, tostring(b), #b, b == luasock.bytes("abc"), b .. "!")
      local u = assert(luasock.decode(unhex("cfffffffffffffffff"), { exact = true }))
      report(stdout, tostring(u), u == luasock.uint64("18446744073709551615"), u > luasock.uint64(1))
      local e = assert(luasock.decode(unhex("d6ff00000001"), { exact = true }))
      report(stdout, e.type, hex(e.data), e == luasock.ext(-1, "\0\0\0\1"))
      local big = assert(luasock.decode(unhex("cf8000000000000000"), { exact = true }))
      report(stdout, tostring(big))
    ]])
    assert.same({ "abc", 3, true, "abc!" },
      { reports[1][1], reports[1][2], reports[1][3], reports[1][4] })
    assert.same({ "18446744073709551615", true, true }, { reports[2][1], reports[2][2], reports[2][3] })
    assert.same({ -1, "00000001", true }, { reports[3][1], reports[3][2], reports[3][3] })
    assert.equal("9223372036854775808", reports[4][1])
  end)

  it("keeps the nesting limit in both modes", function()
    local reports = run([[
      for _, exact in ipairs({ false, true }) do
        local ok = luasock.decode(string.rep("\x91", 100) .. "\x01", { exact = exact })
        report(stdout, ok ~= nil, luasock.decode(string.rep("\x91", 101) .. "\x01",
          { exact = exact }))
      end
      local t = 1
      for _ = 1, 101 do t = luasock.array({ t }) end
      report(stdout, luasock.encode(t))
    ]])
    for i = 1, 2 do
      assert.same({ true, nil, "nesting too deep" }, { reports[i][1], reports[i][2], reports[i][3] })
    end
    assert.same({ nil, "nesting too deep" }, { reports[3][1], reports[3][2] })
  end)
end)

-- Echoes every object it receives with send_object; a first line "exact" or "plain" sets
-- exact_objects on the connection, "default" leaves the script's setting.
local ECHO = [[
  return {
    exact_objects = ${EXACT},
    handle = function(conn)
      local mode = conn:receive()
      if mode ~= "default" then assert(conn:setoption("exact_objects", mode == "exact")) end
      while true do
        local value, err = conn:receive_object()
        if err then return end
        assert(conn:send_object(value))
      end
    end,
  }
]]

-- Sends each hex value on one connection in `mode` and checks the bytes that come back.
local function check_echo(server, mode, pairs_of_hex)
  local client = server:connect()
  assert(client:send(mode .. "\n"))
  for i, pair in ipairs(pairs_of_hex) do
    local sent, want = pair[1], pair[2] or pair[1]
    assert(client:send(unhex(sent)))
    local got, err = client:receive(#want // 2)
    assert(got, mode .. " value " .. i .. ": " .. tostring(err))
    assert.equal(want, hex(got), mode .. " echo of " .. sent)
  end
  client:close()
end

local EXACT_PAIRS = {
  { "90" }, { "80" }, { "8101a26869" }, { "92c001" }, { "81a16bc0" }, { "c403616263" },
  { "cfffffffffffffffff" }, { "d6ff00000001" }, { "c70cff000000000000000000000000" },
  { "c70305616263" }, { "91c40100" }, { "cb8000000000000000" },
}
local PLAIN_PAIRS = {
  { "90", "80" }, { "8101a26869", "91a26869" }, { "92c001" }, { "81a16bc0" },
  { "c403616263", "a3616263" }, { "cfffffffffffffffff", "cb43f0000000000000" },
  { "d6ff00000001" }, { "cb8000000000000000" },
}

describe("receive_object and send_object", function()
  after_each(helper.cleanup)

  it("with exact_objects = true, echo the bytes' meaning exactly", function()
    local server = helper.start(helper.handler(helper.fill(ECHO, { EXACT = "true" })))
    check_echo(server, "default", EXACT_PAIRS)
    check_echo(server, "plain", PLAIN_PAIRS)
    server:stop()
  end)

  it("plainly by default, and exactly per connection with setoption", function()
    local server = helper.start(helper.handler(helper.fill(ECHO, { EXACT = "false" })))
    check_echo(server, "default", PLAIN_PAIRS)
    check_echo(server, "exact", EXACT_PAIRS)
    server:stop()
  end)
end)
