-- luasock.ngx: the `ngx` API of OpenResty that its network libraries use (lua-resty-redis,
-- -memcached, -dns, -websocket, ...; Debian's lua-nginx-*), on luasock's primitives, so that they
-- run unmodified inside handlers and tasks. `require "luasock.ngx"` returns ngx and installs it
-- as a global (those libraries look it up as one), with the LuaJIT-isms they need on Lua 5.4:
-- `bit`, `ffi` (byte buffers only), `table.new`, `table.clear`, `unpack`, and module names
-- `resty.X` and `nginx.X` for the same file. HTTP-only calls (ngx.req.*, ngx.say, ...) raise
-- "... is not available in luasock". See docs/ecosystem.md.
local luasock = require "luasock"
local redis = require "luasock.redis"

local ngx = {}

ngx.socket = require "luasock.ngx_socket"
ngx.re = require "luasock.ngx_re"
ngx.shared = require("luasock.shdict").dicts
for name, fn in pairs(require "luasock.ngx_string") do
  ngx[name] = fn
end

ngx.null = redis.null

ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5

---------------------------------------------------------------------------------------------
-- Time
---------------------------------------------------------------------------------------------

ngx.sleep = luasock.sleep
ngx.now = luasock.now

function ngx.time()
  return math.floor(luasock.now())
end

-- luasock's clock is read once per loop iteration, as nginx's is: nothing to update.
function ngx.update_time() end

function ngx.today()
  return os.date("%Y-%m-%d", ngx.time())
end

function ngx.localtime()
  return os.date("%Y-%m-%d %H:%M:%S", ngx.time())
end

function ngx.utctime()
  return os.date("!%Y-%m-%d %H:%M:%S", ngx.time())
end

---------------------------------------------------------------------------------------------
-- Logging
---------------------------------------------------------------------------------------------

ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT, ngx.ERR = 0, 1, 2, 3, 4
ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG = 5, 6, 7, 8

local LEVELS = { [0] = "error", "error", "error", "error", "error", "warn", "info", "info",
                 "debug" }

-- ngx.log(level, ...): the arguments joined without separators, as nginx writes them.
function ngx.log(level, ...)
  local name = LEVELS[level]
  if not name then
    error("bad argument #1 to 'log' (ngx.STDERR ... ngx.DEBUG expected, got "
      .. tostring(level) .. ")", 2)
  end
  local parts = table.pack(...)
  for i = 1, parts.n do
    parts[i] = tostring(parts[i])
  end
  luasock.log(name, table.concat(parts, "", 1, parts.n))
end

---------------------------------------------------------------------------------------------
-- Light threads and timers: luasock tasks
---------------------------------------------------------------------------------------------

ngx.thread = require "luasock.ngx_thread"

local timers_pending = 0

-- ngx.timer.at(delay, callback, ...) -> true: callback(premature, ...) runs in a task of its own
-- after delay seconds; premature is true when a graceful shutdown began meanwhile.
local function at(delay, callback, ...)
  if type(delay) ~= "number" or delay ~= delay or delay < 0 then
    error("bad argument #1 to 'at' (delay in seconds expected)", 2)
  end
  if type(callback) ~= "function" then
    error("bad argument #2 to 'at' (function expected, got " .. type(callback) .. ")", 2)
  end
  timers_pending = timers_pending + 1
  luasock.spawn(function(...)
    if delay > 0 then
      luasock.sleep(delay)
    end
    timers_pending = timers_pending - 1
    callback(luasock.shutting_down(), ...)
  end, ...)
  return true
end

-- ngx.timer.every(delay, callback, ...) -> true: callback(premature, ...) every delay seconds
-- until a graceful shutdown begins.
local function every(delay, callback, ...)
  if type(delay) ~= "number" or delay ~= delay or delay <= 0 then
    error("bad argument #1 to 'every' (delay in seconds above 0 expected)", 2)
  end
  if type(callback) ~= "function" then
    error("bad argument #2 to 'every' (function expected, got " .. type(callback) .. ")", 2)
  end
  luasock.spawn(function(...)
    repeat
      luasock.sleep(delay)
      local premature = luasock.shutting_down()
      callback(premature, ...)
    until premature
  end, ...)
  return true
end

ngx.timer = {
  at = at,
  every = every,
  pending_count = function() return timers_pending end,
  running_count = function() return 0 end,
}

---------------------------------------------------------------------------------------------
-- Worker and configuration
---------------------------------------------------------------------------------------------

local function pid()
  local stat = io.open("/proc/self/stat")
  if not stat then
    return nil
  end
  local text = stat:read("l")
  stat:close()
  return tonumber(text:match("^%d+"))
end

ngx.worker = {
  id = function() return luasock.worker > 0 and luasock.worker - 1 or nil end,
  count = function() return luasock.workers end,
  pid = pid,
  exiting = luasock.shutting_down,
}

ngx.config = {
  debug = false,
  subsystem = "stream",
  ngx_lua_version = 10026, -- the ngx_lua 0.10.26 API, what libraries check for
  nginx_version = 1022001,
  prefix = function() return "" end,
  nginx_configure = function() return "" end,
}

---------------------------------------------------------------------------------------------
-- What only nginx's HTTP module has: raises when used, not when looked up (libraries keep
-- `local x = ngx.req.socket` at their top level)
---------------------------------------------------------------------------------------------

local function unavailable(name)
  error(name .. " is not available in luasock", 3)
end

local function raising_function(name)
  return function() unavailable(name) end
end

local function raising_table(prefix, functions)
  return setmetatable({}, {
    __index = function(_, key)
      local name = prefix .. "." .. tostring(key)
      if functions then
        return raising_function(name)
      end
      unavailable(name)
    end,
    __newindex = function(_, key) unavailable(prefix .. "." .. tostring(key)) end,
  })
end

ngx.req = raising_table("ngx.req", true)
ngx.resp = raising_table("ngx.resp", true)
ngx.location = raising_table("ngx.location", true)
ngx.header = raising_table("ngx.header", false)
ngx.var = raising_table("ngx.var", false)
ngx.arg = raising_table("ngx.arg", false)

for _, name in ipairs({ "say", "print", "flush", "eof", "exit", "exec", "redirect",
                        "send_headers" }) do
  ngx[name] = raising_function("ngx." .. name)
end

-- ngx.ctx: a table per coroutine, as OpenResty has one per request.
local contexts = setmetatable({}, { __mode = "k" })

local HTTP_FIELDS = { status = true, headers_sent = true, is_subrequest = true }

setmetatable(ngx, {
  __index = function(_, key)
    if key == "ctx" then
      local co = coroutine.running()
      local ctx = contexts[co]
      if not ctx then
        ctx = {}
        contexts[co] = ctx
      end
      return ctx
    end
    if HTTP_FIELDS[key] then
      unavailable("ngx." .. key)
    end
  end,
})

---------------------------------------------------------------------------------------------
-- Installing: the global, the LuaJIT modules, the module names
---------------------------------------------------------------------------------------------

local function table_new()
  return {}
end

local function table_clear(t)
  for key in next, t do
    t[key] = nil
  end
end

-- Where Debian (lua-nginx-*) and upstream OpenResty install these libraries for Lua 5.1.
local LIBRARY_PATH = "/usr/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?.lua;"
  .. "/usr/local/openresty/lualib/?.lua"

local ALIASES = { resty = "nginx", nginx = "resty" }

-- A searcher for resty.X and nginx.X: the file of that name on package.path or in the Lua 5.1
-- trees, else the library under its other name (loaded once: require gives the same table).
local function search_library(name)
  local prefix, rest = name:match("^(%a+)(%..+)$")
  local other = prefix and ALIASES[prefix]
  if not other then
    return nil
  end
  local file = package.searchpath(name, LIBRARY_PATH)
  if file then
    local chunk, err = loadfile(file)
    if not chunk then
      error(("error loading module '%s' from file '%s':\n\t%s"):format(name, file, err), 2)
    end
    return chunk, file
  end
  local alias = other .. rest
  if package.searchpath(alias, package.path .. ";" .. LIBRARY_PATH) then
    return function() return require(alias) end, alias
  end
  return "\n\tno file for '" .. alias .. "' either"
end

local function install()
  _G.ngx = ngx
  _G.unpack = _G.unpack or table.unpack
  table.new = table.new or table_new
  table.clear = table.clear or table_clear
  package.preload["table.new"] = function() return table.new end
  package.preload["table.clear"] = function() return table.clear end
  package.preload["bit"] = function() return require "luasock.bit" end
  package.preload["ffi"] = function() return require "luasock.ffi" end
  table.insert(package.searchers, search_library)
end

install()

return ngx
