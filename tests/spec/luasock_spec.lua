-- luasock_spec.lua -- the luasock module (sleep, now, spawn, log, version), the script's
-- `start` function, and the isolation of script globals.
local socket = require "socket"
local helper = require "helper"

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

local function expect(client, ...)
  assert.same(table.pack(...), helper.read_report(client))
end

describe("luasock.sleep", function()
  after_each(helper.cleanup)

  it("suspends for the given time and returns true; sleep(0) returns true", function()
    local server = serve([[
      return { handle = function(conn)
        local t0 = luasock.now()
        local result = luasock.sleep(0.2)
        report(conn, result, luasock.now() - t0)
        report(conn, luasock.sleep(0))
      end }]])
    local client = server:connect()
    local result = helper.read_report(client)
    assert.is_true(result[1])
    assert.is_true(result[2] >= 0.19 and result[2] < 2, "slept " .. result[2] .. " s")
    expect(client, true)
    client:close()
    server:stop()
  end)

  it("does not block other connections", function()
    local server = serve([[
      return { handle = function(conn)
        local command = conn:receive()
        if command == "long" then luasock.sleep(2) end
        report(conn, command)
      end }]])
    local sleeper = server:connect()
    assert(sleeper:send("long\n"))
    local quick = server:connect()
    local t0 = socket.gettime()
    assert(quick:send("quick\n"))
    expect(quick, "quick")
    assert.is_true(socket.gettime() - t0 < 1.5, "the quick client waited for the sleeper")
    sleeper:settimeout(0)
    assert.equal("timeout", select(2, sleeper:receive()))
    sleeper:settimeout(5)
    expect(sleeper, "long")
    sleeper:close()
    quick:close()
    server:stop()
  end)
end)

describe("luasock.now", function()
  after_each(helper.cleanup)

  it("is a float in seconds since the epoch that moves forward", function()
    local server = serve([[
      return { handle = function(conn)
        local t1 = luasock.now()
        luasock.sleep(0.05)
        local t2 = luasock.now()
        report(conn, type(t1), math.type(t1), t1, t2 - t1)
      end }]])
    local client = server:connect()
    local result = helper.read_report(client)
    assert.equal("number", result[1])
    assert.equal("float", result[2])
    assert.is_true(math.abs(result[3] - socket.gettime()) < 2, "now() is " .. result[3])
    assert.is_true(result[4] >= 0.04 and result[4] < 2, "now() moved by " .. result[4])
    client:close()
    server:stop()
  end)
end)

describe("luasock.spawn", function()
  after_each(helper.cleanup)

  it("runs fn(...) in the background from the next loop iteration and returns a task", function()
    local server = serve([[
      return { handle = function(conn)
        local ran = false
        local task = luasock.spawn(function(a, b, c)
          ran = true
          luasock.sleep(0.05)
          luasock.log("info", "background got", a, b, c)
          return a, b
        end, "x", 42, nil)
        report(conn, tostring(task), ran)
        luasock.sleep(0.02)
        report(conn, ran)
        report(conn, task:join())
        report(conn, tostring(task), task:join())
        local failing = luasock.spawn(function() error("oops", 0) end)
        report(conn, failing:join())
      end }]])
    local client = server:connect()
    expect(client, "task (running)", false)
    expect(client, true)
    expect(client, true, "x", 42)
    expect(client, "task (done)", true, "x", 42)
    expect(client, false, "oops")
    server:wait_log("background got x 42 nil")
    client:close()
    server:stop()
  end)

  it("logs a background error with a traceback; the server and the handler go on", function()
    local server = serve([[
      return { handle = function(conn)
        luasock.spawn(function() error("background boom") end)
        luasock.sleep(0.1)
        report(conn, "handler alive")
      end }]])
    local client = server:connect()
    expect(client, "handler alive")
    local log = server:log()
    assert.is_truthy(log:find("background boom", 1, true), log)
    assert.is_truthy(log:find("traceback", 1, true), log)
    client:close()
    local again = server:connect()
    expect(again, "handler alive")
    again:close()
    server:stop()
  end)

  it("works from start", function()
    local server = serve([[
      local M = {}
      function M.start()
        luasock.spawn(function(word) luasock.log("info", "spawned from start:", word) end, "yes")
      end
      function M.handle(conn) report(conn, "ok") end
      return M]])
    server:wait_log("spawned from start: yes")
    local client = server:connect()
    expect(client, "ok")
    client:close()
    server:stop()
  end)
end)

describe("luasock.log", function()
  after_each(helper.cleanup)

  local source = [[
    return { handle = function(conn)
      luasock.log("debug", "dbg-msg")
      luasock.log("info", "info-msg")
      luasock.log("warn", "warn-msg", 1, true, nil, 2.5)
      report(conn, (pcall(luasock.log, "loud", "x")))
      luasock.log("error", "error-msg")
    end }]]

  local STAMP = "%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d"

  -- Runs the logging handler at `level` (nil: default); returns the log.
  local function log_at(level)
    local server = serve(source, { args = level and { "--log-level", level } or nil })
    local client = server:connect()
    expect(client, false)
    server:wait_log("error%-msg")
    client:close()
    return server:stop()
  end

  local function has(log, level, message)
    return log:find("\n" .. STAMP .. " %[" .. level .. "%] " .. message:gsub("%p", "%%%0")
      .. "\n") ~= nil
  end

  it("writes timestamped lines at info and above by default", function()
    local log = log_at(nil)
    assert.is_false(has(log, "debug", "dbg-msg"), log)
    assert.is_true(has(log, "info", "info-msg"), log)
    assert.is_true(has(log, "warn", "warn-msg 1 true nil 2.5"), log)
    assert.is_true(has(log, "error", "error-msg"), log)
  end)

  it("follows --log-level", function()
    local log = log_at("debug")
    assert.is_true(has(log, "debug", "dbg-msg"), log)
    assert.is_true(has(log, "info", "info-msg"), log)
    log = log_at("warn")
    assert.is_false(has(log, "info", "info-msg"), log)
    assert.is_true(has(log, "warn", "warn-msg 1 true nil 2.5"), log)
    log = log_at("error")
    assert.is_false(has(log, "warn", "warn-msg 1 true nil 2.5"), log)
    assert.is_true(has(log, "error", "error-msg"), log)
  end)
end)

describe("the luasock module", function()
  after_each(helper.cleanup)

  it("comes from require and is not a global; it has a version", function()
    local server = serve([[
      return { handle = function(conn)
        report(conn, rawget(_G, "luasock"), _ENV.luasock, require("luasock") == luasock,
          luasock.version)
      end }]])
    local client = server:connect()
    local result = helper.read_report(client)
    assert.same({ nil, nil, true }, { result[1], result[2], result[3] })
    local _, version = helper.run { "--version" }
    assert.is_truthy(result[4]:match("^%d+%.%d+%.%d+"), result[4])
    assert.is_truthy(version:find(result[4], 1, true), "--version says " .. version)
    client:close()
    server:stop()
  end)
end)

describe("script globals", function()
  after_each(helper.cleanup)

  local function write_script(dir, name)
    helper.script([[
      -- peek.lua: a module next to the script; its globals are the standard ones.
      return { peek = function() return counter end }]], dir .. "/peek.lua")
    return helper.script(helper.PRELUDE .. [[
      local peek = require "peek"
      LOADED_AT_TOP = "top"
      return { handle = function(conn)
        counter = (counter or 0) + 1
        report(conn, counter, LOADED_AT_TOP, rawget(_G, "counter"), peek.peek(), type(print),
          string.upper("s"))
      end }]], dir .. "/" .. name)
  end

  it("persist across connections of a script but not into _G or modules", function()
    local first = helper.start(write_script(helper.tmpdir(), "first.lua"))
    local second = helper.start(write_script(helper.tmpdir(), "second.lua"))
    for i = 1, 3 do
      local client = first:connect()
      expect(client, i, "top", nil, nil, "function", "S")
      client:close()
    end
    local client = second:connect()
    expect(client, 1, "top", nil, nil, "function", "S")
    client:close()
    first:stop()
    second:stop()
  end)
end)

describe("suspending calls outside handlers", function()
  after_each(helper.cleanup)

  it("raise in a plain coroutine; the connection stays usable", function()
    local server = serve([[
      return { handle = function(conn)
        local reader = coroutine.create(function() return conn:receive() end)
        report(conn, coroutine.resume(reader))
        local sleeper = coroutine.create(function() return luasock.sleep(0.01) end)
        report(conn, coroutine.resume(sleeper))
        report(conn, conn:receive())
      end }]])
    local client = server:connect()
    for _ = 1, 2 do
      local result = helper.read_report(client)
      assert.is_false(result[1])
      assert.equal("string", type(result[2]))
    end
    assert(client:send("line\n"))
    expect(client, "line")
    client:close()
    server:stop()
  end)

  it("raise in start, which stops start-up with exit status 1", function()
    local script = helper.handler([[
      return { start = function() luasock.sleep(0.01) end, handle = function() end }]])
    local code, _, err = helper.run { "serve", script, "--listen", "127.0.0.1:0" }
    assert.equal(1, code)
    assert.is_falsy(err:find("listening on", 1, true), err)
  end)
end)

describe("start", function()
  after_each(helper.cleanup)

  it("runs before listening and may change the script's fields", function()
    local server = serve([[
      local M = { max_line = 100 }
      function M.start()
        luasock.log("info", "start ran")
        M.max_line = 4
      end
      function M.handle(conn) report(conn, conn:receive()) end
      return M]])
    local log = server:log()
    local started, listening = log:find("start ran", 1, true), log:find("listening on", 1, true)
    assert.is_truthy(started and started < listening, log)
    local client = server:connect()
    assert(client:send("too long\n"))
    expect(client, nil, "line too long", "too ")
    client:close()
    server:stop()
  end)
end)
