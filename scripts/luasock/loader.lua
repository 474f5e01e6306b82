-- luasock.loader: loads a handler script into an environment of its own, runs its start hook
-- and checks the table it returns. `luasock serve` and `luasock check` both go through here, so
-- they accept and refuse exactly the same scripts.
local core = require "luasock.core"
local shdict = require "luasock.shdict"

local M = {}

-- Settings a script may set, with the smallest value each accepts.
local SIZE_SETTINGS = {
  max_line = 1, max_all = 1, high_water = 0, max_queue = 1, max_object = 1, max_memory = 0,
  max_datagram_tasks = 1, max_object_items = 1, max_receive = 1, soft_queue = 0,
  max_buffers = 0,
}
local TIME_SETTINGS = { "idle_timeout", "send_timeout", "first_byte_timeout", "cpu_budget",
  "soft_queue_seconds", "stall_warning" }

-- Every field of the script table that luasock reads: the names that "unknown setting" knows.
-- A new setting goes here as well as into its check below; SIZE_SETTINGS and TIME_SETTINGS are
-- added to it after this table.
local SETTINGS = {
  handle = true, datagram = true, on_close = true, start = true, listen = true, tls = true,
  shared_dicts = true, object_codec = true, exact_objects = true, json_errors = true,
  access_log = true, metrics = true,
}
for name in pairs(SIZE_SETTINGS) do
  SETTINGS[name] = true
end
for _, name in ipairs(TIME_SETTINGS) do
  SETTINGS[name] = true
end

-- The longest timeout the core accepts (TASK_MAX_TIMEOUT): NaN, -math.huge and absurd values are
-- mistakes, and would break libev's timers.
local MAX_TIMEOUT = 1e9

local function is_timeout(value)
  return type(value) == "number" and value == value and value > -math.huge
    and (value <= MAX_TIMEOUT or value == math.huge)
end

local function directory_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- The line of the script that sets field (`field =`, `.field`, `["field"]`), else of its last
-- top-level `return`, else 1: a cheap look at the source, right for the usual
-- `local M = { ... }` ... `return M` script, that lets editors jump to the problem.
local function line_of(path, field)
  local file = io.open(path, "r")
  if not file then
    return 1
  end
  local source = file:read("a")
  file:close()
  local number, last_return = 0, 1
  field = field and field:gsub("%p", "%%%0")
  for line in source:gmatch("([^\n]*)\n?") do
    number = number + 1
    line = line:gsub("%-%-.*", "")
    if field and (line:find("%f[%w_]" .. field .. "%s*=%f[^=]")
        or line:find("[.:]" .. field .. "%f[^%w_]")
        or line:find("[\"']" .. field .. "[\"']%]")) then
      return number
    end
    if line:find("^return%f[^%w_]") then
      last_return = number
    end
  end
  return last_return
end

-- "path: message" as "path:LINE: message" (see line_of), the form editors parse. The setting is
-- field, or the first word of the message that is a known setting or a quoted field of the
-- script. Messages that have a line already (Lua's own, a start hook's) are left alone.
local function with_line(path, script, err, field)
  local prefix = path .. ": "
  if type(err) ~= "string" or err:sub(1, #prefix) ~= prefix then
    return err
  end
  local message = err:sub(#prefix + 1)
  local fields = type(script) == "table" and script or {}
  for word, quote in message:gmatch("([%a_][%w_]*)(%'?)") do
    if field or SETTINGS[word] or quote ~= "" and rawget(fields, word) ~= nil then
      field = field or word
      break
    end
  end
  return ("%s:%d: %s"):format(path, line_of(path, field), message)
end

-- The distance between two names in edits (a letter added, dropped, changed, or two swapped).
local function distance(a, b)
  local d = {}
  for i = 0, #a do
    d[i] = { [0] = i }
  end
  for j = 1, #b do
    d[0][j] = j
  end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

-- The known name that name is a misspelling of: one edit away (two, keeping the first letter,
-- for names longer than six letters: `retries` is no misspelt `metrics`), and not set itself (a
-- script that sets both means both); or nil.
local function misspelling_of(name, known, set)
  local best, best_distance
  for candidate in pairs(known) do
    local d = distance(name, candidate)
    local far = #candidate > 6 and name:sub(1, 1) == candidate:sub(1, 1)
    if d <= (far and 2 or 1) and rawget(set, candidate) == nil
        and (not best or d < best_distance or d == best_distance and candidate < best) then
      best, best_distance = candidate, d
    end
  end
  return best
end

-- "unknown setting 'name'", with the closest known name when there is one.
local function unknown_setting(kind, name, known)
  local message = ("unknown %ssetting '%s'"):format(kind, tostring(name))
  local guess = type(name) == "string" and misspelling_of(name, known, {})
  return guess and ("%s (did you mean '%s'?)"):format(message, guess) or message
end

-- A field that is no setting belongs to the script (a proxy's `upstream`, its helper functions)
-- unless its name is a misspelling of a setting: `idle_timout` is refused, in check, serve and a
-- reload alike.
local function check_names(path, script)
  for name in next, script do
    if type(name) == "string" and not SETTINGS[name] and misspelling_of(name, SETTINGS, script) then
      return nil, with_line(path, script, ("%s: %s"):format(path,
        unknown_setting("", name, SETTINGS)), name)
    end
  end
  return true
end

-- Each listen address must parse as --listen's do, and the script must have the callback that
-- serves it; the loader checks this (without listening) so that check refuses what serve would.
local function check_addresses(path, script, listen)
  for _, address in ipairs(listen) do
    local callback, err = core.listener_callback(address)
    if not callback then
      return nil, with_line(path, script, ("%s: %s"):format(path, err), "listen")
    end
    if type(script[callback]) ~= "function" then
      return nil, with_line(path, script, ("%s: no '%s' function for listener %s"):format(path,
        callback, address), "listen")
    end
  end
  return true
end

local function check_listen(path, listen)
  if type(listen) == "string" then
    return { listen }
  end
  if listen == nil then
    return {}
  end
  if type(listen) ~= "table" then
    return nil, ("%s: 'listen' must be a string or a list of strings"):format(path)
  end
  for i, address in ipairs(listen) do
    if type(address) ~= "string" then
      return nil, ("%s: listen[%d] must be a string"):format(path, i)
    end
  end
  return listen
end

-- The fields of the `tls` table and the type of each; src/ltls.c reads them.
local TLS_FIELDS = {
  cert = "string", key = "string", certs = "table", ca = "string", verify_client = "boolean",
  alpn = "table", min_version = "string", ciphers = "string", ciphersuites = "string",
  session_tickets = "boolean", strict_sni = "boolean",
}

local function check_tls(path, tls)
  if tls == nil then
    return true
  end
  if type(tls) ~= "table" then
    return nil, ("%s: 'tls' must be a table { cert = FILE, key = FILE, ... }"):format(path)
  end
  for name, value in pairs(tls) do
    local expected = TLS_FIELDS[name]
    if not expected then
      return nil, ("%s: %s"):format(path, unknown_setting("tls ", name, TLS_FIELDS))
    end
    if type(value) ~= expected then
      return nil, ("%s: tls.%s must be a %s"):format(path, name, expected)
    end
  end
  if (tls.cert == nil) ~= (tls.key == nil) then
    return nil, ("%s: tls.cert and tls.key go together"):format(path)
  end
  return true
end

-- shared_dicts = { name = size }: the sizes in bytes (luasock.shdict), or nil and the error.
local function check_shared_dicts(path, dicts)
  if dicts == nil then
    return {}
  elseif type(dicts) ~= "table" then
    return nil, ("%s: 'shared_dicts' must be a table like { cache = \"10m\" }"):format(path)
  end
  local sizes = {}
  for name, size in pairs(dicts) do
    if type(name) ~= "string" or name == "" then
      return nil, ("%s: shared_dicts: names must be non-empty strings, not %s"):format(path,
        tostring(name))
    end
    sizes[name] = shdict.parse_size(size)
    if not sizes[name] then
      return nil, ('%s: shared_dicts.%s: size must be like "10m" or a number of bytes')
        :format(path, name)
    end
  end
  return sizes
end

-- The callbacks C calls: a plain copy, so that C reads them without running the script's
-- metamethods.
local CALLBACKS = { "handle", "datagram", "on_close" }

local OBJECT_CODECS = { msgpack = true, pickle = true, json = true }
local JSON_ERRORS = { close = true, ["return"] = true }

-- The object settings: which codec receive_object and send_object speak (JSON needs lua-cjson,
-- loaded now so that a missing one fails the load), exact decoding, and what invalid JSON does.
local function check_objects(path, script, settings)
  local codec, exact, json_errors = script.object_codec, script.exact_objects, script.json_errors
  if codec ~= nil and not OBJECT_CODECS[codec] then
    return nil, ("%s: 'object_codec' must be \"msgpack\", \"pickle\" or \"json\""):format(path)
  end
  if exact ~= nil and type(exact) ~= "boolean" then
    return nil, ("%s: 'exact_objects' must be true or false"):format(path)
  end
  if json_errors ~= nil and not JSON_ERRORS[json_errors] then
    return nil, ("%s: 'json_errors' must be \"close\" or \"return\""):format(path)
  end
  if codec == "json" then
    local ok, err = pcall(require, "luasock.json")
    if not ok then
      return nil, ("%s: %s"):format(path, err)
    end
  end
  settings.object_codec, settings.exact_objects, settings.json_errors = codec, exact, json_errors
  return true
end

-- Returns the settings and callbacks C needs, with nil where the script keeps the default.
local function check_settings(path, script)
  local ok, problem = check_names(path, script)
  if not ok then
    return nil, problem
  end
  local listen, err = check_listen(path, script.listen)
  if not listen then
    return nil, err
  end
  ok, problem = check_addresses(path, script, listen)
  if not ok then
    return nil, problem
  end
  ok, problem = check_tls(path, script.tls)
  if not ok then
    return nil, problem
  end
  local dicts
  dicts, problem = check_shared_dicts(path, script.shared_dicts)
  if not dicts then
    return nil, problem
  end
  local settings = { listen = listen, tls = script.tls, shared_dicts = dicts }
  ok, problem = check_objects(path, script, settings)
  if not ok then
    return nil, problem
  end
  if script.access_log ~= nil and type(script.access_log) ~= "boolean" then
    return nil, ("%s: 'access_log' must be true or false"):format(path)
  end
  settings.access_log = script.access_log
  if script.metrics ~= nil and (type(script.metrics) ~= "string"
                                or not script.metrics:match("^%[?[%w%.:%-%*]+%]?:%d+$")) then
    return nil, ("%s: 'metrics' must be an address such as \"127.0.0.1:9100\""):format(path)
  end
  settings.metrics = script.metrics
  for _, name in ipairs(CALLBACKS) do
    local callback = script[name]
    if callback ~= nil and type(callback) ~= "function" then
      return nil, ("%s: '%s' must be a function"):format(path, name)
    end
    settings[name] = callback
  end
  for name, least in pairs(SIZE_SETTINGS) do
    local value = script[name]
    if value ~= nil and (math.type(value) ~= "integer" or value < least) then
      return nil, ("%s: '%s' must be an integer of at least %d"):format(path, name, least)
    end
    settings[name] = value
  end
  for _, name in ipairs(TIME_SETTINGS) do
    local value = script[name]
    if value ~= nil and value ~= false and not is_timeout(value) then
      return nil, ("%s: '%s' must be a number of seconds up to %d, or false or math.huge for none")
        :format(path, name, MAX_TIMEOUT)
    end
    local none = value == false or (value and (value < 0 or value == math.huge))
    settings[name] = none and -1 or value
  end
  return settings
end

local function local_path(path)
  local dir = directory_of(path)
  return dir .. "/?.lua;" .. dir .. "/?/init.lua"
end

-- Puts the script's directory first in package.path, once.
local function add_script_dir(path)
  local prefix = local_path(path) .. ";"
  if package.path:sub(1, #prefix) ~= prefix then
    package.path = prefix .. package.path
  end
end

-- The names in package.loaded that are modules loaded from the script's own directory, with
-- their files. A script may put anything in package.loaded: only string names are modules.
local function local_module_files(path)
  local found = {}
  for name in pairs(package.loaded) do
    local file = type(name) == "string" and package.searchpath(name, local_path(path))
    if file then
      found[name] = file
    end
  end
  return found
end

-- The modules the script has loaded from its own directory: a list of their files.
function M.local_modules(path)
  local files = {}
  for _, file in pairs(local_module_files(path)) do
    files[#files + 1] = file
  end
  table.sort(files)
  return files
end

-- Unloads the script's own modules, so that a reload requires their new versions.
function M.forget_local_modules(path)
  for name in pairs(local_module_files(path)) do
    package.loaded[name] = nil
  end
  return true
end

local function load(path)
  add_script_dir(path)
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    return nil, err
  end
  local ok, script = pcall(chunk)
  if not ok then
    return nil, tostring(script)
  end
  if type(script) ~= "table" then
    return nil, ("%s: the script must return a table of callbacks, not %s"):format(path, type(script))
  end
  ok, err = check_names(path, script)
  if not ok then
    return nil, err
  end
  if type(script.handle) ~= "function" and type(script.datagram) ~= "function" then
    return nil, ("%s: the returned table has no 'handle' function (nor 'datagram')"):format(path)
  end
  if script.start ~= nil and type(script.start) ~= "function" then
    return nil, ("%s: 'start' must be a function"):format(path)
  end
  local settings, problem = check_settings(path, script)
  if not settings then
    return nil, problem
  end
  return script
end

-- Loads the script at path. Returns its table, or nil and "path:line: message".
function M.load(path)
  local script, err = load(path)
  return script, with_line(path, script, err)
end

-- Loads a client script for `luasock run`: returns its main function, with `arg` set as the
-- lua interpreter sets it (arg[0] the script, arg[1..] the arguments), or nil and the error.
function M.load_program(path, ...)
  local env = setmetatable({ arg = { [0] = path, ... } }, { __index = _G })
  add_script_dir(path)
  return loadfile(path, "t", env)
end

-- Makes the script's shared dicts (so that its start hook can use them), runs the start hook,
-- then reads the settings it may have changed.
local function configure(path, script)
  local dicts, problem = check_shared_dicts(path, script.shared_dicts)
  if not dicts then
    return nil, problem
  end
  shdict.declare(dicts)
  if script.start then
    local ok, err = xpcall(script.start, debug.traceback)
    if not ok then
      -- The frames below start() are the loader's own, of no use to the script's author.
      return nil, (err:gsub("\n%s*%[C%]: in function 'xpcall'.*", ""))
    end
  end
  return check_settings(path, script)
end

-- The settings and callbacks C needs, or nil and "path:line: message".
function M.configure(path, script)
  local settings, err = configure(path, script)
  return settings, with_line(path, script, err)
end

return M
