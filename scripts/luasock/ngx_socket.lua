-- luasock.ngx_socket: OpenResty's cosockets (ngx.socket.tcp, ngx.socket.udp) on luasock's own
-- connections, so that libraries written for OpenResty (lua-resty-redis, -memcached, -dns, ...)
-- run unmodified and suspend only their coroutine. require "luasock.ngx" installs them as
-- ngx.socket. What differs from the native API: times are milliseconds, receiveuntil returns an
-- iterator, a read or send error other than a timeout closes the socket, and the keep-alive pool
-- is luasock's (conn:setkeepalive). See docs/ecosystem.md for what differs from OpenResty.
local luasock = require "luasock"

local M = {}

local DEFAULT_TIMEOUT = 60   -- seconds: OpenResty's lua_socket_*_timeout
local DEFAULT_KEEPALIVE = 60 -- seconds: lua_socket_keepalive_timeout
local MAX_UNTIL = 1048576    -- bytes a receiveuntil read buffers in Lua (see read_until)
local MAX_NESTING = 100      -- depth of the nested arrays send accepts

local trusted_certificate -- the CA file sslhandshake verifies with, if not the system's

-- OpenResty's timeouts: milliseconds; 0 (or nil) means the default.
local function seconds(ms, what)
  if ms == nil or ms == 0 then
    return DEFAULT_TIMEOUT
  end
  if type(ms) ~= "number" or ms ~= ms or ms < 0 or ms > 1e12 then
    error("bad argument to '" .. what .. "' (timeout in milliseconds expected, got "
      .. tostring(ms) .. ")", 3)
  end
  return ms / 1000
end

---------------------------------------------------------------------------------------------
-- TCP
---------------------------------------------------------------------------------------------

local Tcp = {}
Tcp.__index = Tcp

function Tcp:__tostring()
  return "tcp cosocket: " .. tostring(self.conn or "closed")
end

function M.tcp()
  return setmetatable({ timeouts = { DEFAULT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_TIMEOUT } }, Tcp)
end

-- ngx.socket.wrap(conn): a cosocket over a connection the handler already has (the one it
-- serves), so that OpenResty code that takes a socket (nginx.websocket.protocol's recv_frame and
-- send_frame) can work on it. A luasock extension: OpenResty's ngx.req.socket is for HTTP.
function M.wrap(conn)
  local sock = M.tcp()
  sock.conn = conn
  return sock
end

local function apply_timeouts(self)
  local t = self.timeouts
  self.conn:settimeouts(t[1], t[2], t[3])
end

-- Forgets a connection that failed (OpenResty closes the socket on every error but a timeout).
local function failed(self, err, partial)
  if err ~= "timeout" and self.conn then
    self.conn:close()
    self.conn, self.pending = nil, nil
  end
  return nil, err, partial
end

-- connect(host, port [, opts]) or connect("unix:/path" [, opts]) -> 1 | nil, err. opts: pool
-- (the keep-alive pool's name, host:port by default), pool_size (setkeepalive's default size),
-- backlog (accepted; luasock does not queue connects on a full pool).
function Tcp:connect(host, port, opts)
  if not coroutine.isyieldable() then
    error("sock:connect must be called from a handler or a luasock.spawn coroutine", 2)
  end
  if type(host) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(host) .. ")", 2)
  end
  if host:sub(1, 5) == "unix:" then
    if type(port) == "table" or port == nil then
      port, opts = 0, port
    end
  end
  port = math.tointeger(tonumber(port))
  if not port then
    error("bad argument #2 to 'connect' (port number expected)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  if self.conn then
    self:close()
  end
  self.pool_size = opts.pool_size
  local conn, err = luasock.connect(host, port, { timeout = self.timeouts[1], pool = opts.pool })
  if not conn then
    return nil, err
  end
  self.conn = conn
  apply_timeouts(self)
  return 1
end

function Tcp:settimeout(ms)
  local s = seconds(ms, "settimeout")
  self.timeouts = { s, s, s }
  if self.conn then
    apply_timeouts(self)
  end
end

function Tcp:settimeouts(connect_ms, send_ms, read_ms)
  self.timeouts = { seconds(connect_ms, "settimeouts"), seconds(send_ms, "settimeouts"),
                    seconds(read_ms, "settimeouts") }
  if self.conn then
    apply_timeouts(self)
  end
end

-- Appends the strings of a nested array to out.
local function flatten(data, out, depth)
  if depth > MAX_NESTING then
    error("bad argument #1 to 'send' (arrays nested deeper than " .. MAX_NESTING .. ")", 4)
  end
  for i = 1, #data do
    local item = data[i]
    local kind = type(item)
    if kind == "table" then
      flatten(item, out, depth + 1)
    elseif kind == "string" or kind == "number" or kind == "boolean" or kind == "nil" then
      out[#out + 1] = tostring(item)
    else
      error("bad argument #1 to 'send' (bad data type " .. kind .. " found)", 4)
    end
  end
  return out
end

-- A flat array of strings goes to conn:send as it is; anything else is flattened first.
local function is_flat(data)
  for i = 1, #data do
    local kind = type(data[i])
    if kind ~= "string" and kind ~= "number" then
      return false
    end
  end
  return true
end

-- send(data) -> bytes | nil, err: a string, number, boolean, nil or a (nested) array of them.
function Tcp:send(data)
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  local kind = type(data)
  if kind == "table" then
    if not is_flat(data) then
      data = flatten(data, {}, 1)
    end
  elseif kind ~= "string" and kind ~= "number" then
    if kind ~= "boolean" and kind ~= "nil" then
      error("bad argument #1 to 'send' (string, number, boolean, nil or array expected, got "
        .. kind .. ")", 2)
    end
    data = tostring(data)
  end
  local n, err = conn:send(data)
  if not n then
    return failed(self, err)
  end
  return n
end

-- Takes n bytes off the Lua-side buffer that receiveuntil(..., size) leaves behind.
local function take(self, n)
  local pending = self.pending
  local data = pending:sub(1, n)
  self.pending = #pending > n and pending:sub(n + 1) or nil
  return data
end

-- receive with bytes left in the Lua-side buffer: those first, then the connection's.
local function receive_pending(self, pattern)
  local pending = self.pending
  if math.type(pattern) == "integer" and #pending >= pattern then
    return take(self, pattern)
  end
  if pattern == nil or pattern == "*l" or pattern == "l" then
    local newline = pending:find("\n", 1, true)
    if newline then
      return (take(self, newline):gsub("\r?\n$", ""))
    end
  end
  self.pending = nil
  if math.type(pattern) == "integer" then
    return self.conn:receive(pattern - #pending, pending)
  end
  return self.conn:receive(pattern, pending)
end

-- receive([pattern]) -> data | nil, err, partial: "*l" (the default), "*a" or a byte count
-- (a number, or a string of digits, as OpenResty takes it: nginx.memcached passes one).
function Tcp:receive(pattern)
  if type(pattern) == "string" and pattern:find("^%s*%d") then
    pattern = math.tointeger(tonumber(pattern)) or pattern
  end
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  local data, err, partial
  if self.pending then
    data, err, partial = receive_pending(self, pattern)
  else
    data, err, partial = conn:receive(pattern)
  end
  if not data then
    return failed(self, err, partial)
  end
  return data
end

-- receiveany(max) -> 1 to max bytes of what has arrived | nil, err
function Tcp:receiveany(max)
  max = math.tointeger(tonumber(max))
  if not max or max < 1 then
    error("bad argument #1 to 'receiveany' (positive integer expected)", 2)
  end
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  if self.pending then
    return take(self, max)
  end
  local data, err = conn:receiveany(max)
  if not data then
    return failed(self, err)
  end
  return data
end

-- Reads more of the stream into the Lua-side buffer; false and the failure's results if none.
local function fill(self)
  local chunk, err = self.conn:receiveany()
  if not chunk then
    local partial = self.pending or ""
    self.pending = nil
    return false, failed(self, err, partial)
  end
  self.pending = (self.pending or "") .. chunk
  return true
end

-- The bytes before the next delimiter, read in Lua: used once bytes are left in the Lua-side
-- buffer (the connection's own receiveuntil could not see them). Bounded by MAX_UNTIL.
local function read_until(self, delimiter, inclusive)
  local from = 1
  while true do
    local pending = self.pending or ""
    local at = pending:find(delimiter, from, true)
    if at then
      local data = take(self, at - 1 + #delimiter)
      return inclusive and data or data:sub(1, at - 1)
    end
    if #pending > MAX_UNTIL then
      return failed(self, "line too long", take(self, #pending))
    end
    from = math.max(1, #pending - #delimiter + 2)
    local ok, nothing, err, partial = fill(self)
    if not ok then
      return nothing, err, partial
    end
  end
end

-- One call of the iterator with a size: at most size bytes before the delimiter.
local function read_chunk(self, state, size)
  if state.done then
    state.done = false
    return nil
  end
  local delimiter = state.delimiter
  while true do
    local pending = self.pending or ""
    local at = pending:find(delimiter, 1, true)
    if at and at - 1 <= size then
      local data = take(self, at - 1 + #delimiter)
      state.done = at > 1 or state.inclusive
      if not state.done then
        return nil
      end
      return state.inclusive and data or data:sub(1, at - 1)
    end
    -- Bytes that cannot begin the delimiter are safe to hand out.
    local safe = at and at - 1 or #pending - #delimiter + 1
    if safe >= size then
      return take(self, size)
    end
    local ok, nothing, err, partial = fill(self)
    if not ok then
      return nothing, err, partial
    end
  end
end

-- receiveuntil(delimiter [, {inclusive = true}]) -> iterator: iterator() reads up to the next
-- delimiter (nil, err, partial on failure); iterator(size) reads it in pieces of at most size
-- bytes and then returns nil once, at the delimiter.
function Tcp:receiveuntil(delimiter, options)
  if type(delimiter) ~= "string" or delimiter == "" then
    error("bad argument #1 to 'receiveuntil' (non-empty string expected)", 2)
  end
  local state = { delimiter = delimiter, inclusive = options and options.inclusive or false }
  return function(size)
    local conn = self.conn
    if not conn then
      return nil, "closed"
    end
    if size ~= nil then
      if math.type(size) ~= "integer" or size < 1 then
        error("bad argument #1 to the receiveuntil iterator (positive integer expected)", 2)
      end
      return read_chunk(self, state, size)
    end
    state.done = false
    if self.pending then
      return read_until(self, delimiter, state.inclusive)
    end
    local data, err, partial = conn:receiveuntil(delimiter)
    if not data then
      return failed(self, err, partial)
    end
    return state.inclusive and data .. delimiter or data
  end
end

-- setkeepalive([timeout_ms [, size]]) -> 1 | nil, err: into luasock's pool for this host and
-- port (or the connect's pool name). timeout 0 keeps it without limit.
function Tcp:setkeepalive(timeout_ms, size)
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  local idle = DEFAULT_KEEPALIVE
  if timeout_ms == 0 then
    idle = math.huge
  elseif timeout_ms ~= nil then
    idle = seconds(timeout_ms, "setkeepalive")
  end
  self.conn = nil
  if self.pending then
    self.pending = nil
    conn:close()
    return nil, "unread data in buffer"
  end
  local ok, err = conn:setkeepalive(idle, size or self.pool_size)
  if not ok then
    conn:close()
    return nil, err
  end
  return 1
end

function Tcp:getreusedtimes()
  if not self.conn then
    return nil, "closed"
  end
  return self.conn:reused()
end

function Tcp:close()
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  self.conn, self.pending = nil, nil
  conn:close()
  return 1
end

-- luasock sets TCP_NODELAY on every connection; the others have no luasock primitive yet.
local OPTIONS = { keepalive = true, reuseaddr = true, ["tcp-nodelay"] = true, sndbuf = true,
                  rcvbuf = true }

function Tcp:setoption(name, _)
  if not OPTIONS[name] then
    return nil, "unsupported option " .. tostring(name)
  end
  return true
end

-- sslhandshake(reused_session, server_name, ssl_verify) -> session | true | nil, err. As in
-- OpenResty, the certificate is verified only when ssl_verify is true (against the system's
-- store, or ngx.socket.set_trusted_certificate's file). A connection taken back from the pool
-- already has its TLS session: the handshake is not redone.
function Tcp:sslhandshake(reused_session, server_name, ssl_verify)
  local conn = self.conn
  if not conn then
    return nil, "closed"
  end
  if not conn:tls() then
    local options = { verify = ssl_verify == true, server_name = server_name,
                      ca = trusted_certificate }
    if type(reused_session) == "userdata" then
      options.session = reused_session
    end
    local ok, err = conn:starttls(options, self.timeouts[1])
    if not ok then
      self.conn, self.pending = nil, nil
      return nil, err
    end
  end
  if reused_session == false then
    return true
  end
  return conn:tls_session() or true
end

-- ngx.socket.set_trusted_certificate(path): the CA file sslhandshake verifies against (what
-- nginx's lua_ssl_trusted_certificate sets). A luasock extension.
function M.set_trusted_certificate(path)
  if path ~= nil and type(path) ~= "string" then
    error("bad argument #1 to 'set_trusted_certificate' (string expected)", 2)
  end
  trusted_certificate = path
end

-- ngx.socket.connect(host, port [, opts]) -> a connected tcp cosocket | nil, err
function M.connect(...)
  local sock = M.tcp()
  local ok, err = sock:connect(...)
  if not ok then
    return nil, err
  end
  return sock
end

---------------------------------------------------------------------------------------------
-- UDP
---------------------------------------------------------------------------------------------

local Udp = {}
Udp.__index = Udp

function M.udp()
  return setmetatable({ timeout = DEFAULT_TIMEOUT }, Udp)
end

local function udp_address(host)
  if host:match("^[%d.]+$") or host:find(":", 1, true) then
    return host
  end
  local addresses, err = luasock.resolve(host, { family = "inet" })
  if not addresses or #addresses == 0 then
    addresses, err = luasock.resolve(host)
  end
  if not addresses or #addresses == 0 then
    return nil, err or "host not found"
  end
  return addresses[1]
end

-- setpeername(host, port) -> 1 | nil, err
function Udp:setpeername(host, port)
  if type(host) ~= "string" then
    error("bad argument #1 to 'setpeername' (string expected, got " .. type(host) .. ")", 2)
  end
  if host:sub(1, 5) == "unix:" then
    return nil, "unix datagram sockets are not supported by luasock"
  end
  local address, err = udp_address(host)
  if not address then
    return nil, err
  end
  if self.sock then
    self.sock:close()
  end
  local sock = luasock.udp()
  sock:settimeout(self.timeout)
  local ok
  ok, err = sock:setpeername(address, math.tointeger(tonumber(port)) or 0)
  if not ok then
    sock:close()
    return nil, err
  end
  self.sock = sock
  return 1
end

function Udp:settimeout(ms)
  self.timeout = seconds(ms, "settimeout")
  if self.sock then
    self.sock:settimeout(self.timeout)
  end
end

function Udp:send(data)
  if not self.sock then
    return nil, "closed"
  end
  if type(data) == "table" then
    data = table.concat(flatten(data, {}, 1))
  end
  local n, err = self.sock:send(tostring(data))
  if not n then
    return nil, err
  end
  return 1
end

-- receive([size]) -> datagram | nil, err
function Udp:receive(size)
  if not self.sock then
    return nil, "closed"
  end
  return self.sock:receive(size)
end

function Udp:close()
  if not self.sock then
    return nil, "closed"
  end
  self.sock:close()
  self.sock = nil
  return 1
end

return M
