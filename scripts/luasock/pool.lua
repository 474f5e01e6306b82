-- luasock.pool: the keep-alive pools of outgoing connections. conn:setkeepalive parks a
-- connection under the pool name luasock.connect gave it (the connection keeps it, in C), and a
-- later luasock.connect with the same name takes it back instead of connecting again. Parking is
-- the core's (core.park): a parked connection belongs to no task, and the core closes it if its
-- peer speaks or closes, or when its idle time is up; what is left here is the lists, newest
-- last. Nothing here allocates between a connection's socket and its owner: at the memory cap,
-- a raise there would leave the socket open until its task ends.
local core = require "luasock.core"

local pool = {}

local DEFAULT_IDLE = 60 -- seconds a parked connection may wait to be reused
local DEFAULT_SIZE = 30 -- parked connections kept per pool name

local lists = {} -- name -> parked conns, newest last

-- The name luasock.connect files a connection under: the caller's, or host:port. TLS
-- connections have pools of their own, so that a plaintext one is never handed to a caller who
-- asked for TLS.
function pool.name(host, port, opts)
  local name = opts.pool or (port == 0 and host or host .. ":" .. port)
  if type(name) ~= "string" then
    error("luasock.connect: pool must be a string", 3)
  end
  return opts.tls and name .. "|tls" or name
end

-- A parked connection of that name for the calling task, or nil.
function pool.take(name)
  local list = lists[name]
  while list and #list > 0 do
    local conn = table.remove(list)
    if core.unpark(conn) then
      return conn
    end
  end
end

-- Forgets the connections of list that closed while parked.
local function prune(list)
  local kept = 1
  for i = 1, #list do
    local conn = list[i]
    list[i] = nil
    if core.parked(conn) then
      list[kept] = conn
      kept = kept + 1
    end
  end
end

-- conn:setkeepalive([idle [, size]]) -> true | nil, err
function pool.setkeepalive(conn, idle, size)
  local name = core.pool_name(conn)
  if not name then
    return nil, "not a connection made by luasock.connect"
  end
  size = size or DEFAULT_SIZE
  if math.type(size) ~= "integer" or size < 1 then
    error("bad argument #2 to 'setkeepalive' (pool size must be a positive integer)", 2)
  end
  local list = lists[name] or {}
  lists[name] = list
  prune(list)
  -- The list grows before the connection is parked: a raise here leaves it with its task.
  list[#list + 1] = conn
  local ok, err = core.park(conn, idle == nil and DEFAULT_IDLE or idle)
  if not ok then
    list[#list] = nil
    return nil, err
  end
  while #list > size do
    table.remove(list, 1):close()
  end
  return true
end

return pool
