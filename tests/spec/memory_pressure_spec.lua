-- memory_pressure_spec.lua -- issue 12, the memory-pressure suite (item 3, and items 4, 5, 6, 7
-- and 12 where they meet the cap): every Lua function, method and callback of the API is called
-- in a loop with the Lua heap held at the memory cap (max_memory), and
--   * the server never aborts: it answers afterwards and exits 0 when stopped (on the
--     AddressSanitizer build an ASan or LSan report makes that exit non-zero);
--   * no partial output reaches a peer: what send, post and send_object deliver is whole
--     records, or whole MessagePack values as python3's msgpack decodes them;
--   * every call either succeeds, returns nil (or false) and an error, or raises an error that
--     pcall catches: "not enough memory", or an error docs/api.md names for that call.
--
-- How the heap is held at the cap: start() sets max_memory to the heap then plus MARGIN. The
-- handler stops the collector's own cycles (collectgarbage("stop"): an emergency collection
-- still runs whenever an allocation fails), then, before every call, fills a ballast table with
-- strings inside pcall until allocation fails, and frees some of them again: 0 to 12.5 KiB of
-- room, a different amount each round, so each call runs out of memory at a different point
-- inside it. Everything the loop itself uses exists beforehand (tallies, result slots,
-- arguments), so only the call under test allocates, and a reserve taken before the fill and
-- dropped after the call gives the test's own code room between calls (see cap() below). The
-- handler tallies the outcomes of each call and reports them (helper.PRELUDE's report lines),
-- with any check of the results it made after the memory was released. Other coroutines
-- (spawned tasks, the handlers of other connections, callbacks) run at the cap too whenever
-- the handler waits.
local socket = require "socket"
local helper = require "helper"

local N = 200                       -- calls of each function in a test
local MARGIN = 2 * 1024 * 1024      -- max_memory is the heap after start() plus this
local PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX" -- 50 bytes: long strings
local PYTHON = "/usr/bin/python3"   -- Debian's python3-msgpack is installed for this one
local REPORT_TIMEOUT = 30           -- seconds a handler may take for its loop (ASan, busy machine)
local format = string.format

-- Put after helper.PRELUDE in every script; serve() fills in ${N}, ${MARGIN}, ${PAD} and
-- ${PROBE_LOCALS}.
local HARNESS = [=[

local N, MARGIN, PAD = ${N}, ${MARGIN}, "${PAD}"
local format, rep = string.format, string.rep
local M = { cpu_budget = 10 }

function M.start()
  M.max_memory = math.floor(collectgarbage("count") * 1024) + MARGIN
end

-- The ballast: its slots exist beforehand, so storing a piece never allocates.
local SLOTS = 8192
local ballast = {}
for i = 1, SLOTS do ballast[i] = false end
local held, seq, squeezes, cap_hits = 0, 0, 0, 0
local SIZES = { 65536, 8192, 1024, 128, 48 }

-- Fills the heap up to the cap; returns whether an allocation failed (it must). fill(true)
-- only makes one small allocation at the same depth, to grow the stack while memory is free.
local function fill(probe)
  if probe then
    local ok = pcall(rep, "x", 48) -- not a tail call: at the depth of the calls below
    return ok
  end
  local hit = false
  for s = 1, #SIZES do
    local size = SIZES[s]
    while held < SLOTS do
      local ok, piece = pcall(rep, "x", size)
      if not ok then
        hit = true
        break
      end
      held = held + 1
      ballast[held] = piece
    end
  end
  -- The last bytes, in short strings (interned, so each must be new).
  while held < SLOTS do
    seq = seq + 1
    local ok, piece = pcall(format, "~%x", seq)
    if not ok then break end
    held = held + 1
    ballast[held] = piece
  end
  return hit
end

-- Before each call under test: takes a reserve (RESERVE_PIECES strings, 16 KB), fills the
-- heap to the cap, then frees `current_room` bytes of ballast for the call. The call runs with
-- the reserve held; spent() drops it right after, so that the test's own code has memory again.
-- (Lua shrinks a coroutine's stack and its list of call frames after every error that pcall
-- catches: the code after a failed call may need memory to grow them again. So cap() also grows
-- the stack and the list of call frames to fill's depth before it takes the reserve.)
local RESERVE_PIECES, RESERVE_PIECE = 16, 1000 -- short enough for string.rep's C buffer
local reserve = {}
for k = 1, RESERVE_PIECES do reserve[k] = false end
local reserve_misses = 0
local current_room = 0

local count_memory = collectgarbage

-- Drops the reserve. While a call waited, the core may have allocated beyond the cap (its own
-- work is not capped): then ballast goes too, as much as the heap (garbage included) is over.
local function spent()
  for k = 1, RESERVE_PIECES do reserve[k] = false end
  local over = count_memory("count") * 1024 - M.max_memory
  while over > 0 and held > 0 do
    over = over - #ballast[held] - 32
    ballast[held] = false
    held = held - 1
  end
end

-- Its 120 registers make the stack that deep above the caller (Lua grows it on the call).
local function stack_probe()
  local ${PROBE_LOCALS}
  return v1
end

local function cap()
  squeezes = squeezes + 1
  spent()
  stack_probe()
  fill(true)
  for k = 1, RESERVE_PIECES do
    while true do
      local ok, piece = pcall(rep, "r", RESERVE_PIECE)
      if ok then
        reserve[k] = piece
        break
      end
      if held == 0 then
        reserve_misses = reserve_misses + 1
        break
      end
      ballast[held] = false -- collected when the next allocation fails
      held = held - 1
    end
  end
  if fill() then cap_hits = cap_hits + 1 end
  local freed = 0
  while freed < current_room and held > 0 do
    freed = freed + #ballast[held] + 32
    ballast[held] = false
    held = held - 1
  end
end

-- Room left for the call in round i: 0 to 12.5 KiB, in fine steps near 0.
local function room(i)
  local k = (i - 1) % 40
  return k * k * 8
end

local function release()
  spent()
  for i = 1, held do ballast[i] = false end
  held = 0
  collectgarbage("restart")
  collectgarbage()
end

-- Grows this coroutine's stack and call-info list once, before the loop.
local function deep(k)
  if k > 0 then return 1 + deep(k - 1) end
  return 0
end

local function hold_still()
  deep(200)
  collectgarbage()
  collectgarbage("stop")
end

local harness_errors, first_harness_error = 0, false
local current_i = 0

-- The traceback of the first error the test's own code met (the reserve makes room for it).
local function on_harness_error(err)
  spent()
  if first_harness_error then return err end
  local ok, traceback = pcall(debug.traceback, err, 2)
  return ok and traceback or err
end

-- Runs body(i) for i = 1..n (default N); body makes its calls with call() (below), each at the
-- cap with room(i) bytes to spare.
local function at_cap(body, n)
  hold_still()
  for i = 1, n or N do
    current_i, current_room = i, room(i)
    local ok, err = xpcall(body, on_harness_error, i)
    spent()
    if not ok then
      harness_errors = harness_errors + 1
      if not first_harness_error then first_harness_error = err or "(no message)" end
    end
  end
  release()
end

-- Tallies of outcomes, one per call under test.
local tallies = {}
local function tally(name)
  local t = { name = name, ok = 0, failed = 0, raised = 0, oom = 0, bad = 0, first_bad = false }
  tallies[#tallies + 1] = t
  return t
end

local function is_oom(err)
  return type(err) == "string" and err:find("not enough memory", 1, true) ~= nil
end

-- docs: Lua patterns of the errors docs/api.md names for the call (patterns, so that the
-- error strings themselves are not kept interned by this script).
local function documented(err, docs)
  if type(err) ~= "string" or docs == nil then return false end
  for j = 1, #docs do
    if err:find(docs[j]) then return true end
  end
  return false
end

local NO_MESSAGE = "(nil and no error message)"
local WRONG_RESULT = "(a wrong result, not an error)"

-- Counts one outcome of pcall(call, ...): ok, then the call's first two results. `good` says
-- whether what it returned is a success (default: a first result other than nil and false).
local function note(t, ok, a, b, docs, good)
  if not ok then
    t.raised = t.raised + 1
    if is_oom(a) then
      t.oom = t.oom + 1
    elseif not documented(a, docs) then
      t.bad = t.bad + 1
      if not t.first_bad then t.first_bad = a or NO_MESSAGE end
    end
    return
  end
  if good == nil then good = a ~= nil and a ~= false end
  if good then
    t.ok = t.ok + 1
    return
  end
  t.failed = t.failed + 1
  if a ~= nil and a ~= false then
    t.bad = t.bad + 1
    if not t.first_bad then t.first_bad = WRONG_RESULT end
  elseif is_oom(b) then
    t.oom = t.oom + 1
  elseif not documented(b, docs) then
    t.bad = t.bad + 1
    if not t.first_bad then t.first_bad = b or NO_MESSAGE end
  end
end

-- Calls f(...) at the cap (see cap) and counts the outcome in tally t; good(a, b), if given,
-- says whether the results a, b are a success. Returns pcall's first three results.
local function call(t, docs, good, f, ...)
  cap()
  local ok, a, b = pcall(f, ...)
  spent()
  local success
  if ok and good then success = good(a, b) and true or false end
  note(t, ok, a, b, docs, success)
  return ok, a, b
end

local function is_true(a) return a == true end
local function is_string(a) return type(a) == "string" end
local function is_table(a) return type(a) == "table" end
local function is_userdata(a) return type(a) == "userdata" end

local function check(conn, name, wrong, first)
  report(conn, "check", name, wrong, wrong > 0 and first or false)
end

local function report_all(conn)
  for _, t in ipairs(tallies) do
    report(conn, "tally", t.name, t.ok, t.failed, t.raised, t.oom, t.bad, t.first_bad)
  end
  if reserve_misses > 0 then
    harness_errors = harness_errors + 1
    first_harness_error = first_harness_error or format("%d reserve pieces failed", reserve_misses)
  end
  report(conn, "end", cap_hits, squeezes, harness_errors, first_harness_error)
end

-- The first line of a connection says what it is for; "ping" is answered "pong".
local COMMANDS = {}
function M.handle(conn)
  local cmd = conn:receive()
  if cmd == "ping" then
    conn:send("pong\n")
    return
  end
  local command = COMMANDS[cmd]
  if command then return command(conn) end
  if cmd and COMMANDS.default then return COMMANDS.default(conn, cmd) end
end
]=]

local PROBE_LOCALS = (function()
  local names = {}
  for i = 1, 120 do names[i] = "v" .. i end
  return table.concat(names, ", ")
end)()

local function serve(body, vars, opts)
  vars = vars or {}
  vars.N, vars.MARGIN, vars.PAD = vars.N or N, MARGIN, PAD
  vars.PROBE_LOCALS = PROBE_LOCALS
  local source = helper.fill(HARNESS, vars) .. helper.fill(body, vars) .. "\nreturn M\n"
  return helper.start(helper.handler(source), opts)
end

-- Parses report lines ("tally", "check", "value" and the closing "end") into a table.
local function add_result(results, r)
  if r[1] == "tally" then
    results.tally[r[2]] = { ok = r[3], failed = r[4], raised = r[5], oom = r[6], bad = r[7],
                            first_bad = r[8] }
  elseif r[1] == "check" then
    results.check[r[2]] = { wrong = r[3], first = r[4] }
  elseif r[1] == "value" then
    results.value[r[2]] = r[3]
  elseif r[1] == "end" then
    results.cap_hits, results.squeezes = r[2], r[3]
    results.harness_errors, results.first_harness_error = r[4], r[5]
    return true
  else
    error("unexpected report " .. tostring(r[1]))
  end
end

local function new_results()
  return { tally = {}, check = {}, value = {} }
end

-- Whether the server is still running (it may be dumping core), and its log.
local function state_of(server)
  local exited = server:wait_exit(2)
  return format("the server %s; log:\n%s", exited and "has EXITED" or "is still running",
    server:log())
end

-- Reads report lines up to "end" (the first may have been read already: `line`).
local function read_results(server, client, line)
  local results = new_results()
  while true do
    local err
    if not line then line, err = client:receive("*l") end
    if not line then
      error(format("no report from the server (%s); %s", tostring(err), state_of(server)), 2)
    end
    if add_result(results, helper.decode_report(line)) then return results end
    line = nil
  end
end

-- The test's own loop ran clean, and every round found the heap at the cap.
local function assert_harness(results)
  assert.equal(0, results.harness_errors,
    "the test's own code failed at the cap: " .. tostring(results.first_harness_error))
  assert.is_true(results.squeezes > 0, "no round at the cap")
  assert.equal(results.squeezes, results.cap_hits,
    "the heap did not reach the cap in every round (max_memory not applied?)")
end

-- Each named call ran `n` times (default N; false: any number), with only allowed outcomes.
local function assert_calls(results, names, n)
  for _, name in ipairs(names) do
    local t = results.tally[name]
    assert(t, "no tally for " .. name)
    assert.equal(0, t.bad, format("%s at the cap: %s (%d ok, %d failed, %d raised, %d of them "
      .. "not enough memory)", name, tostring(t.first_bad), t.ok, t.failed, t.raised, t.oom))
    if n ~= false then
      assert.equal(n or N, t.ok + t.failed + t.raised, name .. " did not run every round")
    end
  end
end

-- The call both worked and ran out of memory: the loop covered both sides of the cap.
local function assert_met_cap(results, name)
  local t = results.tally[name]
  assert(t, "no tally for " .. name)
  assert.is_true(t.ok > 0, name .. " never succeeded at the cap")
  assert.is_true(t.oom > 0, name .. " never ran out of memory: the test missed the cap")
end

local function assert_all_ok(results, names)
  for _, name in ipairs(names) do
    local t = results.tally[name]
    assert.equal(N, t.ok, format("%s: %d of %d calls succeeded (it allocates nothing); first "
      .. "problem: %s", name, t.ok, N, tostring(t.first_bad)))
  end
end

local function assert_checks(results)
  for name, c in pairs(results.check) do
    assert.equal(0, c.wrong, name .. ": " .. tostring(c.first))
  end
end

-- A fresh connection still gets an answer.
local function assert_answers(server)
  local client = server:connect()
  assert(client:send("ping\n"))
  local line, err = client:receive("*l")
  client:close()
  assert.equal("pong", line, "the server no longer answers: " .. tostring(err))
end

local function fd_count(pid)
  local pipe = assert(io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l"))
  local n = tonumber(pipe:read("a"))
  pipe:close()
  return n
end

-- The common shape: connect, send "go" and `data`, read the results.
local function run_go(server, data)
  local client = server:connect()
  client:settimeout(REPORT_TIMEOUT)
  assert(client:send("go\n" .. (data or "")))
  local results = read_results(server, client)
  return results, client
end

local function line_of(i)
  return format("line %04d %s", i, PAD)
end

-- Runs a python3 program (written to a file in the test's directory) with arguments; returns
-- its output.
local function python(source, ...)
  local path = helper.script(source, "check" .. math.random(1e6) .. ".py")
  local words = { PYTHON, path, ... }
  for i, word in ipairs(words) do words[i] = helper.shell_quote(word) end
  local pipe = assert(io.popen(table.concat(words, " ") .. " 2>&1"))
  local out = pipe:read("a")
  pipe:close()
  return out
end

describe("memory pressure (issue 12 item 3): luasock functions at the cap", function()
  after_each(helper.cleanup)

  it("luasock.sleep, now, shutting_down and log", function()
    local server = serve [=[
local sleep, now, log = luasock.sleep, luasock.now, luasock.log
local shutting_down = luasock.shutting_down
local T_SLEEP, T_NOW = tally("luasock.sleep"), tally("luasock.now")
local T_DOWN, T_LOG = tally("luasock.shutting_down"), tally("luasock.log")
function COMMANDS.go(conn)
  local function is_float(a) return math.type(a) == "float" end
  local function is_false(a) return a == false end
  local function always() return true end
  at_cap(function(i)
    call(T_SLEEP, nil, is_true, sleep, 0)
    call(T_NOW, nil, is_float, now)
    call(T_DOWN, nil, is_false, shutting_down)
    call(T_LOG, nil, always, log, "debug", "memory pressure, round", i, conn, i + 0.5)
  end)
  report_all(conn)
end]=]
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results,
      { "luasock.sleep", "luasock.now", "luasock.shutting_down", "luasock.log" })
    assert_all_ok(results, { "luasock.now", "luasock.shutting_down" })
    assert_met_cap(results, "luasock.log")
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("luasock.spawn, task:join and tostring(task)", function()
    local server = serve [=[
local spawn = luasock.spawn
local T_SPAWN, T_TOSTRING = tally("luasock.spawn"), tally("tostring(task)")
local T_JOIN = tally("task:join")
local function double(k) return k * 2 end
local function task_name(a) return type(a) == "string" and a:find("^task %(%a+%)$") ~= nil end
-- true, 2 * i; or false and the task's own error (it ran at the cap too)
local function joined(a, b) return a == true and b == current_i * 2 end
function COMMANDS.go(conn)
  at_cap(function(i)
    local ok, task = call(T_SPAWN, nil, is_userdata, spawn, double, i)
    if not (ok and type(task) == "userdata") then return end
    call(T_TOSTRING, nil, task_name, tostring, task)
    call(T_JOIN, nil, joined, task.join, task)
  end)
  report_all(conn)
end]=]
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "luasock.spawn" })
    local spawned = results.tally["luasock.spawn"].ok
    assert_calls(results, { "tostring(task)", "task:join" }, spawned)
    assert_met_cap(results, "luasock.spawn")
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("luasock.encode and luasock.decode give whole values or errors, and leak nothing (item 4)",
    function()
      local server = serve [=[
local encode, decode = luasock.encode, luasock.decode
local T_ENCODE, T_DECODE = tally("luasock.encode"), tally("luasock.decode")
local VALUES, BLOBS, ENCODED, DECODED = {}, {}, {}, {}
local function same(x, y)
  if type(x) ~= "table" or type(y) ~= "table" then
    return x == y and math.type(x) == math.type(y)
  end
  for k, v in pairs(x) do if not same(v, y[k]) then return false end end
  for k in pairs(y) do if x[k] == nil then return false end end
  return true
end
function COMMANDS.go(conn)
  for i = 1, N do
    VALUES[i] = { seq = i, name = format("value %04d %s", i, PAD), flag = i % 2 == 0,
                  list = { i, i + 0.5, "three", { deep = { true, false, {} } } } }
    BLOBS[i] = assert(encode(VALUES[i]))
    ENCODED[i], DECODED[i] = false, false
  end
  at_cap(function(i)
    local ok, a = call(T_ENCODE, nil, is_string, encode, VALUES[i])
    if ok and type(a) == "string" then ENCODED[i] = a end
    ok, a = call(T_DECODE, nil, is_table, decode, BLOBS[i])
    if ok and type(a) == "table" then DECODED[i] = a end
  end)
  local wrong, first = 0, nil
  for i = 1, N do
    if ENCODED[i] and ENCODED[i] ~= BLOBS[i] then
      wrong = wrong + 1
      first = first or format("encode(value %d) at the cap gave other bytes", i)
    end
    if DECODED[i] and not same(DECODED[i], VALUES[i]) then
      wrong = wrong + 1
      first = first or format("decode(value %d) at the cap gave another value", i)
    end
  end
  check(conn, "values", wrong, first)
  report_all(conn)
end]=]
      local results, client = run_go(server)
      assert_harness(results)
      assert_calls(results, { "luasock.encode", "luasock.decode" })
      assert_checks(results)
      assert_met_cap(results, "luasock.encode")
      assert_met_cap(results, "luasock.decode")
      client:close()
      assert_answers(server)
      server:stop()
    end)

  it("luasock.queue, q:push, q:pop, q:len and tostring(q) keep the FIFO whole", function()
    local server = serve [=[
local queue, spawn, sleep = luasock.queue, luasock.spawn, luasock.sleep
local T_NEW, T_PUSH, T_POP = tally("luasock.queue"), tally("queue:push"), tally("queue:pop(0)")
local T_LEN, T_TOSTRING = tally("queue:len"), tally("tostring(queue)")
local T_WAITING = tally("queue:pop (waiting, in another coroutine)")
local TIMEOUT = { "^timeout$" }
-- delivered[v]: how many times value v came out of the queue; each popper must see them rise.
local pushed, delivered, strange, out_of_order = {}, {}, 0, 0
local last = { false, 0, 0 } -- by popper: 2 the consumer, 3 the handler's q:pop(0)
local function take(v, popper)
  if math.type(v) ~= "integer" or v < 1 or v > 3 * N then
    strange = strange + 1
    return
  end
  delivered[v] = delivered[v] + 1
  if v <= last[popper] then out_of_order = out_of_order + 1 end
  last[popper] = v
end
local function consumer(q)
  deep(50)
  while true do
    local ok, v, err = pcall(q.pop, q)
    note(T_WAITING, ok, v, err, nil, v ~= nil)
    if ok and v == "stop" then return end
    if ok and v ~= nil then
      take(v, 2)
    elseif not ok then
      pcall(sleep, 0.001)
    end
  end
end
function COMMANDS.go(conn)
  for v = 1, 3 * N do pushed[v], delivered[v] = false, 0 end
  local q = queue()
  local task = spawn(consumer, q)
  sleep(0.01) -- the consumer now waits in q:pop()
  local function length(a) return math.type(a) == "integer" and a >= 0 end
  local function queue_name(a) return type(a) == "string" and a:find("^queue %(") ~= nil end
  at_cap(function(i)
    call(T_NEW, nil, is_userdata, queue)
    -- three values a round: the first may go straight to the waiting consumer, the others
    -- into the queue's table, which grows now and then
    for v = 3 * i - 2, 3 * i do
      local ok, a = call(T_PUSH, nil, is_true, q.push, q, v)
      pushed[v] = ok and a == true
    end
    local ok, a
    if i % 3 == 0 then
      ok, a = call(T_POP, TIMEOUT, nil, q.pop, q, 0)
      if ok and a ~= nil then take(a, 3) end
    end
    call(T_LEN, nil, length, q.len, q)
    call(T_TOSTRING, nil, queue_name, tostring, q)
    if i % 2 == 0 then sleep(0) end -- lets the consumer wait again
  end)
  q:push("stop")
  task:join()
  local wrong, first = strange + out_of_order, nil
  if wrong > 0 then
    first = format("%d values that were never pushed, %d out of order", strange, out_of_order)
  end
  for v = 1, 3 * N do
    local want = pushed[v] and 1 or 0
    if delivered[v] ~= want then
      wrong = wrong + 1
      first = first or format("value %d: push %s, delivered %d times", v,
        pushed[v] and "returned true" or "failed", delivered[v])
    end
  end
  check(conn, "every value pushed is popped once, in order", wrong, first)
  report_all(conn)
end]=]
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "luasock.queue", "queue:len", "tostring(queue)" })
    assert_calls(results, { "queue:push" }, 3 * N)
    assert_calls(results, { "queue:pop(0)" }, N // 3)
    assert_calls(results, { "queue:pop (waiting, in another coroutine)" }, false)
    assert_checks(results)
    assert_met_cap(results, "luasock.queue")
    assert_all_ok(results, { "queue:len" })
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("luasock.resolve of a name in /etc/hosts and of a literal address (item 6)", function()
    local server = serve [=[
local resolve = luasock.resolve
local T_NAME = tally('luasock.resolve("localhost")')
local T_LITERAL = tally('luasock.resolve("127.0.0.1")')
local OPTS = { timeout = 2 }
local DOCS = { "^host not found$", "^timeout$", "^resolver error" }
local function loopback(list)
  if #list == 0 then return false end
  for j = 1, #list do
    if list[j] ~= "127.0.0.1" and list[j] ~= "::1" then return false end
  end
  return true
end
local function loopback_list(a) return type(a) == "table" and loopback(a) end
local function literal_list(a) return type(a) == "table" and #a == 1 and a[1] == "127.0.0.1" end
function COMMANDS.go(conn)
  at_cap(function(i)
    call(T_NAME, DOCS, loopback_list, resolve, "localhost", OPTS)
    call(T_LITERAL, nil, literal_list, resolve, "127.0.0.1")
  end)
  report_all(conn)
end]=]
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { 'luasock.resolve("localhost")', 'luasock.resolve("127.0.0.1")' })
    assert_met_cap(results, 'luasock.resolve("localhost")')
    assert_met_cap(results, 'luasock.resolve("127.0.0.1")')
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("luasock.connect leaks no socket and no memory (item 5)", function()
    local server = serve([=[
local connect = luasock.connect
local T_CONNECT, T_CLOSE = tally("luasock.connect"), tally("conn:close (outgoing)")
local T_REFUSED = tally("luasock.connect (refused)")
local OPTS = { timeout = 5 }
local REFUSED = { "^connection refused$" }
function COMMANDS.go(conn)
  local _, port = conn:local_address()
  local function never() return false end
  at_cap(function(i)
    local ok, c = call(T_CONNECT, nil, is_userdata, connect, "127.0.0.1", port, OPTS)
    if ok and type(c) == "userdata" then call(T_CLOSE, nil, is_true, c.close, c) end
    call(T_REFUSED, REFUSED, never, connect, "127.0.0.1", ${CLOSED_PORT}, OPTS)
  end)
  report_all(conn)
end]=], { CLOSED_PORT = helper.free_port() })
    local fds_before = fd_count(server.pid)
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "luasock.connect", "luasock.connect (refused)" })
    assert_calls(results, { "conn:close (outgoing)" }, results.tally["luasock.connect"].ok)
    assert_met_cap(results, "luasock.connect")
    assert.equal("", (helper.read_all(client)))
    client:close()
    -- Every connection, outgoing and accepted, is closed: the descriptors are back.
    local fds_after
    local ok = pcall(helper.eventually, function()
      fds_after = fd_count(server.pid)
      return fds_after == fds_before
    end, 5)
    assert.is_true(ok, format("the server had %d descriptors open before and %d after",
      fds_before, fds_after))
    assert_answers(server)
    server:stop()
  end)

  it("luasock.udp and every udp method; udp:close wakes a waiting receiver", function()
    local server = serve [=[
local udp, spawn, sleep, now = luasock.udp, luasock.spawn, luasock.sleep, luasock.now
local T = {}
for _, name in ipairs { "luasock.udp", "udp:setsockname", "udp:getsockname", "udp:settimeout",
  "udp:sendto", "udp:receivefrom", "udp:setpeername", "udp:send", "udp:receive", "udp:close",
  "udp:close (waking a receiver)", "tostring(udp)" } do
  T[name] = tally(name)
end
local DOCS = { "^timeout$" }
local DGRAM, DGRAM2 = "first datagram " .. PAD, "second datagram " .. PAD
local WAITERS = N // 10
local sockets, states = {}, {}
-- 0: not yet waiting, 1: waiting, 2: woken with nil, "closed", 3: woken with a "not enough
-- memory" error (it ran at the cap), 4: anything else
local function waiter(k)
  deep(50)
  states[k] = 1
  local ok, data, err = pcall(sockets[k].receivefrom, sockets[k])
  if ok and data == nil and type(err) == "string" and err:find("^closed$") then
    states[k] = 2
  elseif not ok and is_oom(data) then
    states[k] = 3
  else
    states[k] = 4
  end
end
function COMMANDS.go(conn)
  for k = 1, WAITERS do
    sockets[k] = udp()
    assert(sockets[k]:setsockname("127.0.0.1", 0))
    sockets[k]:settimeout(false)
    states[k] = 0
    spawn(waiter, k)
  end
  local deadline = now() + 5
  for k = 1, WAITERS do
    while states[k] == 0 and now() < deadline do sleep(0.001) end
  end
  local function a_port(_, port) return math.type(port) == "integer" end
  local function sent1(a) return a == #DGRAM end
  local function sent2(a) return a == #DGRAM2 end
  local function got1(a, host) return a == DGRAM and host == "127.0.0.1" end
  local function got2(a) return a == DGRAM2 end
  local function udp_name(a) return type(a) == "string" and a:find("^udp socket") ~= nil end
  at_cap(function(i)
    if i % 10 == 0 then
      local s = sockets[i // 10]
      call(T["udp:close (waking a receiver)"], nil, is_true, s.close, s)
    end
    local ok, u = call(T["luasock.udp"], nil, is_userdata, udp)
    if not (ok and type(u) == "userdata") then return end
    call(T["udp:setsockname"], DOCS, is_true, u.setsockname, u, "127.0.0.1", 0)
    call(T["tostring(udp)"], nil, udp_name, tostring, u)
    local okname, _, port = call(T["udp:getsockname"], DOCS, a_port, u.getsockname, u)
    call(T["udp:settimeout"], nil, is_true, u.settimeout, u, 0.05)
    if okname and math.type(port) == "integer" then
      call(T["udp:sendto"], DOCS, sent1, u.sendto, u, DGRAM, "127.0.0.1", port)
      call(T["udp:receivefrom"], DOCS, got1, u.receivefrom, u)
      call(T["udp:setpeername"], DOCS, is_true, u.setpeername, u, "127.0.0.1", port)
      call(T["udp:send"], DOCS, sent2, u.send, u, DGRAM2)
      call(T["udp:receive"], DOCS, got2, u.receive, u)
    end
    call(T["udp:close"], nil, is_true, u.close, u)
  end)
  deadline = now() + 5
  for k = 1, WAITERS do
    while states[k] < 2 and now() < deadline do sleep(0.001) end
  end
  local wrong, first = 0, nil
  for k = 1, WAITERS do
    if states[k] ~= 2 and states[k] ~= 3 then
      wrong = wrong + 1
      first = first or format("receiver %d: state %d (2: woken with nil, \"closed\"; 3: with "
        .. "\"not enough memory\")", k, states[k])
    end
  end
  check(conn, "waiting receivers woken by close", wrong, first)
  report_all(conn)
end]=]
    local fds_before = fd_count(server.pid)
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "luasock.udp" })
    local made = results.tally["luasock.udp"].ok
    assert_calls(results, { "udp:setsockname", "udp:getsockname", "udp:settimeout", "udp:close",
      "tostring(udp)" }, made)
    assert_calls(results, { "udp:sendto", "udp:receivefrom", "udp:setpeername", "udp:send",
      "udp:receive" }, false)
    assert_calls(results, { "udp:close (waking a receiver)" }, N // 10)
    assert_checks(results)
    assert_met_cap(results, "luasock.udp")
    client:close()
    local fds_after
    local ok = pcall(helper.eventually, function()
      fds_after = fd_count(server.pid)
      return fds_after == fds_before
    end, 5)
    assert.is_true(ok, format("the server had %d descriptors open before and %d after",
      fds_before, fds_after))
    assert_answers(server)
    server:stop()
  end)
end)

describe("memory pressure (issue 12 items 3 and 12): conn reads at the cap", function()
  after_each(helper.cleanup)

  -- The reads below find their data buffered, so each completes inside the handler, at the cap.
  -- A read that returns must return exactly the next record (with its prefix); what the reads
  -- at the cap returned, followed by what is read after the memory was released, must be the
  -- stream the client sent: nothing lost, repeated or cut.

  it("conn:receive with '*l', 'l', a byte count and '*a', each with a prefix", function()
    local server = serve [=[
local T_STAR_L, T_L = tally('conn:receive("*l", prefix)'), tally('conn:receive("l", prefix)')
local T_COUNT, T_ALL = tally("conn:receive(50, prefix)"), tally('conn:receive("*a", prefix)')
local function line(i) return format("line %04d %s", i, PAD) end
local function record(i) return format("rec %04d %s", i, PAD):sub(1, 50) end
local END_RECORD = ("end of records " .. PAD):sub(1, 50)
local TAIL = rep("tail-", 400)
local got, n = {}, 0
local wrong, first = 0, nil
local function expect(what, actual, want)
  if actual ~= want then
    wrong = wrong + 1
    first = first or format("%s: got %q, want %q", what, tostring(actual), want)
  end
end
local function keep(ok, data)
  if ok and data then
    n = n + 1
    got[n] = data
  end
end
function COMMANDS.go(conn)
  for i = 1, N + 1 do got[i] = false end
  at_cap(function(i)
    if i % 2 == 1 then
      keep(call(T_STAR_L, nil, nil, conn.receive, conn, "*l", "P:"))
    else
      keep(call(T_L, nil, nil, conn.receive, conn, "l", "P:"))
    end
  end)
  for k = 1, n do expect("line " .. k, got[k], "P:" .. line(k)) end
  local k = n
  while true do
    local l = assert(conn:receive("*l"))
    if l == "end of lines" then break end
    k = k + 1
    expect("line " .. k .. " (read after the cap)", l, line(k))
  end
  expect("lines", k, N)

  n = 0
  at_cap(function(i)
    keep(call(T_COUNT, nil, nil, conn.receive, conn, 50, "Q:"))
  end)
  for j = 1, n do expect("record " .. j, got[j], "Q:" .. record(j)) end
  k = n
  while true do
    local r = assert(conn:receive(50))
    if r == END_RECORD then break end
    k = k + 1
    expect("record " .. k .. " (read after the cap)", r, record(k))
  end
  expect("records", k, N)

  -- The first "*a" waits for the end of the stream; the others return the prefix alone: it is
  -- longer than 40 bytes, so each result is a new string.
  local A = "A:" .. PAD
  n = 0
  at_cap(function(i)
    keep(call(T_ALL, nil, nil, conn.receive, conn, "*a", A))
  end)
  local all = {}
  for j = 1, n do
    expect("'*a' result " .. j .. " prefix", got[j]:sub(1, #A), A)
    all[j] = got[j]:sub(#A + 1)
  end
  all[n + 1] = assert(conn:receive("*a"))
  expect("'*a' data", table.concat(all), TAIL)
  check(conn, "data read", wrong, first)
  report_all(conn)
end]=]
    local data = {}
    for i = 1, N do data[#data + 1] = line_of(i) .. "\n" end
    data[#data + 1] = "end of lines\n"
    for i = 1, N do data[#data + 1] = format("rec %04d %s", i, PAD):sub(1, 50) end
    data[#data + 1] = ("end of records " .. PAD):sub(1, 50)
    data[#data + 1] = string.rep("tail-", 400)
    local client = server:connect()
    client:settimeout(REPORT_TIMEOUT)
    assert(client:send("go\n" .. table.concat(data)))
    assert(client:shutdown("send"))
    local results = read_results(server, client)
    assert_harness(results)
    assert_calls(results, { 'conn:receive("*l", prefix)', 'conn:receive("l", prefix)' }, N // 2)
    assert_calls(results, { "conn:receive(50, prefix)", 'conn:receive("*a", prefix)' })
    assert_checks(results)
    assert_met_cap(results, 'conn:receive("*l", prefix)')
    assert_met_cap(results, "conn:receive(50, prefix)")
    assert_met_cap(results, 'conn:receive("*a", prefix)')
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("conn:receiveany", function()
    local server = serve [=[
local T_ANY = tally("conn:receiveany(37)")
local got, n, total = {}, 0, 0
function COMMANDS.go(conn)
  local stream = {}
  for i = 1, N do
    stream[i] = format("line %04d %s\n", i, PAD)
    got[i] = false
  end
  stream = table.concat(stream)
  local function chunk(a) return type(a) == "string" and #a >= 1 and #a <= 37 end
  at_cap(function(i)
    local ok, a = call(T_ANY, nil, chunk, conn.receiveany, conn, 37)
    if ok and type(a) == "string" then
      n = n + 1
      got[n] = a
      total = total + #a
    end
  end)
  got[n + 1] = assert(conn:receive(#stream - total))
  local all = table.concat(got, "", 1, n + 1)
  local wrong = all == stream and 0 or 1
  check(conn, "data read", wrong, format("%d bytes read differ from the %d sent", #all, #stream))
  report_all(conn)
end]=]
    local data = {}
    for i = 1, N do data[i] = line_of(i) .. "\n" end
    local results, client = run_go(server, table.concat(data))
    assert_harness(results)
    assert_calls(results, { "conn:receiveany(37)" })
    assert_checks(results)
    assert_met_cap(results, "conn:receiveany(37)")
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("conn:receiveuntil", function()
    local server = serve [=[
local T_UNTIL = tally('conn:receiveuntil("\\r\\n--")')
local DELIMITER = "\r\n--"
local got, n = {}, 0
function COMMANDS.go(conn)
  for i = 1, N do got[i] = false end
  at_cap(function(i)
    local ok, a = call(T_UNTIL, nil, nil, conn.receiveuntil, conn, DELIMITER)
    if ok and a then
      n = n + 1
      got[n] = a
    end
  end)
  local wrong, first = 0, nil
  local function expect(what, actual, want)
    if actual ~= want then
      wrong = wrong + 1
      first = first or format("%s: got %q, want %q", what, tostring(actual), want)
    end
  end
  for k = 1, n do expect("part " .. k, got[k], format("part %04d %s", k, PAD)) end
  local k = n
  while true do
    local part = assert(conn:receiveuntil(DELIMITER))
    if part == "end of parts" then break end
    k = k + 1
    expect("part " .. k .. " (read after the cap)", part, format("part %04d %s", k, PAD))
  end
  expect("parts", k, N)
  check(conn, "data read", wrong, first)
  report_all(conn)
end]=]
    local data = {}
    for i = 1, N do data[i] = format("part %04d %s\r\n--", i, PAD) end
    data[#data + 1] = "end of parts\r\n--"
    local results, client = run_go(server, table.concat(data))
    assert_harness(results)
    assert_calls(results, { 'conn:receiveuntil("\\r\\n--")' })
    assert_checks(results)
    assert_met_cap(results, 'conn:receiveuntil("\\r\\n--")')
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("conn:receive_object decodes at the cap: a value or a catchable error (item 12)", function()
    local server = serve [=[
local T_OBJECT = tally("conn:receive_object")
local got, n = {}, 0
local wrong, first = 0, nil
local function check_value(what, v, k)
  local good = type(v) == "table" and v[1] == k and v[2] == format("object %04d %s", k, PAD)
    and type(v[3]) == "table" and v[3].k == k and v[3].f == k + 0.5
  if not good then
    wrong = wrong + 1
    first = first or format("%s: not value %d (%s)", what, k, tostring(v))
  end
end
function COMMANDS.go(conn)
  for i = 1, N do got[i] = false end
  at_cap(function(i)
    local ok, a = call(T_OBJECT, nil, nil, conn.receive_object, conn)
    if ok and a then
      n = n + 1
      got[n] = a
    end
  end)
  for k = 1, n do check_value("value " .. k, got[k], k) end
  local k = n
  while true do
    local v, err = conn:receive_object()
    if v == "end" or err then break end
    k = k + 1
    check_value("value " .. k .. " (read after the cap)", v, k)
  end
  if k ~= N then
    wrong = wrong + 1
    first = first or format("%d values of %d", k, N)
  end
  check(conn, "values read", wrong, first)
  report_all(conn)
end]=]
    local stream = python([[
import sys, msgpack
n, pad = int(sys.argv[1]), sys.argv[2]
values = [[i, "object %04d %s" % (i, pad), {"k": i, "f": i + 0.5}] for i in range(1, n + 1)]
sys.stdout.buffer.write(b"".join(msgpack.packb(v) for v in values) + msgpack.packb("end"))
]], tostring(N), PAD)
    assert.is_true(#stream > N * 60, "python3 msgpack wrote no stream: " .. stream:sub(1, 300))
    local results, client = run_go(server, stream)
    assert_harness(results)
    assert_calls(results, { "conn:receive_object" })
    assert_checks(results)
    assert_met_cap(results, "conn:receive_object")
    client:close()
    assert_answers(server)
    server:stop()
  end)
end)

-- The records the send tests write, as the client must see them (one line each).
local function string_record(i)
  return format("S%04d %s", i, PAD)
end
local function number_record(i)
  return "N" .. i .. ":" .. tostring(i + 0.25) .. ":" .. tostring(-i * 1000003)
end
local function array_record(i)
  return "A" .. i .. ":" .. tostring(i + 0.5) .. ":" .. format("%04d %s", i, PAD) .. "|"
    .. (i * 3) .. ":" .. tostring(i + 0.75)
end

-- send and post: strings only, numbers among the arguments, arrays of strings and numbers.
-- Each call is one record and one line; `sent` (reported after the loop) says which calls
-- returned success. The client must receive exactly those records, whole, in order.
local WRITE_BODY = [=[
local METHOD = "${METHOD}"
local T_STRINGS = tally("conn:" .. METHOD .. "(strings)")
local T_NUMBERS = tally("conn:" .. METHOD .. "(numbers)")
local T_ARRAYS = tally("conn:" .. METHOD .. "(arrays)")
local DOCS = { "^closed$", "^overflow$", "^timeout$" }
local STRS, ARRAYS, NUMS, S, NS, AS = {}, {}, {}, {}, {}, {}
function COMMANDS.go(conn)
  local write = conn[METHOD]
  for i = 1, N do
    STRS[i] = format("%04d %s", i, PAD)
    ARRAYS[i] = { "A", i, ":", i + 0.5, ":", STRS[i] }
    NUMS[i] = { i * 3, ":", i + 0.75 }
    S[i], NS[i], AS[i] = false, false, false
  end
  at_cap(function(i)
    local ok, a = call(T_STRINGS, DOCS, nil, write, conn, "S", STRS[i], "\n")
    S[i] = ok and a ~= nil
    ok, a = call(T_NUMBERS, DOCS, nil, write, conn, "N", i, ":", i + 0.25, ":", -i * 1000003, "\n")
    NS[i] = ok and a ~= nil
    ok, a = call(T_ARRAYS, DOCS, nil, write, conn, ARRAYS[i], "|", NUMS[i], "\n")
    AS[i] = ok and a ~= nil
  end)
  local sent = {}
  for i = 1, N do
    sent[i] = (S[i] and "S" or "-") .. (NS[i] and "N" or "-") .. (AS[i] and "A" or "-")
  end
  report(conn, "value", "sent", table.concat(sent))
  report_all(conn)
end]=]

-- Reads the record lines up to the first report line; checks them against what the handler
-- says it sent; returns the results.
local function check_records(server, client)
  local records = {}
  local line, err
  while true do
    line, err = client:receive("*l")
    if not line or line:sub(1, 1) == '"' then break end
    records[#records + 1] = line
  end
  local results = read_results(server, client, line or nil)
  local sent = assert(results.value.sent, "no list of the calls that succeeded")
  local want = {}
  for i = 1, N do
    local flags = sent:sub(3 * i - 2, 3 * i)
    if flags:sub(1, 1) == "S" then want[#want + 1] = string_record(i) end
    if flags:sub(2, 2) == "N" then want[#want + 1] = number_record(i) end
    if flags:sub(3, 3) == "A" then want[#want + 1] = array_record(i) end
  end
  for k = 1, math.max(#want, #records) do
    if records[k] ~= want[k] then
      error(format("partial or wrong output: record %d is %q, want %q (%d records received, "
        .. "%d calls succeeded)", k, tostring(records[k]), tostring(want[k]), #records, #want), 2)
    end
  end
  return results
end

describe("memory pressure (issue 12 items 3 and 7): conn writes at the cap, no partial output",
  function()
    after_each(helper.cleanup)

    for _, method in ipairs { "send", "post" } do
      it("conn:" .. method .. " with strings, numbers and arrays", function()
        local server = serve(WRITE_BODY, { METHOD = method })
        local client = server:connect()
        client:settimeout(REPORT_TIMEOUT)
        assert(client:send("go\n"))
        local results = check_records(server, client)
        assert_harness(results)
        local names = { "conn:" .. method .. "(strings)", "conn:" .. method .. "(numbers)",
                        "conn:" .. method .. "(arrays)" }
        assert_calls(results, names)
        client:close()
        assert_answers(server)
        server:stop()
      end)
    end

    it("conn:send_object: python's msgpack decodes every value whole (item 4)", function()
      local server = serve [=[
local T_OBJECT = tally("conn:send_object")
local OBJECTS, sent = {}, {}
function COMMANDS.go(conn)
  for i = 1, N do
    OBJECTS[i] = { seq = i, name = format("object %04d %s", i, PAD), flag = i % 2 == 0,
                   list = { i, i + 0.5, "three", { deep = { true, false, {} } } } }
    sent[i] = false
  end
  local DOCS = { "^closed$", "^timeout$" }
  at_cap(function(i)
    local ok, a = call(T_OBJECT, DOCS, nil, conn.send_object, conn, OBJECTS[i])
    sent[i] = ok and a ~= nil
  end)
  local bits = {}
  for i = 1, N do bits[i] = sent[i] and "O" or "-" end
  conn:send_object({ "sent", table.concat(bits) })
  for _, t in ipairs(tallies) do
    conn:send_object({ "tally", t.name, t.ok, t.failed, t.raised, t.oom, t.bad,
                       t.first_bad and tostring(t.first_bad) or false })
  end
  conn:send_object({ "end", cap_hits, squeezes, harness_errors,
                     first_harness_error and tostring(first_harness_error) or false })
end]=]
      local client = server:connect()
      client:settimeout(REPORT_TIMEOUT)
      assert(client:send("go\n"))
      local stream, err = helper.read_all(client)
      client:close()
      assert.equal("closed", err)
      local path = helper.dir() .. "/objects.msgpack"
      helper.write_file(path, stream)
      -- Decodes the stream; prints the handler's reports as report lines, and a check of the
      -- objects: every one whole and as sent, in order, nothing after the last.
      local out = python([[
import json, sys, msgpack
n, pad, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = open(path, "rb").read()

def lua(v):
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))

problems, seqs, sent, reports = [], [], None, []
unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
unpacker.feed(data)
try:
    for v in unpacker:
        if isinstance(v, dict):
            i = v.get("seq")
            want = None
            if isinstance(i, int) and not isinstance(i, bool):
                want = {"seq": i, "name": "object %04d %s" % (i, pad), "flag": i % 2 == 0,
                        "list": [i, i + 0.5, "three", {"deep": [True, False, {}]}]}
            if v != want:
                problems.append("value %d is not a whole object: %r" % (len(seqs) + 1, v))
            seqs.append(i)
        elif isinstance(v, list) and v and v[0] == "sent":
            sent = v[1]
        elif isinstance(v, list) and v and v[0] in ("tally", "end"):
            reports.append(", ".join(lua(x) for x in v))
        else:
            problems.append("unexpected value %r after %d objects" % (v, len(seqs)))
    if unpacker.tell() != len(data):
        problems.append("%d bytes at the end are not a whole value" % (len(data) - unpacker.tell()))
except Exception as e:
    problems.append("the stream does not decode after %d objects: %s: %s"
                    % (len(seqs), type(e).__name__, e))
if sent is None:
    problems.append("no list of the calls that succeeded")
else:
    want = [i + 1 for i, c in enumerate(sent) if c == "O"]
    if seqs != want:
        problems.append("objects received %r, calls that succeeded %r" % (seqs[:50], want[:50]))
print(", ".join([lua("check"), lua("send_object stream"), str(len(problems)),
                 lua(problems[0] if problems else False)]))
for line in reports:
    print(line)
]], tostring(N), PAD, path)
      local results = new_results()
      local ended = false
      for line in out:gmatch("[^\n]+") do
        local ok, r = pcall(helper.decode_report, line)
        assert(ok, "python3 printed: " .. out)
        ended = add_result(results, r) or ended
      end
      assert(results.check["send_object stream"], "python3 printed: " .. out)
      assert_checks(results)
      assert.is_true(ended, "no end report in the stream; python3 printed: " .. out
        .. "\nlog:\n" .. server:log())
      assert_harness(results)
      assert_calls(results, { "conn:send_object" })
      assert_answers(server)
      server:stop()
    end)
  end)

describe("memory pressure (issue 12 item 3): other conn methods at the cap", function()
  after_each(helper.cleanup)

  it("settimeout, settimeouts, setoption, id, peer, local_address and tostring", function()
    local server = serve [=[
local T = {}
for _, name in ipairs { "conn:settimeout", "conn:settimeouts", "conn:setoption", "conn:id",
  "conn:peer", "conn:local_address", "tostring(conn)" } do
  T[name] = tally(name)
end
function COMMANDS.go(conn)
  local id = conn:id()
  local _, peer_port = conn:peer()
  local _, local_port = conn:local_address()
  local function same_id(a) return a == id end
  local function the_peer(a, b) return a == "127.0.0.1" and b == peer_port end
  local function the_address(a, b) return a == "127.0.0.1" and b == local_port end
  local function conn_name(a) return type(a) == "string" and a:find("^conn %d+$") ~= nil end
  at_cap(function(i)
    call(T["conn:settimeout"], nil, is_true, conn.settimeout, conn, 30)
    call(T["conn:settimeouts"], nil, is_true, conn.settimeouts, conn, 5, 30, 30)
    call(T["conn:setoption"], nil, is_true, conn.setoption, conn, "max_line", 65536 + i)
    call(T["conn:id"], nil, same_id, conn.id, conn)
    call(T["conn:peer"], nil, the_peer, conn.peer, conn)
    call(T["conn:local_address"], nil, the_address, conn.local_address, conn)
    call(T["tostring(conn)"], nil, conn_name, tostring, conn)
  end)
  report_all(conn)
end]=]
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "conn:settimeout", "conn:settimeouts", "conn:setoption", "conn:id",
      "conn:peer", "conn:local_address", "tostring(conn)" })
    assert_all_ok(results, { "conn:settimeout", "conn:settimeouts", "conn:setoption", "conn:id" })
    client:close()
    assert_answers(server)
    server:stop()
  end)

  -- Members: connections whose handlers wait in conn:receive(); the driver shuts them down or
  -- closes them at the cap, which wakes those handlers.
  local MEMBERS_BODY = [=[
local members, is_member, nmembers = {}, {}, 0
function COMMANDS.member(conn)
  nmembers = nmembers + 1
  members[nmembers] = conn
  is_member[conn] = true
  conn:send("registered\n")
  conn:receive()
end
]=]

  local function open_members(server, count)
    local clients = {}
    for i = 1, count do
      clients[i] = server:connect()
      assert(clients[i]:send("member\n"))
      assert.equal("registered", (clients[i]:receive("*l")))
    end
    return clients
  end

  -- Each member's client gets nothing more, then the end of the stream.
  local function assert_members_ended(clients)
    for i, client in ipairs(clients) do
      local data, err = helper.read_all(client)
      client:close()
      assert.equal("", data, "member " .. i .. " received more")
      assert.is_true(err == "closed" or err == "connection reset by peer",
        "member " .. i .. ": " .. tostring(err))
    end
  end

  it("conn:shutdown of other connections, whose handlers wait to read", function()
    local server = serve(MEMBERS_BODY .. [=[
local T_SHUTDOWN = tally("conn:shutdown")
local HOWS = { "receive", "send", "both" }
function COMMANDS.go(conn)
  local count = nmembers
  local DOCS = { "^closed$" }
  at_cap(function(i)
    local m = members[(i - 1) % count + 1]
    call(T_SHUTDOWN, DOCS, is_true, m.shutdown, m, HOWS[(i - 1) // count % 3 + 1])
  end)
  report_all(conn)
end]=])
    local clients = open_members(server, 50)
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "conn:shutdown" })
    assert_members_ended(clients)
    client:close()
    assert_answers(server)
    server:stop()
  end)

  it("conn:close of other connections returns true and their on_close runs (item 3)", function()
    local server = serve(MEMBERS_BODY .. [=[
local T_CLOSE = tally("conn:close")
local hooks, wrong_reasons = 0, 0
function M.on_close(conn, reason)
  if is_member[conn] then
    hooks = hooks + 1
    if reason ~= "closed" then wrong_reasons = wrong_reasons + 1 end
  end
end
function COMMANDS.go(conn)
  local count = nmembers
  at_cap(function(i)
    local m = members[(i - 1) % count + 1]
    call(T_CLOSE, nil, is_true, m.close, m)
  end)
  local deadline = luasock.now() + 5
  while hooks < count and luasock.now() < deadline do luasock.sleep(0.01) end
  check(conn, "on_close of every member", count - hooks,
    format("on_close ran for %d of %d members", hooks, count))
  check(conn, "on_close reason", wrong_reasons, "a reason other than \"closed\"")
  report_all(conn)
end]=])
    local clients = open_members(server, 100)
    local results, client = run_go(server)
    assert_harness(results)
    assert_calls(results, { "conn:close" })
    assert_all_ok(results, { "conn:close" })
    assert_checks(results)
    assert_members_ended(clients)
    client:close()
    assert_answers(server)
    server:stop()
  end)
end)

-- The callbacks: a holder connection keeps the heap at the cap (squeezing it again, with another
-- room, on every turn of the event loop) while the client makes the server call handle,
-- on_close or datagram N times. Each reply is whole or missing (the callback ran out of memory,
-- which is logged); the server goes on. `calls` counts the callbacks that got to run.
local HOLDER_BODY = [=[
function COMMANDS.hold(conn)
  -- Each round waits for the client's "!" about one turn of the event loop, in which the
  -- others run at the cap.
  conn:settimeout(0.0002)
  conn:send("holding\n")
  hold_still()
  local round = 0
  while true do
    round = round + 1
    current_room = room(round)
    cap()
    local ok, a, b = pcall(conn.receive, conn, 1)
    spent()
    if ok and (a ~= nil or (b ~= nil and not b:find("^timeout$"))) then break end
  end
  release()
  conn:settimeout(5)
  report(conn, "value", "calls", calls)
  report_all(conn)
end
]=]

local function hold(server)
  local holder = server:connect()
  holder:settimeout(REPORT_TIMEOUT)
  assert(holder:send("hold\n"))
  assert.equal("holding", (holder:receive("*l")))
  return holder
end

local function release_holder(server, holder)
  assert(holder:send("!"))
  local results = read_results(server, holder)
  holder:close()
  assert_harness(results)
  return results
end

-- N connections that each send "hello i": the reply is "echo hello i" or nothing.
local function hellos(server)
  local answered, refused = 0, 0
  for i = 1, N do
    local ok, client = pcall(server.connect, server)
    if not ok then error(format("connection %d: %s; %s", i, client, state_of(server)), 2) end
    assert(client:send("hello " .. i .. "\n"))
    local data, err = helper.read_all(client)
    client:close()
    if data == "echo hello " .. i .. "\n" then
      answered = answered + 1
    elseif data == "" then
      assert.is_true(err == "closed" or err == "connection reset by peer",
        "connection " .. i .. ": " .. tostring(err))
      refused = refused + 1
    else
      error(format("connection %d: partial or wrong reply %q", i, data))
    end
  end
  return answered, refused
end

describe("memory pressure (issue 12 items 3 and 6): script callbacks at the cap", function()
  after_each(helper.cleanup)

  it("handle", function()
    local server = serve([=[
local calls = 0
function COMMANDS.default(conn, cmd)
  calls = calls + 1
  conn:send("echo ", cmd, "\n")
end
]=] .. HOLDER_BODY)
    local holder = hold(server)
    local answered, refused = hellos(server)
    local results = release_holder(server, holder)
    assert.is_true(answered > 0,
      format("no connection was served at the cap (%d refused)", refused))
    assert.is_true(results.value.calls >= answered and results.value.calls <= N)
    assert_answers(server)
    server:stop()
  end)

  it("on_close, after conn:close() in the handler", function()
    local server = serve([=[
local calls = 0
function COMMANDS.default(conn, cmd)
  conn:send("echo ", cmd, "\n")
  conn:close()
end
function M.on_close(conn, reason)
  calls = calls + 1
  local entry = tostring(conn) .. " closed: " .. reason
  return entry
end
]=] .. HOLDER_BODY)
    local holder = hold(server)
    local answered, refused = hellos(server)
    local results = release_holder(server, holder)
    assert.is_true(answered > 0,
      format("no connection was served at the cap (%d refused)", refused))
    assert.is_true(results.value.calls > 0, "on_close never ran")
    assert_answers(server)
    server:stop()
  end)

  it("datagram", function()
    local server = serve([=[
local calls = 0
function M.datagram(data, peer)
  calls = calls + 1
  peer:reply("reply " .. data)
end
]=] .. HOLDER_BODY, nil, { listen = { "127.0.0.1:0", "udp:127.0.0.1:0" } })
    local udp_port
    for _, listener in ipairs(server.listeners) do
      if listener.host == "udp:127.0.0.1" then udp_port = listener.port end
    end
    assert(udp_port, "no udp: listener")
    local holder = hold(server)
    local client = assert(socket.udp())
    assert(client:setpeername("127.0.0.1", udp_port))
    local replies, seen = 0, {}
    local function take(reply)
      local k = tonumber(reply:match("^reply dgram (%d+)$"))
      assert(k and not seen[k], format("wrong reply %q", reply))
      seen[k] = true
      replies = replies + 1
    end
    local sent = 100
    client:settimeout(0.05)
    for i = 1, sent do
      assert(client:send("dgram " .. i))
      local reply = client:receive()
      if reply then take(reply) end
    end
    client:settimeout(0.5)
    while true do
      local reply = client:receive()
      if not reply then break end
      take(reply)
    end
    client:close()
    local results = release_holder(server, holder)
    assert.is_true(replies > 0, "no datagram was answered at the cap")
    assert.is_true(results.value.calls >= replies and results.value.calls <= sent)
    assert_answers(server)
    server:stop()
  end)
end)
