-- ngx_memcached_spec.lua -- issue 15 acceptance: Debian's lua-nginx-memcached, unmodified, inside
-- a luasock handler through `require "luasock.ngx"`, against a real memcached (Debian's package)
-- that each test starts on a free loopback port (TCP only) and that cleanup stops. Loaded as
-- `resty.memcached` and as `nginx.memcached`: set/get (with flags, a binary value, a key that
-- needs escaping, a multi-get), add refused then accepted, incr/decr, delete, flush_all,
-- version, and set_keepalive handing the same connection to the next request.
local socket = require "socket"
local helper = require "helper"

local MEMCACHED = os.getenv("MEMCACHED") or "/usr/bin/memcached"

-- Whether memcached answers "version" on the port.
local function answers(port)
  local client = socket.tcp()
  client:settimeout(0.5)
  local line
  if client:connect("127.0.0.1", port) then
    client:send("version\r\n")
    line = client:receive("*l")
  end
  client:close()
  return line ~= nil and line:find("^VERSION ") ~= nil
end

-- Whether a process is gone (or a zombie).
local function exited(pid)
  local stat = helper.read_file("/proc/" .. pid .. "/stat")
  local state = stat:match("^%d+ %b() (%a)")
  return state == nil or state == "Z"
end

-- Starts memcached on a free port (another one if that was taken meanwhile); returns the port
-- once it answers. helper.cleanup stops it. (`-u` is needed as root, and ignored otherwise.)
local function start_memcached()
  for _ = 1, 5 do
    local port = helper.free_port()
    local process = helper.spawn(string.format(
      "%s -l 127.0.0.1 -p %d -U 0 -m 16 -u \"$(id -un)\" </dev/null 2>&1", MEMCACHED, port))
    local deadline = socket.gettime() + 5
    while not exited(process.pid) and socket.gettime() < deadline do
      if answers(port) then return port end
      socket.sleep(0.01)
    end
  end
  error("memcached did not start")
end

-- The handler: "basic" runs the commands and reports their results; "reuse" reports
-- get_reused_times() of a fresh connection, then parks it with set_keepalive.
local SERVER = [[
local ngx = require "luasock.ngx"
local memcached = require "${MODULE}"
local function connect()
  local memc = assert(memcached:new())
  memc:set_timeout(5000)
  assert(memc:connect("127.0.0.1", ${PORT}))
  return memc
end
local commands = {}
function commands.basic(conn)
  local memc = connect()
  local big = "\0\r\nEND\r\n\255" .. string.rep("y", 50000)
  local r, n = {}, 0
  local function add(...)
    local values = table.pack(...)
    for i = 1, values.n do r[n + i] = values[i] end
    n = n + values.n
  end
  add(memc:set("dog", 32))
  add(memc:get("dog"))
  add(memc:add("dog", 1))
  add(memc:add("cat", "meow", 0, 7))
  add(memc:get("cat"))
  add(memc:set("a key/with?escapes", big), memc:get("a key/with?escapes") == big)
  local many = memc:get({ "dog", "cat", "nothing" })
  add(many.dog[1], many.cat[1], many.cat[2], many.nothing == nil)
  add(memc:incr("dog", 10), memc:decr("dog", 2), (select(2, memc:incr("cat", 1))))
  add(memc:delete("dog"), (memc:get("dog")) == nil, (select(2, memc:delete("dog"))))
  add(memc:flush_all(), (memc:get("cat")) == nil, memc:version():match("^%d+%.%d+") ~= nil)
  report(conn, table.unpack(r, 1, n))
end
function commands.reuse(conn)
  local memc = connect()
  local reused = memc:get_reused_times()
  report(conn, reused, memc:set_keepalive(10000, 10))
end
return { handle = function(conn)
  for line in function() return conn:receive() end do
    commands[line](conn)
  end
end }
]]

for _, module in ipairs { "resty.memcached", "nginx.memcached" } do
  describe("lua-nginx-memcached as " .. module, function()
    local server

    before_each(function()
      local port = start_memcached()
      server = helper.start(helper.handler(helper.fill(SERVER, { MODULE = module, PORT = port })))
    end)
    after_each(helper.cleanup)

    local function ask(command)
      return helper.request_report(server, command)
    end

    it("sets, gets, adds, counts, deletes and flushes", function()
      local got = ask("basic")
      assert.same({ 1, "32", "0", nil, "NOT_STORED", 1, "meow", "7", 1, true, "32", "meow", "7",
        true, "42", "40" }, { table.unpack(got, 1, 16) })
      assert.matches("^CLIENT_ERROR", got[17])
      assert.same({ 1, true, "NOT_FOUND", 1, true, true }, { table.unpack(got, 18, got.n) })
    end)

    it("hands a kept-alive connection to the next request", function()
      assert.same({ 0, 1 }, { table.unpack(ask("reuse"), 1, 2) })
      assert.same({ 1, 1 }, { table.unpack(ask("reuse"), 1, 2) })
      assert.same({ 2, 1 }, { table.unpack(ask("reuse"), 1, 2) })
    end)
  end)
end
