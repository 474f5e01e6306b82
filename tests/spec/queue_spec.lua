-- queue_spec.lua -- luasock.queue() through `luasock run` scripts: FIFO order of any values,
-- len() and tostring, pop waiting for a push from another coroutine, pop timeouts (and the
-- timer of a pop that got its value not firing later), several waiters served in the order they
-- began to wait (also when one in the middle or at the end timed out), push(nil) and pop outside
-- a task raising clear errors.
local helper = require "helper"

local RUN_PRELUDE = helper.RUN_PRELUDE

local function reports(out)
  local decoded = {}
  for line in out:gmatch("[^\n]+") do decoded[#decoded + 1] = helper.decode_report(line) end
  return decoded
end

-- Runs RUN_PRELUDE .. source with `luasock run`, requires exit 0; returns the decoded reports.
local function run_reports(source)
  local code, out, err = helper.run({ "run", helper.script(RUN_PRELUDE .. source) },
    { timeout = 20 })
  assert.equal(0, code, "the script failed; stdout:\n" .. out .. "\nstderr:\n" .. err)
  return reports(out)
end

describe("luasock.queue", function()
  after_each(helper.cleanup)

  it("hands values out first in, first out, of any type but nil", function()
    local got = run_reports([[
      local q = luasock.queue()
      report(stdout, q:len(), tostring(q))
      for i = 1, 1000 do q:push(i) end
      report(stdout, q:len(), tostring(q))
      local ok = true
      for i = 1, 1000 do
        local v = q:pop()
        if v ~= i then ok = false; report(stdout, "out of order", i, v) break end
      end
      report(stdout, ok, q:len())
      local t = {}
      q:push("s") q:push(false) q:push(t) q:push(2.5) q:push(true)
      report(stdout, q:len())
      local a, b, c, d, e = q:pop(), q:pop(), q:pop(), q:pop(), q:pop()
      report(stdout, a, b, c == t, d, e, q:len())
      -- interleaved pushes and pops keep the order
      q:push(1) q:push(2)
      local x = q:pop()
      q:push(3)
      local y, z = q:pop(), q:pop()
      report(stdout, x, y, z, q:len())
    ]])
    assert.same(table.pack(0, "queue (0 values)"), got[1])
    assert.same(table.pack(1000, "queue (1000 values)"), got[2])
    assert.same(table.pack(true, 0), got[3])
    assert.same(table.pack(5), got[4])
    assert.same(table.pack("s", false, true, 2.5, true, 0), got[5])
    assert.same(table.pack(1, 2, 3, 0), got[6])
  end)

  it("suspends pop until another coroutine pushes", function()
    local got = run_reports([[
      local q = luasock.queue()
      local started = luasock.now()
      luasock.spawn(function()
        luasock.sleep(0.2)
        q:push("late")
      end)
      local v, err = q:pop()
      report(stdout, v, err, luasock.now() - started, q:len())
      -- a pop with a timeout that gets its value in time
      started = luasock.now()
      luasock.spawn(function() luasock.sleep(0.05) q:push("in time") end)
      v, err = q:pop(1)
      report(stdout, v, err, luasock.now() - started)
    ]])
    assert.equal("late", got[1][1])
    assert.is_nil(got[1][2])
    assert.is_true(got[1][3] >= 0.18 and got[1][3] < 2, "pop returned after " .. got[1][3] .. " s")
    assert.equal(0, got[1][4])
    assert.equal("in time", got[2][1])
    assert.is_nil(got[2][2])
    assert.is_true(got[2][3] >= 0.04 and got[2][3] < 0.9,
      "pop returned after " .. got[2][3] .. " s")
  end)

  it("returns nil, 'timeout' after the timeout, and pop(0) at once", function()
    local got = run_reports([[
      local q = luasock.queue()
      local started = luasock.now()
      local v, err = q:pop(0.3)
      report(stdout, v, err, luasock.now() - started)
      started = luasock.now()
      v, err = q:pop(0)
      report(stdout, v, err, luasock.now() - started)
      -- a value pushed after the waiter gave up stays in the queue for the next pop
      q:push("kept")
      report(stdout, q:len(), q:pop(0), q:len())
      -- a value already there is returned at once, whatever the timeout
      q:push("there")
      report(stdout, q:pop(0), q:pop(0.01))
    ]])
    assert.is_nil(got[1][1])
    assert.equal("timeout", got[1][2])
    assert.is_true(got[1][3] >= 0.28 and got[1][3] < 1.5, "timed out after " .. got[1][3] .. " s")
    assert.is_nil(got[2][1])
    assert.equal("timeout", got[2][2])
    assert.is_true(got[2][3] < 0.05, "pop(0) took " .. got[2][3] .. " s")
    assert.same(table.pack(1, "kept", 0), got[3])
    assert.same(table.pack("there", nil, "timeout"), got[4])
  end)

  it("does not let the timer of a pop that got its value disturb a later sleep", function()
    local got = run_reports([[
      local q = luasock.queue()
      luasock.spawn(function() q:push("soon") end)
      local v = q:pop(0.1)
      local started = luasock.now()
      luasock.sleep(0.4)
      local slept = luasock.now() - started
      -- and a later pop with a timeout still times out on its own timer
      started = luasock.now()
      local w, err = q:pop(0.2)
      report(stdout, v, slept, w, err, luasock.now() - started)
    ]])
    assert.equal("soon", got[1][1])
    assert.is_true(got[1][2] >= 0.38 and got[1][2] < 1.5, "sleep(0.4) took " .. got[1][2] .. " s")
    assert.is_nil(got[1][3])
    assert.equal("timeout", got[1][4])
    assert.is_true(got[1][5] >= 0.18 and got[1][5] < 1.2, "pop(0.2) took " .. got[1][5] .. " s")
  end)

  it("serves several waiters in the order they began to wait", function()
    local got = run_reports([[
      local q = luasock.queue()
      local waiting, results, tasks = 0, {}, {}
      for i = 1, 5 do
        tasks[i] = luasock.spawn(function()
          waiting = waiting + 1
          results[i] = q:pop()
        end)
      end
      -- every task is in pop before the first push (readiness: the counter, then one more turn)
      while waiting < 5 do luasock.sleep(0) end
      luasock.sleep(0)
      report(stdout, q:len())
      for _, v in ipairs { "a", "b", "c", "d", "e" } do q:push(v) end
      for i = 1, 5 do tasks[i]:join() end
      report(stdout, results[1], results[2], results[3], results[4], results[5], q:len())
    ]])
    assert.same(table.pack(0), got[1])
    assert.same(table.pack("a", "b", "c", "d", "e", 0), got[2])
  end)

  it("keeps the order of the others when waiters in the middle and at the end time out", function()
    local got = run_reports([[
      local q = luasock.queue()
      local waiting, results, errors, tasks = 0, {}, {}, {}
      local function waiter(i, timeout)
        tasks[i] = luasock.spawn(function()
          waiting = waiting + 1
          results[i], errors[i] = q:pop(timeout)
        end)
      end
      waiter(1) waiter(2) waiter(3, 0.05) waiter(4) waiter(5, 0.05)
      while waiting < 5 do luasock.sleep(0) end
      tasks[3]:join()
      tasks[5]:join()
      -- waiter 5 was the last in line: a new one must be linked after waiter 4
      waiter(6)
      while waiting < 6 do luasock.sleep(0) end
      luasock.sleep(0)
      for _, v in ipairs { "a", "b", "c", "d" } do q:push(v) end
      for _, i in ipairs { 1, 2, 4, 6 } do tasks[i]:join() end
      report(stdout, results[1], results[2], results[3], errors[3], results[4], results[5],
        errors[5], results[6], q:len())
      -- no one waits any more: a push is kept
      q:push("z")
      report(stdout, q:len())
    ]])
    assert.same(table.pack("a", "b", nil, "timeout", "c", nil, "timeout", "d", 0), got[1])
    assert.same(table.pack(1), got[2])
  end)

  it("raises for push(nil) and push()", function()
    local got = run_reports([[
      local q = luasock.queue()
      local ok, err = pcall(function() q:push(nil) end)
      report(stdout, ok, err)
      ok, err = pcall(function() q:push() end)
      report(stdout, ok, err)
      report(stdout, q:len())
    ]])
    assert.is_false(got[1][1])
    assert.matches("bad argument #1 to 'push' %(a value %(not nil%) expected, got nil%)", got[1][2])
    assert.is_false(got[2][1])
    assert.matches("bad argument #1 to 'push' %(a value %(not nil%) expected, got no value%)",
      got[2][2])
    assert.same(table.pack(0), got[3])
  end)

  it("raises a clear error for a pop that would wait outside a task", function()
    local got = run_reports([[
      local q = luasock.queue()
      local ok, err = pcall(coroutine.wrap(function() return q:pop() end))
      report(stdout, ok, err)
      ok, err = pcall(coroutine.wrap(function() return q:pop(1) end))
      report(stdout, ok, err)
      -- a pop that need not wait works anywhere
      q:push("ready")
      report(stdout, pcall(coroutine.wrap(function() return q:pop() end)))
      -- the failed pops left no waiter behind: the next push is kept, not handed to them
      q:push("kept")
      report(stdout, q:len(), q:pop(0))
    ]])
    assert.is_false(got[1][1])
    assert.matches("queue:pop must be called from a handler or a luasock.spawn coroutine",
      got[1][2], 1, true)
    assert.is_false(got[2][1])
    assert.matches("queue:pop must be called from a handler or a luasock.spawn coroutine",
      got[2][2], 1, true)
    assert.same(table.pack(true, "ready"), got[3])
    assert.same(table.pack(1, "kept"), got[4])
  end)

  it("raises a clear error for pop in a server's start hook", function()
    local server = helper.start(helper.handler([[
      local q = luasock.queue()
      return {
        start = function()
          local ok, err = pcall(q.pop, q)
          luasock.log("info", "start pop: " .. tostring(ok) .. " " .. tostring(err))
        end,
        handle = function(conn) conn:send("hi\n") end,
      }]]))
    server:wait_log("start pop: false [^\n]*queue:pop must be called from a handler or a "
      .. "luasock.spawn coroutine")
    server:stop()
  end)

  it("carries values between handlers of one server", function()
    -- one connection waits in pop, another one pushes to it
    local server = helper.start(helper.handler([[
      local q = luasock.state.q or luasock.queue()
      luasock.state.q = q
      return { handle = function(conn)
        local line = conn:receive("*l")
        if line == "wait" then
          luasock.log("info", "waiting in pop")
          report(conn, q:pop(5))
        else
          report(conn, q:push(line), q:len())
        end
      end }]]))
    local waiter = server:connect()
    waiter:send("wait\n")
    server:wait_log("waiting in pop")
    local pusher = server:connect()
    pusher:send("hello\n")
    -- the waiter took the value at once: nothing is left in the queue
    assert.same(table.pack(true, 0), helper.read_report(pusher))
    assert.same(table.pack("hello"), helper.read_report(waiter))
    waiter:close()
    pusher:close()
    server:stop()
  end)
end)
