-- stall_spec.lua -- stall_warning (issue 15): a resume that blocks the event loop (the real
-- LuaSocket's socket.sleep, os.execute, a long computation) is logged with where it blocked and
-- a traceback, once per call site; nothing is logged below the threshold or with it off.
local helper = require "helper"

local fill = helper.fill

-- A handler that does what the client's line asks, then answers "done"; ${SETTINGS} go in its
-- table. Its line numbers are what the log lines name.
local HANDLER = [[
  local socket = require "socket" -- the real LuaSocket: its sleep blocks the whole process
  return { ${SETTINGS} handle = function(conn)
    local what = conn:receive("*l")
    if what == "luasocket" then
      socket.sleep(3)
    elseif what == "short" then
      socket.sleep(0.3)
    elseif what == "execute" then
      os.execute("sleep 1")
    elseif what == "compute" then
      local stop = os.clock() + 0.6
      while os.clock() < stop do end
    end
    conn:send("done ", what, "\n")
  end }
]]

local function start(settings)
  return helper.start(helper.handler(fill(HANDLER, { SETTINGS = settings or "" })))
end

local function ask(server, what)
  local client = server:connect()
  client:settimeout(10)
  assert.equal("done " .. what, helper.ask(client, what))
  client:close()
end

-- The "event loop blocked" lines of the server's log: a list of {seconds, where, who}.
local function stalls(server)
  local found = {}
  for seconds, where, who in server:log():gmatch(
      "%[warn%] event loop blocked for ([%d.]+) s by (%S+) %(([^)]*)%)\nstack traceback:") do
    found[#found + 1] = { tonumber(seconds), where:match(":(%d+)$"), who }
  end
  return found
end

describe("stall_warning", function()
  after_each(helper.cleanup)

  it("names the line of a blocking call (LuaSocket's socket.sleep(3)), once per call site",
    function()
    local server = start()
    ask(server, "luasocket")
    ask(server, "execute")
    ask(server, "luasocket")
    local found = stalls(server)
    assert.equal(2, #found, server:log())
    assert.is_true(found[1][1] >= 2.9 and found[1][1] <= 3.5, "blocked for " .. found[1][1])
    assert.same({ "5", "conn 1" }, { found[1][2], found[1][3] })
    assert.is_true(found[2][1] >= 0.9 and found[2][1] <= 1.5, "blocked for " .. found[2][1])
    assert.same({ "9", "conn 2" }, { found[2][2], found[2][3] })
    server:stop()
  end)

  it("names Lua code that computes for longer than the threshold", function()
    local server = start()
    ask(server, "compute")
    local found = stalls(server)
    assert.equal(1, #found, server:log())
    assert.is_true(found[1][1] >= 0.2 and found[1][1] <= 1.0, "blocked for " .. found[1][1])
    assert.is_truthy(({ ["11"] = true, ["12"] = true })[found[1][2]], found[1][2])
    server:stop()
  end)

  it("stays quiet below the threshold, and when it is false", function()
    local server = start("stall_warning = 0.5,")
    ask(server, "short")
    server:stop()
    assert.same({}, stalls(server))
    server = start("stall_warning = false,")
    ask(server, "execute")
    server:stop()
    assert.same({}, stalls(server))
  end)
end)
