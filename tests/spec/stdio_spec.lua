-- stdio_spec.lua -- luasock.stdin, luasock.stdout and luasock.stderr in `luasock run` scripts,
-- luasock.every, and task:cancel closing a cancelled task's outgoing connections.
--
-- Standard input comes from a pipe, a regular file, /dev/null or a closed descriptor (the
-- pseudo-terminal case is tests/clients/chat_client_test.py). Each script reports through
-- luasock.stdout itself (helper.PRELUDE's report(conn, ...)).
local socket = require "socket"
local helper = require "helper"

local function quote(word)
  return "'" .. word:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

-- Runs PRELUDE .. source with `luasock run`, its stdin from the shell text `input` (e.g.
-- "printf 'a\\nb' |" or "<file"); returns the exit status, stdout and stderr.
local function run(source, input)
  local dir = helper.dir()
  local script = helper.script(helper.PRELUDE .. source)
  local out, err = dir .. "/stdio.out", dir .. "/stdio.err"
  local bin = "timeout -k 2 20 " .. quote(helper.BIN) .. " run " .. quote(script)
  local command
  if input:sub(-1) == "|" then
    command = input .. " " .. bin .. " >" .. quote(out) .. " 2>" .. quote(err)
  else
    command = bin .. " " .. input .. " >" .. quote(out) .. " 2>" .. quote(err)
  end
  local _, _, code = os.execute(command)
  return code, read_file(out), read_file(err)
end

-- As run, requiring exit 0; returns the decoded report lines.
local function reports(source, input)
  local code, out, err = run(source, input)
  assert.equal(0, code, "the script failed; stdout:\n" .. out .. "\nstderr:\n" .. err)
  local decoded = {}
  for line in out:gmatch("[^\n]+") do decoded[#decoded + 1] = helper.decode_report(line) end
  return decoded
end

local READ_LINES = [[
  local n = 0
  while true do
    local line, err, partial = luasock.stdin:receive("*l")
    if not line then
      report(luasock.stdout, "end", n, err, partial)
      break
    end
    n = n + 1
    if n <= 2 then report(luasock.stdout, "line", line) end
  end
]]

describe("luasock.stdin", function()
  after_each(helper.cleanup)

  it("reads lines from a pipe, then nil, 'closed' and the unfinished last line", function()
    local got = reports(READ_LINES, "printf 'one\\ntwo\\nthree' |")
    assert.same(table.pack("line", "one"), got[1])
    assert.same(table.pack("line", "two"), got[2])
    assert.same(table.pack("end", 2, "closed", "three"), got[3])
  end)

  it("reads a regular file (which epoll refuses) to its end", function()
    local path = helper.dir() .. "/input.txt"
    local f = assert(io.open(path, "wb"))
    for i = 1, 200000 do f:write("line ", i, "\n") end
    f:close()
    local got = reports(READ_LINES, "<" .. quote(path))
    assert.same(table.pack("line", "line 1"), got[1])
    assert.same(table.pack("end", 200000, "closed", ""), got[3])
  end)

  it("reads /dev/null and a closed stdin as empty", function()
    assert.same(table.pack("end", 0, "closed", ""), reports(READ_LINES, "</dev/null")[1])
    assert.same(table.pack("end", 0, "closed", ""), reports(READ_LINES, "<&-")[1])
  end)

  it("supports receive(n) and receiveany", function()
    local got = reports([[
      report(luasock.stdout, luasock.stdin:receive(3))
      report(luasock.stdout, luasock.stdin:receiveany(100))
      report(luasock.stdout, luasock.stdin:receive(5))
    ]], "printf 'abcdef' |")
    assert.same(table.pack("abc"), got[1])
    assert.same(table.pack("def"), got[2])
    assert.same(table.pack(nil, "closed", ""), got[3])
  end)

  it("does not block the loop while it waits for input", function()
    local got = reports([[
      local ticks = 0
      local ticker = luasock.spawn(function()
        while true do luasock.sleep(0.05); ticks = ticks + 1 end
      end)
      local line = luasock.stdin:receive("*l")
      ticker:cancel()
      report(luasock.stdout, line, ticks)
    ]], "(sleep 1; echo late) |")
    assert.equal("late", got[1][1])
    assert.is_true(got[1][2] >= 5, "the loop ran only " .. got[1][2] .. " ticks in 1 s")
  end)

  it("is the same object on every use, and closing it ends its reads", function()
    local got = reports([[
      local stdin = luasock.stdin
      report(luasock.stdout, rawequal(stdin, luasock.stdin))
      stdin:close()
      report(luasock.stdout, luasock.stdin:receive("*l"))
    ]], "sleep 5 |")
    assert.same(table.pack(true), got[1])
    assert.same(table.pack(nil, "closed", ""), got[2])
  end)
end)

describe("luasock.stdout and luasock.stderr", function()
  after_each(helper.cleanup)

  it("deliver everything queued when the script ends at once", function()
    local code, out, err = run([[
      local chunk = string.rep("x", 1023) .. "\n"
      for _ = 1, 4096 do luasock.stdout:send(chunk) end
      luasock.stderr:send("to stderr\n")
      return 0
    ]], "</dev/null")
    assert.equal(0, code, err)
    assert.equal(4096 * 1024, #out)
    assert.equal("to stderr\n", err)
  end)

  it("are refused with a clear error outside `luasock run`", function()
    local script = helper.handler([[
      local stdin = luasock.stdin
      return { handle = function() end }
    ]])
    local code, _, err = helper.run { "serve", script, "--listen", "127.0.0.1:0" }
    assert.is_not.equal(0, code)
    assert.matches("luasock.stdin is only available in `luasock run` scripts", err, 1, true)
  end)
end)

describe("luasock.every", function()
  after_each(helper.cleanup)

  it("calls fn(...) every period, from one period on, until cancelled", function()
    local got = reports([[
      local calls, started = {}, luasock.now()
      local t = luasock.every(0.1, function(a, b)
        calls[#calls + 1] = luasock.now() - started
        assert(a == "a" and b == nil)
      end, "a", nil)
      luasock.sleep(1.05)
      report(luasock.stdout, #calls, calls[1], t:cancel())
      local before = #calls
      luasock.sleep(0.3)
      report(luasock.stdout, #calls - before, tostring(t))
    ]], "</dev/null")
    local count, first, cancelled = got[1][1], got[1][2], got[1][3]
    assert.is_true(count >= 6 and count <= 10, count .. " calls in 1.05 s at 0.1 s")
    assert.is_true(first >= 0.09, "the first call came after " .. first .. " s")
    assert.is_true(cancelled)
    assert.same(table.pack(0, "task (done)"), got[2])
  end)

  it("logs an error in fn and goes on calling it", function()
    local code, out, err = run([[
      local calls = 0
      local t = luasock.every(0.05, function()
        calls = calls + 1
        error("boom " .. calls)
      end)
      luasock.sleep(0.4)
      t:cancel()
      report(luasock.stdout, calls)
    ]], "</dev/null")
    assert.equal(0, code, err)
    assert.is_true(helper.decode_report(out)[1] >= 3, out)
    assert.matches("luasock.every: .*boom 1", err)
    assert.matches("boom 3", err, 1, true)
  end)

  it("refuses a bad period or function at the caller's line", function()
    local code, _, err = run([[
      luasock.every(0, function() end)
    ]], "</dev/null")
    assert.is_not.equal(0, code)
    assert.matches("handler%d+%.lua:1: luasock.every: seconds must be a positive finite number", err)
    code, _, err = run("luasock.every(1, 'f')", "</dev/null")
    assert.is_not.equal(0, code)
    assert.matches("luasock.every: fn must be a function, got string", err, 1, true)
  end)
end)

describe("task:cancel and exit", function()
  after_each(helper.cleanup)

  it("closes the cancelled task's outgoing connections, and join returns", function()
    local server = assert(socket.bind("127.0.0.1", 0))
    local _, port = server:getsockname()
    server:settimeout(5)
    local script = helper.script(helper.PRELUDE .. helper.fill([[
      local connected = luasock.queue()
      local t = luasock.spawn(function()
        local conn = assert(luasock.connect("127.0.0.1", ${PORT}))
        conn:send("hello\n")
        connected:push(true)
        return conn:receive("*l") -- waits for ever: the server never answers
      end)
      connected:pop()
      luasock.sleep(0.1)
      report(luasock.stdout, t:cancel(), t:join())
      luasock.sleep(10) -- still running while the server looks at the connection
    ]], { PORT = port }))
    local process = helper.spawn(quote(helper.BIN) .. " run " .. quote(script) .. " 2>/dev/null")
    local client = assert(server:accept())
    client:settimeout(5)
    assert.equal("hello", client:receive("*l"))
    local started = socket.gettime()
    local line, err = client:receive("*l")
    assert.is_nil(line)
    assert.equal("closed", err)
    assert.is_true(socket.gettime() - started < 3, "the connection closed only at exit")
    assert.same(table.pack(true, true), helper.decode_report(process.pipe:read("l")))
    client:close()
    server:close()
  end)

  it("lets a script killed by SIGTERM exit with its stdout flushed", function()
    local script = helper.script(helper.PRELUDE .. [[
      report(luasock.stdout, "before")
      luasock.sleep(10)
    ]])
    local process = helper.spawn(quote(helper.BIN) .. " run " .. quote(script) .. " 2>/dev/null")
    assert.same(table.pack("before"), helper.decode_report(process.pipe:read("l")))
    local started = socket.gettime()
    os.execute("kill " .. process.pid)
    assert.is_nil(process.pipe:read("l"))
    assert.is_true(socket.gettime() - started < 3, "took " .. socket.gettime() - started .. " s")
  end)
end)
