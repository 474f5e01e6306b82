-- pidfile_spec.lua -- `serve --pid-file PATH`: the pid is written at start and removed at exit,
-- a file naming a live process refuses the start, and a stale one is replaced.
local helper = require "helper"

local ECHO = "examples/echo.lua"

describe("serve --pid-file", function()
  after_each(helper.cleanup)

  it("writes the server's pid and removes the file at exit", function()
    local path = helper.dir() .. "/luasock.pid"
    local server = helper.start(ECHO, { args = { "--pid-file", path } })
    assert.equal(tostring(server.pid) .. "\n", helper.read_file(path))
    server:stop()
    assert.is_nil(io.open(path, "r"))
  end)

  it("refuses to start when the file names a running process, and leaves it alone", function()
    local path = helper.dir() .. "/luasock.pid"
    local first = helper.start(ECHO, { args = { "--pid-file", path } })
    local code, _, err = helper.run { "serve", ECHO, "--listen", "127.0.0.1:0", "--pid-file", path }
    assert.equal(1, code)
    assert.is_truthy(err:find("luasock: pid file " .. path .. " names a running process (pid "
      .. first.pid .. ")", 1, true), err)
    assert.equal(tostring(first.pid) .. "\n", helper.read_file(path))
    first:stop()
  end)

  it("replaces a pid file left by a process that is gone", function()
    local path = helper.dir() .. "/luasock.pid"
    local shell = assert(io.popen("sh -c 'echo $$'"))
    local dead = shell:read("l")
    shell:close()
    helper.write_file(path, dead .. "\n")
    local server = helper.start(ECHO, { args = { "--pid-file", path } })
    assert.equal(tostring(server.pid) .. "\n", helper.read_file(path))
    server:stop()
  end)
end)
