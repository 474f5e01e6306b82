-- redis_spec.lua -- luasock.redis against a real redis-server that each test starts on a free
-- port (in a temp directory, without persistence), through `luasock run` scripts: plain
-- commands, nulls and error replies, binary-safe and large values, pipelines and MULTI/EXEC,
-- one client shared by 200 coroutines, RESP3 types, AUTH and SELECT, a refused connection, a
-- command timeout, the server going away, pub/sub (also (un)subscribes of several coroutines in
-- one step, and of several channels), nil arguments refused, and closing with <close>; URLs
-- (redis:// with a password and a db, malformed ones raising without the password), and
-- rediss:// against a redis-server that speaks only TLS (issue 14): verified against ?ca=,
-- refused without it ("certificate verify failed: ..."), ?insecure=1, the host name checked,
-- AUTH and SELECT, reconnecting, and a bad tls option raising. What the client wrote is checked
-- with an independent RESP client on LuaSocket (and LuaSec) where it matters.
local socket = require "socket"
local helper = require "helper"
local redis_server = require "redis_server"
local devcert = require "devcert"

-- redis-server processes (started and stopped by tests/redis_server.lua) ----------------

local Redis = redis_server.class()

local function resp_command(...)
  local args = table.pack(...)
  local parts = { "*" .. args.n .. "\r\n" }
  for i = 1, args.n do
    local arg = tostring(args[i])
    parts[#parts + 1] = "$" .. #arg .. "\r\n" .. arg .. "\r\n"
  end
  return table.concat(parts)
end

-- Reads one RESP2 reply: a string, integer, { err = ... }, nil for a null, or a list.
local function resp_read(client)
  local line, err = client:receive("*l")
  assert(line, "reading a reply: " .. tostring(err))
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest end
  if kind == "-" then return { err = rest } end
  if kind == ":" then return math.tointeger(tonumber(rest)) end
  local n = math.tointeger(tonumber(rest))
  if kind == "$" then
    if n < 0 then return nil end
    local data = assert(client:receive(n + 2))
    return data:sub(1, n)
  elseif kind == "*" then
    if n < 0 then return nil end
    local list = {}
    for i = 1, n do list[i] = resp_read(client) end
    return list
  end
  error("unexpected reply line " .. line)
end

-- A connection of our own to the server (authenticated if it has a password, over TLS if it
-- speaks TLS): s:call(...).
function Redis:session()
  local client = assert(socket.tcp())
  client:settimeout(10)
  assert(client:connect("127.0.0.1", self.port))
  if self.tls then client = assert(devcert.wrap(client, self.tls.ca)) end
  local session = {
    call = function(_, ...)
      assert(client:send(resp_command(...)))
      return resp_read(client)
    end,
    close = function() client:close() end,
  }
  if self.password then assert(session:call("AUTH", self.password) == "OK") end
  return session
end

-- One command on a fresh connection.
function Redis:call(...)
  local session = self:session()
  local reply = table.pack(session:call(...))
  session:close()
  return table.unpack(reply, 1, reply.n)
end

-- Starts redis-server on a free port (opts.port to choose it), with DEBUG allowed from
-- loopback, waits until it answers PING; opts.password sets --requirepass; opts.tls
-- (certificates from devcert) makes it speak only TLS. Retries with another port if the chosen
-- one was taken.
local function start_redis(opts)
  opts = opts or {}
  return redis_server.start({ port = opts.port, dir = opts.dir, password = opts.password,
    tls = opts.tls, args = { "--enable-debug-command", "local" } }, Redis)
end

local cleanup = redis_server.cleanup

-- Scripts -------------------------------------------------------------------------------

-- Put after RUN_PRELUDE: `redis`, and `lit(v)`, which writes any reply as a Lua literal
-- (redis.null as "<null>", an error entry as { err = ..., is_error = true }, `n` left out of
-- lists) for `value` below to read back.
local SCRIPT_PRELUDE = "local redis = require 'luasock.redis'; "
  .. "local function lit(v) if v == redis.null then return '\"<null>\"' end; "
  .. "if type(v) ~= 'table' then return string.format('%q', v) end; "
  .. "if redis.is_error(v) then return string.format('{ err = %q, is_error = true }', v.err) end; "
  .. "local keys = {}; for k in pairs(v) do if not (k == 'n' and v.n == #v) then "
  .. "keys[#keys + 1] = k end end; "
  .. "table.sort(keys, function(a, b) return lit(a) < lit(b) end); local out = {}; "
  .. "for _, k in ipairs(keys) do out[#out + 1] = '[' .. lit(k) .. '] = ' .. lit(v[k]) end; "
  .. "return '{' .. table.concat(out, ', ') .. '}' end; "

-- Reads back a lit() string.
local function value(text)
  local chunk = assert(load("return " .. text, "=lit", "t", {}))
  return chunk()
end

-- Reads back a lit() list without its RESP3 `push` mark (a confirmation is a push in RESP3).
local function items(text)
  local list = value(text)
  if type(list) == "table" then list.push = nil end
  return list
end

local function reports(out)
  local decoded = {}
  for line in out:gmatch("[^\n]+") do decoded[#decoded + 1] = helper.decode_report(line) end
  return decoded
end

-- Runs the script (${NAME}s filled from vars) with `luasock run`; requires exit 0; returns the
-- decoded reports and stderr.
local function run(source, vars, timeout)
  local script = helper.script(helper.RUN_PRELUDE .. SCRIPT_PRELUDE .. helper.fill(source, vars))
  local code, out, err = helper.run({ "run", script }, { timeout = timeout or 20 })
  assert.equal(0, code, "the script failed; stdout:\n" .. out .. "\nstderr:\n" .. err)
  return reports(out), err
end

-- Tests ---------------------------------------------------------------------------------

describe("luasock.redis", function()
  local server

  before_each(function() server = start_redis() end)
  after_each(cleanup)

  it("sets, gets, deletes and counts; a missing key is nil without an error", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      report(stdout, r:set("k", "v"))
      report(stdout, r:get("k"))
      report(stdout, select("#", r:get("missing")), r:get("missing"))
      local v, err = r:get("missing")
      report(stdout, v, err)
      report(stdout, r:incr("n"), r:incr("n"), r:incrby("n", 40), math.type(r:incr("n")))
      report(stdout, r:del("k", "n", "missing"))
      report(stdout, r:exists("k"), r:get("k"))
      report(stdout, r:set("int", 42), r:get("int"), r:set("float", 2.5), r:get("float"))
      report(stdout, r:set("empty", ""), r:get("empty"), r:strlen("empty"))
      report(stdout, r:call("SET", "called", "yes"), r:call("GET", "called"), r:call("ping"))
      report(stdout, tostring(r))
    ]], { PORT = server.port })
    assert.same(table.pack("OK"), got[1])
    assert.same(table.pack("v"), got[2])
    assert.same(table.pack(1, nil), got[3])
    assert.same(table.pack(nil, nil), got[4])
    assert.same(table.pack(1, 2, 42, "integer"), got[5])
    assert.same(table.pack(2), got[6])
    assert.same(table.pack(0, nil), got[7])
    assert.same(table.pack("OK", "42", "OK", "2.5"), got[8])
    assert.same(table.pack("OK", "", 0), got[9])
    assert.same(table.pack("OK", "yes", "PONG"), got[10])
    assert.same(table.pack("redis client (redis 127.0.0.1:" .. server.port .. ")"), got[11])
    -- what the client wrote, read with a client of our own
    assert.equal("42", server:call("GET", "int"))
    assert.equal("yes", server:call("GET", "called"))
    assert.equal(0, server:call("EXISTS", "k"))
  end)

  it("returns nil and Redis's message for an error reply, and goes on", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      r:set("s", "text")
      report(stdout, r:incr("s"))
      report(stdout, r:lpush("s", "x"))
      report(stdout, r:call("NOSUCHCOMMAND", "a"))
      report(stdout, r:get())
      report(stdout, r:get("s"))
    ]], { PORT = server.port })
    assert.same(table.pack(nil, "ERR value is not an integer or out of range"), got[1])
    assert.same(table.pack(nil,
      "WRONGTYPE Operation against a key holding the wrong kind of value"), got[2])
    assert.is_nil(got[3][1])
    assert.matches("^ERR unknown command 'NOSUCHCOMMAND'", got[3][2])
    assert.same(table.pack(nil, "ERR wrong number of arguments for 'get' command"), got[4])
    assert.same(table.pack("text"), got[5])
  end)

  it("keeps values binary-safe: every byte value, CRLF and RESP inside, 5 MiB", function()
    local got = run([[
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes) .. "\r\n$5\r\n*1\r\n+OK\r\n-ERR\r\n\r\n"
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      report(stdout, r:set("bin", all), r:get("bin") == all, r:strlen("bin"))
      report(stdout, r:set("key\0with\r\nbytes", all), r:get("key\0with\r\nbytes") == all)
      local unit = table.concat(bytes) .. "\r\n"
      local big = string.rep(unit, 5 * 1024 * 1024 // #unit + 1):sub(1, 5 * 1024 * 1024)
      local started = luasock.now()
      report(stdout, r:set("big", big))
      local back = r:get("big")
      report(stdout, back == big, #back, r:strlen("big"), luasock.now() - started)
      -- a reply after a large one is read from the right place
      local replies = r:pipeline { { "GET", "big" }, { "GET", "bin" }, { "PING" } }
      report(stdout, replies[1] == big, replies[2] == all, replies[3])
    ]], { PORT = server.port })
    assert.same(table.pack("OK", true, 256 + 23), got[1])
    assert.same(table.pack("OK", true), got[2])
    assert.same(table.pack("OK"), got[3])
    assert.same({ true, 5 * 1024 * 1024, 5 * 1024 * 1024 }, { got[4][1], got[4][2], got[4][3] })
    assert.is_true(got[4][4] < 10, "5 MiB there and back took " .. got[4][4] .. " s")
    assert.same(table.pack(true, true, "PONG"), got[5])
    -- the stored bytes are exactly these, as another client reads them
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes) .. "\r\n$5\r\n*1\r\n+OK\r\n-ERR\r\n\r\n"
    assert.is_true(server:call("GET", "bin") == all)
    assert.is_true(server:call("GET", "key\0with\r\nbytes") == all)
    local unit = table.concat(bytes) .. "\r\n"
    local big = string.rep(unit, 5 * 1024 * 1024 // #unit + 1):sub(1, 5 * 1024 * 1024)
    assert.is_true(server:call("GET", "big") == big)
  end)

  it("pipelines commands in function and list form; an error in the middle is an entry", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      r:set("s", "text")
      local replies, err = r:pipeline(function(p)
        p:set("a", 1)
        p:incr("a")
        p:get("missing")
        p:lpush("s", "x")
        p:get("a")
        p:mget("a", "missing")
      end)
      report(stdout, lit(replies), err, redis.is_error(replies[4]), replies[3] == redis.null,
        redis.null == luasock.null, tostring(replies[4]))
      replies, err = r:pipeline {
        { "INCR", "a" }, { "INCR", "s" }, { "GET", "a" }, { "EXISTS", "nothing" } }
      report(stdout, lit(replies), err)
      report(stdout, lit(r:pipeline {}), lit(r:pipeline(function() end)))
      -- 10000 commands in one pipeline
      local many = {}
      for i = 1, 10000 do many[i] = { "RPUSH", "list", i } end
      replies = r:pipeline(many)
      report(stdout, #replies, replies[1], replies[10000], r:llen("list"), r:lindex("list", -1))
    ]], { PORT = server.port })
    assert.same({ "OK", 2, "<null>", { err = "WRONGTYPE Operation against a key holding the "
      .. "wrong kind of value", is_error = true }, "2", { "2", "<null>" } }, value(got[1][1]))
    assert.is_nil(got[1][2])
    assert.is_true(got[1][3])
    assert.is_true(got[1][4])
    assert.is_true(got[1][5], "redis.null is luasock.null")
    assert.equal("redis error: WRONGTYPE Operation against a key holding the wrong kind of value",
      got[1][6])
    assert.same({ 3, { err = "ERR value is not an integer or out of range", is_error = true },
      "3", 0 }, value(got[2][1]))
    assert.is_nil(got[2][2])
    assert.same(table.pack("{}", "{}"), got[3])
    assert.same(table.pack(10000, 1, 10000, 10000, "10000"), got[4])
  end)

  it("runs MULTI/EXEC through a pipeline", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      report(stdout, lit(r:pipeline(function(p)
        p:multi() p:incr("n") p:incr("n") p:get("n") p:exec()
      end)))
      r:set("s", "text")
      -- an error while executing is an entry of EXEC's list
      report(stdout, lit(r:pipeline {
        { "MULTI" }, { "SET", "t", "x" }, { "INCR", "s" }, { "GET", "t" }, { "EXEC" } }))
      -- an error while queueing aborts the transaction
      report(stdout, lit(r:pipeline {
        { "MULTI" }, { "SET", "u" }, { "SET", "v", "1" }, { "EXEC" } }))
      report(stdout, r:exists("v"))
      -- DISCARD
      report(stdout, lit(r:pipeline { { "MULTI" }, { "SET", "w", "1" }, { "DISCARD" } }),
        r:exists("w"))
    ]], { PORT = server.port })
    assert.same({ "OK", "QUEUED", "QUEUED", "QUEUED", { 1, 2, "2" } }, value(got[1][1]))
    assert.same({ "OK", "QUEUED", "QUEUED", "QUEUED", { "OK",
      { err = "ERR value is not an integer or out of range", is_error = true }, "x" } },
      value(got[2][1]))
    local aborted = value(got[3][1])
    assert.equal("OK", aborted[1])
    assert.is_true(aborted[2].is_error)
    assert.matches("^ERR wrong number of arguments", aborted[2].err)
    assert.equal("QUEUED", aborted[3])
    assert.is_true(aborted[4].is_error)
    assert.matches("^EXECABORT", aborted[4].err)
    assert.same(table.pack(0), got[4])
    assert.same(table.pack('{[1] = "OK", [2] = "QUEUED", [3] = "OK"}', 0), got[5])
  end)

  it("shares one client between 200 coroutines, each getting its own replies", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      local counts, mine, tasks = {}, {}, {}
      local inflight, max_inflight = 0, 0
      for i = 1, 200 do
        tasks[i] = luasock.spawn(function()
          inflight = inflight + 1
          max_inflight = math.max(max_inflight, inflight)
          counts[i] = r:incr("counter")
          inflight = inflight - 1
          r:set("key" .. i, "value" .. i)
          mine[i] = r:get("key" .. i) == "value" .. i
        end)
      end
      for i = 1, 200 do assert(tasks[i]:join()) end
      local seen, distinct, in_range, all_mine = {}, 0, true, true
      for i = 1, 200 do
        local n = counts[i]
        if math.type(n) ~= "integer" or n < 1 or n > 200 then in_range = false
        elseif not seen[n] then seen[n], distinct = true, distinct + 1 end
        all_mine = all_mine and mine[i]
      end
      report(stdout, distinct, in_range, all_mine, r:get("counter"), max_inflight)
    ]], { PORT = server.port })
    assert.same(table.pack(200, true, true, "200", got[1][5]), got[1])
    assert.is_true(got[1][5] > 1, "the commands never overlapped: at most " .. got[1][5])
    assert.equal("200", server:call("GET", "counter"))
  end)

  it("speaks RESP3 with protocol = 3: maps, doubles, booleans, nulls", function()
    local got = run([[
      for _, protocol in ipairs { 2, 3 } do
        local r = assert(redis.connect("127.0.0.1", ${PORT}, { protocol = protocol }))
        r:del("h", "z")
        r:hset("h", "a", "1", "b", "2")
        r:zadd("z", 1.5, "m", "+inf", "top")
        local v, err = r:get("missing")
        local score = r:zscore("z", "m")
        report(stdout, protocol, lit(r:hgetall("h")), lit(r:hgetall("missing")), v, err,
          lit(score), math.type(score), lit(r:zscore("z", "top")), lit(r:mget("h", "missing")),
          lit(r:call("DEBUG", "PROTOCOL", "true")), lit(r:call("DEBUG", "PROTOCOL", "double")),
          lit(r:call("DEBUG", "PROTOCOL", "map")), r:call("DEBUG", "PROTOCOL", "verbatim"),
          r:call("DEBUG", "PROTOCOL", "attrib"), lit(r:call("DEBUG", "PROTOCOL", "null")),
          r:call("DEBUG", "PROTOCOL", "bignum"))
      end
    ]], { PORT = server.port })
    local two, three = got[1], got[2]
    assert.equal(2, two[1])
    assert.same({ "a", "1", "b", "2" }, value(two[2]))
    assert.same({}, value(two[3]))
    assert.is_nil(two[4])
    assert.is_nil(two[5])
    assert.equal('"1.5"', two[6])
    assert.equal("inf", value(two[8]))
    assert.same({ "<null>", "<null>" }, value(two[9]))
    assert.equal(1, value(two[10]))

    assert.equal(3, three[1])
    assert.same({ a = "1", b = "2" }, value(three[2])) -- a map, not a flat list
    assert.same({}, value(three[3]))
    assert.is_nil(three[4]) -- a missing key: nil, no error
    assert.is_nil(three[5])
    assert.equal(1.5, value(three[6]))
    assert.equal("float", three[7])
    assert.equal(math.huge, value(three[8]))
    assert.same({ "<null>", "<null>" }, value(three[9]))
    assert.is_true(value(three[10]))
    assert.equal(3.141, value(three[11]))
    assert.same({ [0] = false, [1] = true, [2] = false }, value(three[12]))
    assert.equal("This is a verbatim\nstring", three[13])
    assert.equal("Some real reply following the attribute", three[14])
    assert.is_nil(value(three[15]))
    assert.equal("1234567999999999999999999999999999999", three[16])
  end)

  it("with RESP3, hands an out-of-band push to no command: replies stay in step", function()
    -- DEBUG PROTOCOL push sends a push message and then the command's own reply.
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}, { protocol = 3, timeout = 2 }))
      r:set("k", "v")
      local replies, err = r:pipeline { { "DEBUG", "PROTOCOL", "push" }, { "GET", "k" } }
      report(stdout, lit(replies), err)
      report(stdout, r:get("k"))
    ]], { PORT = server.port })
    assert.same({ "Some real reply following the push reply", "v" }, value(got[1][1]))
    assert.same(table.pack("v"), got[2])
  end)

  it("selects the database given as db", function()
    local got = run([[
      local one = assert(redis.connect("127.0.0.1", ${PORT}, { db = 1 }))
      local zero = assert(redis.connect("127.0.0.1", ${PORT}))
      local three = assert(redis.connect("127.0.0.1", ${PORT}, { db = 3, protocol = 3 }))
      report(stdout, one:set("dbkey", "one"), one:get("dbkey"), zero:get("dbkey"),
        three:get("dbkey"), zero:exists("dbkey"))
      three:set("dbkey", "three")
      report(stdout, one:get("dbkey"), three:get("dbkey"), one:dbsize(), zero:dbsize())
      report(stdout, redis.connect("127.0.0.1", ${PORT}, { db = 99 }))
    ]], { PORT = server.port })
    assert.same(table.pack("OK", "one", nil, nil, 0), got[1])
    assert.same(table.pack("one", "three", 1, 0), got[2])
    assert.same(table.pack(nil, "redis 127.0.0.1:" .. server.port
      .. ": SELECT failed: ERR DB index is out of range", "ERR"), got[3])
    assert.is_nil(server:call("GET", "dbkey"))
    local session = server:session()
    assert.equal("OK", session:call("SELECT", 1))
    assert.equal("one", session:call("GET", "dbkey"))
    assert.equal("OK", session:call("SELECT", 3))
    assert.equal("three", session:call("GET", "dbkey"))
    session:close()
  end)

  it("returns nil and 'redis HOST:PORT: connection refused' when nothing listens", function()
    local port = helper.free_port()
    local got = run([[
      report(stdout, redis.connect("127.0.0.1", ${PORT}))
      report(stdout, redis.connect("127.0.0.1", ${PORT}, { protocol = 3, db = 1 }))
    ]], { PORT = port })
    assert.same(table.pack(nil, "redis 127.0.0.1:" .. port .. ": connection refused"), got[1])
    assert.same(table.pack(nil, "redis 127.0.0.1:" .. port .. ": connection refused"), got[2])
  end)

  it("times a command out after the client's timeout and keeps working", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}, { timeout = 0.3 }))
      local started = luasock.now()
      local v, err = r:blpop("empty", 0)
      report(stdout, v, err, luasock.now() - started)
      started = luasock.now()
      report(stdout, r:set("after", "1"))
      report(stdout, r:get("after"), luasock.now() - started)
    ]], { PORT = server.port })
    assert.same({ nil, "timeout" }, { got[1][1], got[1][2] })
    assert.is_true(got[1][3] >= 0.28 and got[1][3] < 1.5, "timed out after " .. got[1][3] .. " s")
    assert.same(table.pack("OK"), got[2])
    assert.equal("1", got[3][1])
  end)

  it("never hands the late reply of a timed-out command to a later command", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}, { timeout = 0.3 }))
      r:set("k", "v")
      local started = luasock.now()
      report(stdout, r:blpop("empty", 0.5))
      -- Redis answers the BLPOP (a null) at 0.5 s; the GET after it must get its own reply
      luasock.sleep(0.7 - (luasock.now() - started))
      report(stdout, r:get("k"))
      report(stdout, r:lrange("empty", 0, -1) ~= nil, r:get("k"))
    ]], { PORT = server.port })
    assert.same(table.pack(nil, "timeout"), got[1])
    assert.same(table.pack("v"), got[2])
    assert.same(table.pack(true, "v"), got[3])
  end)

  it("fails pending and later commands with the address when the server goes away", function()
    local got = run([[
      local name = "redis 127.0.0.1:${PORT}"
      local lost = {}
      local r = assert(redis.connect("127.0.0.1", ${PORT}, {
        on_disconnect = function(err) lost[#lost + 1] = err end }))
      local watcher = assert(redis.connect("127.0.0.1", ${PORT}))
      local pending = luasock.spawn(function() return r:blpop("empty", 0) end)
      -- the BLPOP has reached Redis when Redis counts a blocked client
      local deadline = luasock.now() + 5
      while not watcher:info("clients"):find("blocked_clients:1", 1, true) do
        assert(luasock.now() < deadline, "the BLPOP never blocked")
        luasock.sleep(0.01)
      end
      os.execute("kill -KILL ${PID}")
      local _, v, err = pending:join()
      report(stdout, v, err)
      -- once the process is gone (a zombie has closed its sockets), nothing listens; until then
      -- a connect may still reach its listening socket, and be reset
      local function gone()
        local file = io.open("/proc/${PID}/stat")
        if not file then return true end
        local stat = file:read("a")
        file:close()
        local state = stat and stat:match("^%d+ %b() (%a)")
        return state == "Z" or state == "X"
      end
      deadline = luasock.now() + 5
      while not gone() and luasock.now() < deadline do luasock.sleep(0.01) end
      report(stdout, r:get("k"))
      report(stdout, r:pipeline { { "GET", "k" } })
      report(stdout, #lost, lost[1])
      -- (a connect may rarely still be accepted by the loopback stack and then reset: either
      -- way no command gets an answer, and the error names the address)
      local again, again_err = redis.connect("127.0.0.1", ${PORT})
      if again then again, again_err = again:ping() end
      report(stdout, again, again_err)
      report(stdout, tostring(r))
    ]], { PORT = server.port, PID = server.pid })
    local name = "redis 127.0.0.1:" .. server.port
    assert.is_nil(got[1][1])
    assert.is_truthy(got[1][2] == name .. ": closed"
      or got[1][2] == name .. ": connection reset by peer", got[1][2])
    -- A client whose connection was lost connects again for its next command.
    assert.same(table.pack(nil, name .. ": connection refused"), got[2])
    assert.same(table.pack(nil, name .. ": connection refused"), got[3])
    assert.equal(1, got[4][1])
    assert.equal(got[1][2], got[4][2])
    assert.is_nil(got[5][1])
    assert.matches("^" .. name:gsub("%p", "%%%0") .. ": ", got[5][2])
    assert.same(table.pack("redis client (" .. name .. ", closed)"), got[6])
    assert.is_true(server:exited())
  end)

  it("delivers subscribed messages to the callback in order; psubscribe; unsubscribe", function()
    local got, err = run([[
      local sub = assert(redis.connect("127.0.0.1", ${PORT}))
      local psub = assert(redis.connect("127.0.0.1", ${PORT}))
      local pub = assert(redis.connect("127.0.0.1", ${PORT}))
      local inbox = luasock.queue()
      local function receive()
        local item, err = inbox:pop(2)
        if not item then return "nothing: " .. err end
        return item
      end
      report(stdout, lit(sub:subscribe("news", function(m, c) inbox:push(c .. " " .. m) end)))
      report(stdout, lit(sub:subscribe("other", function(m, c) inbox:push(c .. " " .. m) end)))
      local counts, order_ok = {}, true
      for i = 1, 100 do counts[#counts + 1] = pub:publish("news", "m" .. i) end
      for i = 1, 100 do
        local item = receive()
        if item ~= "news m" .. i then order_ok = false report(stdout, "wrong", i, item) break end
      end
      report(stdout, order_ok, counts[1], counts[100], inbox:len())

      local pinbox = luasock.queue()
      report(stdout, lit(psub:psubscribe("ne*", function(m, c) pinbox:push(c .. " " .. m) end)))
      pub:publish("news", "for both")
      pub:publish("nest", "for the pattern")
      pub:publish("other", "not for the pattern")
      pub:publish("zz", "for nobody")
      report(stdout, pinbox:pop(2), pinbox:pop(2), pinbox:pop(0.2))
      report(stdout, receive(), receive())

      -- after UNSUBSCRIBE news, only other's messages arrive; a message on other is the marker
      report(stdout, lit(sub:unsubscribe("news")))
      pub:publish("news", "after unsubscribe")
      pub:publish("other", "marker")
      report(stdout, receive(), inbox:len())

      -- a failing callback is logged; the next messages still arrive
      local sub2 = assert(redis.connect("127.0.0.1", ${PORT}))
      sub2:subscribe("fragile", function(m)
        if m == "boom" then error("callback exploded") end
        inbox:push("fragile " .. m)
      end)
      pub:publish("fragile", "boom")
      pub:publish("fragile", "fine")
      report(stdout, receive())
    ]], { PORT = server.port })
    assert.same({ "subscribe", "news", 1 }, value(got[1][1]))
    assert.same({ "subscribe", "other", 2 }, value(got[2][1]))
    assert.same(table.pack(true, 1, 1, 0), got[3])
    assert.same({ "psubscribe", "ne*", 1 }, value(got[4][1]))
    assert.same(table.pack("news for both", "nest for the pattern", nil, "timeout"), got[5])
    assert.same(table.pack("news for both", "other not for the pattern"), got[6])
    assert.same({ "unsubscribe", "news", 1 }, value(got[7][1]))
    assert.same(table.pack("other marker", 0), got[8])
    assert.same(table.pack("fragile fine"), got[9])
    assert.matches("subscriber callback failed: [^\n]*callback exploded", err)
  end)

  it("issue 12 item 10: keeps delivering after the last channel is left and another joined "
    .. "in one step", function()
    -- RESP2 (the bug) and RESP3 (unchanged). Two coroutines send UNSUBSCRIBE A and SUBSCRIBE B in
    -- the same step, so the UNSUBSCRIBE's confirmation (no subscription left) is read after the
    -- SUBSCRIBE was sent: the SUBSCRIBE's confirmation, and every message after it, must still
    -- be taken for what they are.
    local got, err = run([[
      for _, protocol in ipairs { 2, 3 } do
        local sub = assert(redis.connect("127.0.0.1", ${PORT},
          { protocol = protocol, timeout = 2 }))
        local pub = assert(redis.connect("127.0.0.1", ${PORT}))
        local inbox = luasock.queue()
        local function receive()
          local item, err = inbox:pop(2)
          return item or "nothing: " .. err
        end
        local function callback(m, c) inbox:push(c .. " " .. m) end
        report(stdout, lit(sub:subscribe("A", callback)))
        local leave = luasock.spawn(function() return sub:unsubscribe("A") end)
        local join = luasock.spawn(function() return sub:subscribe("B", callback) end)
        local _, left = leave:join()
        local _, joined = join:join()
        report(stdout, protocol, lit(left), lit(joined))
        report(stdout, pub:publish("A", "to nobody"), pub:publish("B", "hello"))
        report(stdout, receive())
        pub:publish("B", "again")
        report(stdout, receive(), inbox:len())
        sub:close()
        pub:close()
      end
    ]], { PORT = server.port })
    for i, protocol in ipairs { 2, 3 } do
      local base = (i - 1) * 5
      assert.same({ "subscribe", "A", 1 }, items(got[base + 1][1]))
      assert.equal(protocol, got[base + 2][1])
      assert.same({ "unsubscribe", "A", 0 }, items(got[base + 2][2]))
      assert.same({ "subscribe", "B", 1 }, items(got[base + 2][3]))
      -- Redis counts one subscriber of B, none of A
      assert.same(table.pack(0, 1), got[base + 3])
      assert.same(table.pack("B hello"), got[base + 4], "RESP" .. protocol)
      assert.same(table.pack("B again", 0), got[base + 5], "RESP" .. protocol)
    end
    assert.is_nil(err:find("nobody asked for", 1, true), err)
  end)

  it("issue 12 item 10: takes one reply per (un)subscribe of several channels, or of all",
    function()
    -- Redis confirms each channel named, or each subscription ended by an UNSUBSCRIBE that
    -- names none: the command's reply is the last confirmation, and the next command gets
    -- its own reply.
    local got, err = run([[
      for _, protocol in ipairs { 2, 3 } do
        local sub = assert(redis.connect("127.0.0.1", ${PORT},
          { protocol = protocol, timeout = 2 }))
        local pub = assert(redis.connect("127.0.0.1", ${PORT}))
        local inbox = luasock.queue()
        local function callback(m, c) inbox:push(c .. " " .. m) end
        sub:subscribe("c1", callback)
        sub:subscribe("c2", callback)
        report(stdout, protocol, lit(sub:call("SUBSCRIBE", "c3", "c4", "c3")), lit(sub:ping()),
          lit(sub:psubscribe("c*", callback)))
        pub:publish("c3", "m3")
        pub:publish("c1", "m1")
        report(stdout, inbox:pop(2), inbox:pop(2), inbox:pop(2), inbox:len())
        -- from every channel: the pattern is left
        local all = sub:unsubscribe()
        report(stdout, all[1], all[3], lit(sub:ping()))
        pub:publish("c1", "through the pattern")
        report(stdout, inbox:pop(2), inbox:len())
        report(stdout, lit(sub:punsubscribe()), lit(sub:unsubscribe()))
        -- no subscription left: ordinary commands, and a list that looks like a message is a reply
        sub:del("list")
        report(stdout, sub:set("k", "v"), sub:rpush("list", "message", "c1", "x"),
          lit(sub:lrange("list", 0, -1)), sub:get("k"), inbox:len())
        report(stdout, lit(sub:call("SUBSCRIBE", "d1", "d2")),
          lit(sub:call("UNSUBSCRIBE", "d1", "never", "d2")), sub:get("k"))
        sub:close()
        pub:close()
      end
    ]], { PORT = server.port })
    for i, protocol in ipairs { 2, 3 } do
      local base = (i - 1) * 7
      local pong = protocol == 2 and { "pong", "" } or "PONG"
      assert.equal(protocol, got[base + 1][1])
      assert.same({ "subscribe", "c3", 4 }, items(got[base + 1][2]))
      assert.same(pong, items(got[base + 1][3]))
      assert.same({ "psubscribe", "c*", 5 }, items(got[base + 1][4]))
      assert.same(table.pack("c3 m3", "c1 m1", "c1 m1", 0), got[base + 2])
      assert.same({ "unsubscribe", 1 }, { got[base + 3][1], got[base + 3][2] })
      assert.same(pong, items(got[base + 3][3]))
      assert.same(table.pack("c1 through the pattern", 0), got[base + 4])
      assert.same({ "punsubscribe", "c*", 0 }, items(got[base + 5][1]))
      assert.same({ "unsubscribe", "<null>", 0 }, items(got[base + 5][2]))
      assert.equal("OK", got[base + 6][1])
      assert.equal(3, got[base + 6][2])
      assert.same({ "message", "c1", "x" }, items(got[base + 6][3]))
      assert.same({ "v", 0 }, { got[base + 6][4], got[base + 6][5] })
      assert.same({ "subscribe", "d2", 2 }, items(got[base + 7][1]))
      assert.same({ "unsubscribe", "d2", 0 }, items(got[base + 7][2]))
      assert.equal("v", got[base + 7][3])
    end
    assert.is_nil(err:find("nobody asked for", 1, true), err)
  end)

  it("issue 12 item 14: a nil argument raises 'bad argument #N to CMD (nil)', sending nothing",
    function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}))
      local function try(...) return select(2, pcall(...)) end
      report(stdout, try(r.set, r, "k", nil))
      report(stdout, try(r.call, r, "SET", "k", nil))
      report(stdout, try(r.hset, r, "h", "f", nil, "g", "v"))
      report(stdout, try(r.set, r, nil, "v"))
      report(stdout, try(r.call, r))
      report(stdout, try(r.subscribe, r, nil, function() end))
      report(stdout, try(r.unsubscribe, r, "a", nil))
      -- nothing of a pipeline is sent when one of its commands has a nil
      report(stdout, try(r.pipeline, r, function(p) p:set("a", "1") p:set("b", nil) end))
      report(stdout, try(r.pipeline, r, { { "SET", "a", "1" }, table.pack("SET", "b", nil) }))
      -- the error blames the line that called
      local ok, err = pcall(function()
        local v = r:set("k", nil) return v end) local line = debug.getinfo(1, "l").currentline
      report(stdout, ok, err, line)
      -- the client goes on, in step
      report(stdout, r:exists("k", "h", "a", "b"), r:ping(), r:set("k", "v"), r:get("k"))
    ]], { PORT = server.port })
    assert.same(table.pack("bad argument #2 to 'set' (nil)"), got[1])
    assert.same(table.pack("bad argument #2 to 'set' (nil)"), got[2])
    assert.same(table.pack("bad argument #3 to 'hset' (nil)"), got[3])
    assert.same(table.pack("bad argument #1 to 'set' (nil)"), got[4])
    assert.same(table.pack("bad argument #1 to 'call' (command name expected, got nil)"), got[5])
    assert.same(table.pack("bad argument #1 to 'subscribe' (nil)"), got[6])
    assert.same(table.pack("bad argument #2 to 'unsubscribe' (nil)"), got[7])
    assert.matches(":%d+: bad argument #2 to 'set' %(nil%)$", got[8][1])
    assert.same(table.pack("bad argument #2 to 'set' (nil)"), got[9])
    assert.is_false(got[10][1])
    assert.matches(":" .. got[10][3] .. ": bad argument #2 to 'set' %(nil%)$", got[10][2])
    assert.same(table.pack(0, "PONG", "OK", "v"), got[11])
    -- Redis never ran a SET or HSET before the last one, nor stored "nil" anywhere
    local stats = server:call("INFO", "commandstats")
    assert.matches("cmdstat_set:calls=1,", stats, 1, true)
    assert.is_nil(stats:find("cmdstat_hset", 1, true), stats)
    assert.equal(0, server:call("EXISTS", "h", "a", "b"))
  end)

  it("with RESP3, runs ordinary commands on a subscribed client", function()
    local got = run([[
      local r = assert(redis.connect("127.0.0.1", ${PORT}, { protocol = 3, timeout = 2 }))
      local pub = assert(redis.connect("127.0.0.1", ${PORT}))
      local inbox = luasock.queue()
      r:subscribe("news", function(m, c) inbox:push(c .. " " .. m) end)
      report(stdout, r:set("k", "v"), r:get("k"))
      -- a list whose items look like a pub/sub message is still the command's reply
      r:rpush("list", "message", "news", "not a message")
      report(stdout, lit(r:lrange("list", 0, -1)))
      pub:publish("news", "real")
      report(stdout, inbox:pop(2))
      report(stdout, inbox:len())
    ]], { PORT = server.port })
    assert.same(table.pack("OK", "v"), got[1])
    assert.same({ "message", "news", "not a message" }, value(got[2][1]))
    assert.same(table.pack("news real"), got[3])
    assert.same(table.pack(0), got[4])
  end)

  it("fails commands waiting for replies on close(), without calling on_disconnect", function()
    local got = run([[
      local lost = 0
      local r = assert(redis.connect("127.0.0.1", ${PORT}, {
        on_disconnect = function() lost = lost + 1 end }))
      local waiting = {}
      for i = 1, 3 do
        waiting[i] = luasock.spawn(function() return r:blpop("empty" .. i, 0) end)
      end
      -- the first BLPOP blocks the connection in Redis (the other two queue behind it), so
      -- all three replies are pending when the client closes
      local watcher = assert(redis.connect("127.0.0.1", ${PORT}))
      local deadline = luasock.now() + 5
      while not watcher:info("clients"):find("blocked_clients:1", 1, true) do
        assert(luasock.now() < deadline, "the BLPOPs never blocked")
        luasock.sleep(0.01)
      end
      local started = luasock.now()
      report(stdout, r:close())
      for i = 1, 3 do report(stdout, select(2, waiting[i]:join())) end
      report(stdout, luasock.now() - started < 1, lost, r:ping())
    ]], { PORT = server.port })
    local name = "redis 127.0.0.1:" .. server.port
    assert.same(table.pack(true), got[1])
    for i = 2, 4 do assert.same(table.pack(nil, name .. ": closed"), got[i]) end
    assert.same(table.pack(true, 0, nil, name .. ": closed"), got[5])
  end)

  it("closes the client at the end of a <close> variable's scope", function()
    local got = run([[
      local watcher = assert(redis.connect("127.0.0.1", ${PORT}))
      local function clients()
        return tonumber(watcher:info("clients"):match("connected_clients:(%d+)"))
      end
      local before = clients()
      local kept
      do
        local r <close> = assert(redis.connect("127.0.0.1", ${PORT}))
        kept = r
        report(stdout, r:set("k", "v"), clients())
      end
      report(stdout, kept.closed, tostring(kept), kept:get("k"))
      local deadline = luasock.now() + 3
      while clients() ~= before and luasock.now() < deadline do luasock.sleep(0.01) end
      report(stdout, before, clients())
      report(stdout, kept:close(), kept:close())
    ]], { PORT = server.port })
    local name = "redis 127.0.0.1:" .. server.port
    assert.same(table.pack("OK", got[3][1] + 1), got[1])
    assert.same(table.pack(true, "redis client (" .. name .. ", closed)", nil, name .. ": closed"),
      got[2])
    assert.equal(got[3][1], got[3][2])
    assert.same(table.pack(true, true), got[4])
  end)
end)

describe("luasock.redis with a password", function()
  local server

  before_each(function() server = start_redis { password = "s3cret pass" } end)
  after_each(cleanup)

  it("refuses a wrong password with 'AUTH failed' and works with the right one", function()
    local got = run([[
      local name = "redis 127.0.0.1:${PORT}"
      report(stdout, redis.connect("127.0.0.1", ${PORT}, { password = "wrong" }))
      report(stdout, redis.connect("127.0.0.1", ${PORT}, { password = "wrong", protocol = 3 }))
      local anonymous = assert(redis.connect("127.0.0.1", ${PORT}))
      report(stdout, anonymous:get("k"))
      local r = assert(redis.connect("127.0.0.1", ${PORT}, { password = "s3cret pass" }))
      report(stdout, r:set("k", "v"), r:get("k"))
      local named = assert(redis.connect("127.0.0.1", ${PORT},
        { username = "default", password = "s3cret pass", db = 2 }))
      report(stdout, named:get("k"), named:set("k2", "in db 2"))
      local three = assert(redis.connect("127.0.0.1", ${PORT},
        { password = "s3cret pass", protocol = 3 }))
      three:hset("h", "f", "x")
      report(stdout, lit(three:hgetall("h")))
      -- the failed connections were closed: only r, named, three and anonymous remain
      local deadline = luasock.now() + 3
      local count
      repeat
        count = tonumber(r:info("clients"):match("connected_clients:(%d+)"))
        if count ~= 4 then luasock.sleep(0.01) end
      until count == 4 or luasock.now() > deadline
      report(stdout, count)
    ]], { PORT = server.port })
    local name = "redis 127.0.0.1:" .. server.port
    assert.is_nil(got[1][1])
    assert.matches(name .. ": AUTH failed: WRONGPASS", got[1][2], 1, true)
    assert.equal("WRONGPASS", got[1][3])
    assert.is_nil(got[2][1])
    assert.matches(name .. ": ", got[2][2], 1, true)
    assert.matches("WRONGPASS", got[2][2], 1, true)
    assert.equal("WRONGPASS", got[2][3])
    assert.same(table.pack(nil, "NOAUTH Authentication required."), got[3])
    assert.same(table.pack("OK", "v"), got[4])
    assert.same(table.pack(nil, "OK"), got[5])
    assert.same({ f = "x" }, value(got[6][1]))
    assert.same(table.pack(4), got[7])
    local session = server:session()
    assert.equal("OK", session:call("SELECT", 2))
    assert.equal("in db 2", session:call("GET", "k2"))
    session:close()
  end)
end)

describe("luasock.redis with a URL", function()
  local server

  before_each(function() server = start_redis { password = "s3cret pass" } end)
  after_each(cleanup)

  it("takes the password and db from redis://, the rest from opts", function()
    local got = run([[
      local r = assert(redis.connect("redis://:s3cret%20pass@127.0.0.1:${PORT}/2",
        { protocol = 3 }))
      report(stdout, r:set("k", "in db 2"), r.protocol, tostring(r))
      local named = assert(redis.connect("redis://default:s3cret%20pass@127.0.0.1:${PORT}"))
      report(stdout, named:get("k"), named:set("k", "in db 0"))
      report(stdout, redis.connect("redis://:wrong@127.0.0.1:${PORT}"))
    ]], { PORT = server.port })
    assert.same(table.pack("OK", 3, "redis client (redis 127.0.0.1:" .. server.port .. ")"),
      got[1])
    assert.same(table.pack(nil, "OK"), got[2])
    assert.is_nil(got[3][1])
    assert.matches("redis 127.0.0.1:" .. server.port .. ": AUTH failed: WRONGPASS", got[3][2], 1,
      true)
    local session = server:session()
    assert.equal("in db 0", session:call("GET", "k"))
    assert.equal("OK", session:call("SELECT", 2))
    assert.equal("in db 2", session:call("GET", "k"))
    session:close()
  end)

  it("raises for a malformed URL, naming the form and hiding the password", function()
    local got = run([[
      for _, url in ipairs { "redis://:hunter2@127.0.0.1:notaport", "redis://h:1/db",
        "redis://127.0.0.1:${PORT}?insecure=1", "rediss://127.0.0.1:${PORT}?verify=0",
        "rediss://:hunter2@127.0.0.1:${PORT}?", "redis://hunter2@127.0.0.1" } do
        report(stdout, pcall(redis.connect, url))
      end
    ]], { PORT = server.port })
    local form = "expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ca=FILE|insecure=1]"
    local shown = { "redis://***@127.0.0.1:notaport", "redis://h:1/db",
      "redis://127.0.0.1:" .. server.port .. "?insecure=1",
      "rediss://127.0.0.1:" .. server.port .. "?verify=0",
      "rediss://***@127.0.0.1:" .. server.port .. "?", "redis://***@127.0.0.1" }
    for i, url in ipairs(shown) do
      assert.is_false(got[i][1])
      assert.matches("bad argument #1 to 'connect' (" .. form .. ", got '" .. url .. "')",
        got[i][2], 1, true)
      assert.is_nil(got[i][2]:find("hunter2", 1, true), got[i][2])
    end
  end)
end)

describe("luasock.redis over TLS (rediss://)", function()
  after_each(cleanup)

  it("verifies Redis against ?ca=FILE and runs commands, large values and pub/sub", function()
    local certs = devcert.make()
    local server = start_redis { tls = certs }
    local got = run([[
      local url = "rediss://127.0.0.1:${PORT}?ca=${CA}"
      local r = assert(redis.connect(url))
      report(stdout, r:set("k", "v"), r:get("k"), tostring(r))
      local parts = {}
      for i = 0, 5 * 1024 * 1024 - 1, 4 do parts[#parts + 1] = string.char(i % 256, 13, 10, 36) end
      local big = table.concat(parts)
      report(stdout, r:set("big", big), r:get("big") == big, r:strlen("big"))
      report(stdout, lit(r:pipeline(function(p) p:incr("n") p:incr("n") p:get("n") end)))
      local sub = assert(redis.connect(url, { protocol = 3 }))
      local inbox = luasock.queue()
      report(stdout, lit(sub:subscribe("news", function(m, c) inbox:push(c .. " " .. m) end)))
      report(stdout, r:publish("news", "over tls"), inbox:pop(2))
      -- QUIT closes the connection: once the client saw it, the next command connects again,
      -- over TLS
      report(stdout, r:quit())
      local deadline = luasock.now() + 3
      while not r.closed and luasock.now() < deadline do luasock.sleep(0.01) end
      report(stdout, r.closed, r:get("k"))
    ]], { PORT = server.port, CA = certs.ca })
    assert.same(table.pack("OK", "v", "redis client (redis 127.0.0.1:" .. server.port .. ")"),
      got[1])
    assert.same(table.pack("OK", true, 5 * 1024 * 1024), got[2])
    assert.same({ 1, 2, "2" }, items(got[3][1]))
    assert.same({ "subscribe", "news", 1 }, items(got[4][1]))
    assert.same(table.pack(1, "news over tls"), got[5])
    assert.same(table.pack("OK"), got[6])
    assert.same(table.pack(true, "v"), got[7])
    local session = server:session()
    assert.equal("v", session:call("GET", "k"))
    session:close()
  end)

  it("refuses a certificate it cannot verify, and takes it with ?insecure=1", function()
    local issued = start_redis { tls = devcert.make() }
    local self_signed = start_redis { tls = devcert.self_signed() }
    local got = run([[
      report(stdout, redis.connect("rediss://127.0.0.1:${ISSUED}"))
      report(stdout, redis.connect("127.0.0.1", ${ISSUED}, { tls = true }))
      report(stdout, redis.connect("rediss://127.0.0.1:${SELF}"))
      report(stdout, redis.connect("rediss://127.0.0.1:${SELF}?ca=${OTHER_CA}"))
      for _, port in ipairs { ${ISSUED}, ${SELF} } do
        local r = assert(redis.connect("rediss://127.0.0.1:" .. port .. "?insecure=1"))
        report(stdout, r:ping())
      end
      local r = assert(redis.connect("127.0.0.1", ${SELF}, { tls = { verify = false } }))
      report(stdout, r:ping())
    ]], { ISSUED = issued.port, SELF = self_signed.port, OTHER_CA = issued.tls.ca })
    local function refused(port, reason)
      return table.pack(nil, ("redis 127.0.0.1:%d: certificate verify failed: %s"):format(port,
        reason))
    end
    -- Redis sends its CA (from --tls-ca-cert-file) after its certificate: the chain ends in a
    -- root that is not the system's
    assert.same(refused(issued.port, "self-signed certificate in certificate chain"), got[1])
    assert.same(refused(issued.port, "self-signed certificate in certificate chain"), got[2])
    assert.same(refused(self_signed.port, "self-signed certificate"), got[3])
    assert.same(refused(self_signed.port, "self-signed certificate"), got[4])
    assert.same(table.pack("PONG"), got[5])
    assert.same(table.pack("PONG"), got[6])
    assert.same(table.pack("PONG"), got[7])
  end)

  it("checks the host name against the certificate (tls.server_name to choose it)", function()
    local certs = devcert.make { "cache.test" }
    local server = start_redis { tls = certs }
    local got = run([[
      report(stdout, redis.connect("rediss://localhost:${PORT}?ca=${CA}"))
      local r = assert(redis.connect("localhost", ${PORT},
        { tls = { ca = "${CA}", server_name = "cache.test" } }))
      report(stdout, r:ping())
      r = assert(redis.connect("rediss://127.0.0.1:${PORT}?ca=${CA}"))
      report(stdout, r:ping())
    ]], { PORT = server.port, CA = certs.ca })
    assert.same(table.pack(nil, "redis localhost:" .. server.port
      .. ": certificate verify failed: hostname mismatch"), got[1])
    assert.same(table.pack("PONG"), got[2])
    assert.same(table.pack("PONG"), got[3])
  end)

  it("sends AUTH and SELECT over TLS", function()
    local certs = devcert.make()
    local server = start_redis { tls = certs, password = "tls pass" }
    local got = run([[
      local r = assert(redis.connect("rediss://:tls%20pass@127.0.0.1:${PORT}/3?ca=${CA}"))
      report(stdout, r:set("k", "in db 3"))
      report(stdout, redis.connect("rediss://:wrong@127.0.0.1:${PORT}?ca=${CA}"))
    ]], { PORT = server.port, CA = certs.ca })
    assert.same(table.pack("OK"), got[1])
    assert.is_nil(got[2][1])
    assert.matches("redis 127.0.0.1:" .. server.port .. ": AUTH failed: WRONGPASS", got[2][2], 1,
      true)
    assert.equal("WRONGPASS", got[2][3])
    local session = server:session()
    assert.equal("OK", session:call("SELECT", 3))
    assert.equal("in db 3", session:call("GET", "k"))
    session:close()
  end)

  it("fails within its timeout against a Redis without TLS; a bad tls option raises", function()
    local server = start_redis()
    local got = run([[
      local started = luasock.now()
      local r, err = redis.connect("rediss://127.0.0.1:${PORT}?insecure=1", { timeout = 1 })
      report(stdout, r, err, luasock.now() - started)
      local ok, raised = pcall(redis.connect, "127.0.0.1", ${PORT}, { tls = { ca = 42 } })
      report(stdout, ok, raised)
    ]], { PORT = server.port })
    assert.is_nil(got[1][1])
    assert.matches("^redis 127%.0%.0%.1:" .. server.port .. ": ", got[1][2])
    assert.is_true(got[1][3] < 2, "failed after " .. got[1][3] .. " s")
    assert.is_false(got[2][1])
    assert.matches("ca", got[2][2], 1, true)
  end)
end)
