-- hostile_values_spec.lua -- issue 13 ("no peer and no value can stall, starve or blind the
-- others"), the items about values a handler passes on: a NaN or absurd timeout is refused
-- before it reaches libev's timer heap, where one NaN stopped every other timer of the process
-- (item 2). Each test fails on the code before the fix: the NaN was accepted, and a 0.3 s sleep
-- elsewhere in the process never ended in time.
local helper = require "helper"

-- A handler that sleeps 0.3 s for "nap", and otherwise runs the named NaN case and reports
-- what it raised. Each case applies a NaN timeout and then waits with it, as a handler would.
local NAN_HANDLER = [[
  local NAN = 0 / 0
  local cases = {
    settimeout = function(conn) conn:settimeout(NAN); return conn:receive() end,
    settimeouts = function(conn) conn:settimeouts(nil, nil, NAN); return conn:receive() end,
    sleep = function() return luasock.sleep(NAN) end,
    pop = function() return luasock.queue():pop(NAN) end,
    resolve = function() return luasock.resolve("localhost", { timeout = NAN }) end,
    connect = function() return luasock.connect("localhost", 9, { timeout = NAN }) end,
    udp = function() local u = luasock.udp(); u:settimeout(NAN); return u:receive() end,
    huge = function(conn)
      conn:settimeout(math.huge)
      return conn:receive()
    end,
    absurd = function(conn) conn:settimeout(1e300); return conn:receive() end,
  }
  return { handle = function(conn)
    local what = conn:receive()
    if what == "nap" then
      luasock.sleep(0.3)
      conn:send("slept\n")
      return
    end
    local ok, err = pcall(cases[what], conn)
    conn:send(tostring(ok) .. " " .. tostring(err) .. "\n")
  end }
]]

local function serve()
  return helper.start(helper.handler(NAN_HANDLER))
end

-- Starts a 0.3 s sleep in one connection; returns a function that asserts it ends within 1 s.
local function start_sleeper(server)
  local sleeper = server:connect()
  assert(sleeper:send("nap\n"))
  local started = require("socket").gettime()
  return function()
    sleeper:settimeout(5)
    local line, err = sleeper:receive("*l")
    local took = require("socket").gettime() - started
    assert.are.equal("slept", line, "the sleeper got no reply: " .. tostring(err))
    assert.is_true(took < 1.0, ("a 0.3 s sleep took %.2f s"):format(took))
  end
end

describe("issue 13 item 2: a NaN timeout", function()
  after_each(helper.cleanup)

  local WHERE = {
    settimeout = "conn:settimeout", settimeouts = "conn:settimeouts (read)",
    sleep = "luasock.sleep", pop = "queue:pop", resolve = "luasock.resolve",
    connect = "luasock.connect", udp = "udp:settimeout",
  }
  for _, case in ipairs({ "settimeout", "settimeouts", "sleep", "pop", "resolve", "connect",
    "udp" }) do
    it("is refused by " .. WHERE[case] .. ", and other timers keep firing", function()
      local server = serve()
      local check_sleeper = start_sleeper(server)
      local client = server:connect()
      local reply = helper.ask(client, case)
      assert.are.equal("false", reply:match("^(%S+)"), reply)
      assert.truthy(reply:find(WHERE[case] .. ": timeout is NaN", 1, true), reply)
      check_sleeper()
      server:stop()
    end)
  end

  it("math.huge means no timeout", function()
    local server = serve()
    local check_sleeper = start_sleeper(server)
    local client = server:connect()
    assert(client:send("huge\n"))
    check_sleeper()
    assert(client:send("late line\n"))
    assert.are.equal("true late line", client:receive("*l"))
    server:stop()
  end)

  it("an absurd timeout is refused with its range", function()
    local server = serve()
    local reply = helper.ask(server:connect(), "absurd")
    assert.truthy(reply:find("conn:settimeout: timeout 1e+300 is out of range", 1, true), reply)
    server:stop()
  end)

  for _, name in ipairs({ "idle_timeout", "send_timeout", "first_byte_timeout", "cpu_budget" }) do
    it("is refused as the " .. name .. " setting", function()
      local script = helper.handler("return { handle = function() end, " .. name .. " = 0/0 }")
      local code, _, err = helper.run({ "check", script })
      assert.are_not.equal(0, code)
      assert.truthy(err:find("'" .. name .. "' must be a number of seconds up to 1000000000, "
        .. "or false or math.huge for none", 1, true), err)
    end)
  end
end)
