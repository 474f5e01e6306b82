-- chat_client.lua: a member of examples/chat.lua's room, from the terminal. What others say is
-- printed as it arrives, even while you are half-way through typing a line; each line you type is
-- said to the room (/nick NAME, /who, /me ACTION and /quit work as in chat.lua). The tutorials'
-- select() chat client, as two tasks: one reads the socket and writes to stdout, the other reads
-- stdin and sends its lines. It ends when either side ends: the server closes, or input ends
-- (Ctrl-D, or the end of a pipe, whose last line is sent first); then it says so on stderr. At
-- the end of input it stops sending and waits (up to LAST_WORDS seconds) for the server to close,
-- so the answers to the last lines are printed too.
-- Run: build/luasock run examples/chat_client.lua HOST PORT
local luasock = require "luasock"

local host, port = arg[1], math.tointeger(tonumber(arg[2] or ""))
if not host or not port then
  io.stderr:write("usage: luasock run examples/chat_client.lua HOST PORT\n")
  return 2
end

local conn, err = luasock.connect(host, port, { timeout = 10 })
if not conn then
  io.stderr:write(("chat_client: connect %s:%d: %s\n"):format(host, port, err))
  return 1
end
conn:settimeout(nil) -- a chat room may stay quiet for hours

local LAST_WORDS = 5

local ended = luasock.queue() -- why the session ended, from whichever side ends first
local input_ended = false

local function listen()
  while true do
    local data, why = conn:receiveany()
    if not data then
      if input_ended then
        return ended:push("end of input")
      end
      return ended:push(why == "closed" and "the server closed the connection" or why)
    end
    luasock.stdout:send(data)
  end
end

local function type_lines()
  while true do
    local line, why, partial = luasock.stdin:receive("*l")
    if not line and partial ~= nil and partial ~= "" then
      line = partial
    end
    if line and not conn:send(line, "\n") then
      return ended:push("the server closed the connection")
    end
    if why then
      input_ended = true
      conn:shutdown("send")
      luasock.sleep(LAST_WORDS)
      return ended:push("end of input")
    end
  end
end

local listener = luasock.spawn(listen)
local typist = luasock.spawn(type_lines)
local why = ended:pop()
listener:cancel()
typist:cancel()
conn:close()
luasock.stderr:send("chat_client: ", why, "\n")
return 0
