-- luasock.shdict: OpenResty's ngx.shared.DICT, per process. A script declares its dictionaries
-- with `shared_dicts = { cache = "10m" }`; the loader calls shdict.declare with their sizes in
-- bytes, and `dicts` maps each name to its dictionary (ngx.shared is that table). Every handler
-- and task of the process sees the same dictionaries, and a reload keeps their contents, as
-- nginx keeps its zones across a HUP. Under --workers each worker has its own: nothing is shared
-- between processes.
--
-- Memory is counted, not allocated: each item costs an estimate of what nginx's slab would
-- spend on it (a fixed overhead, its key and its value), and a dictionary that is full drops
-- its expired items, then (for set, add, replace and incr) its least recently used ones.
local luasock = require "luasock.core"

local M = {}

M.dicts = {} -- name -> dictionary

local ITEM_OVERHEAD = 64 -- bytes an item costs besides its key and value (nginx: its node)
local LIST_NODE_OVERHEAD = 32 -- bytes each value of a list costs besides itself
local NUMBER_SIZE = 8
local MAX_KEY = 65535
local DEFAULT_MAX_KEYS = 1024
local FLUSHED = -1 -- the expiry time of an item flush_all expired: long past
local EXPIRED_SCAN = 30 -- least recently used items looked at for expired ones, as nginx does

local Dict = {}
Dict.__index = Dict
Dict.__tostring = function(self)
  return "shared dict " .. self.name
end

local function value_size(value)
  if type(value) == "string" then
    return #value
  elseif type(value) == "boolean" then
    return 1
  end
  return NUMBER_SIZE
end

-- The dictionary a method was called on: a call with a dot instead of a colon is a mistake.
local function check_dict(self, method)
  if getmetatable(self) ~= Dict then
    error(("bad argument #1 to '%s' (shared dict expected; call it with ':')"):format(method), 3)
  end
end

-- The key as OpenResty takes it (a number becomes its string), or nil and the error.
local function check_key(key)
  if key == nil then
    return nil, "nil key"
  end
  if type(key) ~= "string" then
    key = tostring(key)
  end
  if #key == 0 then
    return nil, "empty key"
  elseif #key > MAX_KEY then
    return nil, "key too long"
  end
  return key
end

-- The absolute expiry time of a relative exptime in seconds (0 for never); raises for one that
-- is not a number of seconds.
local function expiry(exptime, method, arg, level)
  if exptime == nil or exptime == 0 then
    return 0
  end
  if type(exptime) ~= "number" or exptime ~= exptime or exptime < 0 then
    error(("bad argument #%d to '%s' (exptime must be a number of seconds, 0 for none)")
      :format(arg, method), level)
  end
  if exptime == math.huge then
    return 0
  end
  return luasock.now() + exptime
end

local function check_flags(flags, method, level)
  if flags == nil then
    return 0
  end
  if math.type(flags) ~= "integer" or flags < 0 or flags > 0xffffffff then
    error(("bad argument #4 to '%s' (flags must be an integer from 0 to 2^32-1)"):format(method),
      level)
  end
  return flags
end

local function expired(item, now)
  return item.expires ~= 0 and item.expires <= now
end

-- The least-recently-used order: a ring through a sentinel, the most recent first.
local function unlink(item)
  item.prev.next = item.next
  item.next.prev = item.prev
end

local function link_first(self, item)
  local head = self.ring
  item.next, item.prev = head.next, head
  head.next.prev = item
  head.next = item
end

local function touch(self, item)
  unlink(item)
  link_first(self, item)
end

local function remove(self, item)
  unlink(item)
  self.items[item.key] = nil
  self.used = self.used - item.size
end

-- Makes room for `needed` more bytes: drops expired items, and with `forcible` the least
-- recently used ones too, never `keep` (the item about to be replaced). Returns whether there
-- is room now, and whether an unexpired item was dropped.
local function make_room(self, needed, forcible, keep)
  if self.used + needed <= self.limit then
    return true, false
  end
  local now, forced = luasock.now(), false
  local item, looked = self.ring.prev, 0
  while item ~= self.ring and looked < EXPIRED_SCAN and self.used + needed > self.limit do
    local older = item.prev
    if item ~= keep and expired(item, now) then
      remove(self, item)
    end
    item, looked = older, looked + 1
  end
  item = self.ring.prev
  while forcible and item ~= self.ring and self.used + needed > self.limit do
    local older = item.prev
    if item ~= keep then
      remove(self, item)
      forced = true
    end
    item = older
  end
  return self.used + needed <= self.limit, forced
end

-- The live (unexpired) item of key, or nil.
local function live(self, key)
  local item = self.items[key]
  if item and not expired(item, luasock.now()) then
    return item
  end
end

-- Stores value under key for `method`. mode: "set" (always), "add" (only if absent), "replace"
-- (only if present); safe: never drop an unexpired item for room. Returns OpenResty's ok, err,
-- forcible.
local function store(self, method, mode, safe, key, value, exptime, flags)
  local err
  key, err = check_key(key)
  if not key then
    return nil, err, false
  end
  local kind = type(value)
  if kind ~= "string" and kind ~= "number" and kind ~= "boolean" and kind ~= "nil" then
    return nil, "bad value type", false
  end
  -- Raised at the level of the method's caller: store is called from the method.
  local expires = expiry(exptime, method, 3, 4)
  flags = check_flags(flags, method, 4)
  local old = self.items[key]
  local present = old and not expired(old, luasock.now())
  if mode == "add" and present then
    return false, "exists", false
  elseif mode == "replace" and not present then
    return false, "not found", false
  end
  if value == nil then
    if old then
      remove(self, old)
    end
    return true, nil, false
  end
  local size = ITEM_OVERHEAD + #key + value_size(value)
  -- An item larger than the whole dictionary must not empty it on its way to failing.
  local room, forced = false, false
  if size <= self.limit then
    room, forced = make_room(self, size - (old and old.size or 0), not safe, old)
  end
  if not room and safe then
    return nil, "no memory"
  elseif not room then
    return false, "no memory", forced
  end
  if old then
    remove(self, old)
  end
  local item = { key = key, value = value, flags = flags, expires = expires, size = size }
  self.items[key] = item
  self.used = self.used + size
  link_first(self, item)
  return true, nil, forced
end

-- dict:get(key) -> value, flags (flags only when not 0); nil for a missing or expired key.
function Dict:get(key)
  check_dict(self, "get")
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = live(self, key)
  if not item then
    return nil
  elseif item.list then
    return nil, "value is a list"
  end
  touch(self, item)
  if item.flags ~= 0 then
    return item.value, item.flags
  end
  return item.value
end

-- dict:get_stale(key) -> value, flags, stale: also an expired item not yet dropped.
function Dict:get_stale(key)
  check_dict(self, "get_stale")
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = self.items[key]
  if not item then
    return nil
  elseif item.list then
    return nil, "value is a list"
  end
  return item.value, item.flags ~= 0 and item.flags or nil, expired(item, luasock.now())
end

function Dict:set(key, value, exptime, flags)
  check_dict(self, "set")
  return store(self, "set", "set", false, key, value, exptime, flags)
end

function Dict:safe_set(key, value, exptime, flags)
  check_dict(self, "safe_set")
  return store(self, "safe_set", "set", true, key, value, exptime, flags)
end

function Dict:add(key, value, exptime, flags)
  check_dict(self, "add")
  return store(self, "add", "add", false, key, value, exptime, flags)
end

function Dict:safe_add(key, value, exptime, flags)
  check_dict(self, "safe_add")
  return store(self, "safe_add", "add", true, key, value, exptime, flags)
end

function Dict:replace(key, value, exptime, flags)
  check_dict(self, "replace")
  return store(self, "replace", "replace", false, key, value, exptime, flags)
end

function Dict:delete(key)
  check_dict(self, "delete")
  return store(self, "delete", "set", false, key, nil)
end

-- dict:incr(key, value [, init [, init_ttl]]) -> new value, nil, forcible | nil, err
function Dict:incr(key, value, init, init_ttl)
  check_dict(self, "incr")
  if type(value) ~= "number" then
    error(("bad argument #2 to 'incr' (number expected, got %s)"):format(type(value)), 2)
  elseif init ~= nil and type(init) ~= "number" then
    error(("bad argument #3 to 'incr' (number expected, got %s)"):format(type(init)), 2)
  elseif init_ttl ~= nil and init == nil then
    error("bad argument #4 to 'incr' (init_ttl needs init)", 2)
  end
  expiry(init_ttl, "incr", 4, 3)
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = live(self, key)
  if not item then
    if init == nil then
      return nil, "not found"
    end
    local ok, forcible
    ok, err, forcible = store(self, "incr", "set", false, key, init + value, init_ttl or 0)
    if not ok then
      return nil, err, forcible
    end
    return init + value, nil, forcible
  elseif type(item.value) ~= "number" then
    return nil, "not a number"
  end
  item.value = item.value + value
  touch(self, item)
  return item.value, nil, false
end

-- dict:expire(key, exptime) -> true | nil, "not found"; exptime 0: never.
function Dict:expire(key, exptime)
  check_dict(self, "expire")
  if exptime == nil then
    error("bad argument #2 to 'expire' (exptime expected)", 2)
  end
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local expires = expiry(exptime, "expire", 2, 3)
  local item = live(self, key)
  if not item then
    return nil, "not found"
  end
  item.expires = expires
  return true
end

-- dict:ttl(key) -> seconds left (0: never expires) | nil, "not found"
function Dict:ttl(key)
  check_dict(self, "ttl")
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = live(self, key)
  if not item then
    return nil, "not found"
  elseif item.expires == 0 then
    return 0
  end
  return item.expires - luasock.now()
end

-- Expires every item (get_stale still sees them until they are dropped), as nginx does.
function Dict:flush_all()
  check_dict(self, "flush_all")
  for _, item in pairs(self.items) do
    item.expires = FLUSHED
  end
end

-- dict:flush_expired([max_count]) -> how many expired items were dropped (max_count 0: all)
function Dict:flush_expired(max_count)
  check_dict(self, "flush_expired")
  max_count = max_count or 0
  local now, count = luasock.now(), 0
  local item = self.ring.prev
  while item ~= self.ring and (max_count <= 0 or count < max_count) do
    local older = item.prev
    if expired(item, now) then
      remove(self, item)
      count = count + 1
    end
    item = older
  end
  return count
end

-- dict:get_keys([max_count]) -> a list of the unexpired keys, most recently used first, at most
-- max_count (default 1024; 0: all).
function Dict:get_keys(max_count)
  check_dict(self, "get_keys")
  max_count = max_count or DEFAULT_MAX_KEYS
  local keys, now = {}, luasock.now()
  local item = self.ring.next
  while item ~= self.ring and (max_count <= 0 or #keys < max_count) do
    if not expired(item, now) then
      keys[#keys + 1] = item.key
    end
    item = item.next
  end
  return keys
end

function Dict:capacity()
  check_dict(self, "capacity")
  return self.limit
end

function Dict:free_space()
  check_dict(self, "free_space")
  return math.max(self.limit - self.used, 0)
end

-- Lists -----------------------------------------------------------------------------------
--
-- A list is an item whose `list` holds its values from `first` to `last`.

-- Pushes value at the head (first = true) or the tail; returns the new length | nil, err.
local function push(self, method, key, value, first)
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  if type(value) ~= "string" and type(value) ~= "number" then
    return nil, "bad value type"
  end
  local item = self.items[key]
  if item and expired(item, luasock.now()) then
    remove(self, item)
    item = nil
  end
  if item and not item.list then
    return nil, "value not a list"
  end
  local size = LIST_NODE_OVERHEAD + value_size(value) + (item and 0 or ITEM_OVERHEAD + #key)
  if not make_room(self, size, false, item) then
    return nil, "no memory"
  end
  if not item then
    item = { key = key, list = {}, first = 1, last = 0, flags = 0, expires = 0, size = 0 }
    self.items[key] = item
    link_first(self, item)
  else
    touch(self, item)
  end
  if first then
    item.first = item.first - 1
    item.list[item.first] = value
  else
    item.last = item.last + 1
    item.list[item.last] = value
  end
  item.size = item.size + size
  self.used = self.used + size
  return item.last - item.first + 1
end

-- Takes the value at the head (first = true) or the tail | nil (empty or missing) | nil, err.
local function pop(self, key, first)
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = live(self, key)
  if not item then
    return nil
  elseif not item.list then
    return nil, "value not a list"
  end
  local at = first and item.first or item.last
  local value = item.list[at]
  item.list[at] = nil
  if first then
    item.first = item.first + 1
  else
    item.last = item.last - 1
  end
  local size = LIST_NODE_OVERHEAD + value_size(value)
  item.size = item.size - size
  self.used = self.used - size
  if item.first > item.last then
    remove(self, item)
  end
  return value
end

function Dict:lpush(key, value)
  check_dict(self, "lpush")
  return push(self, "lpush", key, value, true)
end

function Dict:rpush(key, value)
  check_dict(self, "rpush")
  return push(self, "rpush", key, value, false)
end

function Dict:lpop(key)
  check_dict(self, "lpop")
  return pop(self, key, true)
end

function Dict:rpop(key)
  check_dict(self, "rpop")
  return pop(self, key, false)
end

-- dict:llen(key) -> the list's length (0 for a missing key) | nil, "value not a list"
function Dict:llen(key)
  check_dict(self, "llen")
  local err
  key, err = check_key(key)
  if not key then
    return nil, err
  end
  local item = live(self, key)
  if not item then
    return 0
  elseif not item.list then
    return nil, "value not a list"
  end
  return item.last - item.first + 1
end

-- Declaring -------------------------------------------------------------------------------

local function new_dict(name, capacity)
  local ring = {}
  ring.next, ring.prev = ring, ring
  return setmetatable({ name = name, limit = capacity, used = 0, items = {}, ring = ring }, Dict)
end

-- Makes the dictionaries of a script's `shared_dicts`, given as name -> bytes (the loader has
-- checked them): a new name gets an empty one, a known name keeps its items and takes its new
-- size (dropping its least recently used items if they no longer fit). A name the script no
-- longer declares stays as it is: a reload that fails later keeps the old script, which may use
-- it.
function M.declare(sizes)
  for name, capacity in pairs(sizes) do
    local dict = M.dicts[name]
    if dict then
      dict.limit = capacity
      make_room(dict, 0, true)
    else
      M.dicts[name] = new_dict(name, capacity)
    end
  end
  return true
end

local UNITS = { [""] = 1, k = 1024, m = 1024 * 1024, g = 1024 * 1024 * 1024 }

-- The bytes of a size setting: "10m", "512k", "1g", "4096" or an integer of bytes; nil if it is
-- none of those, or not positive.
function M.parse_size(size)
  if math.type(size) == "integer" then
    return size > 0 and size or nil
  elseif type(size) ~= "string" then
    return nil
  end
  local digits, unit = size:match("^(%d+)([kKmMgG]?)$")
  local count = digits and math.tointeger(tonumber(digits))
  if not count or count <= 0 or count > (1 << 50) then
    return nil
  end
  return count * UNITS[unit:lower()]
end

return M
