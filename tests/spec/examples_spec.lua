-- examples_spec.lua -- the example scripts in examples/ behave as their comments promise.
local helper = require "helper"

local GREETING = "Welcome to the server. Type something and hit enter"

describe("examples/echo.lua", function()
  after_each(helper.cleanup)

  it("echoes lines and raw chunks until the client leaves", function()
    local server = helper.start("examples/echo.lua")
    local client = server:connect()
    assert(client:send("hello\n"))
    assert.equal("hello", client:receive())
    assert(client:send("no newline"))
    assert.equal("no newline", client:receive(10))
    local big = string.rep("0123456789", 20000)
    assert(client:send(big))
    assert.equal(big, client:receive(#big))
    assert(client:shutdown("send"))
    local rest, err = helper.read_all(client)
    assert.equal("", rest)
    assert.equal("closed", err)
    client:close()
    server:stop()
  end)
end)

describe("examples/prefix.lua", function()
  after_each(helper.cleanup)

  it("greets, then answers every line with OK... and the line", function()
    local server = helper.start("examples/prefix.lua")
    local client = server:connect()
    assert.equal(GREETING, client:receive())
    for _, line in ipairs { "first", "", "with spaces and\ttabs", "crlf" } do
      assert(client:send(line .. (line == "crlf" and "\r\n" or "\n")))
      assert.equal("OK..." .. line, client:receive())
    end
    assert(client:send("one\ntwo\n"))
    assert.equal("OK...one", client:receive())
    assert.equal("OK...two", client:receive())
    assert(client:shutdown("send"))
    assert.equal("closed", select(2, helper.read_all(client)))
    client:close()
    server:stop()
  end)
end)

describe("examples/upper.lua", function()
  after_each(helper.cleanup)

  it("replies to whatever arrives first in upper case, then closes", function()
    local server = helper.start("examples/upper.lua")
    local client = server:connect()
    assert(client:send("hello there"))
    local reply, err = helper.read_all(client)
    assert.equal("HELLO THERE", reply)
    assert.equal("closed", err)
    client:close()
    server:stop()
  end)

  it("serves one request per connection, many connections in a row", function()
    local server = helper.start("examples/upper.lua")
    for i = 1, 5 do
      local client = server:connect()
      assert(client:send("request " .. i .. "\n"))
      assert.equal("REQUEST " .. i .. "\n", (helper.read_all(client)))
      client:close()
    end
    server:stop()
  end)
end)
