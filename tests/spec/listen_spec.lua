-- listen_spec.lua -- listeners: IPv6, unix sockets (and stale socket files), several at once,
-- the script's `listen` field, --max-connections, and listen failures.
local socket = require "socket"
local helper = require "helper"

-- Reports the peer and local address of every connection, then echoes lines.
local ADDRESSES = [[
  return { handle = function(conn)
    local peer_host, peer_port = conn:peer()
    local host, port = conn:local_address()
    report(conn, peer_host, peer_port, host, port)
    for line in function() return conn:receive() end do conn:send(line, "\n") end
  end }]]

local function serve(opts)
  return helper.start(helper.handler(ADDRESSES), opts)
end

-- Asserts that `client` gets its line echoed; returns the address report read first.
local function check_echo(client, text)
  local addresses = helper.read_report(client)
  assert(client:send(text .. "\n"))
  assert.equal(text, client:receive())
  return addresses
end

local function ipv6_available()
  local probe = socket.tcp6()
  local ok = probe and probe:bind("::1", 0)
  if probe then probe:close() end
  return ok
end

local function file_exists(path)
  return os.execute("test -e " .. helper.shell_quote(path)) == true
end

describe("a *:PORT listener", function()
  after_each(helper.cleanup)

  it("listens on all IPv4 interfaces and accepts on loopback", function()
    local server = serve { listen = "*:0" }
    assert.equal("0.0.0.0", server.listeners[1].host)
    server.listeners[1].host = "127.0.0.1"
    local client = server:connect()
    check_echo(client, "via the wildcard")
    client:close()
    server:stop()
  end)
end)

describe("an IPv6 listener", function()
  after_each(helper.cleanup)

  it("accepts on [::1]", function()
    if not ipv6_available() then return pending("no IPv6 loopback here") end
    local server = serve { listen = "[::1]:0" }
    assert.is_true(server.listeners[1].ipv6)
    assert.equal("::1", server.listeners[1].host)
    local client = server:connect()
    local addresses = check_echo(client, "over ipv6")
    local _, client_port = client:getsockname()
    assert.same(table.pack("::1", tonumber(client_port), "::1", server.port), addresses)
    client:close()
    server:stop()
  end)
end)

describe("a unix listener", function()
  after_each(helper.cleanup)

  it("accepts connections and removes its socket file on stop", function()
    local path = helper.dir() .. "/echo.sock"
    local server = serve { listen = "unix:" .. path }
    assert.equal(path, server.listeners[1].unix)
    local client = server:connect()
    local addresses = check_echo(client, "over unix")
    assert.same(table.pack("unix", nil, "unix:" .. path, nil), addresses)
    client:close()
    assert.is_true(file_exists(path))
    server:stop()
    assert.is_false(file_exists(path), "the socket file is still there after stop")
  end)

  it("replaces a stale socket file left by a killed server", function()
    local path = helper.dir() .. "/stale.sock"
    local killed = serve { listen = "unix:" .. path }
    killed:kill()
    assert.is_true(file_exists(path), "SIGKILL should leave the socket file behind")
    local server = serve { listen = "unix:" .. path }
    local client = server:connect()
    check_echo(client, "after the stale file")
    client:close()
    server:stop()
  end)
end)

describe("several --listen options", function()
  after_each(helper.cleanup)

  it("listen on every address at once", function()
    local listen = { "127.0.0.1:0", "unix:" .. helper.dir() .. "/multi.sock" }
    if ipv6_available() then listen[#listen + 1] = "[::1]:0" end
    local server = serve { listen = listen }
    assert.equal(#listen, #server.listeners)
    local seen = {}
    for i, listener in ipairs(server.listeners) do
      local client = server:connect(i)
      check_echo(client, "listener " .. i)
      client:close()
      seen[listener.unix and "unix" or listener.ipv6 and "ipv6" or "ipv4"] = true
    end
    assert.is_true(seen.ipv4 and seen.unix and (seen.ipv6 or #listen == 2))
    server:stop()
  end)
end)

describe("the script's listen field", function()
  after_each(helper.cleanup)

  it("is used when there is no --listen (a string)", function()
    local port = helper.free_port()
    local script = helper.handler(string.format([[
      return { listen = "127.0.0.1:%d", handle = function(conn)
        conn:send("hello from the script's port\n")
      end }]], port))
    local server = helper.start(script, { listen = {} })
    assert.equal(port, server.port)
    local client = server:connect()
    assert.equal("hello from the script's port", client:receive())
    client:close()
    server:stop()
  end)

  it("is used when there is no --listen (a list)", function()
    local port = helper.free_port()
    local path = helper.dir() .. "/field.sock"
    local script = helper.handler(string.format([[
      return { listen = { "127.0.0.1:%d", "unix:%s" }, handle = function(conn)
        conn:send("hi\n")
      end }]], port, path))
    local server = helper.start(script, { listen = {}, listeners = 2 })
    local addresses = {}
    for i, listener in ipairs(server.listeners) do
      addresses[listener.address] = true
      local client = server:connect(i)
      assert.equal("hi", client:receive())
      client:close()
    end
    assert.same({ ["127.0.0.1:" .. port] = true, ["unix:" .. path] = true }, addresses)
    server:stop()
  end)

  it("is overridden by --listen", function()
    local port = helper.free_port()
    local script = helper.handler(string.format([[
      return { listen = "127.0.0.1:%d", handle = function(conn) conn:send("hi\n") end }]],
      port))
    local server = helper.start(script)
    assert.are_not.equal(port, server.port)
    assert.equal(1, server:count_log("listening on"))
    server:stop()
  end)
end)

describe("--max-connections", function()
  after_each(helper.cleanup)

  it("closes connections beyond the limit at once, with a log line", function()
    local server = serve { args = { "--max-connections", "2" } }
    local first, second = server:connect(), server:connect()
    check_echo(first, "first")
    check_echo(second, "second")
    local mark = server:mark()
    local third = server:connect()
    local data, err = helper.read_all(third)
    assert.equal("", data)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    third:close()
    local line = server:wait_log("[^\n]+", 5, mark)
    assert.is_truthy(line:lower():find("max") or line:lower():find("limit"),
      "the log line does not say why: " .. line)
    assert(first:send("still\n"))
    assert.equal("still", first:receive())
    assert(second:send("fine\n"))
    assert.equal("fine", second:receive())
    -- A slot freed by a closing client is taken by the next one.
    first:close()
    helper.eventually(function()
      local client = server:connect()
      local ok = client:receive()
      client:close()
      return ok
    end, 5, "a freed slot")
    second:close()
    server:stop()
  end)
end)

describe("listen failures", function()
  after_each(helper.cleanup)

  it("report 'address in use' and exit 1", function()
    local server = serve()
    local address = "127.0.0.1:" .. server.port
    local code, _, err = helper.run { "serve", server.script, "--listen", address }
    assert.equal(1, code)
    assert.is_truthy(err:find("luasock: listen " .. address .. ": address in use", 1, true), err)
    local client = server:connect()
    check_echo(client, "the first server is unharmed")
    client:close()
    server:stop()
  end)

  it("report the cause for a unix path in a missing directory and exit 1", function()
    local address = "unix:" .. helper.dir() .. "/no/such/dir/x.sock"
    local code, _, err = helper.run { "serve", "examples/echo.lua", "--listen", address }
    assert.equal(1, code)
    assert.is_truthy(err:find("luasock: listen " .. address .. ": no such file or directory", 1,
      true), err)
  end)

  it("report 'permission denied' and exit 1 for a privileged port", function()
    local id = io.popen("id -u"):read("l")
    if id ~= "0" then return pending("needs root to run the server as nobody") end
    local start = tonumber(helper.read_file("/proc/sys/net/ipv4/ip_unprivileged_port_start"))
    if start and start <= 80 then return pending("port 80 is not privileged here") end
    local dir = helper.dir()
    os.execute("chmod 755 " .. helper.shell_quote(dir))
    local script = helper.handler("return { handle = function() end }")
    os.execute("chmod 644 " .. helper.shell_quote(script))
    local code, _, err = helper.run({ "serve", script, "--listen", "127.0.0.1:80" },
      { wrap = { "runuser", "-u", "nobody", "--" } })
    assert.is_truthy(err:find("luasock: listen 127.0.0.1:80: permission denied", 1, true), err)
    assert.equal(1, code)
  end)
end)
