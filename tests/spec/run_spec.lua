-- run_spec.lua -- `luasock run SCRIPT [ARGS...]`: arg and `...`, the exit status, spawn and join,
-- and the client examples examples/http_get.lua (against a luasock handler that speaks HTTP)
-- and examples/portscan.lua (inside a network namespace of its own).
--
-- No lookup or packet leaves the machine: http_get is given the host name "localhost", which
-- /etc/hosts answers, and portscan runs with its servers in a network namespace made by the
-- test, where only loopback exists (and so do its fixed ports).
local socket = require "socket"
local helper = require "helper"

local RUN_PRELUDE = helper.RUN_PRELUDE
local fill = helper.fill

-- The report lines of a script's stdout, decoded.
local function reports(out)
  local decoded = {}
  for line in out:gmatch("[^\n]+") do decoded[#decoded + 1] = helper.decode_report(line) end
  return decoded
end

-- Runs RUN_PRELUDE .. source with `luasock run`, requires exit 0; returns the decoded reports.
local function run_reports(source)
  local code, out, err = helper.run { "run", helper.script(RUN_PRELUDE .. source) }
  assert.equal(0, code, "the client script failed; stdout:\n" .. out .. "\nstderr:\n" .. err)
  return reports(out)
end

-- Runs `luasock run` with `args`, measuring the wall time; returns code, stdout, stderr, seconds.
local function timed_run(args, opts)
  local started = socket.gettime()
  local code, out, err = helper.run(args, opts)
  return code, out, err, socket.gettime() - started
end

describe("luasock run", function()
  after_each(helper.cleanup)

  it("sets arg as the lua interpreter does and passes the arguments as ...", function()
    local script = helper.script(RUN_PRELUDE .. [[
      report(stdout, arg[0], arg[1], arg[2], arg[3], #arg)
      report(stdout, select("#", ...), ...)
    ]], "args.lua")
    local code, out, err = helper.run { "run", script, "a", "b c" }
    assert.equal(0, code, err)
    local got = reports(out)
    assert.same(table.pack(script, "a", "b c", nil, 2), got[1])
    assert.same(table.pack(2, "a", "b c"), got[2])
  end)

  local statuses = {
    { "return 3", 3 },
    { "return 0", 0 },
    { "return false", 1 },
    { "return true", 0 },
    { "return", 0 },
    { "local x = 1", 0 },
    { "return nil, 'ignored'", 0 },
    { "local luasock = require 'luasock'\nluasock.sleep(0.01)\nreturn 5", 5 },
  }
  for _, case in ipairs(statuses) do
    it(string.format("exits %d after '%s'", case[2], case[1]:gsub("\n", "; ")), function()
      local code, out, err = helper.run { "run", helper.script(case[1] .. "\n") }
      assert.equal(case[2], code, "stderr: " .. err)
      assert.equal("", out)
    end)
  end

  it("exits 1 for an error, with file:line, the message and a traceback on stderr", function()
    local script = helper.script("local x = 1\n\nlocal function f() error('boom') end\nf()\n",
      "fails.lua")
    local code, out, err = helper.run { "run", script }
    assert.equal(1, code)
    assert.equal("", out)
    assert.is_truthy(err:find("fails.lua:3: boom", 1, true), err)
    assert.is_truthy(err:find("traceback", 1, true), err)
  end)

  it("exits 1 for an error after the script has suspended", function()
    local script = helper.script(
      "local luasock = require 'luasock'\nluasock.sleep(0.01)\nerror('late')\n", "late.lua")
    local code, _, err = helper.run { "run", script }
    assert.equal(1, code)
    assert.is_truthy(err:find("late.lua:3: late", 1, true), err)
  end)

  it("abandons background coroutines when the script returns", function()
    local script = helper.script([[
      local luasock = require "luasock"
      luasock.spawn(function() luasock.sleep(30) end)
      luasock.sleep(0.01)
      return 4
    ]])
    local code, _, err, took = timed_run({ "run", script }, { timeout = 25 })
    assert.equal(4, code, err)
    assert.is_true(took < 5, "exit took " .. took .. " s")
  end)

  it("exits 2 for bad usage", function()
    local code, _, err = helper.run({ "run" }, { timeout = 5 })
    assert.equal(2, code)
    assert.is_truthy(err:find("SCRIPT", 1, true), err)
  end)

  it("exits 1 when the script cannot be loaded", function()
    local code, _, err = helper.run({ "run", helper.dir() .. "/missing.lua" }, { timeout = 5 })
    assert.equal(1, code)
    assert.is_truthy(err:find("missing.lua", 1, true), err)
  end)
end)

describe("spawn and join in a client script", function()
  after_each(helper.cleanup)

  it("join returns true and the results, or false and the message", function()
    local got = run_reports([[
      local sum = luasock.spawn(function(a, b) luasock.sleep(0.01) return a + b, "sum" end, 2, 3)
      report(stdout, tostring(sum))
      report(stdout, sum:join())
      report(stdout, tostring(sum))
      local failed = luasock.spawn(function() error("boom") end)
      local ok, message = failed:join()
      report(stdout, ok, message, tostring(failed))
      local early = luasock.spawn(function() return "early" end)
      luasock.sleep(0.05)
      report(stdout, tostring(early), early:join())
      report(stdout, luasock.spawn(function() end):join())
    ]])
    assert.same(table.pack("task (running)"), got[1])
    assert.same(table.pack(true, 5, "sum"), got[2])
    assert.same(table.pack("task (done)"), got[3])
    assert.equal(false, got[4][1])
    assert.is_truthy(got[4][2]:find(".lua:5: boom", 1, true), got[4][2])
    assert.equal("task (failed)", got[4][3])
    assert.same(table.pack("task (done)", true, "early"), got[5])
    assert.same(table.pack(true), got[6])
  end)

  it("runs tasks side by side", function()
    local got = run_reports([[
      local started = luasock.now()
      local tasks = {}
      for i = 1, 5 do
        tasks[i] = luasock.spawn(function() luasock.sleep(0.3) return i end)
      end
      local results = {}
      for i, task in ipairs(tasks) do results[i] = select(2, task:join()) end
      report(stdout, table.concat(results, ","), luasock.now() - started)
    ]])
    assert.equal("1,2,3,4,5", got[1][1])
    assert.is_true(got[1][2] >= 0.25 and got[1][2] < 1.2, "took " .. got[1][2] .. " s")
  end)
end)

-- `body()`: 200000 bytes holding every byte value and many "\r\n\r\n", shared by the HTTP
-- handler and the spec.
local BODY_SOURCE = [[
  local function body()
    local parts = {}
    for i = 0, 49999 do parts[#parts + 1] = string.char(i % 256, i * 7 % 256, 13, 10) end
    return table.concat(parts)
  end
]]
local BODY = load(BODY_SOURCE .. " return body()")()

-- An HTTP/1.0 server: GET /file.bin gets 200 and body(), anything else 404. The request line
-- and Host header it saw come back as X-Request-Line and X-Host.
local HTTP_SERVER = BODY_SOURCE .. [[
  return { handle = function(conn)
    local head = assert(conn:receiveuntil("\r\n\r\n"))
    local request = head:match("^[^\r\n]*")
    local host = head:match("\r\nHost: ([^\r\n]*)") or "none"
    local status, data = "404 Not Found", "no such file\n"
    if request:match("^GET /file%.bin HTTP/1%.[01]$") then status, data = "200 OK", body() end
    conn:send("HTTP/1.0 ", status, "\r\nContent-Type: application/octet-stream\r\n",
      "Content-Length: ", #data, "\r\nX-Request-Line: ", request, "\r\nX-Host: ", host,
      "\r\n\r\n", data)
  end }]]

-- The response head HTTP_SERVER sends to examples/http_get.lua for `path`.
local function http_head(status, path, length)
  return table.concat {
    "HTTP/1.0 ", status, "\r\nContent-Type: application/octet-stream\r\n",
    "Content-Length: ", length, "\r\nX-Request-Line: GET ", path, " HTTP/1.0\r\n",
    "X-Host: localhost\r\n\r\n",
  }
end

describe("examples/http_get.lua", function()
  after_each(helper.cleanup)

  it("prints the status line, the headers and the exact body, and exits 0", function()
    local server = helper.start(helper.handler(HTTP_SERVER))
    local code, out, err = helper.run {
      "run", "examples/http_get.lua", "localhost", tostring(server.port), "/file.bin" }
    assert.equal(0, code, err)
    local want = http_head("200 OK", "/file.bin", #BODY) .. BODY
    assert.equal(#want, #out)
    assert.is_true(want == out, "stdout differs from the response")
    server:stop()
  end)

  it("prints a 404 response and exits 1", function()
    local server = helper.start(helper.handler(HTTP_SERVER))
    local code, out = helper.run {
      "run", "examples/http_get.lua", "localhost", tostring(server.port), "/nothing" }
    assert.equal(1, code)
    assert.equal(http_head("404 Not Found", "/nothing", 13) .. "no such file\n", out)
    server:stop()
  end)

  it("reports a refused connection on stderr and exits 1", function()
    local port = helper.free_port()
    local code, out, err = helper.run {
      "run", "examples/http_get.lua", "localhost", tostring(port) }
    assert.equal(1, code)
    assert.equal("", out)
    assert.equal("http_get: connect localhost:" .. port .. ": connection refused\n", err)
  end)

  for _, args in ipairs { {}, { "localhost", "http" }, { "localhost", "80.5" } } do
    it("exits 2 with its usage for arguments {" .. table.concat(args, ", ") .. "}", function()
      local code, out, err = helper.run { "run", "examples/http_get.lua", table.unpack(args) }
      assert.equal(2, code)
      assert.equal("", out)
      assert.is_truthy(err:find("usage: luasock run examples/http_get.lua", 1, true), err)
    end)
  end
end)

-- Makes a network namespace with lo up and 192.0.2.0/24 routed into lo, where SYNs are
-- dropped; returns its name, or nil when that is not possible here (needs root and iproute2).
local function make_netns()
  local name = string.format("luasock-test-%d-%d", os.time(), math.random(100000, 999999))
  if os.execute("ip netns add " .. name .. " >/dev/null 2>&1") ~= true then return nil end
  local exec = "ip netns exec " .. name .. " "
  local ok = os.execute(exec .. "ip link set lo up && " .. exec
    .. "ip route add 192.0.2.0/24 dev lo")
  if ok ~= true then
    os.execute("ip netns del " .. name)
    error("cannot set up network namespace " .. name)
  end
  return name
end

-- Calls fn() with helper.BIN replaced by a wrapper that runs the binary inside `netns`, so that
-- helper.start and helper.run put their servers and scripts there; returns fn's results.
local function inside(netns, fn)
  local real = helper.BIN
  local wrapper = helper.script(string.format("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n",
    helper.shell_quote(netns), helper.shell_quote(real)), "in-netns.sh")
  assert(os.execute("chmod +x " .. helper.shell_quote(wrapper)))
  helper.BIN = wrapper
  local results = table.pack(pcall(fn))
  helper.BIN = real
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

describe("examples/portscan.lua", function()
  local netns

  after_each(function()
    if netns then os.execute("ip netns del " .. netns .. " >/dev/null 2>&1") end
    netns = nil
    helper.cleanup()
  end)

  -- The namespace is the test's own, so the fixed ports below cannot collide with anything;
  -- they lie below the range connections take their source ports from, so no connect to a
  -- closed port among them can connect to itself.
  it("lists exactly the open ports of a range, in order", function()
    netns = make_netns()
    if not netns then return pending("needs root and iproute2 for a network namespace") end
    local code, out, err, took = inside(netns, function()
      local server = helper.start("examples/echo.lua", { listen = {
        "127.0.0.1:20041", "127.0.0.1:20007", "127.0.0.1:20023" } })
      local results = table.pack(timed_run {
        "run", "examples/portscan.lua", "127.0.0.1", "20000", "20049", "0.5" })
      server:stop()
      return table.unpack(results, 1, results.n)
    end)
    assert.equal(0, code, err)
    assert.equal("127.0.0.1:20007 open\n127.0.0.1:20023 open\n127.0.0.1:20041 open\n"
      .. "3 of 50 ports open\n", out)
    assert.is_true(took < 10, "the scan took " .. took .. " s")
  end)

  it("waits for the timeouts of all ports at once", function()
    netns = make_netns()
    if not netns then return pending("needs root and iproute2 for a network namespace") end
    local code, out, err, took = inside(netns, function()
      return timed_run { "run", "examples/portscan.lua", "192.0.2.1", "1", "50", "0.5" }
    end)
    assert.equal(0, code, err)
    assert.equal("0 of 50 ports open\n", out)
    assert.is_true(took >= 0.4 and took < 6, "50 connects of 0.5 s took " .. took .. " s")
  end)

  it("exits 2 with its usage for a bad range", function()
    local code, out, err = helper.run {
      "run", "examples/portscan.lua", "127.0.0.1", "100", "10" }
    assert.equal(2, code)
    assert.equal("", out)
    assert.is_truthy(err:find("usage: luasock run examples/portscan.lua", 1, true), err)
  end)
end)
