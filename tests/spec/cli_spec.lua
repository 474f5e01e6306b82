-- cli_spec.lua -- the command line: help, version, usage errors (exit 2), `luasock check`, and
-- start-up failures of `serve` (exit 1).
local helper = require "helper"

-- Asserts that stderr holds one clear "luasock: ..." message mentioning `word`.
local function assert_message(err, word)
  assert.is_truthy(err:match("^luasock: "), "stderr does not start with 'luasock: ': " .. err)
  assert.is_truthy(err:find(word, 1, true), "stderr does not mention " .. word .. ": " .. err)
end

local function echo()
  return "examples/echo.lua"
end

describe("luasock --help and --version", function()
  after_each(helper.cleanup)

  it("--help prints usage on stdout and exits 0", function()
    local code, out = helper.run { "--help" }
    assert.equal(0, code)
    assert.is_truthy(out:find("Usage", 1, true), out)
    assert.is_truthy(out:find("serve", 1, true), out)
    assert.is_truthy(out:find("check", 1, true), out)
  end)

  it("serve --help lists the serve options on stdout and exits 0", function()
    local code, out = helper.run { "serve", "--help" }
    assert.equal(0, code)
    for _, option in ipairs { "--listen", "--max-connections", "--log-level", "--ipv6-prefix" } do
      assert.is_truthy(out:find(option, 1, true), "no " .. option .. " in " .. out)
    end
  end)

  it("--version prints the version on stdout and exits 0", function()
    local code, out = helper.run { "--version" }
    assert.equal(0, code)
    assert.is_truthy(out:match("^luasock %d+%.%d+%.%d+"), out)
  end)
end)

describe("bad usage exits 2 with a luasock: message", function()
  after_each(helper.cleanup)

  local cases = {
    { "an unknown command", { "frobnicate" }, "frobnicate" },
    { "an unknown option", { "serve", "--frobnicate", echo() }, "--frobnicate" },
    { "a missing script", { "serve" }, "SCRIPT" },
    { "check without a script", { "check" }, "SCRIPT" },
    { "--listen nonsense", { "serve", "--listen", "nonsense", echo() }, "nonsense" },
    { "a port out of range", { "serve", "--listen", "1.2.3.4:99999", echo() }, "99999" },
    { "--listen without a value", { "serve", echo(), "--listen" }, "--listen" },
    { "--max-connections abc", { "serve", "--max-connections", "abc", echo() }, "abc" },
    { "--max-connections -3", { "serve", "--max-connections", "-3", echo() }, "-3" },
    { "--log-level loud", { "serve", "--log-level", "loud", echo() }, "loud" },
    { "--ipv6-prefix 0", { "serve", "--ipv6-prefix", "0", echo() }, "--ipv6-prefix" },
    { "--ipv6-prefix 129", { "serve", "--ipv6-prefix", "129", echo() }, "129" },
    { "run with an unknown option", { "run", "--bogus", "x.lua" }, "--bogus" },
    { "check with an unknown option", { "check", "--bogus", echo() }, "--bogus" },
  }
  for _, case in ipairs(cases) do
    it("for " .. case[1], function()
      local code, out, err = helper.run(case[2], { timeout = 5 })
      assert.equal(2, code, "stdout: " .. out .. "\nstderr: " .. err)
      assert_message(err, case[3])
      assert.is_falsy(err:find("listening on", 1, true))
    end)
  end
end)

describe("luasock check", function()
  after_each(helper.cleanup)

  it("exits 0 on a good script", function()
    local code, out, err = helper.run { "check", echo() }
    assert.equal(0, code, out .. err)
  end)

  it("exits 1 with FILE:LINE: on a syntax error", function()
    local script = helper.script("local M = {}\nfunction M.handle(conn)\n  if then\nend\n")
    local code, _, err = helper.run { "check", script }
    assert.equal(1, code)
    assert.is_truthy(err:find(script .. ":3:", 1, true), err)
  end)

  it("exits 1 with FILE:LINE: on an error while loading", function()
    local script = helper.script("local x = 1\nerror('fails at load')\nreturn {}\n")
    local code, _, err = helper.run { "check", script }
    assert.equal(1, code)
    assert.is_truthy(err:find(script .. ":2: fails at load", 1, true), err)
  end)

  it("exits 1 with a clear message on a script that does not return a table", function()
    local script = helper.script("return 42\n")
    local code, _, err = helper.run { "check", script }
    assert.equal(1, code)
    assert.is_truthy(err:find(script, 1, true), err)
    assert.is_truthy(err:find("table", 1, true), err)
  end)

  it("exits 1 with a clear message on a table without handle", function()
    local script = helper.script("return { listen = '127.0.0.1:0' }\n")
    local code, _, err = helper.run { "check", script }
    assert.equal(1, code)
    assert.is_truthy(err:find(script, 1, true), err)
    assert.is_truthy(err:find("handle", 1, true), err)
  end)

  it("exits 1 on a script that does not exist", function()
    local code, _, err = helper.run { "check", helper.dir() .. "/missing.lua" }
    assert.equal(1, code)
    assert.is_truthy(err:find("missing.lua", 1, true), err)
  end)
end)

-- Each script below is refused by check as FILE:LINE: message, and by serve (without --listen,
-- so that the script's own listen counts) with the same message after "luasock: ", exit 1.
describe("check refuses what serve refuses, with the same FILE:LINE: message", function()
  after_each(helper.cleanup)

  local cases = {
    { "a port out of range", 'return { listen = "127.0.0.1:99999", handle = function() end }\n',
      ":1: bad listen address '127.0.0.1:99999': port must be a number from 0 to 65535" },
    { "a udp: listener without datagram",
      'local M = { max_line = 100,\n  listen = { "127.0.0.1:0", "udp:127.0.0.1:0" } }\n'
        .. "function M.handle() end\nreturn M\n",
      ":2: no 'datagram' function for listener udp:127.0.0.1:0" },
    { "a TCP listener without handle",
      'return { listen = "127.0.0.1:0", datagram = function() end }\n',
      ":1: no 'handle' function for listener 127.0.0.1:0" },
    { "a start hook that sleeps", 'local luasock = require "luasock"\n'
        .. 'return { listen = "127.0.0.1:0", handle = function() end,\n'
        .. "  start = function() luasock.sleep(1) end }\n",
      ":3: luasock.sleep must be called from a handler or a luasock.spawn coroutine" },
    { "a start hook that connects", 'local luasock = require "luasock"\nlocal M = {}\n'
        .. "function M.handle() end\nfunction M.start()\n"
        .. '  M.upstream = luasock.connect("127.0.0.1", 1)\nend\n'
        .. 'M.listen = "127.0.0.1:0"\nreturn M\n',
      ":5: luasock.connect must be called from a handler or a luasock.spawn coroutine" },
    { "a setting out of range", "local M = {\n  listen = '127.0.0.1:0',\n  max_line = 0,\n}\n"
        .. "function M.handle() end\nreturn M\n",
      ":3: 'max_line' must be an integer of at least 1" },
    { "a misspelt setting", "local M = {\n  listen = '127.0.0.1:0',\n  idle_timout = 5,\n}\n"
        .. "function M.handle() end\nreturn M\n",
      ":3: unknown setting 'idle_timout' (did you mean 'idle_timeout'?)" },
    { "a misspelt callback", "local M = { listen = '127.0.0.1:0' }\n\nfunction M.hadnle() end\n"
        .. "return M\n",
      ":3: unknown setting 'hadnle' (did you mean 'handle'?)" },
    { "a setting misspelt by its start hook", "local M = { listen = '127.0.0.1:0' }\n"
        .. "function M.handle() end\nfunction M.start()\n  M.max_recieve = 10\nend\nreturn M\n",
      ":4: unknown setting 'max_recieve' (did you mean 'max_receive'?)" },
    { "a misspelt tls setting", "return {\n  listen = '127.0.0.1:0', handle = function() end,\n"
        .. "  tls = { cret = 'a.pem', key = 'a.key' },\n}\n",
      ":3: unknown tls setting 'cret' (did you mean 'cert'?)" },
    { "an unknown tls setting", "return {\n  listen = '127.0.0.1:0', handle = function() end,\n"
        .. "  tls = { colour = 'blue' },\n}\n",
      ":3: unknown tls setting 'colour'" },
    { "a script that is not a table", "local x = 1\nreturn x\n",
      ":2: the script must return a table of callbacks, not number" },
  }
  for _, case in ipairs(cases) do
    it("for " .. case[1], function()
      local script = helper.script(case[2])
      local code, out, err = helper.run({ "check", script }, { timeout = 10 })
      assert.equal(1, code, "check accepted it: " .. out .. err)
      assert.equal(script .. case[3], err:match("^[^\n]*"))
      code, out, err = helper.run({ "serve", script }, { timeout = 10 })
      assert.equal(1, code, "serve accepted it: " .. out .. err)
      assert.equal("luasock: " .. script .. case[3], err:match("^[^\n]*"))
    end)
  end

  it("accepts the script's own fields, even those near a setting it also sets", function()
    local script = helper.script([[
      local M = { listen = "127.0.0.1:0", upstream = "127.0.0.1:9090", retries = 3,
        verbose = true, max_line = 100, max_lines = 5, handlers = {} }
      function M.handle() end
      function M.helper() end
      function M.start() M.upstream_port = 9090 end
      return M]])
    local code, out, err = helper.run({ "check", script })
    assert.equal(0, code, out .. err)
    assert.equal(script .. ": ok\n", out)
  end)

  it("checks several files, prints FILE: ok for the good ones and exits 1 if any fails", function()
    local good = helper.script("return { handle = function() end }\n", "good.lua")
    local bad = helper.script("return {\n  handle = function() end,\n  send_timout = 1 }\n",
      "bad.lua")
    local syntax = helper.script("return {\n  handle = function() end\n  oops }\n", "syntax.lua")
    local code, out, err = helper.run { "check", good, bad, echo(), syntax }
    assert.equal(1, code)
    assert.equal(good .. ": ok\n" .. echo() .. ": ok\n", out)
    local lines = {}
    for line in err:gmatch("[^\n]+") do
      assert.is_truthy(line:match("^[^:]+:%d+: "), "not FILE:LINE: message: " .. line)
      lines[#lines + 1] = line
    end
    assert.equal(2, #lines, err)
    assert.equal(bad .. ":3: unknown setting 'send_timout' (did you mean 'send_timeout'?)",
      lines[1])
    assert.is_truthy(lines[2]:find(syntax .. ":3:", 1, true), lines[2])
    -- A start hook's spawned task is stopped, not run: check never serves.
    local spawns = helper.script('local luasock = require "luasock"\nreturn { handle = function() '
      .. "end, start = function() luasock.spawn(function() luasock.sleep(60) end) end }\n")
    code, out = helper.run({ "check", good, spawns, echo() }, { timeout = 10 })
    assert.equal(0, code)
    assert.equal(good .. ": ok\n" .. spawns .. ": ok\n" .. echo() .. ": ok\n", out)
  end)
end)

describe("argument errors from the runtime", function()
  after_each(helper.cleanup)

  it("point at the script's line, not into scripts/luasock", function()
    for _, case in ipairs {
      { "luasock.connect(nil)", "bad argument #1 to 'connect' (string expected, got nil)" },
      { 'luasock.connect("127.0.0.1", 70000)', "bad argument #2 to 'connect'" },
      { 'luasock.connect("127.0.0.1", 1, { timeout = "soon" })', "luasock.connect: timeout" },
      { 'luasock.connect("127.0.0.1", 1, { tls = 1 })', "luasock.connect: tls must be" },
      { 'luasock.connect("127.0.0.1", 1)', "luasock.connect must be called from a handler" },
      { 'require("luasock.pubsub").publish(1, "x")', "bad argument #1 to 'publish'" },
      { 'require("luasock.pubsub").subscribe("c", 1)', "bad argument #2 to 'subscribe'" },
    } do
      local script = helper.script('local luasock = require "luasock"\n\n' .. case[1]
        .. "\nreturn { handle = function() end }\n")
      local code, _, err = helper.run { "check", script }
      assert.equal(1, code, case[1])
      assert.equal(script .. ":3: " .. case[2], err:sub(1, #script + 4 + #case[2]), case[1])
    end
  end)

  it("point at the caller's line in a running program too", function()
    local reports = helper.run_reports([[
      local function call(...) local conn = luasock.connect(...) return conn end
      report(stdout, pcall(call, "127.0.0.1", "80"))
      report(stdout, pcall(call, "127.0.0.1", 80, 1))
    ]])
    assert.is_false(reports[1][1])
    assert.is_truthy(reports[1][2]:find(":1: bad argument #2 to 'connect'"), reports[1][2])
    assert.is_truthy(reports[2][2]:find(":1: bad argument #3 to 'connect'"), reports[2][2])
  end)
end)

describe("serve start-up failures exit 1", function()
  after_each(helper.cleanup)

  it("on an error in start", function()
    local script = helper.script([[
      return { handle = function() end, start = function() error("start refused") end }]])
    local code, _, err = helper.run { "serve", script, "--listen", "127.0.0.1:0" }
    assert.equal(1, code)
    assert.is_truthy(err:find(script .. ":1: start refused", 1, true), err)
    assert.is_falsy(err:find("listening on", 1, true), err)
  end)

  it("on a syntax error, with FILE:LINE:", function()
    local script = helper.script("return {\n  handle = function() end\n  oops\n}\n")
    local code, _, err = helper.run { "serve", script, "--listen", "127.0.0.1:0" }
    assert.equal(1, code)
    assert.is_truthy(err:find(script .. ":3:", 1, true), err)
    assert.is_falsy(err:find("listening on", 1, true), err)
  end)

  it("on a script that does not exist, with a luasock: message", function()
    local missing = helper.dir() .. "/missing.lua"
    local code, _, err = helper.run { "serve", missing, "--listen", "127.0.0.1:0" }
    assert.equal(1, code)
    assert_message(err, missing)
  end)
end)

describe("serve stops cleanly", function()
  after_each(helper.cleanup)

  -- Handlers that are busy in every way a handler can wait when the signal comes.
  local BUSY = [[
    local luasock = require "luasock"
    return { high_water = 16384, handle = function(conn)
      local what = conn:receive()
      conn:send("busy\n")
      if what == "sleep" then luasock.sleep(60)
      elseif what == "send" then
        while conn:send(string.rep("s", 65536)) do end
      elseif what == "spawn" then
        luasock.spawn(function() luasock.sleep(60) end)
        conn:receive()
      else conn:receive() end
    end }]]

  for _, signal in ipairs { "TERM", "INT" } do
    it("on SIG" .. signal .. " with busy connections open, exiting 0", function()
      local path = helper.dir() .. "/stop.sock"
      local server = helper.start(helper.script(BUSY),
        { listen = { "127.0.0.1:0", "unix:" .. path }, args = { "--grace", "1" } })
      local clients = {}
      for i, what in ipairs { "read", "sleep", "send", "spawn" } do
        clients[i] = server:connect(1, function(c) c:setoption("recv-buffer-size", 4096) end)
        assert(clients[i]:send(what .. "\n"))
        assert.equal("busy", clients[i]:receive())
      end
      clients[#clients + 1] = server:connect(2)
      local log = server:stop(signal)
      assert.is_falsy(log:find("[error]", 1, true), log)
      local exists = os.execute("test -e " .. helper.shell_quote(path))
      assert.is_falsy(exists, "the unix socket file is left after SIG" .. signal)
      for _, client in ipairs(clients) do client:close() end
    end)
  end
end)
