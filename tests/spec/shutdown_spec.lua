-- shutdown_spec.lua -- graceful shutdown: on SIGTERM/SIGINT the server stops accepting, wakes
-- handlers blocked in a read with nil, "shutting down", lets them finish for up to --grace
-- seconds, then exits 0; a second signal exits at once.
local socket = require "socket"
local helper = require "helper"

-- Says goodbye when woken by the shutdown; reports luasock.shutting_down() before and after.
local POLITE = [[
  return { handle = function(conn)
    conn:send("hello ", tostring(luasock.shutting_down()), "\n")
    local line, err = conn:receive()
    conn:send("bye ", tostring(err), " ", tostring(luasock.shutting_down()), "\n")
  end }]]

-- Ignores the shutdown: sleeps for a minute.
local STUBBORN = [[
  return { handle = function(conn)
    conn:send("sleeping\n")
    luasock.sleep(60)
  end }]]

describe("graceful shutdown", function()
  after_each(helper.cleanup)

  it("wakes blocked reads with 'shutting down', lets handlers say goodbye, exits 0", function()
    local server = helper.start(helper.handler(POLITE))
    local clients = {}
    for i = 1, 3 do
      clients[i] = server:connect()
      assert.equal("hello false", clients[i]:receive())
    end
    server:signal("TERM")
    for _, client in ipairs(clients) do
      assert.equal("bye shutting down true", client:receive())
      local _, err = client:receive()
      assert.equal("closed", err)
    end
    assert.is_true(server:wait_exit(5))
    local log = server:stop()
    assert.is_truthy(log:find("shutting down (TERM): waiting up to 10 s for 3 handlers", 1, true),
      log)
  end)

  it("stops accepting new connections once shutdown has begun", function()
    local server = helper.start(helper.handler(STUBBORN), { args = { "--grace", "5" } })
    local client = server:connect()
    assert.equal("sleeping", client:receive())
    server:signal("TERM")
    server:wait_log("shutting down %(TERM%)")
    local late = socket.tcp()
    late:settimeout(2)
    local ok, err = late:connect(server.host, server.port)
    assert.is_nil(ok, "a connection was accepted after SIGTERM")
    assert.is_truthy(err:find("refused"), err)
    server:signal("INT")
    assert.is_true(server:wait_exit(5))
    server:stop()
  end)

  it("closes what remains after --grace seconds and still exits 0", function()
    local server = helper.start(helper.handler(STUBBORN), { args = { "--grace", "0.5" } })
    local client = server:connect()
    assert.equal("sleeping", client:receive())
    local began = socket.gettime()
    server:signal("TERM")
    assert.is_true(server:wait_exit(10))
    local took = socket.gettime() - began
    assert.is_true(took >= 0.4 and took < 5, "took " .. took .. " s")
    local log = server:stop()
    assert.is_truthy(log:find("grace period over: 1 handlers still running", 1, true), log)
    local _, err = client:receive()
    assert.equal("closed", err)
  end)

  it("exits at once on a second SIGINT", function()
    local server = helper.start(helper.handler(STUBBORN), { args = { "--grace", "60" } })
    local client = server:connect()
    assert.equal("sleeping", client:receive())
    server:signal("INT")
    server:wait_log("shutting down %(INT%)")
    local began = socket.gettime()
    server:signal("INT")
    assert.is_true(server:wait_exit(5))
    assert.is_true(socket.gettime() - began < 5)
    local log = server:stop()
    assert.is_truthy(log:find("second SIGINT: exiting now", 1, true), log)
    client:close()
  end)

  it("refuses a bad --grace value", function()
    local code, _, err = helper.run { "serve", "examples/echo.lua", "--grace", "soon" }
    assert.equal(2, code)
    assert.is_truthy(err:find("luasock: --grace: expected seconds (0 or more), got 'soon'", 1,
      true), err)
  end)
end)
