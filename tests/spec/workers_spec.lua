-- workers_spec.lua -- `serve --workers N|auto`: the parent loads the script, binds the listeners
-- and forks N workers that serve them (TCP: one SO_REUSEPORT socket per worker; unix and udp:
-- one shared socket). Covered here: both workers serve 40 concurrent connections and see
-- luasock.worker/luasock.workers; a worker killed with SIGKILL (or one that exits on a SIGTERM of
-- its own) is restarted under its number with a new pid while the other keeps its connections;
-- a worker that keeps dying quickly is restarted after a back-off that doubles (0.1, 0.2, 0.4,
-- 0.8 s, checked against the log's time stamps), and a SIGTERM during a back-off cancels the
-- restart; cpu_budget works in workers, restarted ones too; --pid-file holds the parent's pid;
-- SIGTERM/SIGINT to the parent reach every worker (goodbyes on "shutting down", --grace, a second
-- SIGINT, the kill of a worker that never returns to its loop, 5 s after the grace) and the parent
-- exits 0; the workers end (with SIGTERM) when the parent is killed; SIGHUP and --watch reload
-- every worker (the parent first), a worker restarted after a reload starts with the last code
-- that loaded, also while the script on disk is broken; unix and udp listeners survive
-- the deaths of the workers, and the unix socket file is removed at exit only; usage errors,
-- --workers auto and 1, a port taken by another server (with or without --workers);
-- examples/chat.lua refuses --workers 2.
--
-- Readiness always comes from log lines ("worker N started (pid P)", "restarting it", "worker
-- N: reloaded") or from replies; which worker serves a connection is asked over the connection.
-- Cleanup also SIGKILLs the workers a failed test leaves behind (see `cleanup`).
local socket = require "socket"
local helper = require "helper"

-- Answers "which" with report(worker, workers), "die" with os.exit(3), "sleep" with "sleeping"
-- and a minute of sleep, "spin" with "spinning" and (0.1 s later, within any --grace used
-- here) a loop that never yields; echoes other lines as "echo:<line>"; when a read fails it
-- says "bye <error>" and returns.
local WHO = [[
  return { handle = function(conn)
    while true do
      local line, err = conn:receive("*l")
      if not line then
        conn:send("bye ", tostring(err), "\n")
        return
      elseif line == "which" then
        report(conn, luasock.worker, luasock.workers)
      elseif line == "die" then
        os.exit(3)
      elseif line == "sleep" then
        conn:send("sleeping\n")
        luasock.sleep(60)
        return
      elseif line == "spin" then
        conn:send("spinning\n")
        luasock.sleep(0.1) -- output goes out when the loop runs
        while true do end
      else
        conn:send("echo:", line, "\n")
      end
    end
  end }]]

local TWO = { "--workers", "2" }

-- WHO with no cpu_budget, where "spin" is stuck in one C call (minutes of backtracking) until the
-- process is killed: a SIGTERM stops a loop of Lua code after a second, but not a C call.
local WHO_UNLIMITED = (WHO:gsub("return { handle", "return { cpu_budget = false, handle", 1)
  :gsub("while true do end", 'string.rep("a", 400):find(".-.-.-.-b")', 1))
assert(WHO_UNLIMITED ~= WHO and not WHO_UNLIMITED:find("while true do end", 1, true))

local literal = helper.literal

-- The pid of each worker (by number) from the "worker N started (pid P)" lines written after
-- byte `from`: the latest start of each.
local function worker_pids(server, from)
  local pids = {}
  for id, pid in server:log():sub((from or 0) + 1):gmatch("worker (%d+) started %(pid (%d+)%)") do
    pids[tonumber(id)] = tonumber(pid)
  end
  return pids
end

-- Whether process `pid` has ended: gone, or a zombie. A stat file that cannot be read while
-- /proc/PID exists (LeakSanitizer at exit) counts as still running.
local function process_gone(pid)
  local stat = helper.read_file("/proc/" .. pid .. "/stat")
  local state = stat:match("^%d+ %b() (%a)")
  if state == nil then
    local dir = io.open("/proc/" .. pid, "r")
    if dir then dir:close() return false end
    return true
  end
  return state == "Z" or state == "X"
end

local function kill(signal, pid)
  assert(os.execute("kill -" .. signal .. " " .. pid))
end

local ask = helper.ask

-- Asks the server which worker serves `client`; returns the worker's number and the count.
local function which(client)
  assert(client:send("which\n"))
  local reply = helper.read_report(client)
  return reply[1], reply[2]
end

-- A new connection (to listener `i`), checked to echo; returns it, its worker and the count.
local function connect_checked(server, i)
  local client = server:connect(i)
  local worker, workers = which(client)
  local word = "w" .. math.random(1e6)
  assert.equal("echo:" .. word, ask(client, word))
  return client, worker, workers
end

-- Connects until a connection is served by worker `id` (every one must echo correctly and say
-- there are 2 workers); returns that connection, open, and closes the others.
local function connect_to_worker(server, id)
  return helper.eventually(function()
    local client, worker, workers = connect_checked(server)
    assert.equal(2, workers)
    if worker == id then return client end
    client:close()
  end, 10, "a connection served by worker " .. id)
end

-- Reads until the peer closes; asserts that it did (a FIN or a reset, not a timeout).
local function assert_closed(client)
  local data, err = helper.read_all(client)
  assert.is_truthy(err == "closed" or err == "connection reset by peer",
    "expected the connection to end, got " .. tostring(err) .. " after " .. data)
  return data
end

-- A "YYYY-MM-DD HH:MM:SS.mmm" log time stamp in seconds.
local function stamp_seconds(stamp)
  local year, month, day, hour, min, sec, ms =
    stamp:match("^(%d+)%-(%d+)%-(%d+) (%d+):(%d+):(%d+)%.(%d+)$")
  assert(year, "bad time stamp " .. stamp)
  return os.time { year = tonumber(year), month = tonumber(month), day = tonumber(day),
    hour = tonumber(hour), min = tonumber(min), sec = tonumber(sec) } + tonumber(ms) / 1000
end

local STAMP = "(%d+%-%d+%-%d+ %d+:%d+:%d+%.%d+)"

-- Waits for the parent's line on worker `id`'s death after byte `from` (cause: a pattern such
-- as "was killed by SIGKILL"), then for its restart. Returns the new pid, the seconds it had
-- lived, the announced delay, the time stamps of both lines and the dead pid.
local function wait_restart(server, id, cause, from)
  local died_at, pid, lived, delay = server:wait_log(STAMP .. " %[warn%] worker " .. id
    .. " %(pid (%d+)%) " .. cause .. " after ([%d.]+) s; restarting it in ([%d.]+) s\n", 10, from)
  local started_at, new_pid = server:wait_log(STAMP .. " %[info%] worker " .. id
    .. " started %(pid (%d+)%)", 40, from)
  assert.are_not.equal(pid, new_pid)
  return tonumber(new_pid), tonumber(lived), tonumber(delay), stamp_seconds(died_at),
    stamp_seconds(started_at), tonumber(pid)
end

-- The delay the parent must announce for a worker that lived `lived` seconds, after
-- `quick_before` quick deaths in a row.
local function expected_delay(lived, quick_before)
  if lived >= 5 then return 0 end
  return 0.1 * 2 ^ quick_before
end

-- Asserts the delay announced for a worker that lived `lived` seconds (printed with one
-- decimal, so 4.96 s shows as 5.0: either delay is right that close to the limit).
local function assert_delay(delay, lived, quick_before)
  if math.abs(lived - 5) < 0.1 then
    assert.is_truthy(delay == 0 or delay == expected_delay(0, quick_before), delay)
  else
    assert.equal(expected_delay(lived, quick_before), delay)
  end
end

-- Every server started by the current test, for cleanup.
local started = {}

-- helper.start, remembering the server so that cleanup can find its workers.
local function start(script, opts)
  local server = helper.start(script, opts)
  started[#started + 1] = server
  return server
end

-- helper.cleanup, and then SIGKILL for the workers of this test's servers that are still
-- running: when a test fails, helper.cleanup kills the parent, and its workers only get a
-- SIGTERM, which a worker that sleeps through a long --grace or spins in a loop outlives.
-- Then fails if a log has a report from AddressSanitizer or UBSan (of a worker, whose exit
-- status only the parent sees).
local function cleanup()
  local pids, reports = {}, {}
  for _, server in ipairs(started) do
    local log = server:log()
    for pid in log:gmatch("worker %d+ started %(pid (%d+)%)") do
      pids[#pids + 1] = tonumber(pid)
    end
    if log:find("Sanitizer", 1, true) or log:find("runtime error:", 1, true) then
      reports[#reports + 1] = log
    end
  end
  started = {}
  helper.cleanup()
  for _, pid in ipairs(pids) do
    local cmdline = helper.read_file("/proc/" .. pid .. "/cmdline")
    if not process_gone(pid) and cmdline:find("luasock", 1, true) then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
  end
  assert(#reports == 0, "a sanitizer report in a server's log:\n" .. table.concat(reports, "\n"))
end

local function socket_exists(path)
  return os.execute("test -S " .. helper.shell_quote(path)) == true
end

local function path_exists(path)
  return os.execute("test -e " .. helper.shell_quote(path)) == true
end

describe("serve --workers 2", function()
  after_each(cleanup)

  it("serves 40 concurrent connections from both workers, which know their numbers", function()
    local server = start(helper.handler(WHO), { args = TWO })
    local pids = worker_pids(server)
    assert.is_number(pids[1])
    assert.is_number(pids[2])
    assert.are_not.equal(pids[1], pids[2])
    assert.are_not.equal(server.pid, pids[1])
    assert.equal(2, server:count_log("worker %d started %(pid %d+%)"))
    assert.equal(1, server:count_log("luasock: listening on "))

    local clients, seen = {}, {}
    for i = 1, 40 do clients[i] = server:connect() end
    for i, client in ipairs(clients) do
      local worker, workers = which(client)
      assert.equal(2, workers, "connection " .. i)
      assert.is_truthy(worker == 1 or worker == 2, "connection " .. i .. ": worker " .. tostring(worker))
      seen[worker] = (seen[worker] or 0) + 1
    end
    assert.is_truthy(seen[1] and seen[2], "served by one worker only: " .. tostring(seen[1])
      .. " on 1, " .. tostring(seen[2]) .. " on 2")
    for i, client in ipairs(clients) do
      assert.equal("echo:hello " .. i, ask(client, "hello " .. i))
    end
    for i, client in ipairs(clients) do
      assert.equal("echo:again " .. i, ask(client, "again " .. i))
      client:close()
    end
    local log = server:stop()
    assert.is_truthy(log:find("SIGTERM: stopping 2 workers", 1, true), log)
    for id = 1, 2 do
      assert.is_truthy(log:find("worker " .. id .. " (pid " .. pids[id] .. ") exited with status 0",
        1, true), log)
    end
    assert.is_nil(log:find("restarting it", 1, true), log)
  end)

  it("restarts a worker killed with SIGKILL; the other keeps its connections", function()
    local server = start(helper.handler(WHO), { args = TWO })
    local pids = worker_pids(server)
    local on = { {}, {} }
    for id = 1, 2 do
      for _ = 1, 3 do table.insert(on[id], connect_to_worker(server, id)) end
    end

    local mark = server:mark()
    kill("KILL", pids[1])
    local new_pid, lived, delay, _, _, dead = wait_restart(server, 1, "was killed by SIGKILL", mark)
    assert.equal(pids[1], dead)
    assert_delay(delay, lived, 0)
    assert.are_not.equal(pids[1], new_pid)
    assert.are_not.equal(pids[2], new_pid)
    helper.eventually(function() return process_gone(pids[1]) end, 5, "the killed worker to go")
    assert.is_false(process_gone(new_pid))

    for _, client in ipairs(on[1]) do assert_closed(client) end
    for i, client in ipairs(on[2]) do
      assert.equal("echo:still " .. i, ask(client, "still " .. i))
      assert.equal(2, (which(client)))
    end

    -- New connections: all served, by both workers once the new worker 1 listens.
    local seen = {}
    for i = 1, 40 do
      local client, worker, workers = connect_checked(server)
      assert.equal(2, workers, "connection " .. i)
      seen[worker] = true
      client:close()
    end
    assert.is_true(seen[2])
    connect_to_worker(server, 1):close()

    assert.equal(pids[2], worker_pids(server)[2])
    assert.equal(new_pid, worker_pids(server)[1])
    assert.equal(0, server:count_log("worker 2 %(pid"))
    for _, client in ipairs(on[2]) do client:close() end
    server:stop()
  end)

  it("restarts a worker that exits after SIGTERM of its own, and keeps serving", function()
    local server = start(helper.handler(WHO), { args = TWO })
    local pids = worker_pids(server)
    local client = connect_to_worker(server, 2)
    local mark = server:mark()
    kill("TERM", pids[2])
    assert.equal("bye shutting down", client:receive("*l"))
    assert_closed(client)
    local new_pid = wait_restart(server, 2, "exited with status 0", mark)
    assert.are_not.equal(pids[2], new_pid)
    server:wait_log("worker 2: shutting down %(TERM%)", 5, mark)
    connect_to_worker(server, 2):close()
    connect_to_worker(server, 1):close()
    assert.equal(0, server:count_log("stopping 2 workers"))
    server:stop()
  end)

  it("restarts a worker that keeps exiting quickly after a doubling back-off; SIGTERM during one "
    .. "ends it", function()
    local server = start(helper.handler(WHO), { args = { "--workers", "2", "--grace", "2.5" } })
    local pids = worker_pids(server)
    local delays = {}
    for round = 1, 4 do
      local client = connect_to_worker(server, 1)
      local mark = server:mark()
      assert(client:send("die\n"))
      assert_closed(client)
      local new_pid, lived, delay, died_at, started_at, dead =
        wait_restart(server, 1, "exited with status 3", mark)
      assert.equal(pids[1], dead)
      assert.is_true(lived < 5, "round " .. round .. ": the worker lived " .. lived .. " s")
      delays[round] = delay
      -- The restart really waits: the time stamps have millisecond precision.
      local gap = started_at - died_at
      assert.is_true(gap >= delay - 0.005 and gap < delay + 2,
        string.format("round %d: announced %.1f s, restarted after %.3f s", round, delay, gap))
      pids[1] = new_pid
    end
    assert.same({ 0.1, 0.2, 0.4, 0.8 }, delays)
    assert.equal(4, server:count_log("worker 1 %(pid %d+%) exited with status 3 after"))
    -- The restarted worker serves, and worker 2 never died.
    connect_to_worker(server, 1):close()
    connect_to_worker(server, 2):close()
    assert.equal(0, server:count_log("worker 2 %(pid"))

    -- A fifth quick death: 1.6 s to wait. SIGTERM meanwhile stops worker 2 (which waits the
    -- 2.5 s grace for a sleeping handler, past the 1.6 s) and cancels the restart of worker 1.
    local sleeper = connect_to_worker(server, 2)
    assert.equal("sleeping", ask(sleeper, "sleep"))
    local client = connect_to_worker(server, 1)
    local mark = server:mark()
    assert(client:send("die\n"))
    assert_closed(client)
    server:wait_log("worker 1 %(pid " .. pids[1] .. "%) exited with status 3 after [%d.]+ s; "
      .. "restarting it in 1%.6 s\n", 10, mark)
    local began = socket.gettime()
    server:signal("TERM")
    assert.is_true(server:wait_exit(10), "the parent did not exit")
    local took = socket.gettime() - began
    local log = server:stop()
    assert.is_true(took > 2.3 and took < 7, "the parent took " .. took .. " s")
    assert_closed(sleeper)
    local after = log:sub(mark + 1)
    assert.is_truthy(after:find("worker 2: grace period over: 1 handlers still running", 1, true),
      after)
    assert.is_truthy(after:find("SIGTERM: stopping 1 workers", 1, true), after)
    assert.is_truthy(after:find("worker 2 (pid " .. pids[2] .. ") exited with status 0", 1, true),
      after)
    assert.is_nil(after:find("worker 1 started", 1, true), after)
  end)

  it("stops a handler in an endless loop after cpu_budget, also in a restarted worker", function()
    local server = start(helper.handler((WHO:gsub("return { handle",
      "return { cpu_budget = 0.3, handle", 1))), { args = TWO })
    local pids = worker_pids(server)
    for round = 1, 2 do
      for id = 1, 2 do
        local client = connect_to_worker(server, id)
        local mark = server:mark()
        assert.equal("spinning", ask(client, "spin"))
        assert_closed(client)
        server:wait_log("%[error%] worker " .. id .. ": handler error in conn %d+ from [^\n]*"
          .. "used more than 0%.3 s of CPU without waiting %(cpu_budget%): stopped", 10, mark)
        -- The worker goes on serving.
        assert.equal(id, (which(connect_to_worker(server, id))))
      end
      if round == 1 then
        -- Restarted workers are forked from inside the parent's loop: they need their timer.
        for id = 1, 2 do
          local mark = server:mark()
          kill("KILL", worker_pids(server)[id])
          wait_restart(server, id, "was killed by SIGKILL", mark)
        end
      end
    end
    assert.are_not.equal(pids[1], worker_pids(server)[1])
    assert.are_not.equal(pids[2], worker_pids(server)[2])
    server:stop()
  end)

  it("writes the parent's pid to --pid-file, kept through a worker's death, removed at exit",
    function()
      local path = helper.dir() .. "/luasock.pid"
      local server = start(helper.handler(WHO), { args = { "--workers", "2", "--pid-file",
        path } })
      assert.equal(tostring(server.pid) .. "\n", helper.read_file(path))
      local pids = worker_pids(server)
      local mark = server:mark()
      kill("KILL", pids[2])
      wait_restart(server, 2, "was killed by SIGKILL", mark)
      connect_to_worker(server, 2):close()
      assert.equal(tostring(server.pid) .. "\n", helper.read_file(path))
      server:stop()
      assert.is_false(path_exists(path))
    end)
end)

describe("stopping the parent of 2 workers", function()
  after_each(cleanup)

  it("on SIGTERM wakes blocked reads in every worker; they say goodbye; exit 0", function()
    local server = start(helper.handler(WHO), { args = TWO })
    local pids = worker_pids(server)
    local clients = {}
    for id = 1, 2 do
      for _ = 1, 2 do clients[#clients + 1] = connect_to_worker(server, id) end
    end
    local began = socket.gettime()
    server:signal("TERM")
    for _, client in ipairs(clients) do
      assert.equal("bye shutting down", client:receive("*l"))
      assert_closed(client)
    end
    assert.is_true(server:wait_exit(5), "the parent did not exit within 5 s")
    assert.is_true(socket.gettime() - began < 5)
    local log = server:stop()
    assert.equal(1, server:count_log("SIGTERM: stopping 2 workers"))
    for id = 1, 2 do
      -- 2 handlers, and maybe some of connections closed a moment ago, ending now.
      local handlers = log:match("%[info%] worker " .. id .. ": shutting down %(TERM%): waiting up "
        .. "to 10 s for (%d+) handlers")
      assert.is_truthy(handlers and tonumber(handlers) >= 2, log)
      assert.is_truthy(log:find("worker " .. id .. " (pid " .. pids[id] .. ") exited with status 0",
        1, true), log)
      assert.is_true(process_gone(pids[id]))
    end
    assert.is_nil(log:find("restarting it", 1, true), log)
    -- Nothing listens any more.
    local late = socket.tcp()
    late:settimeout(2)
    assert.is_nil((late:connect(server.host, server.port)))
    late:close()
  end)

  it("cuts off handlers that ignore the shutdown after --grace 1 and still exits 0", function()
    local server = start(helper.handler(WHO), { args = { "--workers", "2", "--grace", "1" } })
    local clients = {}
    for id = 1, 2 do
      clients[id] = connect_to_worker(server, id)
      assert.equal("sleeping", ask(clients[id], "sleep"))
    end
    local began = socket.gettime()
    server:signal("TERM")
    assert.is_true(server:wait_exit(10), "the parent did not exit within 10 s")
    local took = socket.gettime() - began
    -- Well before grace + 5 s, when the parent would kill the workers.
    assert.is_true(took >= 0.9 and took < 5, "took " .. took .. " s")
    local log = server:stop()
    for id = 1, 2 do
      assert.is_truthy(log:find("worker " .. id .. ": shutting down (TERM): waiting up to 1 s for ",
        1, true), log)
      assert.is_truthy(log:find("[warn] worker " .. id .. ": grace period over: 1 handlers still "
        .. "running", 1, true), log)
      assert_closed(clients[id])
    end
    assert.equal(2, server:count_log("worker %d %(pid %d+%) exited with status 0$"))
    assert.is_nil(log:find("killing them", 1, true), log)
  end)

  it("passes a second SIGINT on, so the workers exit at once", function()
    local server = start(helper.handler(WHO), { args = { "--workers", "2", "--grace", "60" } })
    local clients = {}
    for id = 1, 2 do
      clients[id] = connect_to_worker(server, id)
      assert.equal("sleeping", ask(clients[id], "sleep"))
    end
    local mark = server:mark()
    server:signal("INT")
    server:wait_log("SIGINT: stopping 2 workers", 5, mark)
    server:wait_log("worker 1: shutting down %(INT%)", 5, mark)
    server:wait_log("worker 2: shutting down %(INT%)", 5, mark)
    local began = socket.gettime()
    server:signal("INT")
    assert.is_true(server:wait_exit(5), "the parent did not exit within 5 s of a second SIGINT")
    assert.is_true(socket.gettime() - began < 5)
    local log = server:stop("INT")
    for id = 1, 2 do
      assert.is_truthy(log:find("worker " .. id .. ": second SIGINT: exiting now", 1, true), log)
      assert_closed(clients[id])
    end
  end)

  it("kills a worker still running 5 s after the grace period", function()
    local server = start(helper.handler(WHO_UNLIMITED), { args = { "--workers", "2", "--grace",
      "0.5" } })
    local pids = worker_pids(server)
    local client = connect_to_worker(server, 1)
    assert.equal("spinning", ask(client, "spin"))
    local began = socket.gettime()
    server:signal("TERM")
    assert.is_true(server:wait_exit(15), "the parent did not exit within 15 s")
    local took = socket.gettime() - began
    assert.is_true(took >= 5 and took < 10, "took " .. took .. " s")
    local log = server:stop()
    assert.is_truthy(log:find("1 workers still running 5.5 s after the stop: killing them", 1,
      true), log)
    assert.is_truthy(log:find("worker 1 (pid " .. pids[1] .. ") was killed by SIGKILL", 1, true),
      log)
    assert.is_truthy(log:find("worker 2 (pid " .. pids[2] .. ") exited with status 0", 1, true),
      log)
    assert_closed(client)
  end)

  it("ends the workers (with SIGTERM) when the parent is killed", function()
    local server = start(helper.handler(WHO), { args = TWO })
    local pids = worker_pids(server)
    local clients = { connect_to_worker(server, 1), connect_to_worker(server, 2) }
    local how, code = server:kill()
    assert.equal("signal", how)
    assert.equal(9, code)
    -- The graceful shutdown proves it was SIGTERM and not a crash.
    for _, client in ipairs(clients) do
      assert.equal("bye shutting down", client:receive("*l"))
      assert_closed(client)
    end
    for id = 1, 2 do
      helper.eventually(function() return process_gone(pids[id]) end, helper.STOP_TIMEOUT,
        "worker " .. id .. " (pid " .. pids[id] .. ") to end after its parent")
      assert.is_truthy(server:log():find("worker " .. id .. ": shutting down (TERM)", 1, true),
        server:log())
    end
    local late = socket.tcp()
    late:settimeout(2)
    assert.is_nil((late:connect(server.host, server.port)))
    late:close()
  end)
end)

describe("SIGHUP to the parent of 2 workers", function()
  after_each(cleanup)

  local replace = helper.replace_file

  -- A handler answering "which" with report(worker, workers, the worker its top level ran
  -- in) and other lines with "<version>:<line>".
  local function versioned(version)
    return helper.PRELUDE .. "\nlocal loaded_in = luasock.worker\n"
      .. "return { handle = function(conn)\n"
      .. "  while true do\n"
      .. "    local line = conn:receive('*l')\n"
      .. "    if not line then return end\n"
      .. "    if line == 'which' then report(conn, luasock.worker, luasock.workers, loaded_in)\n"
      .. "    else conn:send('" .. version .. ":', line, '\\n') end\n"
      .. "  end\n"
      .. "end }\n"
  end

  -- Connects until worker `id` serves; every connection must run `version`, loaded in the
  -- parent (worker 0) for v1, which the workers got with the fork, and for a later version by
  -- the serving worker itself (it reloaded) or by the parent (the worker was forked after the
  -- parent's reload). Returns the connection to worker `id`, open.
  local function connect_to_version(server, id, version)
    return helper.eventually(function()
      local client = server:connect()
      assert(client:send("which\n"))
      local reply = helper.read_report(client)
      local worker, workers, loaded_in = reply[1], reply[2], reply[3]
      assert.equal(2, workers)
      assert.equal(version .. ":x", ask(client, "x"))
      if version == "v1" then
        assert.equal(0, loaded_in)
      else
        assert.is_true(loaded_in == 0 or loaded_in == worker, "loaded in " .. loaded_in)
      end
      if worker == id then return client end
      client:close()
    end, 10, "a connection served by worker " .. id)
  end

  local function wait_reloaded(server, id, why, from)
    local ms = server:wait_log("%[info%] worker " .. id .. ": reloaded "
      .. literal(server.script) .. " in ([%d.]+) ms %(" .. literal(why) .. "%)\n", 10, from)
    assert.is_truthy(tonumber(ms), ms)
  end

  it("reloads the parent and every worker; a worker restarted later runs the new code", function()
    local script = helper.script(versioned("v1"))
    local server = start(script, { args = TWO })
    local old = { connect_to_version(server, 1, "v1"), connect_to_version(server, 2, "v1") }

    replace(script, versioned("v2"))
    local mark = server:mark()
    server:signal("HUP")
    server:wait_log("%[info%] reloaded " .. literal(script) .. " in [%d.]+ ms %(SIGHUP%)", 5, mark)
    server:wait_log("%[info%] reloading 2 workers\n", 5, mark)
    wait_reloaded(server, 1, "SIGHUP", mark)
    wait_reloaded(server, 2, "SIGHUP", mark)
    -- Open connections finish with the code they started with; new ones run v2 on both.
    for id = 1, 2 do
      assert.equal("v1:old", ask(old[id], "old"))
      assert.equal(id, (which(old[id])))
    end
    connect_to_version(server, 1, "v2"):close()
    connect_to_version(server, 2, "v2"):close()

    -- Worker 1 dies; its replacement is forked from the parent, which holds v2 already.
    local pids = worker_pids(server)
    mark = server:mark()
    kill("KILL", pids[1])
    local new_pid = wait_restart(server, 1, "was killed by SIGKILL", mark)
    assert_closed(old[1])
    local client = connect_to_version(server, 1, "v2")
    assert.equal("v2:after", ask(client, "after"))
    client:close()
    assert.equal(new_pid, worker_pids(server)[1])
    assert.equal(0, server:count_log("worker 1: reloaded", mark))
    assert.equal("v1:kept", ask(old[2], "kept"))

    -- The restarted worker reloads on the next SIGHUP too.
    replace(script, versioned("v3"))
    mark = server:mark()
    server:signal("HUP")
    wait_reloaded(server, 1, "SIGHUP", mark)
    wait_reloaded(server, 2, "SIGHUP", mark)
    connect_to_version(server, 1, "v3"):close()
    connect_to_version(server, 2, "v3"):close()
    assert.equal("v1:last", ask(old[2], "last"))
    old[2]:close()
    server:stop()
  end)

  it("reloads every worker when --watch sees the script change", function()
    local script = helper.script(versioned("v1"))
    local server = start(script, { args = { "--workers", "2", "--watch" } })
    connect_to_version(server, 1, "v1"):close()
    connect_to_version(server, 2, "v1"):close()
    local mark = server:mark()
    replace(script, versioned("v2"))
    server:wait_log("%[info%] reloaded " .. literal(script) .. " in [%d.]+ ms %(changed: "
      .. literal(script) .. "%)", 10, mark)
    server:wait_log("%[info%] reloading 2 workers\n", 10, mark)
    wait_reloaded(server, 1, "SIGHUP", mark)
    wait_reloaded(server, 2, "SIGHUP", mark)
    connect_to_version(server, 1, "v2"):close()
    connect_to_version(server, 2, "v2"):close()
    -- Only the parent watches: one reload per process for one edit.
    assert.equal(1, server:count_log("reloading 2 workers"))
    assert.equal(3, server:count_log("reloaded "))
    server:stop()
  end)

  -- A bad deploy or a half-saved file: the parent's reload fails, so the workers are not asked
  -- to reload, and a worker restarted meanwhile is forked with the last version that loaded.
  it("a worker restarted while the script is broken serves the last version that loaded",
    function()
      local script = helper.script(versioned("v1"))
      local server = start(script, { args = TWO })
      replace(script, versioned("v2"))
      local mark = server:mark()
      server:signal("HUP")
      wait_reloaded(server, 1, "SIGHUP", mark)
      wait_reloaded(server, 2, "SIGHUP", mark)
      replace(script, "local x = = 1\n")
      mark = server:mark()
      server:signal("HUP")
      server:wait_log("%[error%] reload failed: " .. literal(script) .. ":1: ", 10, mark)
      kill("KILL", worker_pids(server)[1])
      wait_restart(server, 1, "was killed by SIGKILL", mark)
      assert.equal(0, server:count_log("reloading 2 workers", mark))
      assert.equal(0, server:count_log("worker %d: reload", mark))
      connect_to_version(server, 1, "v2"):close()
      connect_to_version(server, 2, "v2"):close()
      server:stop()
    end)
end)

describe("serve --workers 2 on a unix socket", function()
  after_each(cleanup)

  it("serves it through workers' deaths and removes its file at exit", function()
    local path = helper.dir() .. "/workers.sock"
    local server = start(helper.handler(WHO), { listen = "unix:" .. path, args = TWO })
    assert.equal(path, server.listeners[1].unix)
    local original = worker_pids(server)
    local clients, on = {}, {}
    for i = 1, 10 do
      local client, worker, workers = connect_checked(server)
      assert.equal(2, workers)
      clients[i] = client
      on[worker] = on[worker] or {}
      table.insert(on[worker], client)
    end

    -- Kill the worker of the first connection, then the other one: connections afterwards are
    -- served by restarted workers only.
    local first = (which(clients[1]))
    local second = 3 - first
    for _, id in ipairs { first, second } do
      local mark = server:mark()
      kill("KILL", worker_pids(server)[id])
      wait_restart(server, id, "was killed by SIGKILL", mark)
      assert.is_true(socket_exists(path), "the socket file went with worker " .. id)
      for i = 1, 10 do
        local client, _, workers = connect_checked(server)
        assert.equal(2, workers, "connection " .. i)
        client:close()
      end
    end
    for _, client in ipairs(on[first]) do assert_closed(client) end
    for id = 1, 2 do
      assert.is_true(process_gone(original[id]))
    end

    -- A worker that shuts down by itself (SIGTERM to it alone) must leave the file too.
    local mark = server:mark()
    kill("TERM", worker_pids(server)[1])
    wait_restart(server, 1, "exited with status 0", mark)
    assert.is_true(socket_exists(path), "the socket file went with a worker's clean exit")
    for i = 1, 10 do
      local client, _, workers = connect_checked(server)
      assert.equal(2, workers, "connection " .. i)
      client:close()
    end

    server:stop()
    assert.is_false(path_exists(path), "the socket file is left after the parent's exit")
  end)
end)

describe("serve --workers 2 on a udp listener", function()
  after_each(cleanup)

  -- A LuaSocket UDP socket connected to the server's udp: listener.
  local function udp_client(server)
    local host = server.listeners[1].host:match("^udp:(.+)$")
    assert(host, "not a udp listener: " .. server.listeners[1].address)
    local client = assert(socket.udp())
    assert(client:settimeout(helper.IO_TIMEOUT))
    assert(client:setpeername(host, server.listeners[1].port))
    return client
  end

  it("answers datagrams with examples/udp_echo.lua", function()
    local server = start("examples/udp_echo.lua", { listen = "udp:127.0.0.1:0", args = TWO })
    assert.equal(2, server:count_log("worker %d started"))
    local client = udp_client(server)
    for i = 1, 30 do
      local datagram = "datagram " .. i .. string.rep("x", i * 7)
      assert(client:send(datagram))
      local echoed, err = client:receive(65536)
      assert.equal(datagram, echoed, tostring(err))
    end
    server:stop()
  end)

  it("answers from the workers and through their restarts", function()
    local server = start(helper.handler([[
      return { datagram = function(data, peer)
        peer:reply(luasock.worker .. " " .. luasock.workers .. " " .. data)
      end }]]), { listen = "udp:127.0.0.1:0", args = TWO })
    local original = worker_pids(server)
    local client = udp_client(server)
    local function check_answers(what)
      for i = 1, 10 do
        local datagram = what .. " " .. i
        assert(client:send(datagram))
        local answer, err = client:receive(65536)
        assert(answer, what .. ": no answer to datagram " .. i .. ": " .. tostring(err))
        local worker, workers, data = answer:match("^(%d+) (%d+) (.*)$")
        assert.is_truthy(worker == "1" or worker == "2", answer)
        assert.equal("2", workers)
        assert.equal(datagram, data)
      end
    end
    check_answers("first")
    for id = 1, 2 do
      local mark = server:mark()
      kill("KILL", worker_pids(server)[id])
      wait_restart(server, id, "was killed by SIGKILL", mark)
      check_answers("after worker " .. id .. " died")
    end
    assert.is_true(process_gone(original[1]) and process_gone(original[2]))
    server:stop()
  end)
end)

describe("serve --workers: the command line", function()
  after_each(cleanup)

  it("refuses 0, 1025, a word and a missing value with status 2", function()
    for _, value in ipairs { "0", "x", "1025", "-1", "2x", "" } do
      local code, _, err = helper.run { "serve", "examples/echo.lua", "--listen", "127.0.0.1:0",
        "--workers", value }
      assert.equal(2, code, "--workers '" .. value .. "': " .. err)
      assert.is_truthy(err:find("luasock: --workers: expected a number from 1 to 1024 or 'auto', "
        .. "got '" .. value .. "'", 1, true), err)
    end
    local code, _, err = helper.run { "serve", "examples/echo.lua", "--workers" }
    assert.equal(2, code, err)
    assert.is_truthy(err:find("option '--workers' needs a value", 1, true), err)
  end)

  it("starts one worker per core with --workers auto", function()
    local pipe = assert(io.popen("nproc"))
    local cores = tonumber(pipe:read("l"))
    pipe:close()
    assert.is_number(cores)
    local server = start(helper.handler(WHO), { args = { "--workers", "auto" } })
    if cores == 1 then
      -- One worker means no parent: the server serves by itself.
      assert.equal(0, server:count_log("started %(pid"))
    else
      assert.equal(cores, server:count_log("%[info%] worker %d+ started %(pid %d+%)$"))
      for id = 1, cores do
        assert.equal(1, server:count_log("worker " .. id .. " started %(pid"), "worker " .. id)
      end
    end
    local client = server:connect()
    local worker, workers = which(client)
    assert.equal(cores, workers)
    assert.is_truthy(worker >= 1 and worker <= cores, worker)
    client:close()
    local log = server:stop()
    if cores > 1 then
      assert.is_truthy(log:find("SIGTERM: stopping " .. cores .. " workers", 1, true), log)
    end
  end)

  it("refuses a port that a server without --workers listens on, and the other way round",
    function()
      local plain = start(helper.handler(WHO))
      local code, _, err = helper.run({ "serve", helper.handler(WHO), "--listen",
        "127.0.0.1:" .. plain.port, "--workers", "2" }, { timeout = 10 })
      assert.equal(1, code, err)
      assert.is_truthy(err:find("address in use", 1, true), err)
      assert.is_nil(err:find("started (pid", 1, true), err)
      plain:stop()

      local workers = start(helper.handler(WHO), { args = TWO })
      code, _, err = helper.run({ "serve", helper.handler(WHO), "--listen",
        "127.0.0.1:" .. workers.port }, { timeout = 10 })
      assert.equal(1, code, err)
      assert.is_truthy(err:find("address in use", 1, true), err)
      workers:stop()
    end)

  -- Every TCP socket of a --workers server has SO_REUSEPORT, which would let a second --workers
  -- server join the first one's port and split its connections.
  it("refuses a port that another --workers server listens on", function()
    local first = start(helper.handler(WHO), { args = TWO })
    local code, _, err = helper.run({ "serve", helper.handler(WHO), "--listen",
      "127.0.0.1:" .. first.port, "--workers", "2" }, { timeout = 5 })
    assert.equal(1, code, err)
    assert.is_truthy(err:find("address in use", 1, true), err)
    first:stop()
  end)

  it("serves from the one process with --workers 1", function()
    local server = start(helper.handler(WHO), { args = { "--workers", "1" } })
    assert.equal(0, server:count_log("started %(pid"))
    local client = server:connect()
    assert.same({ 1, 1 }, { which(client) })
    assert.equal("echo:one", ask(client, "one"))
    client:close()
    local log = server:stop()
    assert.is_nil(log:find("stopping", 1, true), log)
  end)

  it("examples/chat.lua refuses --workers 2 with status 1 and runs with --workers 1", function()
    local code, _, err = helper.run { "serve", "examples/chat.lua", "--listen", "127.0.0.1:0",
      "--workers", "2" }
    assert.equal(1, code, err)
    assert.is_truthy(err:find("--workers", 1, true), err)
    assert.is_nil(err:find("listening on", 1, true), err)
    assert.is_nil(err:find("started (pid", 1, true), err)

    local server = start("examples/chat.lua", { args = { "--workers", "1" } })
    local client = server:connect()
    assert.is_truthy(client:receive("*l"):find("welcome to the chat", 1, true))
    client:close()
    server:stop()
  end)
end)
