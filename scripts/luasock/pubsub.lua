-- luasock.pubsub: publish/subscribe for handlers, with the same API whether the process is alone
-- (the default: delivery within the process) or one node of many (`luasock serve --pubsub
-- redis://[[user]:password@]host:port[/db]`, or rediss://... for Redis over TLS: delivery
-- through Redis to every node, and to this one directly).
--
--   local pubsub = require "luasock.pubsub"
--   pubsub.subscribe("room", function(message, channel) ... end)
--   pubsub.publish("room", "hello")
--
-- Delivery is at most once. Subscribers of this process get every message published here at
-- once, in order, even while Redis is away; other nodes get them through Redis, in the order
-- each node published them. While Redis is unreachable, messages for other nodes are dropped;
-- the outage is logged, and the connection is retried with back-off and subscriptions renewed.
-- A Redis that refuses (a wrong password, a user without the right to publish) is no outage:
-- publish returns nil and the reason, and the refused messages are logged and counted.
local luasock = require "luasock"
-- The bus's tasks belong to the process, not to the load of the script that first used it: a
-- reload must not stop them.
local spawn_service = require("luasock.core").spawn_service
local redis = require "luasock.redis"

local M = {}

local FIRST_RETRY, MAX_RETRY = 0.1, 5
local MAX_BATCH = 512 -- messages sent to Redis in one pipeline
local FAILURE_LOG_INTERVAL = 1 -- seconds: a flood of failed publishes logs a line a second

local function first_word(path, format)
  local file = io.open(path)
  if not file then
    return nil
  end
  local value = file:read(format)
  file:close()
  return value
end

-- Names this process in the messages it publishes through Redis. Computed in the process that
-- publishes: --workers forks its workers from a parent that may have loaded this module.
local function node_name()
  return ("%s:%d"):format(first_word("/proc/sys/kernel/hostname", "l") or "localhost",
    first_word("/proc/self/stat", "n") or math.random(1, 1e9))
end

-- One callback per channel: subscribing again (as a reloaded script does) replaces it.
local callbacks = {}
local backend -- nil until first use: see start_redis

local function deliver(channel, message)
  local callback = callbacks[channel]
  if callback then
    local ok, err = pcall(callback, message, channel)
    if not ok then
      luasock.log("error", ("pubsub: subscriber of '%s' failed: %s"):format(channel, err))
    end
  end
end

-- Messages through Redis carry the publishing node, so that a node skips its own.
local function from_redis(state)
  return function(envelope, channel)
    local node, message = envelope:match("^([^\n]*)\n(.*)$")
    if node and node ~= state.node then
      deliver(channel, message)
    end
  end
end

-- The --pubsub URL (redis.parse_url): the options for redis.connect and the URL without the
-- password, the only form of it that leaves this module.
local function parse_url(url)
  local where, shown = redis.parse_url(url)
  if not where then
    return nil, "--pubsub: " .. shown
  end
  return where, shown
end

-- Logs a refused message (at most one line a second, then with the count left unlogged) and
-- counts it.
local function publish_failed(state, channel, reason)
  state.stats.failed = state.stats.failed + 1
  local now = luasock.now()
  if now - state.failure_logged_at < FAILURE_LOG_INTERVAL then
    state.failures_unlogged = state.failures_unlogged + 1
    return
  end
  local more = state.failures_unlogged > 0
    and (" (and %d more since the last such line)"):format(state.failures_unlogged) or ""
  luasock.log("warn", ("pubsub: %s: publish to '%s' failed: %s%s"):format(state.url,
    (channel:sub(1, 100):gsub("%c", "?")), reason, more))
  state.failure_logged_at, state.failures_unlogged = now, 0
end

-- Whether Redis takes commands on the client. Without a password in the URL nothing has asked
-- yet, and a Redis with requirepass would accept the connection, then refuse every PUBLISH.
-- Returns true, or nil, the error and whether it is Redis's refusal.
local function accepted(state, client)
  if state.where.password then
    return true
  end
  local replies, err = client:pipeline({ { "PING" } })
  if not replies then
    return nil, err
  elseif redis.is_error(replies[1]) then
    return nil, ("%s: PING failed: %s"):format(client.name, replies[1].err), true
  end
  return true
end

-- Connects a publisher and a subscriber client; returns them, or nil, nil, the error and
-- whether Redis refused (rather than could not be reached).
local function connect_pair(state, lost)
  local where = state.where
  local options = { db = where.db, username = where.username, password = where.password,
    tls = where.tls, on_disconnect = function(err) lost:push(err) end }
  local publisher, err, code = redis.connect(where.host, where.port, options)
  if not publisher then
    return nil, nil, err, code ~= nil
  end
  local ok, check_err, refused = accepted(state, publisher)
  if not ok then
    publisher:close()
    return nil, nil, check_err, refused == true
  end
  local subscriber
  subscriber, err, code = redis.connect(where.host, where.port, options)
  if not subscriber then
    publisher:close()
    return nil, nil, err, code ~= nil
  end
  for channel in pairs(callbacks) do
    local _, sub_err = subscriber:subscribe(channel, state.on_message)
    if sub_err then
      publisher:close()
      subscriber:close()
      return nil, nil, sub_err
    end
  end
  return publisher, subscriber
end

-- Sends a batch of queued messages and counts what Redis made of each. An error reply refuses
-- that message, and makes publish return the error until Redis accepts one again.
local function send_batch(state, publisher, batch)
  local commands = {}
  for i, item in ipairs(batch) do
    commands[i] = { "PUBLISH", item[1], item[2] }
  end
  local replies = publisher:pipeline(commands)
  if not replies then
    state.stats.dropped = state.stats.dropped + #batch -- the connection was lost: an outage
    return
  end
  for i, reply in ipairs(replies) do
    if redis.is_error(reply) then
      state.refusal = "PUBLISH failed: " .. reply.err
      publish_failed(state, batch[i][1], reply.err)
    else
      state.refusal = nil
      state.stats.published = state.stats.published + 1
    end
  end
end

-- Sends queued messages in batches while the publisher is up.
local function run_sender(state)
  while true do
    local batch = { state.outbox:pop() }
    while state.outbox:len() > 0 and #batch < MAX_BATCH do
      batch[#batch + 1] = state.outbox:pop()
    end
    local publisher = state.publisher
    if publisher then
      send_batch(state, publisher, batch)
    else
      state.stats.dropped = state.stats.dropped + #batch
    end
  end
end

-- Keeps the two clients connected, for as long as the process runs.
local function run_connection(state)
  state.node = node_name()
  state.on_message = from_redis(state)
  local delay, down_since = FIRST_RETRY, nil
  while true do
    local lost = luasock.queue()
    local publisher, subscriber, err, refused = connect_pair(state, lost)
    if publisher then
      state.publisher, state.subscriber, state.refusal = publisher, subscriber, nil
      luasock.log("info", ("pubsub: connected to %s%s"):format(state.url, down_since and
        (" after %.1f s away"):format(luasock.now() - down_since) or ""))
      delay, down_since = FIRST_RETRY, nil
      err = lost:pop()
      state.publisher, state.subscriber, state.refusal = nil, nil, nil
      publisher:close()
      subscriber:close()
    end
    down_since = down_since or luasock.now()
    if refused then
      -- AUTH and SELECT are sent on every connection: a password fixed in Redis is taken at the
      -- next attempt.
      state.refusal = err
      luasock.log("error", ("pubsub: %s: %s; publish refuses messages to other nodes until " ..
        "Redis accepts the connection; retrying in %.1f s"):format(state.url, err, delay))
    else
      luasock.log("warn", ("pubsub: %s: %s; messages to other nodes are dropped until it is " ..
        "back; retrying in %.1f s"):format(state.url, err, delay))
    end
    luasock.sleep(delay)
    delay = math.min(delay * 2, MAX_RETRY)
  end
end

local function start_redis(url)
  local where, shown = parse_url(url)
  if not where then
    error(shown, 0)
  end
  -- state.refusal, once set: why Redis refuses messages now (nil while it takes them, or is
  -- away).
  local state = { url = shown, where = where, outbox = luasock.queue(),
    failure_logged_at = -math.huge, failures_unlogged = 0,
    stats = { published = 0, failed = 0, dropped = 0 } }
  spawn_service(run_connection, state)
  spawn_service(run_sender, state)
  return state
end

local function get_backend()
  if backend == nil then
    backend = luasock.pubsub_url and start_redis(luasock.pubsub_url) or false
  end
  return backend
end

-- The Redis client of the shared store (redis backend), or nil when there is none or it is
-- down: for data that must be seen by every node (a chat room's members).
function M.redis()
  local state = get_backend()
  return state and state.publisher or nil
end

-- "redis://..." or "rediss://..." (without the password) or "in-process".
function M.backend()
  local url = luasock.pubsub_url
  if not url then
    return "in-process"
  end
  local where, shown = parse_url(url)
  if not where then
    error(shown, 0)
  end
  return shown
end

-- What became of the messages for other nodes since the process started: published (Redis took
-- them), failed (Redis answered their PUBLISH with an error, or had refused the connection so
-- that they were not sent), dropped (Redis was unreachable). All 0 without --pubsub.
function M.stats()
  local state = get_backend()
  local stats = state and state.stats or { published = 0, failed = 0, dropped = 0 }
  return { published = stats.published, failed = stats.failed, dropped = stats.dropped }
end

-- This process's name among the nodes ("host:pid"), once connected to Redis; nil before.
function M.node()
  local state = get_backend()
  return state and state.node or nil
end

function M.subscribe(channel, callback)
  if type(channel) ~= "string" then
    error("bad argument #1 to 'subscribe' (string expected, got " .. type(channel) .. ")", 2)
  end
  if type(callback) ~= "function" then
    error("bad argument #2 to 'subscribe' (function expected, got " .. type(callback) .. ")", 2)
  end
  local fresh = callbacks[channel] == nil
  callbacks[channel] = callback
  local state = get_backend()
  if fresh and state and state.subscriber then
    spawn_service(function() state.subscriber:subscribe(channel, state.on_message) end)
  end
  return true
end

function M.unsubscribe(channel)
  callbacks[channel] = nil
  local state = get_backend()
  if state and state.subscriber then
    spawn_service(function() state.subscriber:unsubscribe(channel) end)
  end
  return true
end

-- Never waits: local subscribers get the message now, other nodes shortly. Returns true, or
-- nil and the reason while Redis refuses messages: it refused the connection (the message is
-- not sent), or the latest PUBLISH it answered (the message is sent all the same, as the next
-- one Redis takes ends the refusal).
function M.publish(channel, message)
  if type(channel) ~= "string" then
    error("bad argument #1 to 'publish' (string expected, got " .. type(channel) .. ")", 2)
  end
  message = tostring(message)
  deliver(channel, message)
  local state = get_backend()
  if not state then
    return true
  elseif state.publisher then
    state.outbox:push({ channel, state.node .. "\n" .. message })
  elseif state.refusal then
    publish_failed(state, channel, state.refusal)
  else
    state.stats.dropped = state.stats.dropped + 1
  end
  if state.refusal then
    return nil, ("pubsub: %s: %s"):format(state.url, state.refusal)
  end
  return true
end

return M
