-- chat_luv.lua: benchmark peer (bench/run's chat workload): a minimal Lua 5.4 + luv (libuv) chat
-- room. A new member gets "* welcome to the chat, guestN!", everyone else "* guestN joined", and
-- every non-empty line a member sends is written to everyone else as "<guestN> line"; no
-- commands and no leave announcements. A member with more than 256 KiB unsent is dropped, like
-- examples/chat.lua's default max_queue. Prints "listening on HOST:PORT" on stderr; SIGTERM or
-- SIGINT stop it.
-- Run: lua5.4 bench/peers/chat_luv.lua [--listen HOST:PORT]
local uv = require "luv"

local listen = "127.0.0.1:0"
if arg[1] == "--listen" and arg[2] and not arg[3] then
  listen = arg[2]
elseif arg[1] then
  error("usage: lua5.4 chat_luv.lua [--listen HOST:PORT]; got " .. arg[1])
end
local host, port = listen:match("^(.*):(%d+)$")

local MAX_QUEUE = 262144
local members = {} -- client -> true
local guests = 0

local function leave(client)
  members[client] = nil
  if not client:is_closing() then
    client:close()
  end
end

local function broadcast(from, data)
  for member in pairs(members) do
    if member ~= from then
      member:write(data)
      if member:get_write_queue_size() > MAX_QUEUE then
        leave(member)
      end
    end
  end
end

local function join(client)
  guests = guests + 1
  local nick = "guest" .. guests
  local prefix = "<" .. nick .. "> "
  client:write("* welcome to the chat, " .. nick .. "!\n")
  broadcast(client, "* " .. nick .. " joined\n")
  members[client] = true
  local pending = ""
  client:read_start(function(err, data)
    if err or not data then
      leave(client)
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
      if nl > start then
        broadcast(client, prefix .. data:sub(start, nl))
      end
      start = nl + 1
    end
    pending = data:sub(start)
  end)
end

local server = uv.new_tcp()
assert(server:bind(host, tonumber(port)))
assert(server:listen(511, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  join(client)
end))
io.stderr:write(("listening on %s:%d\n"):format(host, server:getsockname().port))

-- SIGTERM and SIGINT stop the loop; SIGPIPE (a write to a client that has gone) must not kill
-- the process: with a handler installed the write fails with EPIPE instead.
for name, action in pairs { sigterm = uv.stop, sigint = uv.stop, sigpipe = function() end } do
  uv.new_signal():start(name, action)
end
uv.run()
