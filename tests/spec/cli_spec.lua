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
