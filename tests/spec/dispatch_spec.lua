-- dispatch_spec.lua -- issue 12: what the C core hands to Lua outside a handler's own calls must
-- never abort the server or get lost. Covered here:
-- * item 6: `--watch` start-up with a script that puts a non-string key in package.loaded
--   starts, serves and reloads on a change; luasock.resolve("localhost") (answered from
--   /etc/hosts inside c-ares) at the memory cap returns or raises "not enough memory" in the
--   handler, and the server serves on and exits 0 (no leak on the ASan build).
-- * item 8: Lua warnings are logged: warn() as `[warn] Lua warning: ...`, "@off"/"@on" switch
--   them off and on, and an error in a __gc metamethod in Lua's words ("error in __gc (...)").
-- * item 14: conn:peer() inside on_close still returns the peer's host and port.
local helper = require "helper"

local literal = helper.literal

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

-- Sends one line and returns the report it gets back (a packed table).
local function ask(client, line)
  assert(client:send(line .. "\n"))
  return helper.read_report(client)
end

describe("issue 12 item 6: --watch with package.loaded[true] = true", function()
  after_each(helper.cleanup)

  -- A script whose top level stores a value under a non-string key in package.loaded (any
  -- library may do so). --watch lists the modules in package.loaded to watch their files.
  local function versioned(version)
    return "package.loaded[true] = true\n"
      .. "return { handle = function(conn) conn:send('" .. version .. "\\n') end }\n"
  end

  local function greeting(server)
    local client = server:connect()
    local line, err = client:receive("*l")
    client:close()
    assert(line, "no greeting: " .. tostring(err))
    return line
  end

  it("starts, serves, and reloads when the script changes", function()
    local script = helper.script(versioned("v1"))
    local server = helper.start(script, { args = { "--watch" } })
    assert.equal("v1", greeting(server))

    local mark = server:mark()
    helper.replace_file(script, versioned("v2"))
    server:wait_log("%[info%] reloaded " .. literal(script) .. " in [%d.]+ ms %(changed: "
      .. literal(script) .. "%)\n", 5, mark)
    assert.equal("v2", greeting(server))
    assert.equal(0, server:count_log("reload failed"))
    server:stop()
  end)
end)

describe("issue 12 item 6: luasock.resolve at the memory cap", function()
  after_each(helper.cleanup)

  -- start() puts the cap 256 KiB above what the Lua state holds. On "resolve", the handler
  -- fills the heap with strings kept in a table (each made inside pcall, down to the cap), in
  -- 35 rounds that start 1 byte apart; each round then comes down to the cap 35 bytes at a time
  -- and calls luasock.resolve("localhost") at every step, so that the cap meets the answer's
  -- allocations at one point after another, until three more strings were refused. Nothing between two calls
  -- allocates (counters only; the first odd result is kept as is). It reports how many rounds
  -- reached the cap, how many calls answered, how many got "not enough memory" (raised or
  -- returned) and the first other result, after letting the ballast go. Today's main raised
  -- that error from inside c-ares (the answer from /etc/hosts comes before ares_getaddrinfo
  -- returns), unwinding its frames: every refusal leaked the lookup (LeakSanitizer at exit).
  local AT_THE_CAP = [[
local M = {}

function M.start()
  M.max_memory = math.floor(collectgarbage("count") * 1024) + 256 * 1024
end

local SLOTS = 4096
local STEP = "%010d" -- a distinct 10-character string: 35 bytes of Lua heap

-- An answer: a list of addresses, or "not enough memory" raised or returned.
local function classify(ok, value, err)
  if ok and type(value) == "table" then
    return (value[1] == "127.0.0.1" or value[1] == "::1") and "answered" or "other"
  end
  local message = ok and value == nil and err or not ok and value
  if type(message) == "string" and message:find("not enough memory", 1, true) then
    return "refused"
  end
  return "other"
end

local function at_the_cap()
  local answered, refused, capped = 0, 0, 0
  local odd, odd_ok, odd_value, odd_err = false, nil, nil, nil
  for round = 0, 34 do
    local ballast = {}
    for i = 1, SLOTS do ballast[i] = false end
    local n = 0
    local offset = "%0" .. (4 + round) .. "d"
    -- A long string (never interned, so always a new one) of `size` bytes, or a distinct short
    -- one made with `format`.
    local function add(size, format)
      local text = format and string.format(format, n) or string.rep("x", size)
      n = n + 1
      ballast[n] = text
    end
    for _, size in ipairs { 65536, 4096, 256 } do
      while n < SLOTS and pcall(add, size) do end
    end
    pcall(add, nil, offset)
    local misses = 0
    while n < SLOTS and misses < 3 do
      local ok, value, err = pcall(luasock.resolve, "localhost")
      local kind = classify(ok, value, err)
      if kind == "answered" then
        answered = answered + 1
      elseif kind == "refused" then
        refused = refused + 1
      elseif not odd then
        odd, odd_ok, odd_value, odd_err = true, ok, value, err
      end
      value, err = nil, nil -- the answer is garbage now, for the collector to take at the cap
      if not pcall(add, nil, STEP) then misses = misses + 1 end
    end
    if misses == 3 then capped = capped + 1 end
    ballast = nil
    collectgarbage()
  end
  return capped, answered, refused,
    odd and (tostring(odd_ok) .. " " .. tostring(odd_value) .. " " .. tostring(odd_err)) or nil
end

function M.handle(conn)
  while true do
    local line = conn:receive()
    if line == "resolve" then
      report(conn, at_the_cap())
    elseif line == "ping" then
      report(conn, "pong", #luasock.resolve("localhost") > 0)
    else
      return
    end
  end
end

return M]]

  it("returns or raises 'not enough memory' in the handler; the server goes on", function()
    local server = serve(AT_THE_CAP)
    local client = server:connect()
    local reply = ask(client, "resolve")
    local capped, answered, refused, other = reply[1], reply[2], reply[3], reply[4]
    assert.equal(35, capped, "rounds that came down to the cap")
    assert.is_nil(other, "a resolve at the cap gave neither addresses nor 'not enough memory'")
    assert.is_true(answered > 0, "no resolve answered (" .. refused .. " refused)")
    -- The same connection, and a new one, are served (and resolve works) after all that.
    assert.same({ "pong", true, n = 2 }, ask(client, "ping"))
    client:close()
    local fresh = server:connect()
    assert.same({ "pong", true, n = 2 }, ask(fresh, "ping"))
    fresh:close()
    local log = server:stop()
    assert.is_nil(log:find("unprotected", 1, true), log)
  end)
end)

describe("issue 12 item 8: Lua warnings", function()
  after_each(helper.cleanup)

  it("logs warn() as '[warn] Lua warning: ...'; '@off' and '@on' switch them", function()
    local server = serve([[
      return { handle = function(conn)
        warn("hello")
        warn("@off")
        warn("hidden while off")
        warn("@on")
        warn("shown ", "in two pieces")
        report(conn, "warned")
      end }]])
    local client = server:connect()
    assert.same({ "warned", n = 1 }, helper.read_report(client))
    client:close()
    server:wait_log("%[warn%] Lua warning: hello\n")
    server:wait_log("%[warn%] Lua warning: shown in two pieces\n")
    local log = server:stop()
    assert.is_nil(log:find("hidden while off", 1, true), log)
    assert.is_nil(log:find("Lua warning: @", 1, true), log)
    assert.equal(2, select(2, log:gsub("Lua warning: ", "")))
  end)

  it("logs an error in a __gc metamethod, and the handler goes on", function()
    local script = helper.handler([[
      return { handle = function(conn)
        setmetatable({}, { __gc = function() error("gc boom") end })
        collectgarbage()
        collectgarbage()
        report(conn, "collected")
      end }]])
    local server = helper.start(script)
    local client = server:connect()
    assert.same({ "collected", n = 1 }, helper.read_report(client))
    client:close()
    -- Lua's own text: "error in __gc (...)" since Lua 5.4.4, "error in __gc metamethod (...)"
    -- before.
    server:wait_log("%[warn%] Lua warning: error in __gc[%a ]* %(" .. literal(script)
      .. ":%d+: gc boom%)\n")
    local log = server:stop()
    assert.equal(1, select(2, log:gsub("gc boom", "")))
  end)
end)

describe("issue 12 item 14: conn:peer() inside on_close", function()
  after_each(helper.cleanup)

  it("returns the peer's host and port", function()
    local server = serve([[
      return {
        handle = function(conn)
          report(conn, conn:peer())
          conn:receive()
        end,
        on_close = function(conn, reason)
          luasock.log("info", "on_close " .. tostring(conn), reason, "peer", conn:peer())
        end,
      }]])
    local client = server:connect()
    local _, port = client:getsockname()
    assert.same({ "127.0.0.1", tonumber(port), n = 2 }, helper.read_report(client))
    client:close()
    local reason, peer = server:wait_log("on_close conn %d+ (%S+) peer ([^\n]*)")
    assert.equal("closed", reason)
    assert.equal("127.0.0.1 " .. port, peer)
    server:stop()
  end)
end)
