-- redis_pool_spec.lua -- luasock.redis on the keep-alive pool (issue 15): r:setkeepalive parks
-- the client's connection and redis.connect with the same session (host, port, user, password,
-- db, protocol) takes it back without AUTH, HELLO or SELECT, which Redis's own CLIENT LIST and
-- commandstats show; a different db or protocol gets a connection of its own; a client with
-- subscriptions or commands in flight is refused; a parked client is closed to its caller; the
-- parked connection outlives the handler that parked it.
-- Against a real redis-server (tests/redis_server.lua) through `luasock run` scripts.
local helper = require "helper"
local redis_server = require "redis_server"

local PASSWORD = "pool pass"

-- Runs the script with `redis` defined and ${PORT} and ${PASSWORD} filled; returns its reports.
local function run(server, source)
  return helper.run_reports(helper.fill(source, { PORT = server.port, PASSWORD = PASSWORD }),
    { prelude = "local redis = require 'luasock.redis'; " })
end

describe("luasock.redis on the keep-alive pool", function()
  local server

  before_each(function()
    server = redis_server.start({ password = PASSWORD }, redis_server.class())
  end)
  after_each(redis_server.cleanup)

  it("serves 20 connect/setkeepalive cycles on one connection, authenticated and selected once",
    function()
    local reports = run(server, [[
      local opts = { password = "${PASSWORD}", db = 2 }
      local ids = {}
      for i = 1, 20 do
        local r = assert(redis.connect("127.0.0.1", ${PORT}, opts))
        assert(r:reused() == i - 1, "reused " .. r:reused() .. " in cycle " .. i)
        assert(r:set("k" .. i, i) == "OK")
        ids[#ids + 1] = r:client("id")
        assert(r:setkeepalive(10))
        local v, err = r:get("k")
        assert(v == nil and err:find(": closed$"), "a parked client is closed")
      end
      local r = assert(redis.connect("127.0.0.1", ${PORT}, opts))
      local one = true
      for _, id in ipairs(ids) do one = one and id == ids[1] end
      report(stdout, r:reused(), #ids, one, ids[1] == r:client("id"))
      local list = r:client("list")
      local _, lines = list:gsub("\n", "")
      report(stdout, lines, list:match("db=(%d+)"), list:match("id=(%d+)") == tostring(ids[1]))
      local stats = r:info("commandstats")
      report(stdout, stats:match("cmdstat_auth:calls=(%d+)"),
        stats:match("cmdstat_select:calls=(%d+)"), stats:match("cmdstat_set:calls=(%d+)"))
    ]])
    assert.same(table.pack(20, 20, true, true), reports[1])
    assert.same(table.pack(1, "2", true), reports[2], "CLIENT LIST: one connection, in db 2")
    assert.same(table.pack("1", "1", "20"), reports[3], "one AUTH and one SELECT for 20 SETs")
  end)

  it("lets the handler of each request take the connection the previous one parked", function()
    local app = helper.start(helper.handler(helper.fill([[
      local redis = require "luasock.redis"
      return { handle = function(conn)
        local r = assert(redis.connect("127.0.0.1", ${PORT}, { password = "${PASSWORD}" }))
        report(conn, r:incr("requests"), r:client("id"), r:reused(), r:setkeepalive(10))
      end }
    ]], { PORT = server.port, PASSWORD = PASSWORD })))
    local first
    for i = 1, 10 do
      local client = app:connect()
      local got = helper.read_report(client)
      client:close()
      first = first or got[2]
      assert.same(table.pack(i, first, i - 1, true), got)
    end
    app:stop()
  end)

  it("gives a different db, protocol or password a connection of its own", function()
    local reports = run(server, [[
      local function cycle(opts)
        local r = assert(redis.connect("127.0.0.1", ${PORT}, opts))
        local reused, id, db = r:reused(), r:client("id"), r:get("which")
        assert(r:setkeepalive(10))
        return reused, id, db
      end
      local one = { password = "${PASSWORD}", db = 1 }
      local r = assert(redis.connect("127.0.0.1", ${PORT}, one))
      r:set("which", "db 1")
      r:close()
      local _, first = cycle(one)
      local reused, id, db = cycle({ password = "${PASSWORD}", db = 2 })
      report(stdout, reused, id ~= first, db)
      reused, id = cycle({ password = "${PASSWORD}", db = 1, protocol = 3 })
      report(stdout, reused, id ~= first)
      report(stdout, redis.connect("127.0.0.1", ${PORT}, { password = "wrong", db = 1 }))
      reused, id, db = cycle(one)
      report(stdout, reused, id == first, db)
    ]])
    assert.same(table.pack(0, true, nil), reports[1], "db 2 did not get db 1's connection")
    assert.same(table.pack(0, true), reports[2], "RESP3 did not get a RESP2 connection")
    assert.is_nil(reports[3][1])
    assert.matches("AUTH failed: WRONGPASS", reports[3][2], 1, true)
    assert.same(table.pack(1, true, "db 1"), reports[4])
  end)

  it("refuses while subscribed or while commands are in flight, and parks once they are done",
    function()
    local reports = run(server, [[
      local opts = { password = "${PASSWORD}" }
      local r = assert(redis.connect("127.0.0.1", ${PORT}, opts))
      local id = r:client("id")
      assert(r:subscribe("news", function() end))
      report(stdout, r:setkeepalive(10))
      assert(r:unsubscribe())
      local started = luasock.queue()
      local blocked = luasock.spawn(function()
        started:push(true)
        return r:blpop("nothing", 0.3)
      end)
      started:pop() -- when it runs again, the BLPOP is on its way
      report(stdout, r:setkeepalive(10))
      report(stdout, blocked:join())
      report(stdout, r:setkeepalive(10))
      local again = assert(redis.connect("127.0.0.1", ${PORT}, opts))
      report(stdout, again:reused(), again:client("id") == id, again:ping())
    ]])
    assert.is_nil(reports[1][1])
    assert.matches("cannot keep a connection alive while it has subscriptions", reports[1][2],
      1, true)
    assert.is_nil(reports[2][1])
    assert.matches("cannot keep a connection alive while commands are in flight", reports[2][2],
      1, true)
    assert.same(table.pack(true, nil), reports[3])
    assert.same(table.pack(true), reports[4])
    assert.same(table.pack(1, true, "PONG"), reports[5])
  end)
end)
