-- pubsub_spec.lua -- luasock.pubsub inside servers: in-process delivery (synchronous, within
-- the publish call), a reload replacing the callback (no double delivery), and with
-- `--pubsub redis://127.0.0.1:PORT` two servers exchanging messages in order through a real
-- redis-server, each node skipping its own messages when Redis echoes them; a bad --pubsub URL;
-- Redis going away (the outage is logged, local delivery goes on) and coming back on the same
-- port (reconnect logged with the time away, cross-node delivery resumes); a node started before
-- its Redis; a node leaving its only channel for another in one step still hearing the other
-- nodes; the /DB of the URL; messages published by handlers finishing during a graceful
-- shutdown still reaching the other nodes. Against a Redis with requirepass and ACL users
-- (issue 13 item 9): the password in the URL (both forms, percent-encoded) sent on every
-- connection, a wrong or missing password and a user who may not publish each logged, counted
-- and returned by publish, and no password in any log line or usage error. With --pubsub
-- rediss:// against a redis-server that speaks only TLS (issue 14): two nodes through it,
-- verified against ?ca=; a password and ?insecure=1 against a self-signed certificate; a
-- certificate that cannot be verified logged as an outage with the reason; a bad option
-- refused as a usage error.
--
-- The servers run HANDLER: every connection is a listener that gets each message of channel
-- "room" as "TAG room MESSAGE"; a line "pub TEXT" publishes TEXT and answers "published TEXT"
-- after the publish call returns; "pubto CHANNEL TEXT" does the same on CHANNEL; "move CHANNEL"
-- unsubscribes "room" and subscribes CHANNEL (same callback), in the same step, answering
-- "moved CHANNEL"; "info" answers with the backend, node and whether
-- pubsub.redis() has a client; "set KEY" sets KEY through pubsub.redis(). A handler woken by a
-- graceful shutdown publishes "leaving". PUBLISHER is a publish-only node: "pub TEXT" answers
-- "published TEXT" or "refused TEXT: ERROR" after the publish call; "stats" answers with
-- pubsub.stats(); "info" with pubsub.backend().
local socket = require "socket"
local helper = require "helper"
-- The start of main.c's message for a --pubsub URL it refuses.
local USAGE = "--pubsub: expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss: "
  .. "[?ca=FILE|insecure=1]), got "
local redis_server = require "redis_server"
local devcert = require "devcert"

-- redis-server processes (started and stopped by tests/redis_server.lua) ----------------

local Redis = redis_server.class()

-- A connection of our own to the server (over TLS if it speaks TLS).
function Redis:connect()
  local client = assert(socket.tcp())
  client:settimeout(5)
  assert(client:connect("127.0.0.1", self.port))
  if self.tls then client = assert(devcert.wrap(client, self.tls.ca)) end
  return client
end

-- One command on a fresh connection (inline form: words without spaces); the reply line.
function Redis:call(command)
  local client = self:connect()
  assert(client:send(command .. "\r\n"))
  local line = client:receive("*l")
  client:close()
  return line
end

-- Several inline commands on one connection; the reply lines (for one-line replies).
function Redis:calls(...)
  local client = self:connect()
  local replies = {}
  for i, command in ipairs { ... } do
    assert(client:send(command .. "\r\n"))
    replies[i] = client:receive("*l")
  end
  client:close()
  return replies
end

-- How many subscribers Redis counts for `channel` (PUBSUB NUMSUB).
function Redis:numsub(channel)
  local client = self:connect()
  assert(client:send("PUBSUB NUMSUB " .. channel .. "\r\n"))
  local lines = {}
  for i = 1, 4 do lines[i] = assert(client:receive("*l")) end -- *2, $len, channel, :count
  client:close()
  return assert(math.tointeger(tonumber(lines[4]:match("^:(%d+)$"))), lines[4])
end

-- Starts redis-server on a free port (or opts.port), waits until it answers PING; retries with
-- another port if the chosen one was taken.
local function start_redis(opts)
  return redis_server.start(opts, Redis)
end

local cleanup = redis_server.cleanup

-- Servers and clients -------------------------------------------------------------------

local HANDLER = [[
local pubsub = require "luasock.pubsub"
local listeners = luasock.state.listeners or {}
luasock.state.listeners = listeners
local TAG = "${TAG}"
local function to_listeners(message, channel)
  for conn in pairs(listeners) do conn:post(TAG, " ", channel, " ", message, "\n") end
end
pubsub.subscribe("room", to_listeners)
return {
  idle_timeout = false,
  handle = function(conn)
    listeners[conn] = true
    conn:post("ready\n")
    while true do
      local line, err = conn:receive("*l")
      if not line then
        if err == "shutting down" then pubsub.publish("room", "leaving") end
        break
      end
      local command, rest = line:match("^(%S+) ?(.*)$")
      if command == "pub" then
        pubsub.publish("room", rest)
        conn:post("published ", rest, "\n")
      elseif command == "info" then
        conn:post("info ", pubsub.backend(), " ", tostring(pubsub.node()), " ",
          tostring(pubsub.redis() ~= nil), "\n")
      elseif command == "move" then
        pubsub.unsubscribe("room")
        pubsub.subscribe(rest, to_listeners)
        conn:post("moved ", rest, "\n")
      elseif command == "pubto" then
        local channel, text = rest:match("^(%S+) (.*)$")
        pubsub.publish(channel, text)
        conn:post("published ", text, "\n")
      elseif command == "set" then
        local r = pubsub.redis()
        conn:post("set ", tostring(r and r:set(rest, "from the node")), "\n")
      end
    end
    listeners[conn] = nil
  end,
}]]

local PUBLISHER = [[
local pubsub = require "luasock.pubsub"
pubsub.node() -- connects to Redis now, not at the first publish
return {
  idle_timeout = false,
  handle = function(conn)
    conn:post("ready\n")
    for line in function() return conn:receive("*l") end do
      local command, rest = line:match("^(%S+) ?(.*)$")
      if command == "pub" then
        local ok, err = pubsub.publish("room", rest)
        conn:post(ok and "published " .. rest or "refused " .. rest .. ": " .. err, "\n")
      elseif command == "stats" then
        local stats = pubsub.stats()
        conn:post(("stats %d %d %d\n"):format(stats.published, stats.failed, stats.dropped))
      elseif command == "info" then
        conn:post("info ", pubsub.backend(), "\n")
      end
    end
  end,
}]]

local function handler_source(tag)
  return helper.PRELUDE .. helper.fill(HANDLER, { TAG = tag })
end

-- Starts a server running HANDLER with TAG, with --pubsub `url` if given.
local function start_node(url, tag, name)
  local script = helper.script(handler_source(tag or "v1"), name)
  return helper.start(script, { args = url and { "--pubsub", url } or nil })
end

local literal = helper.literal

-- Starts a publish-only node (PUBLISHER) with --pubsub `url`.
local function start_publisher(url, args)
  local all = { "--pubsub", url }
  for _, arg in ipairs(args or {}) do all[#all + 1] = arg end
  return helper.start(helper.script(PUBLISHER), { args = all })
end

-- A connected listener; returns the client.
local function listener(server)
  local client = server:connect()
  assert.equal("ready", (client:receive("*l")))
  return client
end

local function next_line(client)
  local line, err = client:receive("*l")
  assert(line, "no line: " .. tostring(err))
  return line
end

local function publish(client, text)
  assert(client:send("pub " .. text .. "\n"))
end

-- Waits until the node's log says it is connected to Redis (after byte `from` of the log).
local function wait_connected(server, url, from)
  return server:wait_log("%[info%] pubsub: connected to " .. literal(url) .. "([^\n]*)\n", 10,
    from)
end

-- Reads lines from `client` until one satisfies `match`; returns it and the lines before it.
local function read_until(client, match, what)
  local skipped = {}
  while true do
    local line, err = client:receive("*l")
    assert(line, "waiting for " .. what .. ": " .. tostring(err) .. " after "
      .. table.concat(skipped, " | "))
    if match(line) then return line, skipped end
    skipped[#skipped + 1] = line
  end
end

-- Tests ---------------------------------------------------------------------------------

describe("luasock.pubsub in one process", function()
  after_each(cleanup)

  it("delivers a publish to the subscribers of the process within the publish call", function()
    local server = start_node()
    local a = listener(server)
    local b = listener(server)
    b:send("info\n")
    assert.equal("info in-process nil false", next_line(b))
    publish(b, "hello")
    -- the callback ran inside publish: b has the message before the "published" answer
    assert.equal("v1 room hello", next_line(b))
    assert.equal("published hello", next_line(b))
    assert.equal("v1 room hello", next_line(a))
    for i = 1, 100 do publish(a, "n" .. i) end
    for i = 1, 100 do
      assert.equal("v1 room n" .. i, next_line(a))
      assert.equal("published n" .. i, next_line(a))
      assert.equal("v1 room n" .. i, next_line(b))
    end
    a:close()
    b:close()
    server:stop()
  end)

  it("replaces the callback when the script subscribes again after a reload", function()
    local server = start_node()
    local old = listener(server)
    local mark = server:mark()
    helper.write_file(server.script, handler_source("v2"))
    server:signal("HUP")
    server:wait_log("%[info%] reloaded ", 5, mark)
    local new = listener(server)
    publish(new, "x")
    publish(new, "y")
    -- one delivery per message, by the new callback only: the old connection's next lines too
    assert.equal("v2 room x", next_line(old))
    assert.equal("v2 room y", next_line(old))
    assert.equal("v2 room x", next_line(new))
    assert.equal("published x", next_line(new))
    assert.equal("v2 room y", next_line(new))
    assert.equal("published y", next_line(new))
    old:close()
    new:close()
    server:stop()
  end)

  it("refuses a --pubsub URL that is not redis:// as a usage error (exit 2)", function()
    local script = helper.script(handler_source("v1"))
    local code, out, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0",
      "--pubsub", "http://x" }, { timeout = 10 })
    assert.equal(2, code, err)
    assert.equal("", out)
    assert.matches(USAGE .. "'http://x'", err, 1, true)
    code, _, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0", "--pubsub" },
      { timeout = 10 })
    assert.equal(2, code, err)
  end)

  it("refuses a malformed redis:// URL as a usage error (exit 2), like any bad URL", function()
    local script = helper.script(handler_source("v1"))
    for _, bad in ipairs { "redis://127.0.0.1:notaport", "redis://", "redis://h:1/db" } do
      local code, out, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0",
        "--pubsub", bad }, { timeout = 10 })
      assert.equal("", out)
      assert.matches(USAGE .. "'" .. bad .. "'", err, 1, true)
      assert.equal(2, code, "exit status for --pubsub " .. bad .. "; stderr:\n" .. err)
    end
  end)
end)

describe("luasock.pubsub with --pubsub redis://", function()
  local redis, url

  before_each(function()
    redis = start_redis()
    url = "redis://127.0.0.1:" .. redis.port
  end)
  after_each(cleanup)

  it("lets two servers exchange messages in order, each getting its own once", function()
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a, b = listener(a_node), listener(b_node)

    a:send("info\n")
    local a_info = next_line(a)
    b:send("info\n")
    local b_info = next_line(b)
    local a_name = a_info:match("^info " .. literal(url) .. " (%S+:%d+) true$")
    local b_name = b_info:match("^info " .. literal(url) .. " (%S+:%d+) true$")
    assert.is_truthy(a_name, a_info)
    assert.is_truthy(b_name, b_info)
    assert.are_not.equal(a_name, b_name)
    assert.equal(tostring(a_node.pid), a_name:match(":(%d+)$"))

    -- 200 messages from A reach B in order, and A's own listener once each
    for i = 1, 200 do publish(a, "a" .. i) end
    for i = 1, 200 do
      assert.equal("v1 room a" .. i, next_line(b))
    end
    -- B publishes after it got A's last message, so Redis has handled all of A's messages
    -- first: had A received its own back, they would come before B's marker.
    publish(b, "b-marker")
    local lines = {}
    for _ = 1, 401 do lines[#lines + 1] = next_line(a) end
    local want = {}
    for i = 1, 200 do
      want[#want + 1] = "v1 room a" .. i
      want[#want + 1] = "published a" .. i
    end
    want[#want + 1] = "v1 room b-marker"
    assert.same(want, lines)
    assert.equal("v1 room b-marker", next_line(b))
    assert.equal("published b-marker", next_line(b))

    -- and the other way round, both at once
    for i = 1, 100 do publish(b, "b" .. i) publish(a, "a2-" .. i) end
    local from_b, from_a = 0, 0
    for _ = 1, 200 do
      local line = next_line(a)
      local n = line:match("^v1 room b(%d+)$")
      if n then
        from_b = from_b + 1
        assert.equal(from_b, tonumber(n))
      else
        n = line:match("^v1 room a2%-(%d+)$")
        if n then
          from_a = from_a + 1
          assert.equal(from_a, tonumber(n))
          assert.equal("published a2-" .. n, next_line(a))
        else
          error("unexpected line on A: " .. line)
        end
      end
    end
    assert.same({ 100, 100 }, { from_b, from_a })
    a:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)

  it("delivers only through the new callback after a reload (no double delivery)", function()
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a_old = listener(a_node)
    local mark = a_node:mark()
    helper.write_file(a_node.script, handler_source("v2"))
    a_node:signal("HUP")
    a_node:wait_log("%[info%] reloaded ", 5, mark)
    local b = listener(b_node)
    publish(b, "across")
    publish(b, "again")
    assert.equal("v2 room across", next_line(a_old))
    assert.equal("v2 room again", next_line(a_old))
    local a_new = listener(a_node)
    publish(a_new, "local")
    assert.equal("v2 room local", next_line(a_new))
    assert.equal("published local", next_line(a_new))
    assert.equal("v2 room local", next_line(a_old))
    assert.equal("v1 room local", read_until(b, function(line) return line:find("local") end,
      "A's message on B"))
    -- still one Redis connection pair: reloads must not connect again
    assert.equal(1, a_node:count_log("pubsub: connected to "))
    a_old:close()
    a_new:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)

  it("keeps local delivery through a Redis outage and resumes across nodes after it", function()
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a, b = listener(a_node), listener(b_node)
    publish(a, "before")
    assert.equal("v1 room before", next_line(b))
    assert.equal("v1 room before", next_line(a))
    assert.equal("published before", next_line(a))

    local a_mark, b_mark = a_node:mark(), b_node:mark()
    local port = redis.port
    redis:stop()
    local outage = "%[warn%] pubsub: " .. literal(url) .. ": ([^\n]*); messages to other nodes "
      .. "are dropped until it is back; retrying in 0%.1 s\n"
    local a_reason = a_node:wait_log(outage, 10, a_mark)
    b_node:wait_log(outage, 10, b_mark)
    assert.matches("redis 127.0.0.1:" .. port .. ": ", a_reason, 1, true)
    -- pubsub.redis() has no client while Redis is away
    a:send("info\n")
    assert.matches("^info " .. literal(url) .. " %S+:" .. a_node.pid .. " false$", next_line(a))

    -- local delivery goes on while Redis is away
    publish(a, "during")
    assert.equal("v1 room during", next_line(a))
    assert.equal("published during", next_line(a))
    local a2 = listener(a_node)
    publish(a2, "during2")
    assert.equal("v1 room during2", next_line(a2))
    assert.equal("v1 room during2", next_line(a))

    -- Redis back on the same port: both nodes reconnect and say how long it was away
    local down_for = socket.gettime()
    a_mark, b_mark = a_node:mark(), b_node:mark()
    redis = start_redis { port = port, dir = redis.dir }
    local away = a_node:wait_log("%[info%] pubsub: connected to " .. literal(url)
      .. " after ([%d.]+) s away\n", 15, a_mark)
    b_node:wait_log("%[info%] pubsub: connected to " .. literal(url) .. " after [%d.]+ s away\n",
      15, b_mark)
    assert.is_truthy(tonumber(away), away)
    assert.is_true(tonumber(away) > 0 and tonumber(away) < socket.gettime() - down_for + 30, away)

    -- cross-node delivery resumes: B's first line after the outage is a probe, never "during"
    local probes = 0
    local first = helper.eventually(function()
      probes = probes + 1
      publish(a, "probe" .. probes)
      b:settimeout(0.2)
      local line = b:receive("*l")
      b:settimeout(helper.IO_TIMEOUT)
      return line
    end, 10, "a message from A on B after Redis came back")
    assert.matches("^v1 room probe%d+$", first)
    publish(a, "after")
    local _, skipped = read_until(b, function(line) return line == "v1 room after" end,
      "'after' on B")
    for _, line in ipairs(skipped) do assert.matches("^v1 room probe%d+$", line) end
    publish(b, "back")
    read_until(a, function(line) return line == "v1 room back" end, "'back' on A")
    a:close()
    a2:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)

  it("issue 12 item 10: keeps receiving from other nodes after leaving its last channel for "
    .. "another in the same step", function()
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a, b = listener(a_node), listener(b_node)
    publish(b, "before")
    assert.equal("v1 room before", next_line(b))
    assert.equal("published before", next_line(b))
    assert.equal("v1 room before", next_line(a))
    -- A leaves "room", its only channel, and joins "lobby": both commands go out in one step
    a:send("move lobby\n")
    assert.equal("moved lobby", next_line(a))
    -- Redis has handled both: B alone on "room", A on "lobby"
    helper.eventually(function()
      return redis:numsub("lobby") == 1 and redis:numsub("room") == 1
    end, 5, "A's subscription moving from room to lobby in Redis")
    b:send("pubto lobby hello\n")
    assert.equal("published hello", next_line(b))
    a:settimeout(3)
    local line, err = a:receive("*l")
    assert.equal("v1 lobby hello", line, "node A got " .. tostring(line or err)
      .. "; node A's log:\n" .. a_node:log())
    -- and only lobby's: a message on room, then one on lobby
    publish(b, "not for A")
    b:send("pubto lobby again\n")
    assert.equal("v1 lobby again", next_line(a))
    assert.is_nil(a_node:log():find("nobody asked for", 1, true), a_node:log())
    a:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)

  it("uses the database of redis://HOST:PORT/DB for pubsub.redis()", function()
    local node = start_node(url .. "/5")
    wait_connected(node, url .. "/5")
    local a = listener(node)
    a:send("set written-by-node\n")
    assert.equal("set OK", next_line(a))
    assert.same({ "+OK", ":1" }, redis:calls("SELECT 5", "EXISTS written-by-node"))
    assert.equal(":0", redis:call("EXISTS written-by-node"))
    a:close()
    node:stop()
  end)

  it("still reaches the other nodes from handlers finishing during a graceful shutdown", function()
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a, b = listener(a_node), listener(b_node)
    publish(a, "hi")
    assert.equal("v1 room hi", next_line(b))
    -- SIGTERM wakes a's handler with "shutting down"; it publishes "leaving" and returns
    a_node:signal("TERM")
    b:settimeout(3)
    local line, err = b:receive("*l")
    assert.equal("v1 room leaving", line, "node B got " .. tostring(line or err)
      .. "; node A's log:\n" .. a_node:log())
    assert.is_true(a_node:wait_exit(helper.STOP_TIMEOUT))
    local how, code = a_node:reap()
    assert.same({ "exit", 0 }, { how, code })
    a:close()
    b:close()
    b_node:stop()
  end)

  it("serves locally while Redis is not there yet, and connects when it comes", function()
    local port = redis.port
    local dir = redis.dir
    redis:stop()
    local node = start_node(url)
    node:wait_log("%[warn%] pubsub: " .. literal(url) .. ": redis 127%.0%.0%.1:" .. port
      .. ": connection refused; messages to other nodes are dropped until it is back", 10)
    local a = listener(node)
    publish(a, "alone")
    assert.equal("v1 room alone", next_line(a))
    assert.equal("published alone", next_line(a))
    redis = start_redis { port = port, dir = dir }
    wait_connected(node, url)
    local other = start_node(url)
    wait_connected(other, url)
    local b = listener(other)
    publish(b, "hello")
    assert.equal("v1 room hello", next_line(a))
    a:close()
    b:close()
    node:stop()
    other:stop()
  end)

  -- TICKER: a connection whose first line is "listen" gets every message of channel "ticks";
  -- one whose first line is "tick" publishes "tick 1", "tick 2", ... every 5 ms, answers "now"
  -- with "now N" (the last published) and "stop" with "ticked N", and then ends.
  local TICKER = [[
    local pubsub = require "luasock.pubsub"
    local listeners = {}
    pubsub.subscribe("ticks", function(message)
      for conn in pairs(listeners) do conn:post(message, "\n") end
    end)
    return {
      idle_timeout = false,
      handle = function(conn)
        local line = conn:receive("*l")
        if line == "listen" then
          listeners[conn] = true
          conn:post("ready\n")
          conn:receive("*l")
          listeners[conn] = nil
          return
        end
        conn:settimeout(0.005)
        local n = 0
        while true do
          n = n + 1
          pubsub.publish("ticks", "tick " .. n)
          local command, err = conn:receive("*l")
          if command == "now" then
            conn:send("now ", n, "\n")
          elseif command or err ~= "timeout" then
            conn:send("ticked ", n, "\n")
            return
          end
        end
      end,
    }]]

  it("keeps publishing through Redis killed and restarted 8 times: local delivery loses "
    .. "nothing, the other node gets the ticks in order and resumes after each restart",
    function()
    local script = helper.script(TICKER)
    local a_node = helper.start(script, { args = { "--pubsub", url } })
    local b_node = helper.start(script, { args = { "--pubsub", url } })
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local function ticks_of(node)
      local client = node:connect()
      assert(client:send("listen\n"))
      assert.equal("ready", next_line(client))
      return client
    end
    local a, b = ticks_of(a_node), ticks_of(b_node)
    local fds = { a = a_node:fd_count(), b = b_node:fd_count() }
    local ticker = a_node:connect()
    assert(ticker:send("tick\n"))
    local seen = { a = 0, b = 0 }
    -- A's listener gets every tick in order; B's, through Redis, in order and none twice.
    local function next_tick(name, client)
      local line = next_line(client)
      local n = tonumber(line:match("^tick (%d+)$"))
      assert(n, "unexpected line on " .. name .. ": " .. line)
      if name == "a" then
        assert.equal(seen.a + 1, n, "A's listener missed a tick")
      else
        assert.is_true(n > seen.b, "B got tick " .. n .. " after tick " .. seen.b)
      end
      seen[name] = n
    end
    next_tick("b", b)
    local port, dir = redis.port, redis.dir
    local outage = "%[warn%] pubsub: " .. literal(url) .. ": [^\n]*; messages to other nodes "
      .. "are dropped until it is back"
    local back = "%[info%] pubsub: connected to " .. literal(url) .. " after [%d.]+ s away"
    for cycle = 1, 8 do
      local a_mark, b_mark = a_node:mark(), b_node:mark()
      redis:kill()
      a_node:wait_log(outage, 10, a_mark)
      b_node:wait_log(outage, 10, b_mark)
      -- local delivery goes on while Redis is away
      local until_tick = seen.a + 5
      while seen.a < until_tick do next_tick("a", a) end
      redis = start_redis { port = port, dir = dir }
      a_node:wait_log(back, 15, a_mark)
      b_node:wait_log(back, 15, b_mark)
      -- a tick published after both nodes are back reaches B
      assert(ticker:send("now\n"))
      local line
      repeat line = next_line(ticker) until line:find("^now ")
      local now = tonumber(line:match("^now (%d+)$"))
      while seen.b < now do next_tick("b", b) end
      assert.equal(cycle, a_node:count_log(back), "reconnections of node A")
    end
    assert(ticker:send("stop\n"))
    local last
    repeat last = next_line(ticker):match("^ticked (%d+)$") until last
    last = tonumber(last)
    while seen.a < last do next_tick("a", a) end
    while seen.b < last do next_tick("b", b) end
    -- one subscription per node in Redis, and no socket left over from the 8 outages
    assert.equal(2, redis:numsub("ticks"))
    assert.equal(fds.a + 1, a_node:fd_count()) -- the ticker connection, still open
    assert.equal(fds.b, b_node:fd_count())
    for _, node in ipairs { a_node, b_node } do
      assert.is_nil(node:log():find("[error]", 1, true), node:log())
    end
    ticker:close()
    a:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)
end)

describe("issue 13 item 9: --pubsub against a Redis with requirepass", function()
  -- The default user's password has the characters a URL must percent-encode; alice may do
  -- anything, mallory anything but touch a channel.
  local PASSWORD, ENCODED = "s3cret:p@ss/w%d", "s3cret%3Ap%40ss%2Fw%25d"
  local ALICE, MALLORY = "al1ce-pw", "m4llory-pw"
  local SECRETS = { PASSWORD, ENCODED, ALICE, MALLORY, "wrong-pw" }
  local redis, port, url

  before_each(function()
    redis = start_redis { password = PASSWORD, args = {
      "--user", "alice", "on", ">" .. ALICE, "~*", "&*", "+@all",
      "--user", "mallory", "on", ">" .. MALLORY, "~*", "resetchannels", "+@all" } }
    port = redis.port
    url = "redis://127.0.0.1:" .. port
  end)
  after_each(cleanup)

  -- A command as the default user, on a connection of its own.
  local function admin(command)
    return redis:calls("AUTH " .. PASSWORD, command)[2]
  end

  local function assert_no_secret(server)
    local log = server:log()
    for _, secret in ipairs(SECRETS) do
      assert.is_nil(log:find(secret, 1, true), "'" .. secret .. "' in the log:\n" .. log)
    end
  end

  local function stats(client)
    client:send("stats\n")
    return next_line(client)
  end

  -- Sends "pub" on `p` until `s` gets the message; returns the line `s` got.
  local function probe_until_delivered(p, s, what)
    local probes = 0
    return helper.eventually(function()
      probes = probes + 1
      publish(p, "probe" .. probes)
      assert.equal("published probe" .. probes, next_line(p))
      s:settimeout(0.2)
      local line = s:receive("*l")
      s:settimeout(helper.IO_TIMEOUT)
      return line
    end, 10, what)
  end

  it("delivers from a publish-only node with the password in the URL to a node logged in as an "
    .. "ACL user, again after Redis dropped both, and no log line shows a password", function()
    local publisher = start_publisher(("redis://:%s@127.0.0.1:%d"):format(ENCODED, port),
      { "--log-level", "debug" })
    local alice_url = "redis://alice@127.0.0.1:" .. port .. "/3"
    local subscriber = start_node(("redis://alice:%s@127.0.0.1:%d/3"):format(ALICE, port))
    wait_connected(publisher, url)
    wait_connected(subscriber, alice_url)
    local p, s = listener(publisher), listener(subscriber)
    p:send("info\n")
    assert.equal("info " .. url, next_line(p))
    s:send("info\n")
    assert.matches("^info " .. literal(alice_url) .. " %S+ true$", next_line(s))

    publish(p, "hello")
    assert.equal("published hello", next_line(p))
    assert.equal("v1 room hello", next_line(s))
    helper.eventually(function() return stats(p) == "stats 1 0 0" end, 5,
      "the publish counted as published")

    -- Redis drops every connection: both nodes connect again, with AUTH (and SELECT) again.
    local p_mark, s_mark = publisher:mark(), subscriber:mark()
    assert.matches("^:%d+$", admin("CLIENT KILL TYPE normal"))
    assert.matches("^:%d+$", admin("CLIENT KILL TYPE pubsub"))
    publisher:wait_log("%[info%] pubsub: connected to " .. literal(url) .. " after ", 10, p_mark)
    subscriber:wait_log("%[info%] pubsub: connected to " .. literal(alice_url) .. " after ", 10,
      s_mark)
    assert.matches("^v1 room probe%d+$", probe_until_delivered(p, s,
      "a message from the publisher on the subscriber after both reconnected"))
    p:close()
    s:close()
    publisher:stop()
    subscriber:stop()
    assert_no_secret(publisher)
    assert_no_secret(subscriber)
  end)

  it("logs 'AUTH failed' for a wrong password, refuses and counts every publish, retries, and "
    .. "connects once Redis takes that password", function()
    local node = start_publisher(("redis://:wrong-pw@127.0.0.1:%d"):format(port))
    local refusal = "%[error%] pubsub: " .. literal(url) .. ": (redis 127%.0%.0%.1:" .. port
      .. ": AUTH failed: WRONGPASS [^\n]*); publish refuses messages to other nodes until Redis "
      .. "accepts the connection; retrying in [%d.]+ s$"
    local reason = node:wait_log(refusal:gsub("%$$", "\n"), 10)
    local p = listener(node)
    publish(p, "x")
    assert.equal("refused x: pubsub: " .. url .. ": " .. reason, next_line(p))
    for i = 1, 200 do publish(p, "f" .. i) end
    for i = 1, 200 do assert.matches("^refused f" .. i .. ": ", next_line(p)) end
    assert.equal("stats 0 201 0", stats(p))
    -- a line a second at most for the flood, naming the reason
    local lines = node:count_log("%[warn%] pubsub: " .. literal(url) .. ": publish to 'room' "
      .. "failed: redis 127%.0%.0%.1:%d+: AUTH failed: WRONGPASS")
    assert.is_true(lines >= 1 and lines <= 3, lines .. " lines for 201 refused publishes")
    -- retried like an outage
    helper.eventually(function() return node:count_log(refusal) >= 2 end, 10,
      "a second AUTH attempt")
    assert.equal(0, node:count_log("connected to"))

    -- Redis takes that password now: the next attempt connects, and messages flow.
    local mark = node:mark()
    assert.equal("+OK", admin("CONFIG SET requirepass wrong-pw"))
    node:wait_log("%[info%] pubsub: connected to " .. literal(url) .. " after ", 15, mark)
    local subscriber = start_node(("redis://alice:%s@127.0.0.1:%d"):format(ALICE, port))
    wait_connected(subscriber, "redis://alice@127.0.0.1:" .. port)
    local s = listener(subscriber)
    assert.matches("^v1 room probe%d+$", probe_until_delivered(p, s,
      "a message from the node once its password was right"))
    p:close()
    s:close()
    node:stop()
    subscriber:stop()
    assert_no_secret(node)
  end)

  it("refuses a publish-only node without a password at connect time (NOAUTH), not with a "
    .. "'connected' line and silently dropped messages", function()
    local node = start_publisher(url)
    local reason = node:wait_log("%[error%] pubsub: " .. literal(url) .. ": (redis 127%.0%.0%.1:"
      .. port .. ": PING failed: NOAUTH [^\n]*); publish refuses messages", 10)
    local p = listener(node)
    publish(p, "x")
    assert.equal("refused x: pubsub: " .. url .. ": " .. reason, next_line(p))
    assert.equal("stats 0 1 0", stats(p))
    assert.equal(1, node:count_log("publish to 'room' failed: redis 127%.0%.0%.1:%d+: PING "
      .. "failed: NOAUTH"))
    assert.equal(0, node:count_log("connected to"))
    p:close()
    node:stop()
  end)

  it("logs (a line a second) and counts each PUBLISH Redis refuses, and publish returns the "
    .. "refusal", function()
    local node = start_publisher(("redis://mallory:%s@127.0.0.1:%d"):format(MALLORY, port))
    local shown = "redis://mallory@127.0.0.1:" .. port
    wait_connected(node, shown)
    local p = listener(node)
    -- Sent: Redis's answer is not known when publish returns.
    publish(p, "first")
    assert.equal("published first", next_line(p))
    local failed = "%[warn%] pubsub: " .. literal(shown) .. ": publish to 'room' failed: NOPERM "
    node:wait_log(failed, 5)
    assert.equal("stats 0 1 0", stats(p))
    publish(p, "second")
    assert.matches("^refused second: pubsub: " .. literal(shown) .. ": PUBLISH failed: NOPERM ",
      next_line(p))
    for i = 1, 300 do publish(p, "f" .. i) end
    for i = 1, 300 do assert.matches("^refused f" .. i .. ": ", next_line(p)) end
    helper.eventually(function() return stats(p) == "stats 0 302 0" end, 10,
      "302 refused publishes counted")
    -- After a second, the next failure is logged with the count of those not logged: every
    -- failure is in the log, as a line or in a count.
    socket.sleep(1.1) -- the log's rate limit is the thing under test
    local mark = node:mark()
    publish(p, "last")
    assert.matches("^refused last: ", next_line(p))
    node:wait_log(failed .. "[^\n]* %(and %d+ more since the last such line%)\n", 5, mark)
    local lines, logged = 0, 0
    for line in node:log():gmatch("[^\n]+") do
      if line:find(failed) then
        lines = lines + 1
        logged = logged + 1 + (tonumber(line:match("%(and (%d+) more since the last")) or 0)
      end
    end
    assert.equal(303, logged)
    assert.is_true(lines <= 4, lines .. " log lines for 303 refused publishes")
    p:close()
    node:stop()
    assert_no_secret(node)
  end)

  it("refuses a malformed --pubsub URL without repeating its password", function()
    local script = helper.script(PUBLISHER)
    for _, bad in ipairs { "redis://hunter2@127.0.0.1:1", "redis://:hunter2@127.0.0.1:notaport",
      "redis://:hunter2%zz@127.0.0.1", "http://u:hunter2@127.0.0.1" } do
      local code, out, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0",
        "--pubsub", bad }, { timeout = 10 })
      assert.equal(2, code, err)
      assert.equal("", out)
      assert.matches(USAGE .. "'", err,
        1, true)
      assert.matches("***@127.0.0.1", err, 1, true)
      assert.is_nil(err:find("hunter2", 1, true), err)
    end
  end)
end)

describe("issue 14: --pubsub rediss://", function()
  after_each(cleanup)

  it("lets two nodes exchange messages through a Redis that speaks only TLS, verified against "
    .. "?ca=", function()
    local certs = devcert.make()
    local redis = start_redis { tls = certs }
    local url = ("rediss://127.0.0.1:%d?ca=%s"):format(redis.port, certs.ca)
    local a_node, b_node = start_node(url), start_node(url)
    wait_connected(a_node, url)
    wait_connected(b_node, url)
    local a, b = listener(a_node), listener(b_node)
    a:send("info\n")
    assert.matches("^info " .. literal(url) .. " %S+:" .. a_node.pid .. " true$", next_line(a))
    for i = 1, 100 do publish(a, "a" .. i) publish(b, "b" .. i) end
    -- Each listener gets its node's 100 (each followed by its answer) and the other node's 100
    -- in order, interleaved in any way.
    local function read_both(client, own, other)
      local mine, theirs = 0, 0
      for _ = 1, 200 do
        local line = next_line(client)
        local n = tonumber(line:match("^v1 room " .. other .. "(%d+)$"))
        if n then
          theirs = theirs + 1
          assert.equal(theirs, n)
        else
          mine = mine + 1
          assert.equal("v1 room " .. own .. mine, line)
          assert.equal("published " .. own .. mine, next_line(client))
        end
      end
      return mine, theirs
    end
    assert.same({ 100, 100 }, { read_both(a, "a", "b") })
    assert.same({ 100, 100 }, { read_both(b, "b", "a") })
    -- pubsub.redis() is the TLS client too
    a:send("set written-by-node\n")
    assert.equal("set OK", next_line(a))
    assert.equal(":1", redis:call("EXISTS written-by-node"))
    a:close()
    b:close()
    a_node:stop()
    b_node:stop()
  end)

  it("sends the password over TLS; ?insecure=1 takes a self-signed certificate", function()
    local redis = start_redis { tls = devcert.self_signed(), password = "tls-s3cret" }
    local shown = ("rediss://127.0.0.1:%d?insecure=1"):format(redis.port)
    local url = ("rediss://:tls-s3cret@127.0.0.1:%d?insecure=1"):format(redis.port)
    local publisher, node = start_publisher(url), start_node(url)
    wait_connected(publisher, shown)
    wait_connected(node, shown)
    local p, s = listener(publisher), listener(node)
    p:send("info\n")
    assert.equal("info " .. shown, next_line(p))
    publish(p, "secret-free")
    assert.equal("published secret-free", next_line(p))
    assert.equal("v1 room secret-free", next_line(s))
    p:close()
    s:close()
    publisher:stop()
    node:stop()
    for _, server in ipairs { publisher, node } do
      assert.is_nil(server:log():find("tls-s3cret", 1, true), server:log())
    end
  end)

  it("logs a certificate it cannot verify as an outage with the reason, and serves locally",
    function()
    local redis = start_redis { tls = devcert.make() }
    local url = "rediss://127.0.0.1:" .. redis.port
    local node = start_node(url)
    local reason = node:wait_log("%[warn%] pubsub: " .. literal(url) .. ": ([^\n]*); messages "
      .. "to other nodes are dropped until it is back; retrying in 0%.1 s\n", 10)
    assert.equal("redis 127.0.0.1:" .. redis.port
      .. ": certificate verify failed: self-signed certificate in certificate chain", reason)
    local a = listener(node)
    publish(a, "here")
    assert.equal("v1 room here", next_line(a))
    assert.equal("published here", next_line(a))
    a:close()
    node:stop()
    assert.equal(0, node:count_log("connected to"))
  end)

  it("refuses to start with an unknown option in the URL, naming the form, hiding the password",
    function()
    -- A usage error (exit status 2) before the script loads.
    local script = helper.script(PUBLISHER)
    for bad, shown in pairs { ["rediss://127.0.0.1:1?verify=0"] = "rediss://127.0.0.1:1?verify=0",
      ["rediss://:hunter2@127.0.0.1:1?"] = "rediss://***@127.0.0.1:1?",
      ["redis://127.0.0.1:1?insecure=1"] = "redis://127.0.0.1:1?insecure=1" } do
      local code, out, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0",
        "--pubsub", bad }, { timeout = 10 })
      assert.equal(2, code, "exit status for --pubsub " .. bad .. "; stderr:\n" .. err)
      assert.equal("", out)
      assert.matches(USAGE .. "'" .. shown .. "'", err, 1, true)
      assert.is_nil(err:find("hunter2", 1, true), err)
    end
  end)
end)
