-- luasock.ngx_thread: OpenResty's light threads (ngx.thread.spawn, wait, kill) as luasock tasks,
-- for require "luasock.ngx". One difference: a spawned thread starts on the loop's next
-- iteration, not at once until its first wait as in OpenResty.
local luasock = require "luasock"

local M = {}

local Thread = {}
Thread.__index = Thread

function Thread:__tostring()
  return "thread (" .. (self.results and "ended" or "running") .. ")"
end

-- Records how a thread ended and wakes those waiting for it.
local function ended(thread, results)
  thread.results = results
  for queue in pairs(thread.waiters) do
    queue:push(thread)
  end
end

local function log_error(err)
  luasock.log("error", debug.traceback("ngx.thread: " .. tostring(err), 2))
  return err
end

-- spawn(fn, ...) -> thread: fn(...) runs in a coroutine of its own; an error in it is logged and
-- returned by wait.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local thread = setmetatable({ waiters = {} }, Thread)
  thread.task = luasock.spawn(function(...)
    ended(thread, table.pack(xpcall(fn, log_error, ...)))
  end, ...)
  return thread
end

local function check_thread(thread, i)
  if getmetatable(thread) ~= Thread then
    error("bad argument #" .. i .. " to 'wait' (thread expected, got " .. type(thread) .. ")", 3)
  end
end

local function outcome(thread)
  thread.waited = true
  return table.unpack(thread.results, 1, thread.results.n)
end

-- wait(thread, ...) -> true, results... | false, err: of the first of them to end.
function M.wait(...)
  local count = select("#", ...)
  if count == 0 then
    error("bad argument #1 to 'wait' (thread expected, got no value)", 2)
  end
  local threads = { ... }
  for i, thread in ipairs(threads) do
    check_thread(thread, i)
    if thread.waited then
      return nil, "already waited or killed"
    end
  end
  for _, thread in ipairs(threads) do
    if thread.results then
      return outcome(thread)
    end
  end
  local queue = luasock.queue()
  for _, thread in ipairs(threads) do
    thread.waiters[queue] = true
  end
  local first = queue:pop()
  for _, thread in ipairs(threads) do
    thread.waiters[queue] = nil
  end
  return outcome(first)
end

-- kill(thread) -> true | nil, err: stops a thread that is waiting (its connections close).
function M.kill(thread)
  if getmetatable(thread) ~= Thread then
    error("bad argument #1 to 'kill' (thread expected, got " .. type(thread) .. ")", 2)
  end
  if thread.results then
    return nil, "already terminated"
  end
  local ok, err = thread.task:cancel()
  if not ok then
    return nil, err
  end
  ended(thread, table.pack(false, "killed"))
  thread.waited = true
  return true
end

return M
