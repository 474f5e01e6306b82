-- fork_spec.lua -- issue 12: what `serve --workers N` must do around fork. Covered here:
-- * item 9: each worker reseeds math.random (two workers' first math.random(1, 2^40) differ);
--   output the script's top level wrote to stdout without flushing appears once in the
--   server's stdout, not once per process (fflush before fork).
-- * item 14: a worker killed by a real-time signal is logged as `was killed by SIGRTMIN+1`,
--   never `SIG(null)`.
--
-- Readiness comes from the "worker N started (pid P)" log lines and from replies; which worker
-- serves a connection is asked over the connection (as in workers_spec.lua).
local helper = require "helper"

local TWO = { "--workers", "2" }

-- Every server started by the current test, for cleanup.
local started = {}

local function start(script, opts)
  local server = helper.start(script, opts)
  started[#started + 1] = server
  return server
end

-- The pid of each worker (by number): the latest "worker N started (pid P)" line of each,
-- after byte `from`.
local function worker_pids(server, from)
  local pids = {}
  for id, pid in server:log():sub((from or 0) + 1):gmatch("worker (%d+) started %(pid (%d+)%)") do
    pids[tonumber(id)] = tonumber(pid)
  end
  return pids
end

-- helper.cleanup, then SIGKILL for workers a failed test left running (helper.cleanup kills
-- only the parent).
local function cleanup()
  local pids = {}
  for _, server in ipairs(started) do
    for _, pid in pairs(worker_pids(server)) do pids[#pids + 1] = pid end
  end
  started = {}
  helper.cleanup()
  for _, pid in ipairs(pids) do
    if helper.read_file("/proc/" .. pid .. "/cmdline"):find("luasock", 1, true) then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
  end
end

-- Answers "draw" with report(worker, workers, the first number this worker's math.random
-- gave), drawn at the first "draw" the worker serves.
local DRAW = [[
  local first_draw
  return { handle = function(conn)
    while conn:receive() == "draw" do
      first_draw = first_draw or math.random(1, 2^40)
      report(conn, luasock.worker, luasock.workers, first_draw)
    end
  end }]]

-- Connects until worker `id` serves; returns that worker's first draw.
local function draw_of_worker(server, id)
  return helper.eventually(function()
    local client = server:connect()
    assert(client:send("draw\n"))
    local reply = helper.read_report(client)
    client:close()
    assert.equal(2, reply[2])
    if reply[1] == id then return reply[3] end
  end, 10, "a connection served by worker " .. id)
end

describe("issue 12 item 9: serve --workers 2", function()
  after_each(cleanup)

  it("reseeds math.random in each worker: their first draws differ", function()
    local server = start(helper.handler(DRAW), { args = TWO })
    local first, second = draw_of_worker(server, 1), draw_of_worker(server, 2)
    assert.is_true(math.type(first) == "integer" and first >= 1 and first <= 2^40, first)
    assert.are_not.equal(first, second)
    -- Each worker keeps its own sequence: a second connection gets the same first draw.
    assert.equal(first, draw_of_worker(server, 1))
    server:stop()
  end)

  it("writes output the top level left in the stdout buffer once, not once per process",
    function()
      local server = start(helper.handler("io.write('top level of the script\\n')\n" .. DRAW),
        { args = TWO })
      draw_of_worker(server, 1)
      draw_of_worker(server, 2)
      server:stop()
      local _, copies = server:stdout():gsub("top level of the script\n", "")
      assert.equal(1, copies, "stdout:\n" .. server:stdout())
    end)
end)

describe("issue 12 item 14: a worker killed by a real-time signal", function()
  after_each(cleanup)

  it("is logged as 'was killed by SIGRTMIN+1' and restarted", function()
    local server = start(helper.handler(DRAW), { args = TWO })
    local pid = worker_pids(server)[1]
    assert.is_number(pid)
    local mark = server:mark()
    assert(os.execute("kill -s RTMIN+1 " .. pid))
    local cause = server:wait_log("%[warn%] worker 1 %(pid " .. pid .. "%) ([^\n]-) after "
      .. "[%d.]+ s; restarting it in [%d.]+ s\n", 10, mark)
    assert.equal("was killed by SIGRTMIN+1", cause)
    local new_pid = tonumber(server:wait_log("worker 1 started %(pid (%d+)%)", 10, mark))
    assert.are_not.equal(pid, new_pid)
    draw_of_worker(server, 1)
    local log = server:stop()
    assert.is_nil(log:find("(null)", 1, true), log)
  end)
end)
