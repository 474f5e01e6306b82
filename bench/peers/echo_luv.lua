-- echo_luv.lua: benchmark peer (bench/run): a Lua 5.4 + luv (libuv) callback echo server. Writes
-- every chunk back; with --line, splits the input into lines and writes each line back with its
-- newline. Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
-- Run: lua5.4 bench/peers/echo_luv.lua [--listen HOST:PORT] [--line]
local uv = require "luv"

local listen, line_mode = "127.0.0.1:0", false
local i = 1
while arg[i] do
  if arg[i] == "--listen" then
    i = i + 1
    listen = arg[i]
  elseif arg[i] == "--line" then
    line_mode = true
  else
    error("usage: lua5.4 echo_luv.lua [--listen HOST:PORT] [--line]; got " .. arg[i])
  end
  i = i + 1
end
local host, port = listen:match("^(.*):(%d+)$")

local HIGH_WATER = 65536

-- Writes data; pauses reading while more than HIGH_WATER bytes wait in libuv's write queue.
local function write(client, data, on_read)
  if client:get_write_queue_size() + #data <= HIGH_WATER then
    client:write(data)
    return
  end
  client:read_stop()
  client:write(data, function()
    if not client:is_closing() then
      client:read_start(on_read)
    end
  end)
end

local function echo_bytes(client)
  local function on_read(err, data)
    if err or not data then
      client:close()
      return
    end
    write(client, data, on_read)
  end
  return on_read
end

local function echo_lines(client)
  local pending = ""
  local function on_read(err, data)
    if err or not data then
      client:close()
      return
    end
    if pending ~= "" then
      data = pending .. data
    end
    local start = 1
    while true do
      local nl = data:find("\n", start, true)
      if not nl then
        break
      end
      write(client, data:sub(start, nl), on_read)
      start = nl + 1
    end
    pending = data:sub(start)
  end
  return on_read
end

local server = uv.new_tcp()
assert(server:bind(host, tonumber(port)))
assert(server:listen(511, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  client:read_start((line_mode and echo_lines or echo_bytes)(client))
end))
io.stderr:write(("listening on %s:%d\n"):format(host, server:getsockname().port))

-- SIGTERM and SIGINT stop the loop; SIGPIPE (a write to a client that has gone) must not kill
-- the process: with a handler installed the write fails with EPIPE instead.
for name, action in pairs { sigterm = uv.stop, sigint = uv.stop, sigpipe = function() end } do
  uv.new_signal():start(name, action)
end
uv.run()
