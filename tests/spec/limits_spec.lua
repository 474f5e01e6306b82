-- limits_spec.lua -- the handler limits of docs/api.md: cpu_budget stops a coroutine that
-- computes too long without waiting (also the top level of a reloaded script), max_memory fails
-- the handler that allocates beyond it, max_receive refuses a count read that is too large,
-- max_buffers bounds the buffers of all connections together, first_byte_timeout closes silent
-- connections, and --max-connections-per-ip refuses connections beyond N from one address. In
-- every case the other clients go on being served.
local socket = require "socket"
local helper = require "helper"

local CPU_BUDGET = 0.3
-- Wall-clock bounds, loose enough for an AddressSanitizer build on a busy machine.
local STOPPED_WITHIN = 3       -- seconds from a spin to its connection's close
local SERVED_WITHIN = 2        -- seconds for a bystander's reply while another handler spins
-- CPU seconds a stopped handler may use beyond its budget: the budget is checked every 0.1 s
-- of CPU time, and /proc counts in clock ticks.
local CPU_SLACK = 0.4
-- The least share of its budget a stopped handler must have used (CPU time from /proc). The
-- interval timer that checks the budget is sampled by the kernel's scheduler ticks, and on a
-- loaded machine it runs fast: handlers have been stopped after 55% of their budget (0.17 s of
-- 0.3, 1.1 s of 2). This only catches a budget far off (or a stop at the first check).
local CPU_EARLY = 0.4
local SYSCALL_LOOP_WAIT = 5    -- seconds to wait for a loop of system calls to be stopped
local MEMORY_CAP = 32 * 1024 * 1024
local RSS_LIMIT_KIB = 200 * 1024

local function serve(source, opts)
  return helper.start(helper.handler(source), opts)
end

local literal = helper.literal

local ask = helper.ask

-- A field of /proc/PID/status in KiB.
local function proc_status(pid, field)
  local value = helper.read_file("/proc/" .. pid .. "/status"):match(field .. ":%s*(%d+) kB")
  return assert(tonumber(value), "no " .. field .. " for pid " .. pid)
end

local CLK_TCK = (function()
  local pipe = assert(io.popen("getconf CLK_TCK"))
  local value = tonumber(pipe:read("l"))
  pipe:close()
  return value or 100
end)()

-- The user and the system CPU time a process has used so far, in seconds (/proc/PID/stat).
local function cpu_seconds(pid)
  local rest = helper.read_file("/proc/" .. pid .. "/stat"):match("^%d+ %b() (.*)$")
  local fields = {}
  for field in rest:gmatch("%S+") do fields[#fields + 1] = field end
  -- fields[1] is field 3 (state) of proc(5); utime and stime are fields 14 and 15.
  return tonumber(fields[12]) / CLK_TCK, tonumber(fields[13]) / CLK_TCK
end

local function cpu_total(pid)
  local user, system = cpu_seconds(pid)
  return user + system
end

-- Replaces the file at `path` at once, as editors save: a temp file renamed over it.
local function replace(path, source)
  local temp = path:gsub("[^/]*$", ".edit%0")
  helper.write_file(temp, source)
  assert(os.rename(temp, path))
end

-- Lines in, the same lines out. PRELUDE shares line 1, so "spin" loops on line 4 and "grow"
-- allocates on line 6.
local LIMITED = [[
return { cpu_budget = ${BUDGET}, max_memory = ${MEMORY}, handle = function(conn)
  for line in function() return conn:receive() end do
    if line == "spin" then
      while true do end
    elseif line == "grow" then
      local t = {} while true do t[#t + 1] = string.rep("x", 1000) .. #t end
    elseif line:match("^alloc %d+$") then
      conn:send("allocated ", #string.rep("y", tonumber(line:match("%d+"))), "\n")
    else
      conn:send(line, "\n")
    end
  end
end }]]

local function limited(vars)
  return helper.fill(LIMITED, {
    BUDGET = vars.budget or 2,
    MEMORY = vars.memory or 0,
  })
end

describe("cpu_budget", function()
  after_each(helper.cleanup)

  it("stops a handler that loops forever; the others are served during and after", function()
    local server = serve(limited { budget = CPU_BUDGET })
    local bystander = server:connect()
    assert.equal("before", ask(bystander, "before"))
    local victim = server:connect()
    assert.equal("hi", ask(victim, "hi"))

    local spun, cpu_before = socket.gettime(), cpu_total(server.pid)
    assert(victim:send("spin\n"))
    -- The bystander's request waits at most for the rest of the spinner's budget.
    assert.equal("during", ask(bystander, "during"))
    local served_after = socket.gettime() - spun
    assert.is_true(served_after < SERVED_WITHIN,
      string.format("the bystander waited %.2f s while a handler spun", served_after))

    local data, err = helper.read_all(victim)
    local stopped_after = socket.gettime() - spun
    local cpu_used = cpu_total(server.pid) - cpu_before
    assert.equal("", data)
    assert.equal("closed", err)
    assert.is_true(stopped_after < STOPPED_WITHIN,
      string.format("the spinner was stopped after %.2f s", stopped_after))
    assert.is_true(cpu_used >= CPU_BUDGET * CPU_EARLY and cpu_used <= CPU_BUDGET + CPU_SLACK,
      string.format("the server used %.2f s of CPU on a spin with cpu_budget %g s",
        cpu_used, CPU_BUDGET))
    victim:close()

    server:wait_log("cpu_budget%): stopped")
    local log = server:log()
    assert.is_truthy(log:find("%[error%] handler error in conn %d+[^\n]*/handler%d+%.lua:4: "
      .. "used more than 0%.3 s of CPU without waiting %(cpu_budget%): stopped"), log)
    assert.is_truthy(log:find("traceback", 1, true), log)
    assert.equal(1, server:count_log("cpu_budget"))

    assert.equal("after", ask(bystander, "after"))
    bystander:close()
    local fresh = server:connect()
    assert.equal("fresh", ask(fresh, "fresh"))
    fresh:close()
    server:stop()
  end)

  -- The budget is of CPU time, and time the kernel spends on the handler's behalf is CPU time
  -- too. Reading /proc/self/smaps_rollup costs the kernel a walk of the process's memory map and
  -- costs Lua almost nothing, so this loop spends nearly all its time in system calls.
  it("counts the CPU time of system calls made in a loop", function()
    local server = serve(helper.fill([[
return { cpu_budget = ${BUDGET}, handle = function(conn)
  conn:receive()
  while true do local f = io.open("/proc/self/smaps_rollup") f:read("a") f:close() end
end }]], { BUDGET = CPU_BUDGET }))
    local victim = server:connect()
    local user_before, system_before = cpu_seconds(server.pid)
    local started = socket.gettime()
    assert(victim:send("go\n"))
    victim:settimeout(SYSCALL_LOOP_WAIT)
    local data, err = helper.read_all(victim)
    local user, system = cpu_seconds(server.pid)
    user, system = user - user_before, system - system_before
    local what = string.format("after %.2f s, a loop of system calls had used %.2f s of CPU "
      .. "(%.2f s user, %.2f s system, from /proc/PID/stat) with cpu_budget = %g",
      socket.gettime() - started, user + system, user, system, CPU_BUDGET)
    assert.equal("closed", err, "not stopped: " .. what)
    assert.equal("", data)
    assert.is_true(user + system <= CPU_BUDGET + CPU_SLACK, "stopped late: " .. what)
    server:wait_log("handler%d+%.lua:3: used more than 0%.3 s of CPU without waiting "
      .. "%(cpu_budget%): stopped")
    victim:close()
    server:stop()
  end)

  -- Computes for `seconds` of CPU time (os.clock, read every 10000 additions) in one go.
  local COMPUTE = [[
return { ${SETTING} handle = function(conn)
  local seconds = tonumber(conn:receive())
  local started, n = os.clock(), 0
  repeat for _ = 1, 10000 do n = n + 1 end until os.clock() - started >= seconds
  conn:send("computed ", string.format("%.1f", os.clock() - started), "\n")
end }]]

  it("= false lets a handler compute longer than the default 2 s, and reply", function()
    local server = serve(helper.fill(COMPUTE, { SETTING = "cpu_budget = false," }))
    local client = server:connect()
    client:settimeout(30)
    assert.equal("computed 2.5", ask(client, "2.5"))
    assert.equal("", (helper.read_all(client)))
    client:close()
    assert.equal(0, server:count_log("cpu_budget"))
    assert.equal(0, server:count_log("%[error%]"))
    server:stop()
  end)

  it("defaults to 2 s", function()
    local server = serve(helper.fill(COMPUTE, { SETTING = "" }))
    local client = server:connect()
    client:settimeout(30)
    local cpu_before = cpu_total(server.pid)
    assert(client:send("3.5\n"))
    local data, err = helper.read_all(client)
    local cpu_used = cpu_total(server.pid) - cpu_before
    assert.equal("", data)
    assert.equal("closed", err)
    assert.is_true(cpu_used >= 2 * CPU_EARLY and cpu_used <= 2 + CPU_SLACK,
      string.format("stopped after %.2f s of CPU instead of about 2 s", cpu_used))
    server:wait_log("handler%d+%.lua:4: used more than 2%.0 s of CPU without waiting "
      .. "%(cpu_budget%): stopped")
    client:close()
    server:stop()
  end)

  it("stops a reloaded script whose top level loops forever; the old code serves on", function()
    local GREETER = [[
return { cpu_budget = ${BUDGET}, handle = function(conn)
  conn:send("${VERSION}\n")
  for line in function() return conn:receive() end do conn:send("${VERSION}:", line, "\n") end
end }]]
    local script = helper.handler(helper.fill(GREETER, { BUDGET = CPU_BUDGET, VERSION = "v1" }))
    local server = helper.start(script)
    local old = server:connect()
    assert.equal("v1", old:receive())

    replace(script, "local n = 0\nwhile true do n = n + 1 end\nreturn {}\n")
    local mark = server:mark()
    server:signal("HUP")
    server:wait_log("%[error%] reload failed: ", 10, mark)
    local log = server:log():sub(mark + 1)
    assert.is_truthy(log:find("reload failed: [^\n]*" .. literal(script:match("[^/]*$"))
      .. ":2: used more than [%d.]+ s of CPU without waiting %(cpu_budget%): stopped"), log)
    assert.equal(0, server:count_log("reloaded"))

    assert.equal("v1:still", ask(old, "still"))
    local fresh = server:connect()
    assert.equal("v1", fresh:receive())
    assert.equal("v1:new", ask(fresh, "new"))
    fresh:close()
    old:close()
    server:stop()
  end)
end)

describe("max_memory", function()
  after_each(helper.cleanup)

  it("fails a handler that allocates without end; others are served, memory comes back",
    function()
      local server = serve(limited { memory = MEMORY_CAP })
      local bystander = server:connect()
      assert.equal("before", ask(bystander, "before"))
      local victim = server:connect()
      assert.equal("hi", ask(victim, "hi"))

      assert(victim:send("grow\n"))
      local data, err = helper.read_all(victim)
      assert.equal("", data)
      assert.equal("closed", err)
      victim:close()
      server:wait_log("%[error%] handler error in conn %d+[^\n]*: not enough memory")

      assert.equal("after", ask(bystander, "after"))
      -- The grower's table is garbage now: a quarter of the cap can be had again.
      local fresh = server:connect()
      assert.equal("allocated 8388608", ask(fresh, "alloc 8388608"))
      fresh:close()
      bystander:close()
      local peak = proc_status(server.pid, "VmHWM")
      assert.is_true(peak < RSS_LIMIT_KIB,
        "server peak RSS " .. peak .. " KiB, limit " .. RSS_LIMIT_KIB .. " KiB")
      assert.equal(1, server:count_log("not enough memory"))
      server:stop()
    end)
end)

-- A length-prefixed echo: an 8-byte big-endian length, then that many bytes, sent back the same
-- way. A failed read is reported as one line; after "too large" (nothing was read) it goes on.
local LENGTH_ECHO = [[
return { max_receive = ${MAX_RECEIVE}, max_buffers = ${MAX_BUFFERS}, handle = function(conn)
  while true do
    local head, head_err = conn:receive(8)
    if not head then
      luasock.log("info", ("%s: receive(8): %s"):format(conn, head_err))
      return
    end
    local len = string.unpack(">I8", head)
    local body, err, partial = conn:receive(len)
    if body then
      local sent, send_err = conn:send(head, body)
      if not sent then
        luasock.log("info", ("%s: send: %s"):format(conn, send_err))
        return
      end
    else
      luasock.log("info", ("%s: receive(%d): %s, %d bytes partial"):format(conn, len, err, #partial))
      report(conn, body, err, partial)
      if err ~= "too large" then return end
    end
  end
end }]]

local function length_echo(vars)
  return serve(helper.fill(LENGTH_ECHO, { MAX_RECEIVE = vars.max_receive or "nil",
    MAX_BUFFERS = vars.max_buffers or "nil" }))
end

local function header(len)
  return string.pack(">I8", len)
end

local function echo_round_trip(client, payload)
  assert(client:send(header(#payload) .. payload))
  assert.equal(header(#payload) .. payload, client:receive(8 + #payload))
end

describe("max_receive", function()
  after_each(helper.cleanup)

  -- Issue 13 item 4: receive(N) buffered N bytes with no limit, so a peer announcing 100 GB in a
  -- length-prefixed protocol made the server buffer whatever it sent (400 MiB: 412 MB of RSS).
  it("refuses receive(N) over it at once, before a byte is buffered; the stream stays usable",
    function()
      local server = length_echo {}  -- the default max_receive, 16 MiB
      local client = server:connect()
      client:settimeout(2)
      local started = socket.gettime()
      assert(client:send(header(100 * 1000 ^ 3)))
      local report = helper.read_report(client)
      assert.same({ n = 3, nil, "too large", "" }, report)
      assert.is_true(socket.gettime() - started < 1, "the refusal took too long")
      -- Nothing was consumed: the next message is read as usual, up to the limit itself.
      echo_round_trip(client, "after the refusal")
      echo_round_trip(client, string.rep("z", 16 * 1024 * 1024))
      assert(client:send(header(16 * 1024 * 1024 + 1)))
      assert.same({ n = 3, nil, "too large", "" }, helper.read_report(client))
      client:close()
      server:stop()
    end)

  it("is a per-connection option too", function()
    local server = serve([[
return { max_receive = 1000, handle = function(conn)
  local refused = { conn:receive(1001) }
  conn:setoption("max_receive", 2000)
  local data = conn:receive(1001)
  report(conn, refused[1], refused[2], refused[3], #data)
end }]])
    local client = server:connect()
    assert(client:send(string.rep("a", 1001)))
    assert.same({ n = 4, nil, "too large", "", 1001 }, helper.read_report(client))
    client:close()
    server:stop()
  end)
end)

describe("max_buffers", function()
  after_each(helper.cleanup)

  local MiB = 1024 * 1024
  local ATTACKERS = 24

  -- Issue 13 item 4: the buffers of all connections together had no bound. Here every attacker
  -- announces max_receive (1 MiB) and sends all but the last byte; max_buffers (4.5 MiB) has
  -- room for four such buffers at a time, so most are closed when theirs would grow past it,
  -- and their bytes dropped. (An attacker whose bytes the server reads only after others have
  -- been answered may fit then: how many are served depends on the timing.)
  it("closes the connections whose input would take all buffers past it; the others are served",
    function()
      local server = length_echo { max_receive = MiB, max_buffers = 4 * MiB + MiB // 2 }
      local bystander = server:connect()
      echo_round_trip(bystander, "before")
      local body = string.rep("b", MiB)
      local attackers = {}
      for i = 1, ATTACKERS do
        attackers[i] = server:connect()
        attackers[i]:send(header(MiB) .. body:sub(1, -2))  -- refused ones are closed meanwhile
        echo_round_trip(bystander, "during " .. i)
      end
      -- Each finishes its message: the ones within the budget get it back whole.
      local served, closed = 0, 0
      for _, attacker in ipairs(attackers) do
        attacker:send("b")
        local echo, err = attacker:receive(8 + MiB)
        if echo then
          assert.equal(header(MiB) .. body, echo)
          served = served + 1
        else
          assert.is_truthy(err == "closed" or err:find("reset"), err)
          closed = closed + 1
        end
        attacker:close()
      end
      assert.is_true(served >= 1 and closed >= ATTACKERS // 2, served .. " attackers served, "
        .. closed .. " closed")
      -- Each closed attacker's handler logs why when it resumes, which may be after its peer
      -- saw the close: its read was refused, or (when others held the budget meanwhile) the
      -- echo's send.
      local REFUSED = "receive%(1048576%): out of buffer memory %(max_buffers%), 0 bytes partial"
      local SEND_REFUSED = "send: out of buffer memory %(max_buffers%)"
      local function reasons() return server:count_log(REFUSED) + server:count_log(SEND_REFUSED) end
      local ok = pcall(helper.eventually, function() return reasons() >= closed end, 10)
      assert.is_true(ok and closed == reasons(), closed .. " attackers closed, but the log has "
        .. reasons() .. " reasons:\n" .. server:log())
      -- The buffers never held more than the budget, but for the first chunk (16 KiB) of each.
      local lines, held = 0, 0
      for bytes in server:log():gmatch("%[warn%] conn %d+: closed: its input %(%d+ bytes%) " ..
        "cannot grow: the buffers of all connections hold (%d+) bytes %(max_buffers 4718592%)") do
        lines, held = lines + 1, math.max(held, tonumber(bytes))
      end
      assert.equal(server:count_log(REFUSED), lines)
      assert.is_true(held <= 4718592 + (ATTACKERS + 1) * 2 * 16384, held .. " bytes held")
      echo_round_trip(bystander, "after")
      bystander:close()
      server:stop()
    end)

  it("refuses a send that would take all buffers past it, with nothing queued", function()
    local server = serve([[
return { max_buffers = 4 * 1024 * 1024, handle = function(conn)
  conn:receive()
  local big = string.rep("x", 6 * 1024 * 1024)
  report(conn, conn:send("head", big))
  report(conn, conn:post(big))
  report(conn, conn:send(string.rep("y", 1024 * 1024)))
end }]])
    local client = server:connect()
    assert(client:send("go\n"))
    assert.same({ n = 2, nil, "out of buffer memory (max_buffers)" }, helper.read_report(client))
    assert.same({ n = 2, nil, "out of buffer memory (max_buffers)" }, helper.read_report(client))
    assert.equal(string.rep("y", 1024 * 1024), client:receive(1024 * 1024))
    assert.same({ n = 1, 1024 * 1024 }, helper.read_report(client))
    client:close()
    server:stop()
  end)
end)

describe("first_byte_timeout", function()
  after_each(helper.cleanup)

  local QUIET = [[
return { first_byte_timeout = 0.5, idle_timeout = 5, handle = function(conn)
  while true do
    local line, err = conn:receive()
    if not line then luasock.log("info", tostring(conn) .. " read ended: " .. err) return end
    conn:send(line, "\n")
  end
end }]]

  it("closes a connection that never sends after about 0.5 s; idle_timeout governs after",
    function()
      local server = serve(QUIET)
      local started = socket.gettime()
      local silent = server:connect()
      local talker = server:connect()
      assert.equal("hello", ask(talker, "hello"))

      local data, err = helper.read_all(silent)
      local closed_after = socket.gettime() - started
      assert.equal("", data)
      assert.equal("closed", err)
      assert.is_true(closed_after >= 0.3 and closed_after <= 3,
        string.format("the silent connection was closed after %.2f s", closed_after))
      silent:close()
      server:wait_log("conn %d+ read ended: timeout")

      -- The talker has sent a line: it stays open past 1 s (idle_timeout = 5).
      talker:settimeout(1.2)
      local line, wait_err = talker:receive()
      assert.is_nil(line)
      assert.equal("timeout", wait_err)
      assert.is_true(socket.gettime() - started > 1.2)
      talker:settimeout(helper.IO_TIMEOUT)
      assert.equal("again", ask(talker, "again"))
      assert.equal(1, server:count_log("read ended: timeout"))
      talker:close()
      server:stop()
    end)
end)

-- Whether a client socket can be bound to 127.0.0.2 and reach 127.0.0.1 from it.
local function second_loopback_works()
  local listener = socket.bind("127.0.0.1", 0)
  if not listener then return false end
  local _, port = listener:getsockname()
  local client = socket.tcp()
  local ok = client:bind("127.0.0.2", 0) and client:connect("127.0.0.1", port)
  client:close()
  listener:close()
  return ok and true or false
end

describe("--max-connections-per-ip", function()
  after_each(helper.cleanup)

  local ECHO = [[
return { handle = function(conn)
  for line in function() return conn:receive() end do
    if line == "peer" then conn:send((conn:peer()), "\n") else conn:send(line, "\n") end
  end
end }]]

  local function from_other_address(client)
    assert(client:bind("127.0.0.2", 0))
  end

  local REFUSED = "%[warn%] refused connection from 127%.0%.0%.1:%d+: too many connections "
    .. "from this address %(%-%-max%-connections%-per%-ip%)"

  -- A client refused at once: the server closes it without a byte.
  local function assert_refused(server, before, what)
    local started = socket.gettime()
    local client = server:connect(1, before)
    local data, err = helper.read_all(client)
    client:close()
    assert.equal("", data, what)
    assert.is_true(err == "closed" or err == "connection reset by peer", what .. ": " .. err)
    assert.is_true(socket.gettime() - started < 2, what .. " was not closed at once")
  end

  local function open_served(server, n, before)
    local clients = {}
    for i = 1, n do
      clients[i] = server:connect(1, before)
      assert.equal("hello " .. i, ask(clients[i], "hello " .. i))
    end
    return clients
  end

  it("refuses the 4th connection from 127.0.0.1 at once; closing one frees a slot", function()
    local server = serve(ECHO, { args = { "--max-connections-per-ip", "3" } })
    local clients = open_served(server, 3)
    assert.equal("127.0.0.1", ask(clients[1], "peer"))

    assert_refused(server, nil, "the 4th connection")
    server:wait_log(REFUSED)
    assert_refused(server, nil, "the 5th connection")
    assert_refused(server, nil, "the 6th connection")
    -- Refusals are logged at most once a second.
    assert.equal(1, server:count_log("refused connection"))
    for i, client in ipairs(clients) do
      assert.equal("still " .. i, ask(client, "still " .. i))
    end

    clients[1]:close()
    local replacement = helper.eventually(function()
      local client = server:connect()
      client:settimeout(1)
      if client:send("again\n") and client:receive() == "again" then return client end
      client:close()
    end, 5, "a slot to free up after a close")
    clients[1] = replacement
    assert_refused(server, nil, "the 4th connection after the replacement")

    -- After a second, the next refusal is logged, with the number not logged since.
    socket.sleep(1.1) -- the log's rate limit is the thing under test
    local mark = server:mark()
    assert_refused(server, nil, "a refusal a second later")
    local more = server:wait_log(REFUSED .. " %(and (%d+) more since the last such line%)",
      5, mark)
    assert.is_true(tonumber(more) >= 2, "only " .. more .. " refusals counted as unlogged")

    for _, client in ipairs(clients) do client:close() end
    server:stop()
  end)

  local count_other = second_loopback_works() and it or pending
  count_other("counts connections from 127.0.0.2 apart from 127.0.0.1's", function()
    local server = serve(ECHO, { args = { "--max-connections-per-ip", "3" } })
    local locals = open_served(server, 3)
    assert_refused(server, nil, "the 4th connection from 127.0.0.1")

    local others = open_served(server, 3, from_other_address)
    assert.equal("127.0.0.2", ask(others[1], "peer"))
    assert_refused(server, from_other_address, "the 4th connection from 127.0.0.2")
    assert_refused(server, nil, "the 4th connection from 127.0.0.1, again")

    -- Closing one of 127.0.0.2's does not give 127.0.0.1 a slot, only 127.0.0.2.
    others[1]:close()
    others[1] = helper.eventually(function()
      local client = server:connect(1, from_other_address)
      client:settimeout(1)
      if client:send("again\n") and client:receive() == "again" then return client end
      client:close()
    end, 5, "a slot for 127.0.0.2 after a close")
    assert_refused(server, nil, "127.0.0.1 after 127.0.0.2 closed one")

    for _, client in ipairs(locals) do assert.equal("ok", ask(client, "ok")) end
    for _, client in ipairs(others) do assert.equal("ok", ask(client, "ok")) end
    for _, client in ipairs(locals) do client:close() end
    for _, client in ipairs(others) do client:close() end
    server:stop()
  end)
end)
