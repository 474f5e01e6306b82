-- redis_server.lua -- starts and stops real redis-server processes for the busted specs in
-- tests/spec/ that talk to Redis (redis_spec.lua, pubsub_spec.lua).
--
-- `redis_server.start(opts, class)` runs $REDIS_SERVER (default /usr/bin/redis-server) on a free
-- loopback port, in a temp directory, without persistence, and waits until it answers PING; it
-- returns a server table (pid, port, dir, logfile, password, tls) whose metatable is `class`.
-- With opts.tls (certificates from tests/devcert.lua) it speaks only TLS on that port. A spec
-- adds its own commands to a class of its own from `redis_server.class()`. Every server started
-- is registered here: `redis_server.cleanup` (for after_each; it also runs helper.cleanup) kills
-- what a test left running, and a sentinel kills it when busted exits should after_each not
-- have run.
local socket = require "socket"
local helper = require "helper"
local devcert = require "devcert"

local redis_server = {}

redis_server.BIN = os.getenv("REDIS_SERVER") or "/usr/bin/redis-server"

local Redis = {}
Redis.__index = Redis
redis_server.Redis = Redis

local live_redis = {}      -- started and not yet reaped, to kill on cleanup

local function process_exited(pid)
  local file = io.open("/proc/" .. pid .. "/stat")
  if not file then return true end
  local stat = file:read("a")
  file:close()
  -- unreadable while the process exits: still running until its stat says otherwise
  local state = stat and stat:match("^%d+ %b() (%a)")
  return state == "Z" or state == "X"
end

-- A new class for the servers of one spec: it has every method of Redis, and the spec adds its
-- own (e.g. a client for commands) without touching Redis.
function redis_server.class()
  local class = setmetatable({}, { __index = Redis })
  class.__index = class
  return class
end

function Redis:exited()
  return process_exited(self.pid)
end

function Redis:log()
  return helper.read_file(self.logfile)
end

-- Whether the server answers PING (NOAUTH counts: it is up and asks for a password); over TLS
-- when `tls` (certificates from devcert) is given.
local function answers_ping(port, tls)
  local client = assert(socket.tcp())
  client:settimeout(0.5)
  local ok = client:connect("127.0.0.1", port)
  if ok and tls then
    client = devcert.wrap(client, tls.ca)
    ok = client ~= nil
  end
  local line
  if ok then
    client:send("PING\r\n")
    line = client:receive("*l")
  end
  client:close()
  return line == "+PONG" or (line ~= nil and line:find("^%-NOAUTH") ~= nil)
end

local function reap(server)
  if not server.reaped then
    server.reaped = true
    server.pipe:close()
    live_redis[server] = nil
  end
end

function Redis:kill()
  os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
  local deadline = socket.gettime() + 10
  while not self:exited() and socket.gettime() < deadline do socket.sleep(0.01) end
  reap(self)
end

function Redis:stop()
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  local deadline = socket.gettime() + 10
  while not self:exited() do
    if socket.gettime() > deadline then
      self:kill()
      error("redis-server did not exit after SIGTERM; log:\n" .. self:log())
    end
    socket.sleep(0.01)
  end
  reap(self)
end

-- Kills what is left at the end of the busted run, should after_each not have run.
local sentinels = {}

-- Starts redis-server on a free port (opts.port to choose it), waits until it answers PING;
-- opts.dir: its directory (default a new temp directory); opts.password sets --requirepass;
-- opts.tls (devcert.make() or devcert.self_signed()): TLS only, no client certificates asked
-- for; opts.args: extra arguments. Retries with another port if the chosen one was taken. The
-- server's metatable is `class` (default Redis).
function redis_server.start(opts, class)
  opts = opts or {}
  local dir = opts.dir or helper.tmpdir()
  for attempt = 1, 5 do
    local port = opts.port or helper.free_port()
    local args = { redis_server.BIN, "--port", port, "--bind", "127.0.0.1", "--save", "",
      "--appendonly", "no", "--dir", dir, "--daemonize", "no" }
    if opts.tls then
      args[3] = 0
      for _, arg in ipairs { "--tls-port", port, "--tls-cert-file", opts.tls.cert,
        "--tls-key-file", opts.tls.key, "--tls-ca-cert-file", opts.tls.ca,
        "--tls-auth-clients", "no" } do
        args[#args + 1] = arg
      end
    end
    for _, arg in ipairs(opts.args or {}) do args[#args + 1] = arg end
    if opts.password then
      args[#args + 1], args[#args + 2] = "--requirepass", opts.password
    end
    local words = {}
    for i, word in ipairs(args) do words[i] = helper.shell_quote(word) end
    local logfile = dir .. "/redis-" .. port .. ".log"
    local pipe = assert(io.popen(string.format("echo $$; exec %s >>%s 2>&1 </dev/null",
      table.concat(words, " "), helper.shell_quote(logfile))))
    sentinels[#sentinels + 1] = setmetatable({}, { __gc = function()
      for server in pairs(live_redis) do server:kill() end
    end })
    local server = setmetatable({ pid = assert(tonumber(pipe:read("l"))), pipe = pipe,
      port = port, dir = dir, logfile = logfile, password = opts.password, tls = opts.tls },
      class or Redis)
    live_redis[server] = true
    local deadline = socket.gettime() + 5
    while not server:exited() and socket.gettime() < deadline do
      if answers_ping(port, opts.tls) then return server end
      socket.sleep(0.01)
    end
    local log = server:log()
    server:kill()
    if opts.port or attempt == 5 then
      error("redis-server did not start on port " .. port .. "; log:\n" .. log)
    end
  end
end

-- Kills the redis-servers a test left running, then helper.cleanup.
function redis_server.cleanup()
  for server in pairs(live_redis) do server:kill() end
  helper.cleanup()
end

return redis_server
