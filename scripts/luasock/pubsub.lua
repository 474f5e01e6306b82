-- luasock.pubsub: publish/subscribe for handlers, with the same API whether the process is alone
-- (the default: delivery within the process) or one node of many (`luasock serve --pubsub
-- redis://host:port[/db]`: delivery through Redis to every node, and to this one directly).
--
--   local pubsub = require "luasock.pubsub"
--   pubsub.subscribe("room", function(message, channel) ... end)
--   pubsub.publish("room", "hello")
--
-- Delivery is at most once. Subscribers of this process get every message published here at
-- once, in order, even while Redis is away; other nodes get them through Redis, in the order
-- each node published them. While Redis is unreachable, messages for other nodes are dropped;
-- the outage is logged, and the connection is retried with back-off and subscriptions renewed.
local luasock = require "luasock"
local redis = require "luasock.redis"

local M = {}

local FIRST_RETRY, MAX_RETRY = 0.1, 5
local MAX_BATCH = 512 -- messages sent to Redis in one pipeline

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

local function parse_url(url)
  local host, port, db = url:match("^redis://([^:/]+):?(%d*)/?(%d*)$")
  if not host then
    return nil, ("--pubsub: expected redis://HOST[:PORT][/DB], got '%s'"):format(url)
  end
  return { host = host, port = tonumber(port) or 6379, db = tonumber(db) }
end

-- Connects a publisher and a subscriber client; returns them, or nil and the error.
local function connect_pair(state, lost)
  local where = state.where
  local options = { db = where.db, on_disconnect = function(err) lost:push(err) end }
  local publisher, err = redis.connect(where.host, where.port, options)
  if not publisher then
    return nil, nil, err
  end
  local subscriber
  subscriber, err = redis.connect(where.host, where.port, options)
  if not subscriber then
    publisher:close()
    return nil, nil, err
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

-- Sends queued messages in batches while the publisher is up.
local function run_sender(state)
  while true do
    local first = state.outbox:pop()
    local publisher = state.publisher
    if publisher then
      local batch = { { "PUBLISH", first[1], first[2] } }
      while state.outbox:len() > 0 and #batch < MAX_BATCH do
        local item = state.outbox:pop()
        batch[#batch + 1] = { "PUBLISH", item[1], item[2] }
      end
      publisher:pipeline(batch)
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
    local publisher, subscriber, err = connect_pair(state, lost)
    if publisher then
      state.publisher, state.subscriber = publisher, subscriber
      luasock.log("info", ("pubsub: connected to %s%s"):format(state.url, down_since and
        (" after %.1f s away"):format(luasock.now() - down_since) or ""))
      delay, down_since = FIRST_RETRY, nil
      err = lost:pop()
      state.publisher, state.subscriber = nil, nil
      publisher:close()
      subscriber:close()
    end
    down_since = down_since or luasock.now()
    luasock.log("warn", ("pubsub: %s: %s; messages to other nodes are dropped until it is " ..
      "back; retrying in %.1f s"):format(state.url, err, delay))
    luasock.sleep(delay)
    delay = math.min(delay * 2, MAX_RETRY)
  end
end

local function start_redis(url)
  local where, err = parse_url(url)
  if not where then
    error(err, 0)
  end
  local state = { url = url, where = where, outbox = luasock.queue() }
  luasock.spawn(run_connection, state)
  luasock.spawn(run_sender, state)
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

-- "redis://..." or "in-process".
function M.backend()
  return luasock.pubsub_url or "in-process"
end

-- This process's name among the nodes ("host:pid"), once connected to Redis; nil before.
function M.node()
  local state = get_backend()
  return state and state.node or nil
end

function M.subscribe(channel, callback)
  assert(type(channel) == "string", "bad argument #1 to 'subscribe' (string expected)")
  assert(type(callback) == "function", "bad argument #2 to 'subscribe' (function expected)")
  local fresh = callbacks[channel] == nil
  callbacks[channel] = callback
  local state = get_backend()
  if fresh and state and state.subscriber then
    luasock.spawn(function() state.subscriber:subscribe(channel, state.on_message) end)
  end
  return true
end

function M.unsubscribe(channel)
  callbacks[channel] = nil
  local state = get_backend()
  if state and state.subscriber then
    luasock.spawn(function() state.subscriber:unsubscribe(channel) end)
  end
  return true
end

-- Never waits: local subscribers get the message now, other nodes shortly.
function M.publish(channel, message)
  assert(type(channel) == "string", "bad argument #1 to 'publish' (string expected)")
  message = tostring(message)
  deliver(channel, message)
  local state = get_backend()
  if state and state.publisher then
    state.outbox:push({ channel, state.node .. "\n" .. message })
  end
  return true
end

return M
