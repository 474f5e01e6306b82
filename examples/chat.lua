-- chat.lua: a line-based chat room, the tutorials' select() chat server done properly.
-- Everything a member types is said to everyone else as "<nick> text"; commands:
--   /nick NAME   take a name (letters, digits, _ and -, at most 20, unique)
--   /who         list who is here
--   /me ACTION   say "* nick ACTION"
--   /quit        leave
-- Joins and leaves are announced. A member whose connection dies for any reason (reset,
-- timeout, or not reading while others talk) is removed by on_close. The room lives in
-- luasock.state, so editing this file under `luasock serve --watch` keeps everyone in it.
local luasock = require "luasock"

if luasock.workers > 1 then
  error("chat.lua keeps its room in one process, so members on different workers would not "
    .. "see each other: run it without --workers (or --workers 1)", 0)
end

local M = {
  listen = "127.0.0.1:9093",
  idle_timeout = false, -- people sit in a chat room quietly for hours
  first_byte_timeout = false, -- and may only read
  max_line = 1024,
}

local room = luasock.state.chat or { nick_of = {}, conn_of = {}, guests = 0 }
luasock.state.chat = room
local nick_of = room.nick_of -- conn -> nick of every member
local conn_of = room.conn_of -- nick -> conn

local function broadcast(from, line)
  for conn in pairs(nick_of) do
    if conn ~= from then
      conn:post(line)
    end
  end
end

local function join(conn)
  room.guests = room.guests + 1
  local nick = "guest" .. room.guests
  nick_of[conn], conn_of[nick] = nick, conn
  conn:post("* welcome to the chat, ", nick, "! commands: /nick NAME, /who, /me ACTION, /quit\n")
  broadcast(conn, "* " .. nick .. " joined\n")
end

local function rename(conn, wanted)
  local old = nick_of[conn]
  if not wanted:match("^[%w_%-]+$") or #wanted > 20 then
    return conn:post("* names are 1 to 20 letters, digits, _ or -\n")
  end
  if conn_of[wanted] then
    return conn:post("* ", wanted, " is taken\n")
  end
  conn_of[old], conn_of[wanted], nick_of[conn] = nil, conn, wanted
  conn:post("* you are now ", wanted, "\n")
  broadcast(conn, "* " .. old .. " is now " .. wanted .. "\n")
end

local function who(conn)
  local nicks = {}
  for nick in pairs(conn_of) do
    nicks[#nicks + 1] = nick
  end
  table.sort(nicks)
  conn:post("* here: ", table.concat(nicks, ", "), "\n")
end

-- Returns false when the member leaves.
local function command(conn, line)
  local name, rest = line:match("^/(%S+)%s*(.*)$")
  if name == "nick" then
    rename(conn, rest)
  elseif name == "who" then
    who(conn)
  elseif name == "me" then
    broadcast(conn, "* " .. nick_of[conn] .. " " .. rest .. "\n")
  elseif name == "quit" then
    conn:post("* bye\n")
    return false
  else
    conn:post("* unknown command /", name or "", "\n")
  end
  return true
end

function M.handle(conn)
  join(conn)
  while true do
    local line, err = conn:receive("*l")
    if err == "line too long" then
      conn:post("* line too long (at most ", M.max_line, " bytes)\n")
    elseif not line then
      return
    else
      line = line:gsub("%c", "") -- no terminal escape sequences for the others
      if line:sub(1, 1) == "/" then
        if not command(conn, line) then
          return
        end
      elseif line ~= "" then
        broadcast(conn, "<" .. nick_of[conn] .. "> " .. line .. "\n")
      end
    end
  end
end

function M.on_close(conn, reason)
  local nick = nick_of[conn]
  if nick then
    nick_of[conn], conn_of[nick] = nil, nil
    broadcast(conn, "* " .. nick .. " left" .. (reason == "closed" and "" or " (" .. reason .. ")") .. "\n")
  end
end

return M
