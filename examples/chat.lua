-- chat.lua: a line-based chat room, the tutorials' select() chat server done properly.
-- Everything a member types is said to everyone else as "<nick> text"; commands:
--   /nick NAME   take a name (letters, digits, _ and -, at most 20, unique)
--   /who         list who is here
--   /me ACTION   say "* nick ACTION"
--   /quit        leave
-- Joins and leaves are announced. A member whose connection dies for any reason (reset,
-- timeout, or not reading while others talk) is removed by on_close. The room lives in
-- luasock.state, so editing this file under `luasock serve --watch` keeps everyone in it.
-- Flood control: a member who talks faster than the others read is paused (its lines are not
-- read) until they have caught up; a member who stays behind is dropped by the core's output
-- limits (soft_queue for soft_queue_seconds, or max_queue at once), which ends the pause.
-- Lines travel through luasock.pubsub: with `--pubsub redis://HOST:PORT`, one room spans every
-- worker and every luasock process using that Redis, which also keeps the names and /who.
local luasock = require "luasock"
local pubsub = require "luasock.pubsub"

if luasock.workers > 1 and pubsub.backend() == "in-process" then
  error("chat.lua keeps its room in one process unless it has a message bus: with --workers, "
    .. "give --pubsub redis://HOST:PORT so that members on different workers see each other", 0)
end

local M = {
  listen = "127.0.0.1:9093",
  idle_timeout = false, -- people sit in a chat room quietly for hours
  first_byte_timeout = false, -- and may only read
  max_line = 1024,
  -- A member whose queue stays above soft_queue for soft_queue_seconds is dropped (and one
  -- whose queue passes max_queue, 256 KiB, at once); the flood control below pauses a talker
  -- whose lines leave someone above soft_queue, until that one is back at the mark or gone.
  soft_queue = 65536,
  soft_queue_seconds = 10,
}

local room = luasock.state.chat or { nick_of = {}, conn_of = {}, guests = 0 }
luasock.state.chat = room
local nick_of = room.nick_of -- conn -> nick of this node's members
local conn_of = room.conn_of -- nick -> conn
-- The same members as a list, to hand lines out: a numeric loop over a list costs far less per
-- member than pairs() over a table keyed by connections (whose next() is a C call that looks
-- the key up again). A room kept from an older version of this file gets its list here.
if not room.members then
  room.members, room.slot_of = {}, {}
  for conn in pairs(nick_of) do
    room.members[#room.members + 1] = conn
    room.slot_of[conn] = #room.members
  end
end
local members, slot_of = room.members, room.slot_of -- slot_of: conn -> its index in members

local function add_member(conn, nick)
  nick_of[conn], conn_of[nick] = nick, conn
  members[#members + 1] = conn
  slot_of[conn] = #members
end

-- The last member takes the leaver's slot.
local function remove_member(conn, nick)
  nick_of[conn], conn_of[nick] = nil, nil
  local slot, last = slot_of[conn], members[#members]
  members[slot], slot_of[last] = last, slot
  members[#members], slot_of[conn] = nil, nil
end

-- Who is in the room across every node. With Redis, a name is claimed with SET NX and each
-- node keeps a set of its members; both expire unless the node refreshes them, so the members of
-- a node that dies vanish within MEMBER_TTL seconds. Without Redis (or while it is away) this
-- node's own members are all there is, which is what one process needs.
local directory = {}

local MEMBER_TTL = tonumber(os.getenv("CHAT_MEMBER_TTL")) or 30

-- Deletes a name only if this member still holds it.
local RELEASE = [[
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0]]

local function members_key()
  return "chat:members:" .. pubsub.node()
end

-- The member's owner token: which node and connection hold a name.
local function owner(conn)
  return pubsub.node() .. "/" .. conn:id()
end

-- Returns true if the name was free (in Redis, when it is there) and is now the member's.
function directory.claim(conn, nick)
  local r = pubsub.redis()
  if not r then
    return true
  end
  local ok, err = r:set("chat:nick:" .. nick, owner(conn), "NX", "EX", MEMBER_TTL)
  if err then
    luasock.log("warn", "chat: cannot claim '" .. nick .. "' in Redis: " .. err)
    return true
  end
  if ok then
    r:sadd(members_key(), nick)
    r:expire(members_key(), MEMBER_TTL)
  end
  return ok ~= nil
end

function directory.release(conn, nick)
  local r = pubsub.redis()
  if r then
    r:eval(RELEASE, 1, "chat:nick:" .. nick, owner(conn))
    r:srem(members_key(), nick)
  end
end

-- A fresh guest name: numbered across all nodes when Redis is there.
function directory.guest_name()
  local r = pubsub.redis()
  local n = r and r:incr("chat:guests")
  if not n then
    room.guests = room.guests + 1
    n = room.guests
  end
  return "guest" .. n
end

-- Every member's name, sorted: all nodes' (from Redis), else this node's.
function directory.everyone()
  local names, seen = {}, {}
  local r = pubsub.redis()
  local keys = r and r:keys("chat:members:*")
  local sets = keys and #keys > 0 and r:sunion(table.unpack(keys)) or {}
  for nick in pairs(conn_of) do
    sets[#sets + 1] = nick
  end
  for _, nick in ipairs(sets) do
    if not seen[nick] then
      seen[nick], names[#names + 1] = true, nick
    end
  end
  table.sort(names)
  return names
end

-- Renews this node's names and member set (and writes back what an outage lost).
local function refresh()
  local r = pubsub.redis()
  if not r then
    return
  end
  local commands = { { "DEL", members_key() } }
  for nick, conn in pairs(conn_of) do
    commands[#commands + 1] = { "SET", "chat:nick:" .. nick, owner(conn), "EX", MEMBER_TTL }
    commands[#commands + 1] = { "SADD", members_key(), nick }
  end
  commands[#commands + 1] = { "EXPIRE", members_key(), MEMBER_TTL }
  r:pipeline(commands)
end

-- Started once per process (the room outlives reloads, and so does this coroutine).
function directory.keep_fresh()
  if room.refreshing or pubsub.backend() == "in-process" then
    return
  end
  room.refreshing = true
  luasock.spawn(function()
    while true do
      luasock.sleep(MEMBER_TTL / 3)
      refresh()
    end
  end)
end


-- Whoever said it, as "node/conn id": the speaker hears everyone but themself.
local function speaker(conn)
  return (pubsub.node() or "") .. "/" .. conn:id()
end

-- While a member's own line is being handed out here (pubsub delivers to this node's members at
-- once): the members it leaves more than soft_queue bytes behind, a list. Otherwise nil.
local behind

-- The member whose line broadcast is publishing. pubsub hands a line to this node's members
-- before publish returns, so the speaker is known here without building every member's
-- "node/id" to compare (with 1,000 members that cost more than the posts themselves).
local publishing

-- Every node, this one included, hands each line to its own members.
pubsub.subscribe("chat", function(message)
  local from, line = message:match("^([^\n]*)\n(.*)$")
  local skip = publishing and speaker(publishing) == from and publishing
  -- Members leave in their own on_close, never during this loop: posting does not yield.
  for i = 1, #members do
    local conn = members[i]
    if conn ~= skip then
      local sent, queued = conn:post(line)
      if behind and sent and queued > M.soft_queue then
        behind[#behind + 1] = conn
      end
    end
  end
end)
directory.keep_fresh()

local function broadcast(from, line)
  publishing = from
  pubsub.publish("chat", speaker(from) .. "\n" .. line)
  publishing = nil
end

-- A member's line, with flood control: its handler reads its next line only once everyone this
-- line left behind is back at soft_queue, or has been dropped for staying above it. The wait
-- ends either way: the core drops a member that stays above the mark for soft_queue_seconds.
-- So a flood throttles the flooder, and members who keep reading are not dropped.
local function say(conn, line)
  behind = {}
  broadcast(conn, line)
  local late = behind
  behind = nil
  for _, member in ipairs(late) do
    member:drain(M.soft_queue)
  end
end

local function join(conn)
  local nick = directory.guest_name()
  while not directory.claim(conn, nick) do
    nick = directory.guest_name()
  end
  add_member(conn, nick)
  conn:post("* welcome to the chat, ", nick, "! commands: /nick NAME, /who, /me ACTION, /quit\n")
  broadcast(conn, "* " .. nick .. " joined\n")
end

local function rename(conn, wanted)
  local old = nick_of[conn]
  if not wanted:match("^[%w_%-]+$") or #wanted > 20 then
    return conn:post("* names are 1 to 20 letters, digits, _ or -\n")
  end
  if conn_of[wanted] or not directory.claim(conn, wanted) then
    return conn:post("* ", wanted, " is taken\n")
  end
  directory.release(conn, old)
  conn_of[old], conn_of[wanted], nick_of[conn] = nil, conn, wanted
  conn:post("* you are now ", wanted, "\n")
  broadcast(conn, "* " .. old .. " is now " .. wanted .. "\n")
end

local function who(conn)
  conn:post("* here: ", table.concat(directory.everyone(), ", "), "\n")
end

-- Returns false when the member leaves.
local function command(conn, line)
  local name, rest = line:match("^/(%S+)%s*(.*)$")
  if name == "nick" then
    rename(conn, rest)
  elseif name == "who" then
    who(conn)
  elseif name == "me" then
    say(conn, "* " .. nick_of[conn] .. " " .. rest .. "\n")
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
        say(conn, "<" .. nick_of[conn] .. "> " .. line .. "\n")
      end
    end
  end
end

function M.on_close(conn, reason)
  local nick = nick_of[conn]
  if nick then
    remove_member(conn, nick)
    directory.release(conn, nick)
    broadcast(conn, "* " .. nick .. " left" .. (reason == "closed" and "" or " (" .. reason .. ")") .. "\n")
  end
end

return M
