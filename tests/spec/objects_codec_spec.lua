-- objects_codec_spec.lua -- choosing what receive_object and send_object speak (issue 16): the
-- object_codec, exact_objects and json_errors settings, conn:setoption for them, and JSON lines
-- (lua-cjson) end to end: values and null, invalid JSON closing only its connection or, with
-- json_errors = "return", returned as an error, max_line as the limit, values JSON cannot say.
local cjson = require "cjson"
local helper = require "helper"

-- Echoes every object it receives as {got = value, kind = luasock.kind(value), math.type(value)
-- or type(value)};
-- a JSON error the connection survives is answered with {error = err}.
local ECHO = [[
  return {
    object_codec = ${CODEC},
    json_errors = ${JSON_ERRORS},
    max_line = 200,
    handle = function(conn)
      while true do
        local value, err = conn:receive_object()
        if err then
          if not err:find("^json: ") then return end
          conn:send_object({ error = err })
        else
          local answer = { got = value, kind = luasock.kind(value) or math.type(value) or type(value) }
          local ok, send_err = conn:send_object(answer)
          if not ok then conn:send_object({ error = send_err }) end
        end
      end
    end,
  }
]]

local function start(vars)
  vars.CODEC = vars.CODEC or "nil"
  vars.JSON_ERRORS = vars.JSON_ERRORS or "nil"
  return helper.start(helper.handler(helper.fill(ECHO, vars)))
end

-- Sends a line; returns the JSON reply, decoded (key order is the server's hash order).
local function ask(client, line)
  assert(client:send(line .. "\n"))
  local reply, err = client:receive("*l")
  assert(reply, "no reply to " .. line .. ": " .. tostring(err))
  return cjson.decode(reply)
end

describe("object_codec = \"json\"", function()
  after_each(helper.cleanup)

  it("reads and writes one JSON value per line, with null as luasock.null", function()
    local server = start({ CODEC = '"json"' })
    local client = server:connect()
    assert.same({ got = { a = { 1, 2.5, "x", true } }, kind = "table" },
      ask(client, '{"a":[1,2.5,"x",true]}'))
    -- null inside the array came through as luasock.null and went back as null.
    assert.same({ got = { 1, cjson.null, 3 }, kind = "table" }, ask(client, "[1,null,3]"))
    assert.same({ kind = "nil" }, ask(client, "null"))
    -- lua-cjson reads numbers as floats; whole ones are handed over as integers.
    assert.same({ got = 7, kind = "integer" }, ask(client, "7"))
    assert.same({ got = 2.5, kind = "float" }, ask(client, "2.5"))
    assert.same({ got = { 3, 99999999999999 }, kind = "table" }, ask(client, "[3.0, 99999999999999]"))
    assert.same({ got = "caf\u{e9} \n", kind = "string" }, ask(client, '"caf\\u00e9 \\n"\r'))
    server:stop()
  end)

  it("closes only the connection that sent invalid JSON, and logs why", function()
    local server = start({ CODEC = '"json"' })
    local bad, good = server:connect(), server:connect()
    assert(bad:send("{not json\n"))
    local reply, err = bad:receive("*l")
    assert.is_nil(reply)
    assert.equal("closed", err)
    assert.same({ got = 1, kind = "integer" }, ask(good, "1"))
    assert.matches("bad object from the peer: json: Expected object key string", server:stop(), 1,
      true)
  end)

  it("with json_errors = \"return\", returns the error and keeps the connection", function()
    local server = start({ CODEC = '"json"', JSON_ERRORS = '"return"' })
    local client = server:connect()
    assert.same({ error = "json: Expected value but found invalid token at character 1" },
      ask(client, "garbage"))
    assert.same({ got = 2, kind = "integer" }, ask(client, "2"))
    server:stop()
  end)

  it("takes max_line as the limit of a line: a longer one closes the connection", function()
    local server = start({ CODEC = '"json"', JSON_ERRORS = '"return"' })
    local client = server:connect()
    assert(client:send('"' .. string.rep("x", 300) .. '"\n'))
    local reply, err = client:receive("*l")
    assert.is_nil(reply)
    assert.equal("closed", err)
    assert.matches("bad object from the peer: line too long", server:stop(), 1, true)
  end)

  it("refuses values JSON cannot say, and keeps the connection", function()
    local script = helper.handler([[
      return { object_codec = "json", handle = function(conn)
        conn:receive_object()
        for _, v in ipairs({ luasock.bytes("b"), { luasock.uint64(1) }, 0/0, print, 1 << 62 }) do
          local ok, err = conn:send_object(v)
          conn:send_object({ ok = ok or false, err = err })
        end
      end }
    ]])
    local server = helper.start(script)
    local client = server:connect()
    assert(client:send("{}\n"))
    local want = {
      '{"ok":false,"err":"json: cannot encode a luasock.bytes value"}',
      '{"ok":false,"err":"json: cannot encode a luasock.uint64 value"}',
      '{"ok":false,"err":"json: Cannot serialise number: must not be NaN or Inf"}',
      '{"ok":false,"err":"json: Cannot serialise function: type not supported"}',
      '{"ok":false,"err":"json: cannot encode the integer 4611686018427387904 (lua-cjson keeps 14 digits)"}',
    }
    for _, line in ipairs(want) do
      assert.same(cjson.decode(line), cjson.decode((client:receive("*l"))))
    end
    server:stop()
  end)
end)

describe("the object settings", function()
  after_each(helper.cleanup)

  it("switches codec per connection with conn:setoption", function()
    local script = helper.handler([[
      return { handle = function(conn)
        local first = conn:receive_object()                  -- MessagePack
        conn:setoption("object_codec", "json")
        conn:send_object({ first = first })
        conn:setoption("json_errors", "return")
        local _, err = conn:receive_object()
        conn:send_object({ err = err })
        conn:setoption("exact_objects", true)
        conn:send_object({ done = true })
      end }
    ]])
    local server = helper.start(script)
    local client = server:connect()
    assert(client:send("\x92\x01\x02"))                    -- [1, 2]
    assert.equal('{"first":[1,2]}', (client:receive("*l")))
    assert(client:send("nope\n"))
    assert.equal('{"err":"json: Expected value but found invalid token at character 1"}',
      (client:receive("*l")))
    assert.equal('{"done":true}', (client:receive("*l")))
    server:stop()
  end)

  it("refuses bad values in the script and in setoption", function()
    for _, case in ipairs({
      { 'object_codec = "xml"', "'object_codec' must be \"msgpack\", \"pickle\" or \"json\"" },
      { "exact_objects = 1", "'exact_objects' must be true or false" },
      { 'json_errors = "ignore"', "'json_errors' must be \"close\" or \"return\"" },
    }) do
      local script = helper.handler("return { " .. case[1] .. ", handle = function() end }")
      local code, _, err = helper.run({ "check", script })
      assert.equal(1, code)
      assert.matches(case[2], err, 1, true)
    end
    local server = helper.start(helper.handler("return { handle = function(conn) conn:receive() end }"))
    local reports = helper.run_reports(helper.fill([[
      local ok, err = pcall(function()
        local c = assert(luasock.connect("127.0.0.1", ${PORT}))
        c:setoption("object_codec", "xml")
      end)
      report(stdout, ok, err)
    ]], { PORT = server.port }))
    assert.is_false(reports[1][1])
    assert.matches("bad argument #2 to 'setoption' (invalid option 'xml')", reports[1][2], 1, true)
  end)
end)
