-- luasock.redis: a Redis client on luasock's own connections, for handlers and client scripts.
--
--   local redis = require "luasock.redis"
--   local r = assert(redis.connect("127.0.0.1", 6379, { password = "...", db = 1 }))
--   r:set("k", "v")                          --> "OK"
--   r:get("k")                               --> "v"  (nil for a missing key)
--   r:pipeline(function(p) p:incr("n") p:get("n") end)  --> { 1, "1" }
--   r:subscribe("news", function(message, channel) ... end)
--
-- Every Redis command is a method (lower case), and r:call("NAME", ...) sends any other. A
-- command returns its reply, or nil and the error: Redis's own message ("WRONGTYPE ...") or the
-- connection's ("redis 127.0.0.1:6379: connection refused", "timeout", "closed").
--
-- One client may be used by many coroutines at once: commands are pipelined on its connection in
-- the order they are called, and a reader coroutine hands each reply to the coroutine that
-- waits for it. RESP2 is spoken by default; { protocol = 3 } switches to RESP3 (HELLO 3).
local luasock = require "luasock"

local M = {}

-- A nil inside an array or map reply (Lua tables cannot hold nil).
M.null = setmetatable({}, { __tostring = function() return "redis.null" end })

local NULL = M.null
local DEFAULT_TIMEOUT = 5
-- Redis accepts values up to 512 MB: outgoing commands are posted, never refused for size.
local MAX_QUEUED = 1024 * 1024 * 1024

-- An error reply inside an array (a pipeline or EXEC result): { err = "ERR ..." }.
local ErrorReply = {
  __tostring = function(e) return "redis error: " .. e.err end,
}

function M.is_error(value)
  return getmetatable(value) == ErrorReply
end

local function error_reply(message)
  return setmetatable({ err = message }, ErrorReply)
end

-- Replies ----------------------------------------------------------------------------------

local read_reply

local function read_items(conn, count, kind)
  local items = { n = count }
  for i = 1, count do
    local item, err = read_reply(conn)
    if err then
      return nil, err
    end
    items[i] = item
  end
  if kind == ">" then
    items.push = true
  end
  return items
end

local function read_map(conn, count)
  local map = {}
  for _ = 1, count do
    local key, err = read_reply(conn)
    if err then
      return nil, err
    end
    local value
    value, err = read_reply(conn)
    if err then
      return nil, err
    end
    map[key] = value
  end
  return map
end

local function read_blob(conn, size, kind)
  local data, err = conn:receive(size + 2)
  if not data then
    return nil, err
  end
  data = data:sub(1, size)
  if kind == "=" then
    return data:sub(5) -- a verbatim string starts with its format, "txt:"
  elseif kind == "!" then
    return error_reply(data)
  end
  return data
end

local DOUBLES = { inf = math.huge, ["-inf"] = -math.huge, nan = 0 / 0 }

-- Reads one reply: its value (NULL for a null), or nil and a connection or protocol error.
function read_reply(conn)
  local line, err = conn:receive("*l")
  if not line then
    return nil, err
  end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" or kind == "(" then
    return rest
  elseif kind == "-" then
    return error_reply(rest)
  elseif kind == ":" then
    return math.tointeger(tonumber(rest)) or tonumber(rest)
  elseif kind == "," then
    return DOUBLES[rest] or tonumber(rest)
  elseif kind == "#" then
    return rest == "t"
  elseif kind == "_" then
    return NULL
  end
  local count = math.tointeger(tonumber(rest))
  if not count then
    return nil, "protocol error: unexpected reply line " .. ("%q"):format(line:sub(1, 40))
  elseif count < 0 then
    return NULL
  elseif kind == "$" or kind == "=" or kind == "!" then
    return read_blob(conn, count, kind)
  elseif kind == "*" or kind == "~" or kind == ">" then
    return read_items(conn, count, kind)
  elseif kind == "%" then
    return read_map(conn, count)
  elseif kind == "|" then
    local _, attr_err = read_map(conn, count) -- attributes are metadata: skipped
    if attr_err then
      return nil, attr_err
    end
    return read_reply(conn)
  end
  return nil, "protocol error: unknown reply type " .. ("%q"):format(kind)
end

-- Commands -------------------------------------------------------------------------------

local function encode_arg(arg)
  if math.type(arg) == "integer" then
    return ("%d"):format(arg)
  elseif type(arg) == "number" then
    return ("%.17g"):format(arg)
  end
  return tostring(arg)
end

local function encode_command(parts, args)
  local n = args.n or #args
  parts[#parts + 1] = "*" .. n .. "\r\n"
  for i = 1, n do
    local arg = encode_arg(args[i])
    parts[#parts + 1] = "$" .. #arg .. "\r\n"
    parts[#parts + 1] = arg
    parts[#parts + 1] = "\r\n"
  end
end

local Client = {}

-- Unknown method names become commands: r:hgetall(k) sends HGETALL k.
local function command_method(name)
  local command = name:upper()
  return function(self, ...)
    return self:call(command, ...)
  end
end

local client_mt = {
  __index = function(_, name)
    local method = Client[name] or command_method(name)
    return method
  end,
  __tostring = function(self)
    return "redis client (" .. self.name .. (self.closed and ", closed)" or ")")
  end,
  __close = function(self)
    self:close()
  end,
}

local function top_level(value)
  if value == NULL then
    return nil
  elseif M.is_error(value) then
    return nil, value.err
  end
  return value
end

-- Fails every command still waiting for a reply on the link.
local function fail_pending(link, err)
  for i = link.first, link.last do
    local waiter = link.pending[i]
    link.pending[i] = nil
    waiter.queue:push({ nil, err })
  end
  link.first, link.last = 1, 0
end

local CONFIRMATIONS = { subscribe = true, unsubscribe = true, psubscribe = true,
  punsubscribe = true }

local function dispatch_message(self, reply)
  local kind = reply[1]
  local callback, channel, message
  if kind == "message" then
    channel, message = reply[2], reply[3]
    callback = self.subscriptions[channel]
  else
    channel, message = reply[3], reply[4]
    callback = self.patterns[reply[2]]
  end
  if callback then
    local ok, err = pcall(callback, message, channel)
    if not ok then
      luasock.log("error", self.name .. ": subscriber callback failed: " .. tostring(err))
    end
  end
end

-- Returns true if the reply answers no command: a pub/sub message, or (RESP3) another push
-- such as a client-tracking invalidation, which is dropped. (Un)subscribe confirmations answer
-- the command that asked, and say whether the client is still subscribed to anything.
local function out_of_band(self, reply)
  if type(reply) ~= "table" then
    return false
  end
  local kind = reply[1]
  local pushed = reply.push or (self.protocol ~= 3 and self.subscribed)
  if not pushed then
    return false
  elseif CONFIRMATIONS[kind] then
    self.subscribed = (math.tointeger(reply[3]) or 0) > 0
    return false
  elseif kind == "message" or kind == "pmessage" then
    dispatch_message(self, reply)
    return true
  end
  return reply.push == true
end

-- The reader coroutine owns a link (a connection and the commands waiting on it): it hands
-- replies out in order until the connection fails. By then the client may have a newer link.
local function read_replies(self, link)
  while true do
    local reply, err = read_reply(link.conn)
    if err then
      link.conn:close()
      local message = self.name .. ": " .. err
      fail_pending(link, message)
      if self.link == link then
        self.closed = true
        if self.on_disconnect and not self.closing then
          self.on_disconnect(message)
        end
      end
      return
    end
    local waiter = link.pending[link.first]
    if out_of_band(self, reply) then
      luasock.log("debug", self.name .. ": out-of-band " .. tostring(reply[1]))
    elseif not waiter then
      luasock.log("warn", self.name .. ": a reply nobody asked for was dropped")
    else
      waiter.replies[#waiter.replies + 1] = reply
      if #waiter.replies == waiter.count then
        link.pending[link.first] = nil
        link.first = link.first + 1
        waiter.queue:push(waiter.replies)
      end
    end
  end
end

local open

-- Queues commands (a list of argument lists) and waits for their replies. A client whose
-- connection was lost connects again (a subscribed one does not: its subscriptions are gone).
local function send_commands(self, commands)
  if self.closed and (self.closing or self.subscribed or self.opening) then
    return nil, self.name .. ": closed"
  elseif self.closed then
    local ok, err = open(self)
    if not ok then
      return nil, err
    end
  end
  local parts = {}
  for _, args in ipairs(commands) do
    encode_command(parts, args)
  end
  local link = self.link
  local waiter = { queue = luasock.queue(), count = #commands, replies = {} }
  link.last = link.last + 1
  link.pending[link.last] = waiter
  link.conn:post(parts)
  local replies, err = waiter.queue:pop(self.timeout)
  if not replies then
    -- The reply may still come, and a blocking command may hold the connection for long:
    -- only a new connection is in a known state.
    link.conn:close()
    if self.link == link then
      self.closed = true
    end
    return nil, err
  end
  if replies[1] == nil and replies[2] then
    return nil, replies[2]
  end
  return replies
end

function Client:call(...)
  local replies, err = send_commands(self, { table.pack(...) })
  if not replies then
    return nil, err
  end
  return top_level(replies[1])
end

-- r:pipeline(function(p) p:set("a", 1) p:get("a") end) or r:pipeline({ {"SET", "a", 1}, ... })
-- sends the commands at once and returns their replies in a list: an error reply is an
-- { err = message } table (redis.is_error), a null is redis.null.
function Client:pipeline(commands)
  if type(commands) == "function" then
    local recorded = {}
    local recorder = setmetatable({}, {
      __index = function(_, name)
        return function(_, ...)
          recorded[#recorded + 1] = table.pack(name:upper(), ...)
        end
      end,
    })
    commands(recorder)
    commands = recorded
  end
  if #commands == 0 then
    return {}
  end
  return send_commands(self, commands)
end

-- r:subscribe(channel, fn): fn(message, channel) runs in the reader coroutine for every message;
-- it must not wait (spawn a coroutine for slow work). After the first subscribe, the client
-- only takes subscribe, unsubscribe and ping commands (Redis's rule).
function Client:subscribe(channel, callback)
  assert(type(callback) == "function", "bad argument #2 to 'subscribe' (function expected)")
  self.subscribed = true
  self.subscriptions[channel] = callback
  return self:call("SUBSCRIBE", channel)
end

function Client:psubscribe(pattern, callback)
  assert(type(callback) == "function", "bad argument #2 to 'psubscribe' (function expected)")
  self.subscribed = true
  self.patterns[pattern] = callback
  return self:call("PSUBSCRIBE", pattern)
end

function Client:unsubscribe(channel)
  self.subscriptions[channel] = nil
  return self:call("UNSUBSCRIBE", channel)
end

function Client:close()
  self.closing = true
  if not self.closed then
    self.closed = true
    self.link.conn:close()
  end
  return true
end

-- Connecting ------------------------------------------------------------------------------

local function handshake(self, opts)
  local steps = {}
  if opts.protocol == 3 then
    local hello = { "HELLO", 3 }
    if opts.password then
      hello[#hello + 1], hello[#hello + 2] = "AUTH", opts.username or "default"
      hello[#hello + 1] = opts.password
    end
    steps[#steps + 1] = hello
  elseif opts.password then
    steps[#steps + 1] = opts.username and { "AUTH", opts.username, opts.password }
      or { "AUTH", opts.password }
  end
  if opts.db then
    steps[#steps + 1] = { "SELECT", opts.db }
  end
  for _, step in ipairs(steps) do
    local _, err = self:call(table.unpack(step))
    if err then
      return nil, ("%s: %s failed: %s"):format(self.name, step[1], err)
    end
  end
  return true
end

-- Connects (again) and authenticates; the connection belongs to the reader coroutine, which
-- makes it.
function open(self)
  local opts, connected = self.opts, luasock.queue()
  self.opening = true
  luasock.spawn(function()
    local conn, err = luasock.connect(opts.host, opts.port, { timeout = self.timeout })
    if not conn then
      connected:push(("%s: %s"):format(self.name, err))
      return
    end
    conn:settimeouts(nil, self.timeout, false)
    conn:setoption("max_queue", MAX_QUEUED)
    local link = { conn = conn, pending = {}, first = 1, last = 0 }
    self.link, self.closed = link, false
    connected:push(true)
    read_replies(self, link)
  end)
  local ok = connected:pop()
  self.opening = false
  if ok ~= true then
    return nil, ok
  end
  local done, err = handshake(self, opts)
  if not done then
    self:close()
    return nil, err
  end
  return true
end

-- redis.connect(host, port [, opts]) -> client | nil, err. opts: timeout (seconds, for the
-- connect and for each command; default 5), password, username, db, protocol (2 or 3),
-- on_disconnect(err) (called each time the connection is lost).
function M.connect(host, port, opts)
  opts = setmetatable({ host = host, port = port }, { __index = opts or {} })
  local self = setmetatable({
    name = ("redis %s:%d"):format(host, port),
    opts = opts,
    protocol = opts.protocol or 2,
    timeout = opts.timeout or DEFAULT_TIMEOUT,
    subscriptions = {}, patterns = {},
    -- Every field is set (false rather than nil): a missing one would read as a command method.
    link = false, closed = true, closing = false, opening = false, subscribed = false,
    on_disconnect = opts.on_disconnect or false,
  }, client_mt)
  local ok, err = open(self)
  if not ok then
    return nil, err
  end
  return self
end

return M
