-- luasock.socket: a LuaSocket-compatible module on luasock's own connections.
--
--   local socket = require "luasock.socket"   -- also becomes package.loaded.socket
--   local http = require "socket.http"        -- LuaSocket's own, now on luasock
--   local body, code = http.request("http://127.0.0.1:8080/")
--
-- The way copas wraps LuaSocket: every call that waits (connect, send on backpressure, receive,
-- sleep, dns, select) suspends only the calling coroutine, so one handler's request does not
-- hold up anybody else's. Calls that would have to wait raise where no coroutine can be
-- suspended (a script's top level, `start`, a C callback): luasock never blocks its loop.
-- LuaSocket's pure-Lua helpers (socket.lua: sink, source, choose, connect4/6; socket.http,
-- socket.smtp, socket.ftp, socket.tp, ltn12, mime) are used as they are, found on package.path.
-- See docs/ecosystem.md for what differs from LuaSocket.
local luasock = require "luasock"

local M = {}

M._VERSION = "LuaSocket 3.0.0 (luasock " .. luasock.version .. ")"
M.BLOCKSIZE = 2048
M._SETSIZE = 1024
M._DATAGRAMSIZE = 8192

-- Rounds of socket.select: how long each round waits for a byte before they all report.
local SELECT_SLICE = 0.02

-- Raises unless the caller can be suspended: `what` names the call.
local function need_task(what)
  if not coroutine.isyieldable() then
    error(what .. " cannot wait here: call it from a handler or a luasock.spawn coroutine "
      .. "(not from start, the script's top level or a C callback); luasock.socket never "
      .. "blocks the loop", 3)
  end
end

-- LuaSocket's timeouts: nil or negative block forever; luasock spells that math.huge.
local function seconds(value, what)
  if value == nil or value == false then return math.huge end
  value = tonumber(value)
  if not value then error("bad argument #1 to '" .. what .. "' (number expected)", 3) end
  if value ~= value then error(what .. ": timeout is NaN", 3) end
  if value < 0 then return math.huge end
  return value
end

local function port_number(port, what)
  local n = math.tointeger(tonumber(port))
  if not n then error("bad argument to '" .. what .. "' (port number expected)", 3) end
  return n
end

local function family_of(address)
  return address:find(":", 1, true) and "inet6" or "inet"
end

---------------------------------------------------------------------------------------------
-- try, newtry, protect, skip (C in LuaSocket's socket.core)
---------------------------------------------------------------------------------------------

-- The error a `try` raises, so `protect` tells it from a real error: { message }, as LuaSocket.
local TryError = {
  __tostring = function(e) return tostring(e[1]) end,
}

function M.newtry(finalizer)
  return function(...)
    if (...) then return ... end
    if finalizer then finalizer() end
    error(setmetatable({ (select(2, ...)) }, TryError), 0)
  end
end

M.try = M.newtry()

local function protected(ok, ...)
  if ok then return ... end
  local e = ...
  if getmetatable(e) == TryError then return nil, e[1] end
  error(e, 0)
end

-- pcall-based, so the protected function may suspend (pcall is yieldable in Lua 5.4).
function M.protect(f)
  return function(...)
    return protected(pcall(f, ...))
  end
end

function M.skip(n, ...)
  return select(n + 1, ...)
end

---------------------------------------------------------------------------------------------
-- Time
---------------------------------------------------------------------------------------------

-- luasock.now(): the time as of the current loop iteration (cached, like ngx.now()).
M.gettime = luasock.now

function M.sleep(seconds_)
  need_task("socket.sleep")
  seconds_ = tonumber(seconds_) or 0
  if seconds_ ~= seconds_ then error("socket.sleep: NaN seconds", 2) end
  luasock.sleep(math.max(seconds_, 0))
end

---------------------------------------------------------------------------------------------
-- dns (c-ares through luasock.resolve)
---------------------------------------------------------------------------------------------

local dns = {}
M.dns = dns

-- The names /etc/hosts gives an address: reverse lookups without a name server.
local function hosts_names(address)
  local file = io.open("/etc/hosts", "r")
  if not file then return nil end
  local names
  for line in file:lines() do
    local fields = {}
    for word in line:gsub("#.*", ""):gmatch("%S+") do fields[#fields + 1] = word end
    if fields[1] == address and fields[2] then
      names = names or {}
      for i = 2, #fields do names[#names + 1] = fields[i] end
    end
  end
  file:close()
  return names
end

function dns.toip(name)
  need_task("socket.dns.toip")
  local addresses, err = luasock.resolve(tostring(name), { family = "inet" })
  if not addresses or #addresses == 0 then return nil, err or "host not found" end
  return addresses[1], { name = name, alias = {}, ip = addresses }
end

-- Only /etc/hosts: luasock has no reverse (PTR) lookup yet.
function dns.tohostname(address)
  address = tostring(address)
  local names = hosts_names(address)
  if not names then return nil, "host not found" end
  local aliases = {}
  for i = 2, #names do aliases[#aliases + 1] = names[i] end
  return names[1], { name = names[1], alias = aliases, ip = { address } }
end

function dns.getaddrinfo(host)
  need_task("socket.dns.getaddrinfo")
  local addresses, err = luasock.resolve(tostring(host))
  if not addresses or #addresses == 0 then return nil, err or "host not found" end
  local list = {}
  for i, address in ipairs(addresses) do
    list[i] = { family = family_of(address), addr = address }
  end
  return list
end

function dns.gethostname()
  local file = io.open("/proc/sys/kernel/hostname", "r")
  local name = file and file:read("l")
  if file then file:close() end
  return name or "localhost"
end

---------------------------------------------------------------------------------------------
-- TCP
---------------------------------------------------------------------------------------------

local Tcp = {}
Tcp.__index = Tcp

local function new_tcp(family)
  return setmetatable({ family = family, timeout = math.huge, sent = 0, received = 0,
    created = luasock.now() }, Tcp)
end

function Tcp:__tostring()
  if self.conn then return "tcp{client}: " .. tostring(self.conn) end
  return self.closed and "tcp{closed}" or "tcp{master}"
end

function M.tcp() return new_tcp() end
function M.tcp4() return new_tcp("inet") end
function M.tcp6() return new_tcp("inet6") end

-- connect(host, port): 1, or nil and luasock's error ("connection refused", "timeout", ...).
function Tcp:connect(host, port)
  need_task("tcp:connect")
  if self.conn then return nil, "already connected" end
  if self.closed then return nil, "closed" end
  local conn, err = luasock.connect(tostring(host), port_number(port, "connect"),
    { timeout = self.timeout, bind = self.bind_address })
  if not conn then return nil, err end
  conn:settimeout(self.timeout)
  self.conn = conn
  return 1
end

-- Where to connect from (the port is chosen by the system: luasock binds addresses only).
function Tcp:bind(address)
  if self.conn then return nil, "already connected" end
  if address == "*" then address = nil end
  self.bind_address = address
  return 1
end

function Tcp:listen()
  return nil, "not supported: luasock listens on the script's --listen addresses"
end

function Tcp:accept()
  return nil, "not supported: luasock accepts on the script's --listen addresses"
end

function Tcp:settimeout(value, mode)
  self.timeout = seconds(value, "settimeout")
  self.mode = mode
  if self.conn then self.conn:settimeout(self.timeout) end
  return 1
end

-- send(data [, i [, j]]): the index of the last byte sent, or nil, err, last sent.
function Tcp:send(data, i, j)
  if type(data) ~= "string" and type(data) ~= "number" then
    error("bad argument #1 to 'send' (string expected, got " .. type(data) .. ")", 2)
  end
  data = tostring(data)
  local size = #data
  i = math.tointeger(i) or 1
  j = math.tointeger(j) or size
  if i < 0 then i = math.max(size + i + 1, 1) elseif i == 0 then i = 1 end
  if j < 0 then j = size + j + 1 elseif j > size then j = size end
  if not self.conn then return nil, "closed", i - 1 end
  if j < i then return i - 1 end
  local piece = data:sub(i, j)
  local ok, err = self.conn:send(piece)
  if not ok then return nil, err, i - 1 end
  self.sent = self.sent + #piece
  return j
end

-- receive([pattern [, prefix]]): the data, or nil, err, partial. As in LuaSocket the partial
-- result starts with the prefix (luasock's leaves it out), and a byte a select kept comes first.
function Tcp:receive(pattern, prefix)
  pattern = pattern or "*l"
  prefix = prefix or ""
  local conn = self.conn
  if not conn then return nil, "closed", prefix end
  local held = self.held
  local lead = prefix .. (held or "")
  local line = pattern == "*l" or pattern == "l"
  local data, err, partial
  if held and pattern == 0 then
    return prefix
  elseif held and line and held == "\n" then
    self.held = nil
    return prefix
  elseif held and line then
    -- The kept byte cannot go in as a prefix: a "\r" before the "\n" is part of the ending.
    self.held = nil
    data, err, partial = conn:receive(pattern)
    if data then
      data = (held == "\r" and data == "") and prefix or lead .. data
    end
  else
    self.held = nil
    local count = held and type(pattern) == "number" and pattern - 1
    data, err, partial = conn:receive(count or pattern)
    if data then data = lead .. data end
  end
  if data then
    self.received = self.received + #data - #prefix
    return data
  end
  return nil, err, lead .. (partial or "")
end

function Tcp:close()
  if self.conn then self.conn:close() end
  self.conn, self.held, self.closed = nil, nil, true
  return 1
end

-- shutdown([how]): "both" (the default), "send" or "receive".
function Tcp:shutdown(how)
  if not self.conn then return nil, "closed" end
  local ok, err = self.conn:shutdown(how or "both")
  if not ok then return nil, err end
  return 1
end

function Tcp:getpeername()
  if not self.conn then return nil, "closed" end
  local host, port = self.conn:peer()
  return host, port, family_of(host)
end

function Tcp:getsockname()
  if not self.conn then return nil, "closed" end
  local host, port = self.conn:local_address()
  if not host then return nil, port end
  return host, port, family_of(host)
end

-- luasock sets TCP_NODELAY on every connection and coalesces each loop iteration's writes into
-- one system call; keepalive and the others have no luasock primitive yet and are accepted as
-- no-ops (docs/ecosystem.md).
local TCP_OPTIONS = { ["tcp-nodelay"] = true, keepalive = true, reuseaddr = true,
  reuseport = true, linger = true, ["ipv6-v6only"] = true }

function Tcp:setoption(name, value)
  if not TCP_OPTIONS[name] then return nil, "unsupported option " .. tostring(name) end
  self.options = self.options or {}
  self.options[name] = value
  return 1
end

function Tcp:getoption(name)
  if name == "tcp-nodelay" then return true end
  if not TCP_OPTIONS[name] then return nil, "unsupported option " .. tostring(name) end
  return self.options and self.options[name] or false
end

function Tcp:getstats()
  return self.received, self.sent, luasock.now() - self.created
end

function Tcp:setstats(received, sent, age)
  self.received, self.sent = received or self.received, sent or self.sent
  if age then self.created = luasock.now() - age end
  return 1
end

function Tcp:getfd() return -1 end
function Tcp:setfd() end
function Tcp:dirty() return self.held ~= nil end
function Tcp:getfamily() return self.family or "inet" end

-- socket.connect(address, port [, laddress [, lport [, family]]]): a connected tcp object.
function M.connect(address, port, laddress, _, family)
  local sock = new_tcp(family)
  if laddress then sock:bind(laddress) end
  local ok, err = sock:connect(address, port)
  if not ok then return nil, err end
  return sock
end

---------------------------------------------------------------------------------------------
-- UDP
---------------------------------------------------------------------------------------------

local Udp = {}
Udp.__index = Udp

function Udp:__tostring()
  return (self.peer_host and "udp{connected}: " or "udp{unconnected}: ") .. tostring(self.sock)
end

local function new_udp(family)
  local sock = luasock.udp()
  sock:settimeout(nil)
  return setmetatable({ sock = sock, family = family }, Udp)
end

function M.udp() return new_udp() end
function M.udp4() return new_udp("inet") end
function M.udp6() return new_udp("inet6") end

-- An IP address for host, resolving names (luasock's UDP takes addresses only).
local function udp_address(host)
  host = tostring(host)
  if host:match("^[%d.]+$") or host:find(":", 1, true) then return host end
  need_task("udp name lookup")
  local addresses, err = luasock.resolve(host, { family = "inet" })
  if not addresses or #addresses == 0 then return nil, err or "host not found" end
  return addresses[1]
end

function Udp:settimeout(value)
  local timeout = seconds(value, "settimeout")
  self.sock:settimeout(timeout ~= math.huge and timeout or nil)
  return 1
end

function Udp:setsockname(host, port)
  if host == "*" then host = self.family == "inet6" and "::" or "0.0.0.0" end
  local address, err = udp_address(host)
  if not address then return nil, err end
  local ok
  ok, err = self.sock:setsockname(address, port_number(port, "setsockname"))
  if not ok then return nil, err end
  return 1
end

function Udp:getsockname()
  local host, port = self.sock:getsockname()
  if not host then return nil, port end
  return host, port, family_of(host)
end

-- setpeername(host, port) connects; setpeername("*") is refused (luasock cannot unconnect).
function Udp:setpeername(host, port)
  if host == "*" then return nil, "not supported: luasock cannot disconnect a UDP socket" end
  local address, err = udp_address(host)
  if not address then return nil, err end
  port = port_number(port, "setpeername")
  local ok
  ok, err = self.sock:setpeername(address, port)
  if not ok then return nil, err end
  self.peer_host, self.peer_port = address, port
  return 1
end

function Udp:getpeername()
  if not self.peer_host then return nil, "not connected" end
  return self.peer_host, self.peer_port, family_of(self.peer_host)
end

function Udp:send(data)
  local n, err = self.sock:send(tostring(data))
  if not n then return nil, err end
  return n
end

function Udp:sendto(data, host, port)
  local address, err = udp_address(host)
  if not address then return nil, err end
  local n
  n, err = self.sock:sendto(tostring(data), address, port_number(port, "sendto"))
  if not n then return nil, err end
  return n
end

function Udp:receive(size)
  need_task("udp:receive")
  return self.sock:receive(size or M._DATAGRAMSIZE)
end

function Udp:receivefrom(size)
  need_task("udp:receivefrom")
  return self.sock:receivefrom(size or M._DATAGRAMSIZE)
end

function Udp:close()
  self.sock:close()
  return 1
end

function Udp:setoption(name)
  return nil, "unsupported option " .. tostring(name)
end

function Udp:getfd() return -1 end
function Udp:dirty() return false end
function Udp:getfamily() return self.family or "inet" end

---------------------------------------------------------------------------------------------
-- select: the common case
---------------------------------------------------------------------------------------------

-- A TCP object is readable when a receive would not wait: a byte is held from an earlier
-- select, or one arrives (it is held for the next receive), or the peer closed. Every socket
-- gets a reader coroutine per round of SELECT_SLICE seconds, and every round's readers end
-- before select returns, so no reader is left behind on a connection. UDP sockets and tcp
-- objects that are not connected are never readable; every connected tcp object is writable
-- (luasock queues output and suspends the sender on backpressure).
local function probe(sock, timeout)
  local conn = sock.conn
  conn:settimeout(timeout)
  local byte, err = conn:receive(1)
  conn:settimeout(sock.timeout)
  if byte then sock.held = byte return true end
  return err ~= "timeout"
end

function M.select(recvt, sendt, timeout)
  recvt, sendt = recvt or {}, sendt or {}
  local limit = seconds(timeout, "select")
  local readable, writable = {}, {}
  for _, sock in ipairs(sendt) do
    if getmetatable(sock) == Tcp and sock.conn then
      writable[#writable + 1] = sock
      writable[sock] = true
    end
  end
  local waiting = {}
  for _, sock in ipairs(recvt) do
    if getmetatable(sock) == Tcp and sock.conn then
      if sock.held then
        readable[#readable + 1] = sock
        readable[sock] = true
      else
        waiting[#waiting + 1] = sock
      end
    end
  end
  if #readable > 0 or #writable > 0 or #waiting == 0 then
    if #readable == 0 and #writable == 0 and limit > 0 and limit ~= math.huge then
      M.sleep(limit)
    end
    if #readable == 0 and #writable == 0 then return readable, writable, "timeout" end
    return readable, writable
  end
  need_task("socket.select")
  local deadline = luasock.now() + limit
  repeat
    local slice = math.max(math.min(SELECT_SLICE, deadline - luasock.now()), 0)
    if #waiting == 1 then
      if probe(waiting[1], limit == math.huge and math.huge or slice) then
        readable[1], readable[waiting[1]] = waiting[1], true
      end
    else
      local tasks = {}
      for i, sock in ipairs(waiting) do tasks[i] = luasock.spawn(probe, sock, slice) end
      for i, task in ipairs(tasks) do
        local ok, ready = task:join()
        if ok and ready then
          readable[#readable + 1] = waiting[i]
          readable[waiting[i]] = true
        end
      end
    end
  until #readable > 0 or luasock.now() >= deadline
  if #readable == 0 then return readable, writable, "timeout" end
  return readable, writable
end

---------------------------------------------------------------------------------------------
-- LuaSocket's own Lua parts, and the name "socket"
---------------------------------------------------------------------------------------------

-- socket.lua (sink, source, choose, connect4, connect6, bind) adds itself to whatever
-- require("socket.core") gives: this module, while it loads.
local helpers = package.searchpath("socket", package.path)
if helpers then
  local saved = package.loaded["socket.core"]
  package.loaded["socket.core"] = M
  local ok, err = pcall(dofile, helpers)
  package.loaded["socket.core"] = saved
  if not ok then error("luasock.socket: loading LuaSocket's " .. helpers .. ": " .. err) end
end

package.loaded.socket = M
return M
