-- shdict_spec.lua -- ngx.shared.DICT per process (issue 15, luasock.shdict): OpenResty's API
-- and return values, expiry on luasock.now(), eviction of the least recently used items when a
-- dictionary is full, the `shared_dicts` setting (refused by check, serve and a reload when a
-- size is bad), contents kept across a SIGHUP reload, and one dictionary seen by every handler.
local helper = require "helper"

local RELOAD_TIMEOUT = 5 -- seconds from SIGHUP to its log line

-- Runs a client script that has `d`, a dictionary of `size` bytes (4096 by default), declared
-- as the loader declares a script's; returns its reports.
local function run(source, size)
  return helper.run_reports(source, { prelude = ("local shdict = require 'luasock.shdict'; "
    .. "shdict.declare({ d = %d }); local d = shdict.dicts.d; "):format(size or 4096) })
end

-- The source of a handler keeping lines in the dict `cache`: "set K V" -> "true", "get K" ->
-- the value or "nil"; its greeting names its version. `settings` replaces its shared_dicts.
local function cache_source(version, settings)
  return helper.PRELUDE .. ([[
    return { %s handle = function(conn)
      local cache = require("luasock.shdict").dicts.cache
      conn:send("%s\n")
      while true do
        local line = conn:receive("*l")
        if not line then return end
        local op, key, value = line:match("^(%%a+) (%%S+) ?(.*)$")
        if op == "set" then
          conn:send(tostring(cache:set(key, value)), "\n")
        else
          conn:send(tostring(cache:get(key)), "\n")
        end
      end
    end }
  ]]):format(settings or 'shared_dicts = { cache = "1m" },', version)
end

local function cache_handler(version, settings)
  return helper.script(cache_source(version, settings))
end

describe("ngx.shared.DICT (luasock.shdict)", function()
  after_each(helper.cleanup)

  it("get, set, add, replace, delete, incr with OpenResty's results", function()
    local reports = run([[
      report(stdout, d:set("a", "one"))
      report(stdout, d:get("a"))
      report(stdout, d:set("f", 1.5, 0, 7))
      report(stdout, d:get("f"))
      report(stdout, d:add("a", "two"))
      report(stdout, d:add("b", true))
      report(stdout, d:get("b"))
      report(stdout, d:replace("zz", 1))
      report(stdout, d:replace("a", "three"))
      report(stdout, d:get("a"))
      report(stdout, d:set("a", nil))
      report(stdout, d:get("a"))
      report(stdout, d:delete("b"))
      report(stdout, d:get("b"))
      report(stdout, d:incr("n", 1))
      report(stdout, d:incr("n", 2, 10))
      report(stdout, d:incr("n", -5))
      report(stdout, d:incr("f", 1))
      report(stdout, d:set("s", "x"))
      report(stdout, d:incr("s", 1))
      report(stdout, d:get("nope"))
      report(stdout, d:set("", 1))
      report(stdout, d:get(nil))
      report(stdout, d:set("t", {}))
      report(stdout, d:set(12, "twelve"))
      report(stdout, d:get("12"))
      report(stdout, pcall(d.get, "a"))
      report(stdout, pcall(d.set, d, "a", 1, -1))
      report(stdout, pcall(d.incr, d, "n", "x"))
    ]])
    assert.same(table.pack(true, nil, false), reports[1])
    assert.same(table.pack("one"), reports[2])
    assert.same(table.pack(true, nil, false), reports[3])
    assert.same(table.pack(1.5, 7), reports[4], "flags come second when not 0")
    assert.same(table.pack(false, "exists", false), reports[5])
    assert.same(table.pack(true, nil, false), reports[6])
    assert.same(table.pack(true), reports[7])
    assert.same(table.pack(false, "not found", false), reports[8])
    assert.same(table.pack(true, nil, false), reports[9])
    assert.same(table.pack("three"), reports[10])
    assert.same(table.pack(true, nil, false), reports[11])
    assert.same(table.pack(nil), reports[12])
    assert.same(table.pack(true, nil, false), reports[13])
    assert.same(table.pack(nil), reports[14])
    assert.same(table.pack(nil, "not found"), reports[15])
    assert.same(table.pack(12, nil, false), reports[16], "init + value")
    assert.same(table.pack(7, nil, false), reports[17])
    assert.same(table.pack(2.5, nil, false), reports[18])
    assert.same(table.pack(true, nil, false), reports[19])
    assert.same(table.pack(nil, "not a number"), reports[20])
    assert.same(table.pack(nil), reports[21])
    assert.same(table.pack(nil, "empty key", false), reports[22])
    assert.same(table.pack(nil, "nil key"), reports[23])
    assert.same(table.pack(nil, "bad value type", false), reports[24])
    assert.same(table.pack(true, nil, false), reports[25])
    assert.same(table.pack("twelve"), reports[26], "a number key is its string")
    assert.equal(false, reports[27][1])
    assert.matches("call it with ':'", reports[27][2])
    assert.equal(false, reports[28][1])
    assert.matches("exptime", reports[28][2])
    assert.equal(false, reports[29][1])
    assert.matches("number expected", reports[29][2])
  end)

  it("get_keys, flush_all, flush_expired, capacity, free_space and unknown names", function()
    local reports = run([[
      for i = 1, 5 do d:set("k" .. i, i) end
      d:get("k2")
      report(stdout, table.concat(d:get_keys(), ","))
      report(stdout, table.concat(d:get_keys(2), ","))
      report(stdout, d:capacity(), d:free_space() < 4096, d:free_space() > 3000)
      d:flush_all()
      report(stdout, d:get("k1"), #d:get_keys(0), d:free_space() < 4096)
      report(stdout, d:get_stale("k1"))
      report(stdout, d:flush_expired(2), d:flush_expired(), d:free_space())
      report(stdout, shdict.dicts.nope)
    ]])
    assert.same(table.pack("k2,k5,k4,k3,k1"), reports[1], "most recently used first")
    assert.same(table.pack("k2,k5"), reports[2])
    assert.same(table.pack(4096, true, true), reports[3])
    assert.same(table.pack(nil, 0, true), reports[4], "flush_all expires, frees nothing yet")
    assert.same(table.pack(1, nil, true), reports[5])
    assert.same(table.pack(2, 3, 4096), reports[6])
    assert.same(table.pack(nil), reports[7])
  end)

  it("lists: lpush, rpush, lpop, rpop, llen", function()
    local reports = run([[
      report(stdout, d:lpush("l", "b"), d:lpush("l", "a"), d:rpush("l", 3))
      report(stdout, d:llen("l"), d:get("l"))
      report(stdout, d:lpop("l"), d:rpop("l"), d:lpop("l"), d:lpop("l"), d:llen("l"))
      d:set("s", "x")
      report(stdout, d:lpush("s", 1))
      report(stdout, d:llen("s"))
      report(stdout, d:rpush("l", true))
      report(stdout, d:free_space())
    ]])
    assert.same(table.pack(1, 2, 3), reports[1])
    assert.same(table.pack(3, nil, "value is a list"), reports[2])
    assert.same(table.pack("a", 3, "b", nil, 0), reports[3])
    assert.same(table.pack(nil, "value not a list"), reports[4])
    assert.same(table.pack(nil, "value not a list"), reports[5])
    assert.same(table.pack(nil, "bad value type"), reports[6])
    assert.is_true(reports[7][1] < 4096, "s still counts")
  end)

  it("expires items by luasock.now(): set, add, expire, ttl, incr's init_ttl, get_stale", function()
    local reports = run([[
      d:set("short", "v", 0.3)
      d:set("kept", "v")
      d:set("extended", "v", 0.3)
      d:incr("n", 1, 0, 0.3)
      report(stdout, d:ttl("short") > 0 and d:ttl("short") <= 0.3, d:ttl("kept"), d:ttl("nope"))
      report(stdout, d:expire("extended", 30), d:expire("nope", 1))
      report(stdout, d:add("short", "again"))
      luasock.sleep(0.6)
      report(stdout, d:get("short"), d:get("kept"), d:get("extended"), d:get("n"))
      report(stdout, d:get_stale("short"))
      report(stdout, d:ttl("short"))
      report(stdout, d:add("short", "again"), d:get("short"))
      report(stdout, d:ttl("extended") > 29, d:incr("n", 1))
    ]])
    assert.same(table.pack(true, 0, nil, "not found"), reports[1])
    assert.same(table.pack(true, nil, "not found"), reports[2])
    assert.same(table.pack(false, "exists", false), reports[3])
    assert.same(table.pack(nil, "v", "v", nil), reports[4])
    assert.same(table.pack("v", nil, true), reports[5], "stale until dropped")
    assert.same(table.pack(nil, "not found"), reports[6])
    assert.same(table.pack(true, "again"), reports[7], "an expired key is absent")
    assert.same(table.pack(true, nil, "not found"), reports[8])
  end)

  it("evicts the least recently used when full: set is forcible, safe_set and safe_add are not",
    function()
    -- Items of 64 + 2 + 100 bytes: 6 fit in 1000.
    local reports = run([[
      local value = ("x"):rep(100)
      local forced = {}
      for i = 1, 6 do
        local ok, err, forcible = d:set("k" .. i, value)
        assert(ok, err)
        forced[#forced + 1] = tostring(forcible)
      end
      report(stdout, table.concat(forced, ","))
      d:get("k1")                                    -- k1 is now the most recently used
      report(stdout, d:safe_set("k7", value))
      report(stdout, d:safe_add("k7", value))
      report(stdout, d:set("k7", value))
      report(stdout, d:get("k1") ~= nil, d:get("k2"), d:get("k7") ~= nil)
      report(stdout, d:set("huge", ("x"):rep(2000)))
      report(stdout, #d:get_keys(0))
      d:set("k3", 1, 0.05)
      luasock.sleep(0.2)
      report(stdout, d:safe_set("k8", value), d:get("k4") ~= nil)
    ]], 1000)
    assert.same(table.pack("false,false,false,false,false,false"), reports[1])
    assert.same(table.pack(nil, "no memory"), reports[2])
    assert.same(table.pack(nil, "no memory"), reports[3])
    assert.same(table.pack(true, nil, true), reports[4])
    assert.same(table.pack(true, nil, true), reports[5], "k2 went, not k1")
    assert.same(table.pack(false, "no memory", false), reports[6], "nothing evicted for it")
    assert.same(table.pack(6), reports[7])
    assert.same(table.pack(true, true), reports[8], "the expired k3 made room")
  end)
end)

describe("the shared_dicts setting", function()
  after_each(helper.cleanup)

  it("refuses a bad size in check and serve, naming the script and the dict", function()
    for _, bad in ipairs({ '"10x"', '"-1m"', "0", "1.5", "{}", '"m"' }) do
      local script = cache_handler("v1", "shared_dicts = { cache = " .. bad .. " },")
      local want = helper.literal(script) .. ":%d+: "
        .. helper.literal('shared_dicts.cache: size must be like "10m" or a number of bytes')
      local code, _, err = helper.run({ "check", script })
      assert.are_not.equal(0, code)
      assert.is_truthy(err:find(want), bad .. ": " .. err)
      code, _, err = helper.run({ "serve", script, "--listen", "127.0.0.1:0" }, { timeout = 10 })
      assert.are_not.equal(0, code)
      assert.is_truthy(err:find(want), bad .. ": " .. err)
    end
    local script = cache_handler("v1", 'shared_dicts = "10m",')
    local code, _, err = helper.run({ "check", script })
    assert.are_not.equal(0, code)
    assert.is_truthy(err:find("'shared_dicts' must be a table", 1, true), err)
  end)

  it("gives every handler of the process the same dict, sized as declared", function()
    local server = helper.start(helper.handler([[
      return { shared_dicts = { cache = "10m", small = "512k", big = "1g", exact = 4096 },
        handle = function(conn)
          local dicts = require("luasock.shdict").dicts
          local line = conn:receive("*l")
          if line == "sizes" then
            report(conn, dicts.cache:capacity(), dicts.small:capacity(), dicts.big:capacity(),
              dicts.exact:capacity(), dicts.nope)
          elseif line == "set" then
            report(conn, dicts.cache:set("shared", "by a", 10))
          else
            report(conn, dicts.cache:get("shared"))
          end
        end }
    ]]))
    local a, b = server:connect(), server:connect()
    assert(a:send("sizes\n"))
    assert.same(table.pack(10485760, 524288, 1073741824, 4096, nil), helper.read_report(a))
    a:close()
    a = server:connect()
    assert(a:send("set\n"))
    assert.same(table.pack(true, nil, false), helper.read_report(a))
    assert(b:send("get\n"))
    assert.same(table.pack("by a"), helper.read_report(b))
    server:stop()
  end)

  it("keeps the contents across a SIGHUP reload; a bad size fails the reload, the old script serves",
    function()
    local script = cache_handler("v1")
    local server = helper.start(script)
    local client = server:connect()
    assert.equal("v1", assert(client:receive("*l")))
    assert.equal("true", helper.ask(client, "set kept value"))
    client:close()

    helper.replace_file(script, cache_source("v2"))
    local mark = server:mark()
    server:signal("HUP")
    server:wait_log("%[info%] reloaded ", RELOAD_TIMEOUT, mark)
    client = server:connect()
    assert.equal("v2", assert(client:receive("*l")))
    assert.equal("value", helper.ask(client, "get kept"))
    client:close()

    helper.replace_file(script, cache_source("v3", 'shared_dicts = { cache = "big" },'))
    mark = server:mark()
    server:signal("HUP")
    server:wait_log("%[error%] reload failed: [^\n]*shared_dicts%.cache: size must be like",
      RELOAD_TIMEOUT, mark)
    client = server:connect()
    assert.equal("v2", assert(client:receive("*l")), "the old script serves on")
    assert.equal("value", helper.ask(client, "get kept"))
    client:close()
    server:stop()
  end)
end)
