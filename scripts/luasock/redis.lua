-- luasock.redis: a Redis client on luasock's own connections, for handlers and client scripts.
--
--   local redis = require "luasock.redis"
--   local r = assert(redis.connect("127.0.0.1", 6379, { password = "...", db = 1 }))
--   local r = assert(redis.connect("rediss://:password@cache.example:6380/1"))  -- over TLS
--   r:set("k", "v")                          --> "OK"
--   r:get("k")                               --> "v"  (nil for a missing key)
--   r:pipeline(function(p) p:incr("n") p:get("n") end)  --> { 1, "1" }
--   r:subscribe("news", function(message, channel) ... end)
--   r:setkeepalive(60)   -- parks the connection for the next redis.connect with the same options
--
-- Every Redis command is a method (lower case), and r:call("NAME", ...) sends any other. A
-- command returns its reply, or nil and the error: Redis's own message ("WRONGTYPE ...") or the
-- connection's ("redis 127.0.0.1:6379: connection refused", "timeout", "closed").
--
-- One client may be used by many coroutines at once: commands are pipelined on its connection in
-- the order they are called, and a reader coroutine hands each reply to the coroutine that
-- waits for it. RESP2 is spoken by default; { protocol = 3 } switches to RESP3 (HELLO 3).
local luasock = require "luasock"
local core = require "luasock.core"

local M = {}

-- A nil inside an array or map reply (Lua tables cannot hold nil).
M.null = require("luasock").null -- one null for every codec and client (= ngx.null)

local NULL = M.null
local DEFAULT_TIMEOUT = 5
-- Redis accepts values up to 512 MB: outgoing commands are posted, never refused for size, and
-- a large one may take Redis long to read (each command has its own timeout).
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

-- Reads one reply (whose first line may have been read already): its value (NULL for a null),
-- or nil and a connection or protocol error.
function read_reply(conn, line)
  local err
  if not line then
    line, err = conn:receive("*l")
    if not line then
      return nil, err
    end
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

-- Raises (blaming the function `level` levels up from the caller, as error() counts) for a
-- command, an argument list, that cannot be sent: no name (`caller` is then the function
-- named), or a nil argument (counted up to args.n), which Redis has no way to say. Position 1
-- is the first argument after the name, as in r:set(key, value).
local function check_command(args, level, caller)
  local name = args[1]
  if type(name) ~= "string" then
    error(("bad argument #1 to '%s' (command name expected, got %s)"):format(caller,
      type(name)), level + 1)
  end
  for i = 2, args.n or #args do
    if args[i] == nil then
      error(("bad argument #%d to '%s' (nil)"):format(i - 1, name:lower()), level + 1)
    end
  end
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

-- Pub/sub ----------------------------------------------------------------------------------
--
-- What a reply means follows from what was asked, in order. Each waiter knows which of its
-- commands are (un)subscribes, and the link mirrors the subscriptions Redis holds for its
-- connection, changed only by the confirmations as the reader reads them: so the mirror is
-- Redis's state when it sent the reply being read, whatever other coroutines have asked since.
-- In RESP2 a message is an array like any reply; it is a message only while that mirror has a
-- subscription (Redis then answers nothing with an array that starts with "message"), and an
-- array is a confirmation while it has one, or when it answers an (un)subscribe. In RESP3 both
-- come as pushes, never taken for another command's reply.

-- The (un)subscribe commands and the confirmation Redis sends for each of their channels.
local PUBSUB_COMMANDS = {
  SUBSCRIBE = "subscribe", UNSUBSCRIBE = "unsubscribe",
  PSUBSCRIBE = "psubscribe", PUNSUBSCRIBE = "punsubscribe",
  SSUBSCRIBE = "ssubscribe", SUNSUBSCRIBE = "sunsubscribe",
}

-- What each confirmation changes: a set of the link's subscriptions, added to or removed from.
local CONFIRMATIONS = {
  subscribe = { set = "channels", add = true }, unsubscribe = { set = "channels" },
  psubscribe = { set = "patterns", add = true }, punsubscribe = { set = "patterns" },
  ssubscribe = { set = "shards", add = true }, sunsubscribe = { set = "shards" },
}

-- The messages, and the client's table of callbacks each is for.
local MESSAGES = { message = "subscriptions", pmessage = "patterns", smessage = "shards" }

-- Applies a confirmation to the link's mirror of Redis's subscriptions.
local function confirm(link, reply)
  local change = CONFIRMATIONS[reply[1]]
  local set, name = link[change.set], reply[2]
  if type(name) ~= "string" then
    return -- unsubscribing from all when there was none: a null
  elseif change.add and not set[name] then
    set[name] = true
    link.subscriptions = link.subscriptions + 1
  elseif not change.add and set[name] then
    set[name] = nil
    link.subscriptions = link.subscriptions - 1
  end
end

-- Whether a confirmation for `step` (an (un)subscribe of the waiting command) is its last: one
-- comes for each channel it names or, naming none (unsubscribing from all), one for each
-- subscription it ends, or a single one with a null if there was none.
local function last_confirmation(link, reply, step)
  confirm(link, reply)
  step.seen = step.seen + 1
  if step.channels > 0 then
    return step.seen >= step.channels
  end
  return type(reply[2]) ~= "string" or next(link[CONFIRMATIONS[reply[1]].set]) == nil
end

local function dispatch_message(self, reply)
  local kind = reply[1]
  local callback, channel, message
  if kind == "pmessage" then
    channel, message = reply[3], reply[4]
    callback = self.patterns[reply[2]]
  else
    channel, message = reply[2], reply[3]
    callback = self[MESSAGES[kind]][channel]
  end
  if callback then
    local ok, err = pcall(callback, message, channel)
    if not ok then
      luasock.log("error", self.name .. ": subscriber callback failed: " .. tostring(err))
    end
  end
end

-- What a reply read on the link is: "message" (pub/sub), "confirmation" (of an (un)subscribe),
-- "push" (RESP3: another push, such as a client-tracking invalidation) or "reply" (for the
-- waiting command). `expected` is the confirmation the waiting command gets, if it is an
-- (un)subscribe.
local function classify(self, link, reply, expected)
  if type(reply) ~= "table" then
    return "reply"
  end
  local kind, pushed = reply[1], reply.push == true
  if self.protocol ~= 3 then
    pushed = link.subscriptions > 0
  end
  if CONFIRMATIONS[kind] and (pushed or kind == expected) then
    return "confirmation"
  elseif pushed and MESSAGES[kind] then
    return "message"
  elseif pushed and self.protocol == 3 then
    return "push"
  end
  return "reply"
end

-- Replies ------------------------------------------------------------------------------------

-- Ends the reader of a link that r:setkeepalive interrupted between two replies: parks its
-- connection, or closes it if the interruption found input (a reply nobody asked for) or the
-- connection closed; tells setkeepalive how it went.
local function park(link, err, partial)
  local parking = link.parking
  local ok
  if err == "interrupted" and partial == "" then
    -- Protected: a raise here (at max_memory) would leave setkeepalive waiting for an answer.
    local called, parked, problem = pcall(link.conn.setkeepalive, link.conn, parking.idle,
      parking.size)
    if called then
      ok, err = parked, problem
    else
      err = tostring(parked)
    end
  elseif err == "interrupted" then
    err = "unread data in buffer"
  end
  if not ok then
    link.conn:close()
  end
  parking.done:push({ ok, err })
end

-- The reader coroutine owns a link (a connection and the commands waiting on it): it hands
-- replies out in order until the connection fails, or r:setkeepalive parks it. By then the
-- client may have a newer link.
local function read_replies(self, link)
  while true do
    local line, err, partial = link.conn:receive("*l")
    if not line and link.parking then
      return park(link, err, partial)
    end
    local reply
    if line then
      reply, err = read_reply(link.conn, line)
    end
    if err then
      link.conn:close()
      local message = self.name .. ": " .. err
      fail_pending(link, message)
      if link.parking then
        link.parking.done:push({ nil, err }) -- interrupted in the middle of a reply
      end
      if self.link == link then
        self.closed = true
        if self.on_disconnect and not self.closing then
          self.on_disconnect(message)
        end
      end
      return
    end
    local waiter = link.pending[link.first]
    local step = waiter and waiter.pubsub and waiter.pubsub[#waiter.replies + 1]
    local what = classify(self, link, reply, step and step.kind)
    if what == "message" then
      dispatch_message(self, reply)
    elseif what == "push" then
      luasock.log("debug", self.name .. ": out-of-band " .. tostring(reply[1]))
    elseif what == "confirmation" and not (step and step.kind == reply[1]) then
      confirm(link, reply)
      luasock.log("debug", self.name .. ": out-of-band " .. tostring(reply[1]))
    elseif not waiter then
      luasock.log("warn", self.name .. ": a reply nobody asked for was dropped")
    elseif what ~= "confirmation" or last_confirmation(link, reply, step) then
      waiter.replies[#waiter.replies + 1] = reply
      if #waiter.replies == waiter.count then
        link.pending[link.first] = nil
        link.first = link.first + 1
        waiter.queue:push(waiter.replies)
      end
    end
  end
end

-- Whether the client holds subscriptions or is asking for them: a new connection would not
-- have them.
local function subscribed(self)
  return next(self.subscriptions) ~= nil or next(self.patterns) ~= nil
    or next(self.shards) ~= nil or (self.link and self.link.subscriptions > 0)
end

local open

-- Queues commands (a list of checked argument lists) and waits for their replies. A client
-- whose connection was lost connects again (a subscribed one does not: its subscriptions are
-- gone).
local function send_commands(self, commands)
  if self.closed and (self.closing or self.opening or subscribed(self)) then
    return nil, self.name .. ": closed"
  elseif self.closed then
    local ok, err = open(self)
    if not ok then
      return nil, err
    end
  end
  local parts, pubsub = {}, false
  for i, args in ipairs(commands) do
    encode_command(parts, args)
    local kind = PUBSUB_COMMANDS[args[1]:upper()]
    if kind then
      pubsub = pubsub or {}
      pubsub[i] = { kind = kind, channels = (args.n or #args) - 1, seen = 0 }
    end
  end
  local link = self.link
  -- Refused with nothing queued (a value larger than max_buffers leaves, say): no reply comes.
  local posted, post_err = link.conn:post(parts)
  if not posted then
    return nil, self.name .. ": " .. post_err
  end
  local waiter = { queue = luasock.queue(), count = #commands, replies = {}, pubsub = pubsub }
  link.last = link.last + 1
  link.pending[link.last] = waiter
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

-- Sends one checked command; its reply, or nil and the error.
local function call(self, args)
  local replies, err = send_commands(self, { args })
  if not replies then
    return nil, err
  end
  return top_level(replies[1])
end

function Client:call(...)
  local args = table.pack(...)
  check_command(args, 2, "call")
  return call(self, args)
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
          local args = table.pack(name:upper(), ...)
          check_command(args, 2, "call")
          recorded[#recorded + 1] = args
        end
      end,
    })
    commands(recorder)
    commands = recorded
  else
    for i, args in ipairs(commands) do
      if type(args) ~= "table" then
        error(("bad argument #1 to 'pipeline' (command %d is a %s, not a list)"):format(i,
          type(args)), 2)
      end
      check_command(args, 2, "pipeline")
    end
  end
  if #commands == 0 then
    return {}
  end
  return send_commands(self, commands)
end

-- r:subscribe(channel, fn): fn(message, channel) runs in the reader coroutine for every message;
-- it must not wait (spawn a coroutine for slow work). With RESP2, while the client has a
-- subscription, it only takes (un)subscribe and ping commands (Redis's rule). psubscribe takes
-- a pattern, fn(message, channel) gets the channel that matched; ssubscribe a shard channel.
local function subscribe(self, callbacks, args, callback)
  if type(callback) ~= "function" then
    error(("bad argument #2 to '%s' (function expected, got %s)"):format(args[1]:lower(),
      type(callback)), 2) -- the methods tail-call this: level 2 is their caller
  end
  self[callbacks][encode_arg(args[2])] = callback
  return call(self, args)
end

function Client:subscribe(channel, callback)
  local args = table.pack("SUBSCRIBE", channel)
  check_command(args, 2)
  return subscribe(self, "subscriptions", args, callback)
end

function Client:psubscribe(pattern, callback)
  local args = table.pack("PSUBSCRIBE", pattern)
  check_command(args, 2)
  return subscribe(self, "patterns", args, callback)
end

function Client:ssubscribe(channel, callback)
  local args = table.pack("SSUBSCRIBE", channel)
  check_command(args, 2)
  return subscribe(self, "shards", args, callback)
end

-- r:unsubscribe(channel, ...) forgets those channels' callbacks; r:unsubscribe() every channel's.
-- Returns the last confirmation (its count: the subscriptions left).
local function unsubscribe(self, callbacks, args)
  local set = self[callbacks]
  if args.n == 1 then
    for name in pairs(set) do
      set[name] = nil
    end
  end
  for i = 2, args.n do
    set[encode_arg(args[i])] = nil
  end
  return call(self, args)
end

function Client:unsubscribe(...)
  local args = table.pack("UNSUBSCRIBE", ...)
  check_command(args, 2)
  return unsubscribe(self, "subscriptions", args)
end

function Client:punsubscribe(...)
  local args = table.pack("PUNSUBSCRIBE", ...)
  check_command(args, 2)
  return unsubscribe(self, "patterns", args)
end

function Client:sunsubscribe(...)
  local args = table.pack("SUNSUBSCRIBE", ...)
  check_command(args, 2)
  return unsubscribe(self, "shards", args)
end

local MAX_IDLE = 1e9 -- seconds: the longest idle time the pool accepts (TASK_MAX_TIMEOUT)

local function is_idle_time(idle)
  return idle == nil or idle == false or (type(idle) == "number" and idle == idle
    and idle > -math.huge and (idle <= MAX_IDLE or idle == math.huge))
end

-- r:setkeepalive([idle [, size]]) -> true | nil, err: parks the client's connection in the
-- keep-alive pool (conn:setkeepalive) and closes the client. A later redis.connect with the
-- same host, port, username, password, db, protocol and tls takes it back without AUTH, HELLO
-- or SELECT. Refused while the client has subscriptions or commands in flight. The connection
-- belongs to the reader coroutine, which is waiting for a reply: it is interrupted, and parks
-- the connection as it ends.
function Client:setkeepalive(idle, size)
  if not is_idle_time(idle) then
    error("bad argument #1 to 'setkeepalive' (idle time in seconds, or nil, false or "
      .. "math.huge for none)", 2)
  elseif size ~= nil and (math.type(size) ~= "integer" or size < 1) then
    error("bad argument #2 to 'setkeepalive' (pool size must be a positive integer)", 2)
  elseif not coroutine.isyieldable() then
    error("r:setkeepalive must be called from a handler or a luasock.spawn coroutine", 2)
  end
  local link = self.link
  if self.closed or self.opening then
    return nil, self.name .. ": closed"
  elseif subscribed(self) then
    return nil, self.name .. ": cannot keep a connection alive while it has subscriptions"
  elseif link.first <= link.last then
    return nil, self.name .. ": cannot keep a connection alive while commands are in flight"
  end
  local done = luasock.queue()
  link.parking = { idle = idle, size = size, done = done }
  if not core.interrupt(link.conn) then
    link.parking = false
    return nil, self.name .. ": its reader is not waiting for replies"
  end
  -- From here on the client is closed: its connection goes to the pool, or is closed.
  self.closing, self.closed = true, true
  local result = done:pop(self.timeout) or { nil, "timeout" }
  if not result[1] then
    return nil, self.name .. ": " .. result[2]
  end
  return true
end

-- r:reused() -> how many times the pool handed the client's connection out before (0: a new one).
function Client:reused()
  return self.link and self.link.reused or 0
end

function Client:close()
  self.closing = true
  if not self.closed then
    self.closed = true
    self.link.conn:close()
  end
  return true
end

-- URLs -------------------------------------------------------------------------------------

local URL_FORM = "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ca=FILE|insecure=1]"

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The options after `?` of a rediss:// URL: the `tls` table for luasock.connect, or nil if one
-- is unknown. ca=FILE verifies Redis against that CA instead of the system's; insecure=1 does
-- not verify at all (for tests against a self-signed certificate only).
local function tls_options(query)
  local tls = {}
  for option in query:gmatch("[^&]+") do
    local name, value = option:match("^(%a+)=(.+)$")
    if name == "ca" then
      tls.ca = percent_decode(value)
    elseif name == "insecure" and (value == "1" or value == "0") then
      tls.verify = value == "0"
    else
      return nil
    end
  end
  return tls
end

-- HOST[:PORT][/DB]: the host, the port (default 6379) and the db (or nil), or nil.
local function parse_address(address)
  local host, port, db = address:match("^([^:/?]+)(:?%d*)(/?%d*)$")
  port = port and (port == "" and 6379 or math.tointeger(tonumber(port:sub(2))))
  if not host or not port or port > 65535 or db == "/" then
    return nil
  end
  return host, port, math.tointeger(tonumber(db:sub(2)))
end

-- redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], as Redis clients take it: the user and password
-- percent-decoded, an empty user meaning Redis's default one; rediss:// for TLS, with options
-- after `?` (see tls_options). Returns the options for redis.connect (host, port, db, username,
-- password, tls) and the URL without the password (for logs: the only form of it to show), or
-- nil and a message that does not show the password.
function M.parse_url(url)
  local scheme, rest = url:match("^(rediss?)://(.*)$")
  local userinfo, address = (rest or ""):match("^(.*)@([^@]*)$")
  address = address or rest or ""
  local path, query = address:match("^([^?]*)%?(.+)$")
  local host, port, db = parse_address(path or address)
  local user, password, tls
  if userinfo then
    user, password = userinfo:match("^([^:]*):(.*)$")
  end
  if scheme == "rediss" then
    tls = tls_options(query or "")
  elseif not query then
    tls = false
  end
  if not host or (userinfo and not user) or tls == nil then
    local after = url:match("@([^@]*)$")
    local shown = after and (url:match("^%a[%w+.-]*://") or "") .. "***@" .. after or url
    return nil, ("expected %s, got '%s'"):format(URL_FORM, shown)
  end
  return { host = host, port = port, db = db,
    username = user and user ~= "" and percent_decode(user) or nil,
    password = password and percent_decode(password), tls = tls or nil },
    scheme .. "://" .. (user and user ~= "" and user .. "@" or "") .. address
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
    local replies, err = send_commands(self, { step })
    if not replies then
      return nil, ("%s: %s failed: %s"):format(self.name, step[1], err)
    elseif M.is_error(replies[1]) then
      -- Redis's refusal (a wrong password) comes with its code, so that a caller can tell it
      -- from a lost connection.
      local refusal = replies[1].err
      return nil, ("%s: %s failed: %s"):format(self.name, step[1], refusal),
        refusal:match("^%S+")
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
    -- A bad option (a tls table luasock.connect rejects) raises in the caller, not here, where
    -- the caller would wait for ever.
    local called, conn, err = pcall(luasock.connect, opts.host, opts.port,
      { timeout = self.timeout, tls = opts.tls, pool = self.pool })
    if not called then
      connected:push({ raise = conn })
      return
    elseif not conn then
      connected:push(("%s: %s"):format(self.name, err))
      return
    end
    conn:settimeouts(nil, self.timeout, false)
    conn:setoption("max_queue", MAX_QUEUED)
    conn:setoption("soft_queue", MAX_QUEUED)
    -- channels, patterns, shards: the subscriptions Redis holds for this connection, as its
    -- confirmations read so far say (subscriptions: how many in all).
    -- parking: set by r:setkeepalive while the reader ends.
    local link = { conn = conn, pending = {}, first = 1, last = 0,
      channels = {}, patterns = {}, shards = {}, subscriptions = 0,
      reused = conn:reused(), parking = false }
    self.link, self.closed = link, false
    connected:push(true)
    read_replies(self, link)
  end)
  local ok = connected:pop()
  self.opening = false
  if type(ok) == "table" then
    error(ok.raise, 0)
  elseif ok ~= true then
    return nil, ok
  elseif self.link.reused > 0 then
    return true -- from the pool: authenticated, in its db, speaking its protocol already
  end
  local done, err, code = handshake(self, opts)
  if not done then
    self:close()
    return nil, err, code
  end
  return true
end

-- redis.connect(host, port [, opts]) or redis.connect(url [, opts]) -> client | nil, err[, code].
-- opts: timeout (seconds, for the connect and for each command; default 5), password, username,
-- db, protocol (2 or 3), tls (true or luasock.connect's tls table: over TLS), on_disconnect(err)
-- (called each time the connection is lost). A URL (see parse_url) gives host and port, and
-- the username, password, db and tls it holds take the place of opts'. code: when Redis
-- refused the AUTH, HELLO or SELECT, the first word of its error ("WRONGPASS", "NOAUTH", "ERR").
function M.connect(host, port, opts)
  if type(host) == "string" and host:find("^%a[%w+.-]*://") then
    local where, err = M.parse_url(host)
    if not where then
      error("bad argument #1 to 'connect' (" .. err .. ")", 2)
    end
    opts = setmetatable(where, { __index = port or {} })
  else
    opts = setmetatable({ host = host, port = port }, { __index = opts or {} })
  end
  host, port = opts.host, opts.port
  if type(host) ~= "string" then
    error("bad argument #1 to 'connect' (host or URL expected, got " .. type(host) .. ")", 2)
  end
  if not math.tointeger(port) then
    error("bad argument #2 to 'connect' (port number expected, got " .. type(port) .. ")", 2)
  end
  local self = setmetatable({
    name = ("redis %s:%d"):format(host, port),
    -- A parked connection is only taken back by a client that would leave it in the same
    -- session state: the same user, password, db and protocol (luasock.connect adds tls).
    pool = ("redis %s:%d %q %q %s %s"):format(host, port, opts.username or "",
      opts.password or "", opts.db or 0, opts.protocol or 2),
    opts = opts,
    protocol = opts.protocol or 2,
    timeout = opts.timeout or DEFAULT_TIMEOUT,
    subscriptions = {}, patterns = {},
    -- Every field is set (false rather than nil): a missing one would read as a command method.
    shards = {},
    link = false, closed = true, closing = false, opening = false,
    on_disconnect = opts.on_disconnect or false,
  }, client_mt)
  local ok, err, code = open(self)
  if code then
    return nil, err, code
  elseif not ok then
    return nil, err
  end
  return self
end

return M
