-- concurrency_spec.lua -- 200 clients connected to examples/echo.lua at once, each getting
-- exactly its own echo.
local socket = require "socket"
local helper = require "helper"

local CLIENTS = 200

-- A distinct message for client i (lengths differ too).
local function message(i)
  return string.format("client %03d says %s", i, string.rep(string.char(97 + i % 26), i))
end

-- Reads one line from every client in `clients` with socket.select; returns lines by index.
local function read_all_lines(clients, timeout)
  local lines, partial, waiting = {}, {}, {}
  for _, client in ipairs(clients) do
    client:settimeout(0)
    waiting[#waiting + 1] = client
  end
  local index = {}
  for i, client in ipairs(clients) do index[client] = i end
  local deadline = socket.gettime() + timeout
  while #waiting > 0 and socket.gettime() < deadline do
    local readable = socket.select(waiting, nil, 1)
    for _, client in ipairs(readable) do
      local i = index[client]
      local line, err, part = client:receive("*l", partial[i])
      if line then
        lines[i] = line
      elseif err == "timeout" then
        partial[i] = part
      else
        lines[i] = "<" .. err .. ">"
      end
    end
    local still = {}
    for _, client in ipairs(waiting) do
      if not lines[index[client]] then still[#still + 1] = client end
    end
    waiting = still
  end
  for _, client in ipairs(clients) do client:settimeout(helper.IO_TIMEOUT) end
  return lines, #waiting
end

describe("200 concurrent clients", function()
  after_each(helper.cleanup)

  it("each get exactly their own echo", function()
    local server = helper.start("examples/echo.lua")
    local clients = {}
    finally(function()
      for _, client in ipairs(clients) do client:close() end
    end)
    for i = 1, CLIENTS do clients[i] = server:connect() end
    for i, client in ipairs(clients) do assert(client:send(message(i) .. "\n")) end
    local lines, missing = read_all_lines(clients, 20)
    assert.equal(0, missing, missing .. " clients got no echo")
    for i = 1, CLIENTS do
      assert.equal(message(i), lines[i])
    end
    -- All 200 are still open: a second round on every connection works too.
    for i, client in ipairs(clients) do assert(client:send("again " .. i .. "\n")) end
    lines, missing = read_all_lines(clients, 20)
    assert.equal(0, missing)
    for i = 1, CLIENTS do assert.equal("again " .. i, lines[i]) end
    for _, client in ipairs(clients) do client:close() end
    clients = {}
    server:stop()
  end)
end)

describe("connection churn", function()
  after_each(helper.cleanup)

  -- One short-lived client of examples/prefix.lua that leaves in way `how`.
  local function churn_once(server, how)
    local client = server:connect()
    if how == "silent" then
      client:close()
    elseif how == "half line" then
      client:send("no newline")
      client:close()
    elseif how == "reset" then
      client:send("reset me\n")
      client:setoption("linger", { on = true, timeout = 0 })
      client:close()
    else
      assert(client:send("polite\n"))
      assert.equal("Welcome to the server. Type something and hit enter", client:receive())
      assert.equal("OK...polite", client:receive())
      client:close()
    end
  end

  it("of 400 clients leaving in every way leaves the server healthy", function()
    local server = helper.start("examples/prefix.lua")
    local ways = { "silent", "half line", "reset", "polite" }
    for i = 1, 400 do churn_once(server, ways[i % #ways + 1]) end
    local client = server:connect()
    assert.equal("Welcome to the server. Type something and hit enter", client:receive())
    assert(client:send("after the churn\n"))
    assert.equal("OK...after the churn", client:receive())
    client:close()
    local log = server:stop()
    assert.is_falsy(log:find("[error]", 1, true), log)
  end)
end)
