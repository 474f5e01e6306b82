-- helper.lua -- starts and stops luasock servers for the busted specs in tests/spec/.
--
-- Every spec does `local helper = require "helper"` and `after_each(helper.cleanup)`. A server is
-- started with `helper.start(script, opts)`, which waits for its "listening on" lines and parses
-- the real addresses from them, so every server uses an ephemeral port. Everything a test makes
-- (servers, temp directories) is registered here and removed by `helper.cleanup`, so a failing
-- test leaves nothing behind. Handlers report values to the client with `report(conn, ...)`
-- (see helper.handler) and the spec reads them back with `helper.read_report(client)`.
local socket = require "socket"

local helper = {}

helper.BIN = os.getenv("LUASOCK_BIN") or "build/luasock"
helper.START_TIMEOUT = 5   -- seconds to wait for the "listening on" lines
helper.STOP_TIMEOUT = 15   -- seconds to wait for exit after SIGTERM (AddressSanitizer is slow)
helper.IO_TIMEOUT = 5      -- timeout of every client socket

local live_servers = {}    -- started and not yet reaped, to kill on cleanup
local temp_dirs = {}       -- made by helper.tmpdir, removed on cleanup
local spawned = {}         -- helper.spawn's processes, killed on cleanup
local current_dir          -- the temp directory of the running test

-- Quotes one word for /bin/sh.
local function shell_quote(word)
  return "'" .. tostring(word):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

local function quote_all(words)
  local quoted = {}
  for i, word in ipairs(words) do quoted[i] = shell_quote(word) end
  return table.concat(quoted, " ")
end

local function read_file(path)
  local file = io.open(path, "rb")
  if not file then return "" end
  local data = file:read("a")
  file:close()
  return data
end
helper.read_file = read_file

local function write_file(path, data)
  local file = assert(io.open(path, "wb"))
  assert(file:write(data))
  file:close()
end
helper.write_file = write_file

-- Escapes the magic characters of a Lua pattern, to find `text` literally in a log.
function helper.literal(text)
  return (text:gsub("%p", "%%%0"))
end

local replace_count = 0

-- Replaces the file at `path` with `source` at once, as editors save: writes a temp file beside
-- it and renames it over.
function helper.replace_file(path, source)
  replace_count = replace_count + 1
  local temp = path:gsub("[^/]*$", ".edit%0." .. replace_count)
  write_file(temp, source)
  assert(os.rename(temp, path))
end

-- Makes a new temp directory that cleanup removes; returns its path.
function helper.tmpdir()
  local pipe = assert(io.popen("mktemp -d /tmp/luasock-test.XXXXXX"))
  local dir = pipe:read("l")
  pipe:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  temp_dirs[#temp_dirs + 1] = dir
  return dir
end

-- The temp directory of the current test, made on first use.
function helper.dir()
  if not current_dir then current_dir = helper.tmpdir() end
  return current_dir
end

local script_count = 0

-- Writes `source` to a new .lua file (in the test's temp directory unless `name` is a path
-- with a directory) and returns its path.
function helper.script(source, name)
  script_count = script_count + 1
  name = name or string.format("handler%d.lua", script_count)
  local path = name:find("/", 1, true) and name or helper.dir() .. "/" .. name
  write_file(path, source)
  return path
end

-- One line of Lua put in front of handler sources (so line numbers do not move). It defines
-- `q(v)`, which quotes a value on one line, and `report(conn, ...)`, which sends its arguments
-- quoted as one line "v1, v2, ...\n" that helper.read_report turns back into values.
helper.PRELUDE = "local luasock = require 'luasock'; "
  .. "local function q(v) if type(v) == 'string' then "
  .. "return '\"' .. v:gsub('[%c\"\\\\\\128-\\255]', function(c) "
  .. "return string.format('\\\\%03d', c:byte()) end) .. '\"' "
  .. "elseif type(v) == 'number' or type(v) == 'boolean' or v == nil then "
  .. "return string.format('%q', v) else return '\"<' .. type(v) .. '>\"' end end; "
  .. "local function report(conn, ...) local n = select('#', ...); local out = {}; "
  .. "for i = 1, n do out[i] = q((select(i, ...))) end; "
  .. "if n == 0 then out[1] = 'nil' end; "
  .. "return conn:send(table.concat(out, ', '), '\\n') end; "

-- Put in front of `luasock run` scripts (one line, after helper.PRELUDE): `report(stdout, ...)`
-- prints one report line to standard output, for helper.decode_report.
helper.RUN_PRELUDE = helper.PRELUDE
  .. "local stdout = { send = function(_, ...) io.write(...) io.flush() return true end }; "

-- Replaces every ${NAME} in `source` with tostring(vars.NAME).
function helper.fill(source, vars)
  return (source:gsub("%${(%u[%u_]*)}", function(name)
    return tostring(assert(vars[name], "no value for ${" .. name .. "}"))
  end))
end

-- Writes a handler script: PRELUDE followed by `source` on the same first line.
function helper.handler(source, name)
  return helper.script(helper.PRELUDE .. source, name)
end

-- Turns one report line back into a packed table of values.
function helper.decode_report(line)
  local chunk, err = load("return " .. line, "=report", "t", {})
  assert(chunk, "bad report line " .. string.format("%q", line) .. ": " .. tostring(err))
  return table.pack(chunk())
end

-- Reads one report line from a client socket; returns the packed values.
function helper.read_report(client)
  local line, err, partial = client:receive("*l")
  assert(line, "no report from the server: " .. tostring(err) .. " after "
    .. string.format("%q", tostring(partial)))
  return helper.decode_report(line)
end

-- The state letter of a process from /proc, or nil once it is gone.
local function process_state(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat:match("^%d+ %b() (%a)")
end

-- Whether a child process has ended (gone, or a zombie waiting to be reaped). A stat file that
-- cannot be read while /proc/PID exists (as happens while LeakSanitizer stops the process's
-- threads at exit) counts as still running.
local function has_exited(pid)
  local state = process_state(pid)
  if state == nil then
    local dir = io.open("/proc/" .. pid, "r")
    if dir then dir:close() return false end
    return true
  end
  return state == "Z" or state == "X"
end

-- Parses the address part of a "listening on" line into a listener table.
local function parse_listener(address)
  local tls = address:match("^tls:(.+)$")
  if tls then
    local listener = parse_listener(tls)
    listener.tls, listener.address = true, address
    return listener
  end
  local path = address:match("^unix:(.+)$")
  if path then return { unix = path, address = address } end
  local host, port = address:match("^%[(.+)%]:(%d+)$")
  if host then return { host = host, port = tonumber(port), ipv6 = true, address = address } end
  host, port = address:match("^(.+):(%d+)$")
  assert(host, "cannot parse listening address " .. address)
  return { host = host, port = tonumber(port), address = address }
end
helper.parse_listener = parse_listener

-- A safety net for a spec that forgets after_each(helper.cleanup): when the Lua state closes
-- (busted exits), kill what is still running and remove temp files. Lua finalizes objects in
-- the reverse order of their marking, so the sentinel is renewed after every io.popen: it must
-- run before the popen handle's own finalizer, which would wait forever for a running server.
-- The sentinels are kept in a list so that none is collected (and run) before the state closes.
local sentinels = {}
local function renew_sentinel()
  sentinels[#sentinels + 1] = setmetatable({}, { __gc = function() helper.cleanup() end })
end

local Server = {}
Server.__index = Server

function Server:log()
  return read_file(self.logfile)
end

function Server:stdout()
  return read_file(self.outfile)
end

function Server:exited()
  return has_exited(self.pid)
end

-- How many file descriptors the server has open (to see that it closed what it should).
function Server:fd_count()
  local pipe = assert(io.popen("ls /proc/" .. self.pid .. "/fd | wc -l"))
  local count = tonumber(pipe:read("a"))
  pipe:close()
  return count
end

-- Length of the log so far, to look only at lines written after it with wait_log.
function Server:mark()
  return #self:log()
end

-- Polls the log until `pattern` matches (after byte `from`, if given); returns the captures.
-- Fails with the log content after `timeout` seconds or when the server has died.
function Server:wait_log(pattern, timeout, from)
  local deadline = socket.gettime() + (timeout or 5)
  while true do
    local log = self:log()
    local found = table.pack(log:find(pattern, (from or 0) + 1))
    if found[1] then
      if found.n > 2 then return table.unpack(found, 3, found.n) end
      return log:sub(found[1], found[2])
    end
    if socket.gettime() > deadline or self:exited() then
      error(string.format("log never matched %q%s; log:\n%s", pattern,
        self:exited() and " (server exited)" or "", log), 2)
    end
    socket.sleep(0.02)
  end
end

-- Counts the log lines matching pattern, after the mark `from` if given.
function Server:count_log(pattern, from)
  local n = 0
  for line in self:log():sub((from or 0) + 1):gmatch("[^\n]+") do
    if line:find(pattern) then n = n + 1 end
  end
  return n
end

-- A connected LuaSocket client for listener `i` (default 1), with a timeout set. `before`, if
-- given, is called with the unconnected socket (e.g. to set "recv-buffer-size").
function Server:connect(i, before)
  local listener = assert(self.listeners[i or 1], "no listener " .. tostring(i))
  local client
  if listener.unix then
    client = assert(require("socket.unix").stream())
  elseif listener.ipv6 then
    client = assert(socket.tcp6())
  else
    client = assert((socket.tcp4 or socket.tcp)())
  end
  client:settimeout(helper.IO_TIMEOUT)
  if before then before(client) end
  local ok, err
  if listener.unix then
    ok, err = client:connect(listener.unix)
  else
    ok, err = client:connect(listener.host, listener.port)
  end
  assert(ok, "connect to " .. listener.address .. " failed: " .. tostring(err))
  return client
end

-- Sends `signal` (a name such as "TERM") to the server.
function Server:signal(signal)
  os.execute("kill -" .. signal .. " " .. self.pid .. " 2>/dev/null")
end

-- Waits up to `timeout` seconds for the server to exit; returns whether it did.
function Server:wait_exit(timeout)
  local deadline = socket.gettime() + timeout
  while not self:exited() do
    if socket.gettime() > deadline then return false end
    socket.sleep(0.02)
  end
  return true
end

-- Reaps the process; returns how it ended ("exit" or "signal") and the code.
function Server:reap()
  if self.reaped then return self.how, self.code end
  local _, how, code = self.pipe:close()
  self.reaped, self.how, self.code = true, how, code
  live_servers[self] = nil
  return how, code
end

-- Kills the server with SIGKILL (as a crash would) and reaps it.
function Server:kill()
  self:signal("KILL")
  self:wait_exit(helper.STOP_TIMEOUT)
  return self:reap()
end

-- Sends SIGTERM (or `signal`, e.g. "INT"), waits for exit and asserts exit status 0; returns
-- the full log.
function Server:stop(signal)
  self:signal(signal or "TERM")
  if not self:wait_exit(helper.STOP_TIMEOUT) then
    self:kill()
    error("server did not exit within " .. helper.STOP_TIMEOUT .. " s of SIG" .. (signal or "TERM")
      .. "; log:\n"
      .. self:log(), 2)
  end
  local how, code = self:reap()
  local log = self:log()
  if how ~= "exit" or code ~= 0 then
    error(string.format("server ended with %s %s instead of exit 0; log:\n%s",
      tostring(how), tostring(code), log), 2)
  end
  return log
end

-- Builds the argument list of `serve` from the script and opts (see helper.start).
local function serve_args(script, opts)
  local args = { "serve", script }
  local listen = opts.listen
  if listen == nil then listen = { "127.0.0.1:0" } end
  if type(listen) == "string" then listen = { listen } end
  for _, address in ipairs(listen) do
    args[#args + 1] = "--listen"
    args[#args + 1] = address
  end
  for _, arg in ipairs(opts.args or {}) do args[#args + 1] = arg end
  return args, math.max(#listen, opts.listeners or 1)
end

-- Waits for `count` "listening on" lines; returns the parsed listeners.
local function wait_listening(server, count)
  local deadline = socket.gettime() + helper.START_TIMEOUT
  while true do
    local listeners = {}
    for address in server:log():gmatch("luasock: listening on (%S+) %(") do
      listeners[#listeners + 1] = parse_listener(address)
    end
    if #listeners >= count then return listeners end
    if server:exited() or socket.gettime() > deadline then
      local log = server:log()
      if not server:exited() then server:kill() else server:reap() end
      error(string.format("server did not start (%s %s); log:\n%s",
        tostring(server.how), tostring(server.code), log), 3)
    end
    socket.sleep(0.01)
  end
end

-- Starts `LUASOCK_BIN serve SCRIPT --listen 127.0.0.1:0 ...` and waits until it listens.
-- opts.listen: address or list of addresses (default "127.0.0.1:0"; {} for none, to use the
-- script's own `listen`); opts.args: extra arguments; opts.listeners: how many "listening on"
-- lines to wait for when the script chooses (default: one per --listen, at least one).
function helper.start(script, opts)
  opts = opts or {}
  local dir = helper.dir()
  local id = tostring(socket.gettime()):gsub("%D", "") .. math.random(1000, 9999)
  local server = setmetatable({
    script = script,
    logfile = dir .. "/server" .. id .. ".log",
    outfile = dir .. "/server" .. id .. ".out",
  }, Server)
  local args, count = serve_args(script, opts)
  local command = string.format("echo $$; exec %s %s >%s 2>%s </dev/null",
    shell_quote(helper.BIN), quote_all(args), shell_quote(server.outfile),
    shell_quote(server.logfile))
  server.pipe = assert(io.popen(command, "r"))
  renew_sentinel()
  server.pid = assert(tonumber(server.pipe:read("l")), "no pid from the shell")
  live_servers[server] = true
  server.listeners = wait_listening(server, count)
  server.host, server.port = server.listeners[1].host, server.listeners[1].port
  return server
end

-- Runs `LUASOCK_BIN args...` (after the words of opts.wrap, e.g. {"runuser", ...}) to
-- completion, at most opts.timeout seconds; returns exit code, stdout, stderr.
function helper.run(args, opts)
  opts = opts or {}
  local dir = helper.dir()
  local out, err = dir .. "/run.out", dir .. "/run.err"
  local words = { "timeout", "-k", "2", tostring(opts.timeout or 20) }
  for _, word in ipairs(opts.wrap or {}) do words[#words + 1] = word end
  words[#words + 1] = helper.BIN
  for _, arg in ipairs(args) do words[#words + 1] = arg end
  local command = string.format("%s >%s 2>%s </dev/null", quote_all(words),
    shell_quote(out), shell_quote(err))
  local _, _, code = os.execute(command)
  return code, read_file(out), read_file(err)
end

-- Runs RUN_PRELUDE .. opts.prelude .. source as a `luasock run` script (opts.timeout as for
-- helper.run); fails unless it exits 0; returns its report lines, decoded.
function helper.run_reports(source, opts)
  opts = opts or {}
  local script = helper.script(helper.RUN_PRELUDE .. (opts.prelude or "") .. source)
  local code, out, err = helper.run({ "run", script }, opts)
  assert(code == 0, "the client script failed; stdout:\n" .. out .. "\nstderr:\n" .. err)
  local reports = {}
  for line in out:gmatch("[^\n]+") do reports[#reports + 1] = helper.decode_report(line) end
  return reports
end

-- Starts `command` (a shell command line, run with exec, in opts.dir if given) in the
-- background for a test; returns {pid =, pipe =}, pipe being its stdout. helper.cleanup kills
-- it.
function helper.spawn(command, opts)
  local cd = opts and opts.dir and "cd " .. shell_quote(opts.dir) .. " && " or ""
  local pipe = assert(io.popen("echo $$; " .. cd .. "exec " .. command, "r"))
  renew_sentinel()
  local process = { pipe = pipe, pid = assert(tonumber(pipe:read("l")), "no pid from the shell") }
  spawned[#spawned + 1] = process
  return process
end

-- A port that was free a moment ago: bind 127.0.0.1:0, read the port, close.
function helper.free_port()
  local probe = assert(socket.bind("127.0.0.1", 0))
  local _, port = probe:getsockname()
  probe:close()
  return tonumber(port)
end

-- Reads from `client` until the peer closes; returns the data and the final error
-- ("closed", or e.g. "connection reset by peer").
function helper.read_all(client)
  local chunks = {}
  while true do
    local data, err, partial = client:receive(65536)
    if data then
      chunks[#chunks + 1] = data
    else
      chunks[#chunks + 1] = partial
      return table.concat(chunks), err
    end
  end
end

-- Sends one line and returns the reply line (failing on an error).
function helper.ask(client, line)
  assert(client:send(line .. "\n"))
  local reply, err = client:receive("*l")
  assert(reply, "no reply to " .. line .. ": " .. tostring(err))
  return reply
end

-- Sends `command` on a new connection to `server` and returns the report line it answers,
-- decoded; when none comes, fails with the server's log.
function helper.request_report(server, command)
  local client = server:connect()
  assert(client:send(command .. "\n"))
  local ok, got = pcall(helper.read_report, client)
  client:close()
  assert(ok, tostring(got) .. "; the server's log:\n" .. server:log())
  return got
end

-- Reads lines from a client until one equals `want`; returns the lines skipped before it.
function helper.expect_line(client, want)
  local skipped = {}
  while true do
    local line, err = client:receive("*l")
    assert(line, "waiting for " .. want .. ": " .. tostring(err) .. " after "
      .. table.concat(skipped, " | "))
    if line == want then return skipped end
    skipped[#skipped + 1] = line
  end
end

-- Polls `fn` until it returns a true value (returned) or `timeout` seconds pass (error).
function helper.eventually(fn, timeout, what)
  local deadline = socket.gettime() + (timeout or 5)
  while true do
    local value = fn()
    if value then return value end
    if socket.gettime() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    socket.sleep(0.02)
  end
end

-- Kills servers a failed test left running and removes every temp directory.
function helper.cleanup()
  for server in pairs(live_servers) do server:kill() end
  for _, process in ipairs(spawned) do
    os.execute("kill " .. process.pid .. " 2>/dev/null")
    process.pipe:close()
  end
  spawned = {}
  for _, dir in ipairs(temp_dirs) do os.execute("rm -rf " .. shell_quote(dir)) end
  temp_dirs, current_dir = {}, nil
end

math.randomseed(os.time(), tonumber(tostring({}):match("0x(%x+)"), 16) or 0)


return helper
