-- socket_compat_spec.lua -- issue 15: require "luasock.socket", LuaSocket's API on luasock's
-- connections. LuaSocket's own socket.http and socket.smtp run inside handlers against real
-- local servers (tests/clients/slow_http.py, tests/clients/tiny_smtp.py) while other clients
-- are served without delay; the tcp object's methods, select, dns, try/newtry/protect and UDP
-- run in a `luasock run` client script against a luasock server; calls that would wait outside
-- a coroutine raise.
local socket = require "socket"
local helper = require "helper"

local fill = helper.fill

-- Starts `python3 tests/clients/NAME ARGS...` (helper.cleanup stops it), which prints its
-- port; returns the port.
local function start_helper(name, ...)
  local words = {}
  for i, arg in ipairs({ ... }) do words[i] = helper.shell_quote(arg) end
  local started = helper.spawn(string.format("timeout 120 python3 tests/clients/%s %s </dev/null",
    name, table.concat(words, " ")))
  return assert(tonumber(started.pipe:read("l")), name .. " did not print its port")
end

-- The server every test talks to: lines are echoed, except the commands
--   http PORT      50 socket.http requests at once to 127.0.0.1:PORT; reports how many came
--                  back right, the seconds they took, and the body and code of a POST
--   get PORT N     one socket.http request for /gN; reports its body and code
--   smtp PORT      socket.smtp.send of one message with two recipients; reports its results
--   sleep S        socket.sleep(S), then reports "slept"
--   partial        sends "abc" with no newline
--   later          sends "late line\n" after 0.2 s
--   bye            sends "tail" and closes
local SERVER = [[
local socket = require "luasock.socket"
local http = require "socket.http"
local smtp = require "socket.smtp"
local commands = {}
function commands.http(conn, port)
  local started = socket.gettime()
  local tasks = {}
  for i = 1, 50 do
    tasks[i] = luasock.spawn(http.request, "http://127.0.0.1:" .. port .. "/r" .. i)
  end
  local good = 0
  for i, task in ipairs(tasks) do
    local ok, body, code = task:join()
    if ok and body == "hello /r" .. i and code == 200 then good = good + 1 end
  end
  local elapsed = socket.gettime() - started
  local body, code = http.request("http://127.0.0.1:" .. port .. "/form", "a=1&b=2")
  report(conn, good, elapsed, body, code)
end
function commands.get(conn, arg)
  local port, n = arg:match("^(%d+) (%d+)$")
  local body, code = http.request("http://127.0.0.1:" .. port .. "/g" .. n)
  report(conn, body, code)
end
function commands.smtp(conn, port)
  report(conn, smtp.send {
    from = "<alice@example.test>",
    rcpt = { "<bob@example.test>", "<carol@example.test>" },
    source = smtp.message {
      headers = { subject = "luasock.socket", to = "bob@example.test" },
      body = "first line\r\n.a line that starts with a dot\r\nlast line",
    },
    server = "127.0.0.1", port = tonumber(port),
  })
end
function commands.sleep(conn, seconds)
  socket.sleep(tonumber(seconds))
  report(conn, "slept")
end
function commands.partial(conn) conn:send("abc") end
function commands.later(conn)
  luasock.sleep(0.2)
  conn:send("late line\n")
end
function commands.bye(conn)
  conn:send("tail")
  conn:close()
end
return { handle = function(conn)
  for line in function() return conn:receive() end do
    local name, arg = line:match("^(%S+)%s*(.*)$")
    if commands[name] then commands[name](conn, arg) else conn:send(line, "\n") end
  end
end }
]]

-- Asks `client` "ping N" every 50 ms for `seconds`; returns the slowest answer's seconds.
local function ping_for(client, seconds)
  local deadline, slowest, n = socket.gettime() + seconds, 0, 0
  while socket.gettime() < deadline do
    n = n + 1
    local sent = socket.gettime()
    assert.equal("ping " .. n, helper.ask(client, "ping " .. n))
    slowest = math.max(slowest, socket.gettime() - sent)
    socket.sleep(0.05)
  end
  return slowest
end

-- Runs RUN_PRELUDE .. source with `luasock run` (no lookup leaves the machine: the name server
-- is a closed local port, and localhost comes from /etc/hosts); requires exit 0 and returns
-- the decoded report lines.
local function run(source)
  local prelude = "assert(luasock.set_nameservers('127.0.0.1:1')); "
  return helper.run_reports(source, { prelude = prelude })
end

describe("luasock.socket", function()
  after_each(helper.cleanup)

  it("runs 50 socket.http requests at once while another client's echo stays fast", function()
    local port = start_helper("slow_http.py", 0.5)
    local server = helper.start(helper.handler(SERVER))
    local worker, other = server:connect(), server:connect()
    worker:settimeout(20)
    assert(worker:send("http " .. port .. "\n"))
    local slowest = ping_for(other, 0.5)
    local result = helper.read_report(worker)
    print(string.format("\n50 socket.http requests, each answered after 0.5 s: %.3f s in all "
      .. "(%.1f s one after another); slowest echo meanwhile %.1f ms",
      result[2], 50 * 0.5, slowest * 1000))
    assert.equal(50, result[1])
    assert.equal("posted a=1&b=2", result[3])
    assert.equal(201, result[4])
    assert.is_true(result[2] < 5, "50 requests took " .. result[2] .. " s")
    assert.is_true(slowest < 0.25, "an echo took " .. slowest .. " s")
    server:stop()
  end)

  it("serves 50 handlers that each make a socket.http request at once", function()
    local port = start_helper("slow_http.py", 0.5)
    local server = helper.start(helper.handler(SERVER))
    local clients = {}
    for i = 1, 50 do
      clients[i] = server:connect()
      clients[i]:settimeout(20)
    end
    local other = server:connect()
    local started = socket.gettime()
    for i, client in ipairs(clients) do
      assert(client:send("get " .. port .. " " .. i .. "\n"))
    end
    local slowest = ping_for(other, 0.4)
    for i, client in ipairs(clients) do
      assert.same(table.pack("hello /g" .. i, 200), helper.read_report(client))
    end
    local elapsed = socket.gettime() - started
    print(string.format("\n50 handlers, one socket.http request each, answered after 0.5 s: "
      .. "%.3f s in all (%.1f s one after another); slowest echo meanwhile %.1f ms",
      elapsed, 50 * 0.5, slowest * 1000))
    assert.is_true(elapsed < 5, "50 handlers took " .. elapsed .. " s")
    assert.is_true(slowest < 0.25, "an echo took " .. slowest .. " s")
    server:stop()
  end)

  it("sends mail with socket.smtp.send", function()
    local outfile = helper.dir() .. "/mail.txt"
    local port = start_helper("tiny_smtp.py", outfile)
    local server = helper.start(helper.handler(SERVER))
    local client = server:connect()
    assert(client:send("smtp " .. port .. "\n"))
    local result = helper.read_report(client)
    assert.equal(1, result[1], tostring(result[2]))
    local mail = helper.read_file(outfile)
    assert.truthy(mail:find("FROM <alice@example.test>\nTO <bob@example.test>\n"
      .. "TO <carol@example.test>\nDATA\n", 1, true), mail)
    assert.truthy(mail:find("\nSubject: luasock.socket\n", 1, true), mail)
    assert.truthy(mail:find("\nfirst line\n.a line that starts with a dot\nlast line\nEND\n", 1,
      true), mail)
    -- A refused connection comes back as nil, err from the protected function.
    assert(client:send("smtp " .. helper.free_port() .. "\n"))
    result = helper.read_report(client)
    assert.same({ n = 2, nil, "connection refused" }, result)
    server:stop()
  end)

  it("socket.sleep suspends only its caller", function()
    local server = helper.start(helper.handler(SERVER))
    local sleeper, other = server:connect(), server:connect()
    local started = socket.gettime()
    assert(sleeper:send("sleep 1\n"))
    local slowest = ping_for(other, 0.6)
    assert.same({ n = 1, "slept" }, helper.read_report(sleeper))
    local slept = socket.gettime() - started
    assert.is_true(slept >= 0.95 and slept < 3, "slept " .. slept .. " s")
    assert.is_true(slowest < 0.25, "an echo took " .. slowest .. " s")
    server:stop()
  end)

  it("gives tcp objects LuaSocket's methods over real connections", function()
    local server = helper.start(helper.handler(SERVER))
    local reports = run(fill([[
      local socket = require "luasock.socket"
      assert(package.loaded.socket == socket and require "socket" == socket)
      local function eq(want, ...)
        local got = table.pack(...)
        for i = 1, math.max(#want, got.n) do
          if want[i] ~= got[i] then
            error(string.format("value %d: want %s, got %s", i, tostring(want[i]),
              tostring(got[i])), 2)
          end
        end
      end
      local PORT = ${PORT}
      local c = socket.tcp()
      eq({ nil, "closed", "" }, c:receive())
      eq({ 1 }, c:settimeout(2))
      eq({ 1 }, c:connect("127.0.0.1", PORT))
      eq({ nil, "already connected" }, c:connect("127.0.0.1", PORT))
      -- send(data, i, j): the index of the last byte sent
      eq({ 8 }, c:send("xxhello\nyy", 3, 8))
      eq({ "pre:hello" }, c:receive("*l", "pre:"))
      eq({ 8 }, c:send("abc\ndef\n", -4))
      eq({ "def" }, c:receive())
      eq({ 4 }, c:send("abc\n"))
      eq({ "ab" }, c:receive(2))
      eq({ ">c" }, c:receive("*l", ">"))
      eq({ 0 }, c:send("", 1))
      -- peer and local addresses, options
      local host, port, family = c:getpeername()
      eq({ "127.0.0.1", PORT, "inet" }, host, port, family)
      host, port, family = c:getsockname()
      eq({ "127.0.0.1", "inet" }, host, family)
      assert(math.type(port) == "integer" and port > 0)
      eq({ 1 }, c:setoption("tcp-nodelay", true))
      eq({ 1 }, c:setoption("keepalive", true))
      eq({ true }, c:getoption("tcp-nodelay"))
      eq({ nil, "unsupported option bogus" }, c:setoption("bogus", 1))
      -- timeouts: the partial line comes back with the prefix
      c:settimeout(0.2)
      local started = socket.gettime()
      eq({ nil, "timeout", "" }, c:receive())
      local waited = socket.gettime() - started
      assert(waited >= 0.15 and waited < 2, "waited " .. waited)
      c:send("partial\n")
      eq({ nil, "timeout", "P:abc" }, c:receive("*l", "P:"))
      c:settimeout(0)
      eq({ nil, "timeout", "" }, c:receive())
      c:settimeout(nil)
      c:send("\n")
      eq({ "" }, c:receive())
      -- "*a" until the peer closes, then "closed"
      c:settimeout(2)
      c:send("bye\n")
      eq({ "tail" }, c:receive("*a"))
      eq({ nil, "closed", "" }, c:receive())
      eq({ 1 }, c:close())
      eq({ nil, "closed", 0 }, c:send("x"))
      -- socket.connect, refused connections, shutdown
      local d = assert(socket.connect("localhost", PORT))
      eq({ 1 }, d:shutdown("send"))
      eq({ nil, "closed", "" }, d:receive())
      d:close()
      local refused = socket.connect("127.0.0.1", ${FREE})
      eq({ nil, "connection refused" }, socket.connect("127.0.0.1", ${FREE}))
      assert(refused == nil)
      report(stdout, "tcp ok")
    ]], { PORT = server.port, FREE = helper.free_port() }))
    assert.same({ { n = 1, "tcp ok" } }, reports)
    server:stop()
  end)

  it("gives select, dns, sleep, gettime, try/newtry/protect and UDP", function()
    local server = helper.start(helper.handler(SERVER))
    local reports = run(fill([[
      local socket = require "luasock.socket"
      local PORT = ${PORT}
      local a = assert(socket.connect("127.0.0.1", PORT))
      local b = assert(socket.connect("127.0.0.1", PORT))
      a:settimeout(2) b:settimeout(2)
      -- select: nothing readable within the timeout; every connected socket is writable
      local r, w, err = socket.select({ a, b }, nil, 0.1)
      assert(#r == 0 and #w == 0 and err == "timeout", tostring(err))
      r, w, err = socket.select({ a, b }, { a }, 0)
      assert(#r == 0 and #w == 1 and w[1] == a and w[a] and err == nil)
      -- b becomes readable within the timeout; its first byte is kept for receive
      b:send("later\n")
      local started = socket.gettime()
      r, w, err = socket.select({ a, b }, nil, 2)
      assert(#r == 1 and r[1] == b and r[b] and not r[a] and err == nil, tostring(err))
      assert(socket.gettime() - started < 1.5)
      assert(b:dirty())
      r = socket.select({ b }, nil, 0)
      assert(r[1] == b, "a kept byte makes the socket readable")
      assert(b:receive() == "late line")
      -- a kept byte goes before the data, and into the partial result after the prefix
      b:send("partial\n")
      assert(socket.select({ b }, nil, 2)[1] == b)
      b:settimeout(0.1)
      local none, why, partial = b:receive("*l", "P:")
      assert(none == nil and why == "timeout" and partial == "P:abc", tostring(partial))
      b:send("later\n")
      assert(socket.select({ b }, nil, 2)[1] == b)
      assert(b:receive(0) == "" and b:receive(4, "N:") == "N:late" and b:receive() == " line")
      b:settimeout(2)
      -- one socket alone, data already there
      a:send("x\n")
      r = socket.select({ a }, nil, 2)
      assert(r[1] == a)
      assert(a:receive(1) == "x" and a:receive() == "")
      -- a closed peer counts as readable
      a:send("bye\n")
      assert(a:receive(4) == "tail")
      r = socket.select({ a }, nil, 2)
      assert(r[1] == a)
      local data, why = a:receive()
      assert(data == nil and why == "closed")
      -- sleep and gettime
      local before = socket.gettime()
      socket.sleep(0.2)
      local slept = socket.gettime() - before
      assert(slept >= 0.19 and slept < 2, "slept " .. slept)
      -- dns (localhost from /etc/hosts)
      local ip, info = socket.dns.toip("localhost")
      assert(ip == "127.0.0.1" and info.ip[1] == "127.0.0.1", tostring(ip))
      assert(socket.dns.toip("127.0.0.1") == "127.0.0.1")
      assert(socket.dns.tohostname("127.0.0.1") == "localhost")
      local list = assert(socket.dns.getaddrinfo("127.0.0.1"))
      assert(list[1].addr == "127.0.0.1" and list[1].family == "inet")
      assert(type(socket.dns.gethostname()) == "string")
      -- try, newtry, protect (across a suspension), skip
      local finalized = false
      local f = socket.protect(function(x)
        socket.sleep(0.01)
        local try = socket.newtry(function() finalized = true end)
        try(x, "boom")
        return "not reached"
      end)
      local got, message = f(false)
      assert(got == nil and message == "boom" and finalized)
      assert(socket.protect(function() return socket.try(1, 2) end)() == 1)
      local ok, e = pcall(socket.protect(function() error("a real error") end))
      assert(not ok and e:find("a real error", 1, true), tostring(e))
      assert(select("#", socket.skip(2, 1, 2, 3)) == 1 and socket.skip(1, 1, 2) == 2)
      -- LuaSocket's own helpers from socket.lua
      assert(type(socket.sink) == "function" and type(socket.source) == "function")
      -- UDP
      local u1, u2 = socket.udp(), socket.udp()
      assert(u1:setsockname("127.0.0.1", 0) == 1)
      local uhost, uport = u1:getsockname()
      u1:settimeout(2)
      assert(u2:sendto("ping", uhost, uport) == 4)
      local dgram, fromhost = u1:receivefrom()
      assert(dgram == "ping" and fromhost == "127.0.0.1")
      assert(u2:setpeername("localhost", uport) == 1)
      assert(u2:send("two") == 3)
      assert(u1:receive() == "two")
      u1:close() u2:close()
      -- a wait inside a C callback raises instead of blocking
      local okc, ec = pcall(string.gsub, "x", "x", function() socket.sleep(0.1) end)
      assert(not okc and ec:find("socket.sleep cannot wait here", 1, true), tostring(ec))
      report(stdout, "misc ok")
    ]], { PORT = server.port }))
    assert.same({ { n = 1, "misc ok" } }, reports)
    server:stop()
  end)

  it("raises outside a coroutine instead of blocking the loop", function()
    local in_start = helper.script([[
      local socket = require "luasock.socket"
      return {
        handle = function(conn) end,
        start = function()
          local c = socket.tcp()
          c:settimeout(1)
          assert(socket.gettime() > 0 and socket.try(true))
          socket.sleep(0.1)
        end,
      }]])
    local code, _, err = helper.run({ "serve", in_start, "--listen", "127.0.0.1:0" })
    assert.equal(1, code)
    assert.truthy(err:find("socket.sleep cannot wait here: call it from a handler or a "
      .. "luasock.spawn coroutine", 1, true), err)
    local top = helper.script([[
      local socket = require "luasock.socket"
      socket.tcp():connect("127.0.0.1", 1)
      return { handle = function(conn) end }]])
    code, _, err = helper.run({ "serve", top, "--listen", "127.0.0.1:0" })
    assert.equal(1, code)
    assert.truthy(err:find("tcp:connect cannot wait here", 1, true), err)
  end)
end)
