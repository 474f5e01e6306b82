-- ngx_redis_spec.lua -- issue 15 acceptance: Debian's lua-nginx-redis, unmodified, inside luasock
-- handlers through `require "luasock.ngx"`, against a real redis-server started on a free port
-- (tests/redis_server.lua). Once as `require "resty.redis"` (upstream's name) and once as
-- `require "nginx.redis"` (Debian's): commands (nulls as ngx.null, error replies, binary values),
-- init_pipeline/commit_pipeline, pub/sub (subscribe, read_reply with a millisecond timeout that
-- leaves the subscription usable, set_keepalive refused while subscribed, unsubscribe), and
-- set_keepalive under 100 concurrent handlers for five rounds: every handler after the first
-- round gets a reused connection (get_reused_times() > 0), and Redis saw at most 100 connections
-- from luasock in all (INFO's total_connections_received, CLIENT LIST), not one per request.
local socket = require "socket"
local helper = require "helper"
local redis_server = require "redis_server"

local CLIENTS, ROUNDS = 100, 5

-- A handler that runs the command named on each line the client sends, with the library loaded
-- under ${MODULE}, against the redis-server on ${PORT}; each reports its results in one line.
local SERVER = [[
local ngx = require "luasock.ngx"
local redis = require "${MODULE}"
local function connect()
  local red = assert(redis:new())
  red:set_timeout(5000)
  assert(red:connect("127.0.0.1", ${PORT}))
  return red
end
local commands = {}
function commands.basic(conn)
  local red = connect()
  local big = "\0\r\n\255" .. string.rep("x", 100000)
  red:del("list")
  report(conn, red:set("k", "v"), red:get("k"), red:get("missing") == ngx.null, red:incr("n"),
    red:rpush("list", "a", "b", "c"), table.concat(red:lrange("list", 0, -1), ","),
    red:hmset("h", { f = "1" }), red:hget("h", "f"), red:set("big", big), red:get("big") == big,
    select(2, red:lpush("k", "x")), red:close())
end
function commands.pipeline(conn)
  local red = connect()
  red:init_pipeline()
  local queued = red:set("p1", "one")
  red:set("p2", "two")
  red:get("p1")
  red:incr("p2")
  red:get("nothing")
  local results = assert(red:commit_pipeline())
  report(conn, queued, #results, results[1], results[2], results[3], results[4][1],
    results[4][2], results[5] == ngx.null, red:get("p2"))
end
function commands.pubsub(conn)
  local sub = connect()
  local confirm = sub:subscribe("news")
  local refused, refused_err = sub:set_keepalive(10000, 100)
  local publisher = ngx.thread.spawn(function()
    local pub = connect()
    return pub:publish("news", "first"), pub:publish("news", "second")
  end)
  local first, second = sub:read_reply(), sub:read_reply()
  local _, n1, n2 = ngx.thread.wait(publisher)
  sub:set_timeout(100)
  local none, timeout_err = sub:read_reply()
  sub:set_timeout(5000)
  connect():publish("news", "third")
  local third = sub:read_reply()
  local gone = sub:unsubscribe("news")
  report(conn, confirm[1], confirm[2], confirm[3], refused, refused_err, first[1], first[2],
    first[3], second[3], n1, n2, none, timeout_err, third[3], gone[1], gone[3],
    sub:set_keepalive(10000, 100))
end
function commands.keepalive(conn)
  local red = connect()
  local reused = red:get_reused_times()
  local hits = red:incr("hits")
  ngx.sleep(0.02) -- as if the request did something else meanwhile
  local again = red:get("hits")
  report(conn, reused, math.type(hits) == "integer" and again ~= nil, red:set_keepalive(10000, 100))
end
return { handle = function(conn)
  for line in function() return conn:receive() end do
    commands[line](conn)
  end
end }
]]

-- A `luasock run` client: ROUNDS rounds of CLIENTS connections at once, each asking for
-- "keepalive"; reports per round: how many handlers had a reused connection, how many a new
-- one, how many failed.
local CLIENT = [[
for round = 1, ${ROUNDS} do
  local tasks = {}
  for i = 1, ${CLIENTS} do
    tasks[i] = luasock.spawn(function()
      local conn = assert(luasock.connect("127.0.0.1", ${PORT}, { timeout = 10 }))
      conn:settimeout(10)
      assert(conn:send("keepalive\n"))
      return assert(conn:receive("*l"))
    end)
  end
  local reused, fresh, failed = 0, 0, 0
  for _, task in ipairs(tasks) do
    local ok, line = task:join()
    local times, good, kept
    if ok then times, good, kept = load("return " .. line)() end
    if not (good and kept == 1) then failed = failed + 1
    elseif times > 0 then reused = reused + 1 else fresh = fresh + 1 end
  end
  report(stdout, round, reused, fresh, failed)
end
]]

-- One inline command to the redis-server on a fresh LuaSocket connection; the reply's text.
local function admin(server, command)
  local client = assert(socket.connect("127.0.0.1", server.port))
  client:settimeout(5)
  assert(client:send(command .. "\r\n"))
  local head = assert(client:receive("*l"))
  local size = tonumber(head:match("^%$(%d+)$"))
  local reply = size and assert(client:receive(size)) or head
  client:close()
  return reply
end

local function total_connections(server)
  return tonumber(admin(server, "INFO stats"):match("total_connections_received:(%d+)"))
end

-- The clients CLIENT LIST shows, without the one asking.
local function client_list(server)
  local others = {}
  for line in admin(server, "CLIENT LIST"):gmatch("[^\r\n]+") do
    if not line:find("cmd=client", 1, true) then others[#others + 1] = line end
  end
  return others
end

for _, module in ipairs { "resty.redis", "nginx.redis" } do
  describe("lua-nginx-redis as " .. module, function()
    local redis, server

    before_each(function()
      redis = redis_server.start()
      server = helper.start(helper.handler(helper.fill(SERVER, { MODULE = module,
        PORT = redis.port })))
    end)
    after_each(redis_server.cleanup)

    local function ask(command)
      return helper.request_report(server, command)
    end

    it("runs commands: strings, ngx.null, error replies, lists, hashes, binary values", function()
      local got = ask("basic")
      assert.same({ "OK", "v", true, 1, 3, "a,b,c", "OK", "1", "OK", true }, { table.unpack(got, 1, 10) })
      assert.matches("^WRONGTYPE", got[11])
      assert.equal(1, got[12])
    end)

    it("sends a pipeline in one go and reads every reply, errors included", function()
      local got = ask("pipeline")
      assert.same({ nil, 5, "OK", "OK", "one", false }, { table.unpack(got, 1, 6) })
      assert.matches("not an integer", got[7])
      assert.same({ true, "two" }, { got[8], got[9] })
    end)

    it("subscribes, reads published messages, times out in ms and unsubscribes", function()
      local got = ask("pubsub")
      assert.same({ "subscribe", "news", 1, nil, "subscribed state", "message", "news", "first",
        "second", 1, 1, nil, "timeout", "third", "unsubscribe", 0, 1 },
        { table.unpack(got, 1, 17) })
    end)

    it("reuses kept-alive connections under " .. CLIENTS .. " concurrent handlers", function()
      local before = total_connections(redis)
      local rounds = helper.run_reports(helper.fill(CLIENT, { ROUNDS = ROUNDS, CLIENTS = CLIENTS,
        PORT = server.port }), { timeout = 60 })
      local made = total_connections(redis) - before - 1 -- the INFO before is counted too
      assert.equal(ROUNDS, #rounds)
      for i, round in ipairs(rounds) do
        assert.equal(0, round[4], "round " .. i .. ": failed handlers")
        if i > 1 then
          assert.equal(CLIENTS, round[2], "round " .. i .. ": handlers with a reused connection")
        end
      end
      local listed = client_list(redis)
      assert.is_true(made >= 1 and made <= CLIENTS, made .. " connections for "
        .. ROUNDS * CLIENTS .. " requests")
      assert.is_true(#listed >= 1 and #listed <= CLIENTS, #listed .. " clients in CLIENT LIST")
      print(string.format("%s: %d requests (%d at once) made %d Redis connections; CLIENT LIST: %d",
        module, ROUNDS * CLIENTS, CLIENTS, made, #listed))
    end)
  end)
end
