-- reload_spec.lua -- hot reload (docs/api.md "Hot reload"): `serve --watch` and SIGHUP give new
-- connections the new code and settings while open connections finish with the old; a broken
-- script or module keeps the old code serving until it is fixed; modules next to the script are
-- watched; luasock.state keeps a chat room through an edit; clients under load see nothing of
-- 20 reloads in a row, nor of 300 SIGHUPs in about 4 s while peers flood and reset; open
-- connections outlive 40 reloads while others come and go; and a script deleted, replaced by a
-- directory or by a symlink loop keeps the old code serving until a real script is back.
--
-- Scripts are rewritten the way editors save them: the new text goes to a temp file in the same
-- directory, which is renamed over the old one. Every wait is on a "reloaded ..." or
-- "reload failed: ..." log line after a mark taken just before the edit.
local socket = require "socket"
local helper = require "helper"

local RELOAD_TIMEOUT = 5 -- seconds from an edit (or SIGHUP) to its log line

local literal = helper.literal
local replace = helper.replace_file

-- Writes `source` over the existing file in place, in one write call, as some editors save;
-- without truncating, so `source` must be at least as long as the old content.
local function overwrite(path, source)
  local file = assert(io.open(path, "r+b"))
  assert(file:write(source))
  file:close()
end

-- Waits for the "reloaded" line of `script` written after byte `from`; returns its reason (the
-- text in parentheses) after checking that the time is a number of milliseconds.
local function wait_reloaded(server, script, from)
  local ms, why = server:wait_log("%[info%] reloaded " .. literal(script)
    .. " in ([%d.]+) ms %(([^\n]*)%)\n", RELOAD_TIMEOUT, from)
  assert.is_truthy(tonumber(ms), "reload time " .. ms)
  return why
end

-- Waits for the "reload failed" line written after byte `from`; returns the message, which
-- may go on over several lines (until the next log line).
local function wait_failed(server, from)
  server:wait_log("%[error%] reload failed: ", RELOAD_TIMEOUT, from)
  local log = server:log()
  local _, start = log:find("[error] reload failed: ", from + 1, true)
  local message = log:sub(start + 1)
  local next_line = message:find("\n%d%d%d%d%-%d%d%-%d%d ") or message:find("\nluasock: ")
  return next_line and message:sub(1, next_line - 1) or message:gsub("\n$", "")
end

-- Replaces the script (or a module) and waits until the server has reloaded; returns the reason.
local function edit(server, path, source)
  local mark = server:mark()
  replace(path, source)
  return wait_reloaded(server, server.script, mark)
end

-- Connects and returns the client and its first line (the handler's greeting).
local function greet(server)
  local client = server:connect()
  local line, err = client:receive("*l")
  assert(line, "no greeting: " .. tostring(err))
  return client, line
end

-- The greeting a new client gets right now.
local function greeting_of_new_client(server)
  local client, line = greet(server)
  client:close()
  return line
end

local ask = helper.ask

-- A handler that greets with "<version><tag> hello" and answers every line with
-- "<version>:<line>". `tag` is a Lua expression ('' by default); `extra` is put at the top of
-- the file (e.g. a require).
local function versioned(version, extra, tag)
  return (extra or "") .. "\nlocal M = {}\n"
    .. "function M.handle(conn)\n"
    .. "  conn:send('" .. version .. "', " .. (tag or "''") .. ", ' hello\\n')\n"
    .. "  while true do\n"
    .. "    local line = conn:receive('*l')\n"
    .. "    if not line then return end\n"
    .. "    conn:send('" .. version .. ":', line, '\\n')\n"
    .. "  end\n"
    .. "end\n"
    .. "return M\n"
end

describe("hot reload", function()
  after_each(helper.cleanup)

  it("gives new clients the edited script while an open client keeps the old code", function()
    local script = helper.script(versioned("v1"))
    local server = helper.start(script, { args = { "--watch" } })
    local old, hello = greet(server)
    assert.equal("v1 hello", hello)
    assert.equal("v1:before", ask(old, "before"))

    assert.equal("changed: " .. script, edit(server, script, versioned("v2")))
    assert.equal("v1:after", ask(old, "after"))
    local new, new_hello = greet(server)
    assert.equal("v2 hello", new_hello)
    assert.equal("v2:line", ask(new, "line"))
    assert.equal("v1:still", ask(old, "still"))

    assert.equal("changed: " .. script, edit(server, script, versioned("v3")))
    assert.equal("v3 hello", greeting_of_new_client(server))
    assert.equal("v2:again", ask(new, "again"))
    assert.equal("v1:last", ask(old, "last"))
    old:close()
    new:close()
    server:stop()
  end)

  it("reloads when a module next to the script changes, and watches it again after", function()
    local dir = helper.dir()
    local module = helper.script("return { word = 'util-1' }\n", "util.lua")
    local script = helper.script(versioned("v1", "local util = require 'util'", "util.word"),
      "main.lua")
    assert.equal(dir .. "/util.lua", module)
    local server = helper.start(script, { args = { "--watch" } })
    local old, hello = greet(server)
    assert.equal("v1util-1 hello", hello)

    assert.equal("changed: " .. module, edit(server, module, "return { word = 'util-2' }\n"))
    assert.equal("v1util-2 hello", greeting_of_new_client(server))
    assert.equal("v1:old", ask(old, "old"))

    assert.equal("changed: " .. module, edit(server, module, "return { word = 'util-three' }\n"))
    assert.equal("v1util-three hello", greeting_of_new_client(server))
    old:close()
    server:stop()
  end)

  describe("keeps the old code serving when the new version", function()
    -- Starts v1 under --watch with one client connected; returns the server and that client.
    local function start_v1(script)
      local server = helper.start(script, { args = { "--watch" } })
      local old, hello = greet(server)
      assert.equal("v1 hello", hello)
      return server, old
    end

    -- Saves `broken` over the script: expects a failed reload whose message matches `pattern`,
    -- the old code for new and open clients; then saves `fixed` and expects it to be served.
    local function break_then_fix(server, old, broken, pattern, fixed)
      local mark = server:mark()
      replace(server.script, broken)
      local message = wait_failed(server, mark)
      assert.is_truthy(message:find(pattern), "reload failed: " .. message)
      assert.equal(0, server:count_log("reloaded"))
      assert.equal("v1 hello", greeting_of_new_client(server))
      assert.equal("v1:x", ask(old, "x"))

      assert.equal("changed: " .. server.script, edit(server, server.script, fixed))
      assert.equal("v2 hello", greeting_of_new_client(server))
      assert.equal("v1:y", ask(old, "y"))
    end

    it("has a syntax error", function()
      local script = helper.script(versioned("v1"))
      local server, old = start_v1(script)
      local broken = "local M = {}\nfunction M.handle(conn)\n  local x = = 1\nend\nreturn M\n"
      break_then_fix(server, old, broken, "^" .. literal(script) .. ":3: .*near '='",
        versioned("v2"))
      old:close()
      server:stop()
    end)

    it("raises at its top level", function()
      local script = helper.script(versioned("v1"))
      local server, old = start_v1(script)
      local broken = "local M = {}\nerror('boom at the top level')\nreturn M\n"
      break_then_fix(server, old, broken,
        "^" .. literal(script) .. ":2: boom at the top level$", versioned("v2"))
      old:close()
      server:stop()
    end)

    it("returns no handle function", function()
      local script = helper.script(versioned("v1"))
      local server, old = start_v1(script)
      local broken = "local M = { max_line = 10 }\nfunction M.serve(conn) end\nreturn M\n"
      break_then_fix(server, old, broken,
        "^" .. literal(script) .. ":3: the returned table has no 'handle' function",
        versioned("v2"))
      old:close()
      server:stop()
    end)

    it("misspells a setting, or listens on a bad address", function()
      local script = helper.script(versioned("v1"))
      local server, old = start_v1(script)
      local broken = "local M = { max_line = 10 }\nfunction M.handle(conn) end\nM.idle_timout = 5\n"
        .. "return M\n"
      break_then_fix(server, old, broken, "^" .. literal(script)
        .. ":3: unknown setting 'idle_timout' %(did you mean 'idle_timeout'%?%)$", versioned("v2"))
      broken = "return { listen = '127.0.0.1:99999',\n  handle = function() end }\n"
      local mark = server:mark()
      replace(server.script, broken)
      assert.equal(script .. ":1: bad listen address '127.0.0.1:99999': port must be a number "
        .. "from 0 to 65535", wait_failed(server, mark))
      assert.equal("v2 hello", greeting_of_new_client(server))
      old:close()
      server:stop()
    end)

    it("has a start hook that raises", function()
      local script = helper.script(versioned("v1"))
      local server, old = start_v1(script)
      local broken = versioned("v9"):gsub("return M\n$",
        "function M.start()\n  error('no start today')\nend\nreturn M\n")
      local line = select(2, broken:gsub("\n", "\n")) - 2 -- the error() line
      break_then_fix(server, old, broken,
        "^" .. literal(script) .. ":" .. line .. ": no start today", versioned("v2"))
      old:close()
      server:stop()
    end)

    it("requires a broken module, until the module is fixed", function()
      local module = helper.script("return { word = 'util-1' }\n", "util.lua")
      local script = helper.script(versioned("v1", "local util = require 'util'", "util.word"),
        "main.lua")
      local server = helper.start(script, { args = { "--watch" } })
      assert.equal("v1util-1 hello", greeting_of_new_client(server))

      local mark = server:mark()
      replace(module, "return { word = 'util-2' \n")
      local message = wait_failed(server, mark)
      assert.is_truthy(message:find(literal(module) .. ":2: "), "reload failed: " .. message)
      assert.equal("v1util-1 hello", greeting_of_new_client(server))

      assert.equal("changed: " .. module, edit(server, module, "return { word = 'util-2' }\n"))
      assert.equal("v1util-2 hello", greeting_of_new_client(server))
      server:stop()
    end)
  end)

  it("keeps the old code serving while the script is deleted, a directory or a symlink loop",
    function()
    local dir = helper.dir()
    local script = helper.script(versioned("v1"), "main.lua")
    local server = helper.start(script, { args = { "--watch" } })
    local old = greet(server)
    local function still_v1(step)
      assert.equal("v1 hello", greeting_of_new_client(server), step)
      assert.equal("v1:" .. step, ask(old, step))
    end
    local function sh(command)
      assert(os.execute("cd " .. helper.shell_quote(dir) .. " && " .. command),
        "failed: " .. command)
    end

    assert(os.remove(script))
    still_v1("deleted")

    local mark = server:mark()
    sh("mkdir main.lua")
    assert.equal("cannot read " .. script .. ": Is a directory", wait_failed(server, mark))
    still_v1("directory")

    mark = server:mark()
    sh("rmdir main.lua && ln -s main.lua main.lua")
    assert.equal("cannot open " .. script .. ": Too many levels of symbolic links",
      wait_failed(server, mark))
    still_v1("self-loop")

    mark = server:mark()
    sh("rm main.lua && ln -s other.lua main.lua && ln -s main.lua other.lua")
    assert.equal("cannot open " .. script .. ": Too many levels of symbolic links",
      wait_failed(server, mark))
    still_v1("two-link-loop")

    sh("rm main.lua other.lua")
    assert.equal("changed: " .. script, edit(server, script, versioned("v2")))
    assert.equal("v2 hello", greeting_of_new_client(server))
    assert.equal("changed: " .. script, edit(server, script, versioned("v3")))
    assert.equal("v3 hello", greeting_of_new_client(server))
    assert.equal("v1:last", ask(old, "last"))
    old:close()
    server:stop()
  end)

  it("notices a same-size save in place within a second of the previous one", function()
    local script = helper.script(versioned("v1"))
    local server = helper.start(script, { args = { "--watch" } })
    -- Two saves of equal size, one right after the other's reload, within one second of the
    -- clock: only the content and the fraction of the modification time differ. Starting in the
    -- first 0.3 s of a second makes both saves fall in the same one (a reload takes ~0.1 s).
    helper.eventually(function() return socket.gettime() % 1 < 0.3 end, 2, "a new second")
    local began = socket.gettime()
    local mark = server:mark()
    overwrite(script, versioned("v2") .. "-- pad\n")
    wait_reloaded(server, script, mark)
    assert.equal("v2 hello", greeting_of_new_client(server))
    mark = server:mark()
    overwrite(script, versioned("v3") .. "-- pad\n")
    assert.equal(math.floor(began), math.floor(socket.gettime()), "both saves in one second")
    wait_reloaded(server, script, mark)
    assert.equal("v3 hello", greeting_of_new_client(server))
    server:stop()
  end)

  it("reloads on SIGHUP without --watch", function()
    local script = helper.script(versioned("v1"))
    local server = helper.start(script)
    local old = greet(server)
    replace(script, versioned("v2"))
    -- No watcher: the edit alone changes nothing.
    assert.equal("v1 hello", greeting_of_new_client(server))

    local mark = server:mark()
    server:signal("HUP")
    assert.equal("SIGHUP", wait_reloaded(server, script, mark))
    assert.equal("v2 hello", greeting_of_new_client(server))
    assert.equal("v1:old", ask(old, "old"))

    replace(script, "return 42\n")
    mark = server:mark()
    server:signal("HUP")
    assert.is_truthy(wait_failed(server, mark):find("must return a table", 1, true))
    assert.equal("v2 hello", greeting_of_new_client(server))
    assert.equal(1, server:count_log("reloaded"))
    old:close()
    server:stop()
  end)

  it("applies changed settings to new connections only", function()
    -- Each line is answered with "ok <length>" or "too long".
    local function sized(settings)
      return "local M = { " .. settings .. " }\nfunction M.handle(conn)\n"
        .. "  conn:send('ready\\n')\n"
        .. "  while true do\n"
        .. "    local line, err = conn:receive('*l')\n"
        .. "    if line then conn:send('ok ', #line, '\\n')\n"
        .. "    elseif err == 'line too long' then conn:send('too long\\n')\n"
        .. "    else return end\n"
        .. "  end\n"
        .. "end\nreturn M\n"
    end
    local script = helper.script(sized("max_line = 10"))
    local server = helper.start(script, { args = { "--watch" } })
    local old = greet(server)
    local x = string.rep("x", 50)
    assert.equal("too long", ask(old, x))
    assert.equal("ok 10", ask(old, string.rep("x", 10)))

    edit(server, script, sized("max_line = 100"))
    local new = greet(server)
    assert.equal("ok 50", ask(new, x))
    assert.equal("too long", ask(new, string.rep("x", 150)))
    assert.equal("too long", ask(old, x))

    -- Without the setting, new connections are back to the default of 8192.
    edit(server, script, sized(""))
    local default = greet(server)
    assert.equal("ok 5000", ask(default, string.rep("x", 5000)))
    assert.equal("too long", ask(new, string.rep("x", 150)))
    old:close()
    new:close()
    default:close()
    server:stop()
  end)

  describe("under load", function()
    local CLIENTS = 20       -- connections echoing all the time
    local PIPELINED = 5      -- lines each of them has in flight per round
    local RELOADS = 20
    local TIME_LIMIT = 20    -- seconds for all the reloads

    -- A line echo handler that greets with "v<version>".
    local function echo_source(version)
      return "local M = {}\n"
        .. "function M.handle(conn)\n"
        .. "  conn:send('v" .. version .. "\\n')\n"
        .. "  while true do\n"
        .. "    local line = conn:receive('*l')\n"
        .. "    if not line then return end\n"
        .. "    conn:send(line, '\\n')\n"
        .. "  end\n"
        .. "end\n"
        .. "return M\n"
    end

    -- The `seq`th line of client `i`: numbered, with a body whose length and bytes vary.
    local function numbered_line(i, seq)
      local fill = string.char(33 + (i * 7 + seq) % 90)
      return string.format("c%d n%d %s", i, seq, string.rep(fill, (i * 31 + seq * 17) % 300))
    end

    -- Sends every client its next PIPELINED lines, then checks every echo, byte for byte.
    local function pump(clients)
      for i, client in ipairs(clients) do
        local lines = {}
        for k = 1, PIPELINED do lines[k] = numbered_line(i, client.sent + k) .. "\n" end
        assert(client.socket:send(table.concat(lines)))
        client.sent = client.sent + PIPELINED
      end
      for i, client in ipairs(clients) do
        while client.echoed < client.sent do
          local line, err = client.socket:receive("*l")
          assert(line, string.format("client %d, line %d: %s", i, client.echoed + 1, tostring(err)))
          client.echoed = client.echoed + 1
          assert.equal(numbered_line(i, client.echoed), line)
        end
      end
    end

    -- A new client gets the greeting of `version` and an echo.
    local function check_new_client(server, version)
      local client, hello = greet(server)
      assert.equal("v" .. version, hello)
      assert.equal("fresh " .. version, ask(client, "fresh " .. version))
      client:close()
    end

    it("drops, refuses and garbles nothing through 20 reloads in a row", function()
      local script = helper.script(echo_source(1))
      local server = helper.start(script, { args = { "--watch" } })
      local clients = {}
      for i = 1, CLIENTS do
        local client, hello = greet(server)
        assert.equal("v1", hello)
        clients[i] = { socket = client, sent = 0, echoed = 0 }
      end

      local deadline = socket.gettime() + TIME_LIMIT
      local version, rounds, mark = 1, 0, server:mark()
      replace(script, echo_source(version + 1))
      while version <= RELOADS do
        assert(socket.gettime() < deadline, "only " .. version - 1 .. " reloads in "
          .. TIME_LIMIT .. " s; log:\n" .. server:log())
        pump(clients)
        rounds = rounds + 1
        local log = server:log()
        assert.is_nil(log:find("reload failed", mark + 1, true), log)
        if log:find("reloaded " .. script .. " in ", mark + 1, true) then
          version = version + 1
          check_new_client(server, version)
          mark = server:mark()
          if version <= RELOADS then replace(script, echo_source(version + 1)) end
        end
      end
      pump(clients)

      assert.equal(RELOADS, server:count_log("reloaded " .. literal(script)))
      assert.is_true(rounds > RELOADS, "rounds: " .. rounds)
      for i, client in ipairs(clients) do
        assert.equal(client.sent, client.echoed, "client " .. i)
        client.socket:close()
      end
      server:stop()
    end)

    -- The attack that found it solid sent 343 SIGHUPs in 4 s; 300 at 12 ms intervals is the
    -- same rate.
    local SIGHUPS = 300

    it("serves floods and survives resets through " .. SIGHUPS .. " SIGHUPs in about 4 s",
      function()
      local script = helper.script(echo_source(1))
      local server = helper.start(script)
      local fds_before = server:fd_count()
      local clients = {}
      for i = 1, CLIENTS do
        local client, hello = greet(server)
        assert.equal("v1", hello)
        clients[i] = { socket = client, sent = 0, echoed = 0 }
      end
      local done = helper.dir() .. "/sighups.done"
      local sender = string.format("for i in $(seq %d); do kill -HUP %d || exit; sleep 0.012; "
        .. "done; touch %s", SIGHUPS, server.pid, helper.shell_quote(done))
      assert(os.execute("(" .. sender .. ") >/dev/null 2>&1 &"))
      local function sent_all()
        local file = io.open(done)
        if file then file:close() end
        return file ~= nil
      end
      local started, rounds, slowest = socket.gettime(), 0, 0
      while not sent_all() do
        assert(socket.gettime() - started < 30, "the SIGHUPs took more than 30 s")
        local round_began = socket.gettime()
        for _ = 1, 10 do pump(clients) end -- 10 times 100 lines in flight, 5 per client
        slowest = math.max(slowest, socket.gettime() - round_began)
        rounds = rounds + 1
        -- peers that reset: before the greeting, after it, and in the middle of a line
        for way = 1, 3 do
          local client = server:connect()
          if way > 1 then assert(client:receive("*l")) end
          if way == 3 then assert(client:send("half a li")) end
          assert(client:setoption("linger", { on = true, timeout = 0 }))
          client:close()
        end
      end
      pump(clients)
      local reloads = server:count_log("reloaded " .. literal(script) .. " in [%d.]+ ms %(SIGHUP%)")
      assert.is_true(reloads >= 1 and reloads <= SIGHUPS, reloads .. " reloads")
      assert.is_true(rounds >= 5, "only " .. rounds .. " rounds of floods and resets")
      assert.is_true(slowest < 2, "a flood round took " .. slowest .. " s")
      check_new_client(server, 1)
      for i, client in ipairs(clients) do
        assert.equal(client.sent, client.echoed, "client " .. i)
        client.socket:close()
      end
      helper.eventually(function() return server:fd_count() <= fds_before end, 5,
        "the server to close every connection")
      local log = server:log()
      assert.is_nil(log:find("reload failed", 1, true), log)
      assert.is_nil(log:find("[error]", 1, true), log)
      server:stop()
    end)
  end)

  it("keeps open connections alive through 40 reloads while clients come and go", function()
    -- The script has no on_close (nor datagram), so a reload installs nil callbacks.
    local script = helper.script(versioned("v0"))
    local server = helper.start(script)
    local open = {}
    for i = 1, 40 do
      local version = "v" .. i
      replace(script, versioned(version))
      local mark = server:mark()
      server:signal("HUP")
      assert.equal("SIGHUP", wait_reloaded(server, script, mark))
      local client, hello = greet(server)
      assert.equal(version .. " hello", hello)
      open[#open + 1] = { client = client, version = version }
      if i % 4 == 0 then table.remove(open, 1).client:close() end
      for _, old in ipairs(open) do
        assert.equal(old.version .. ":" .. i, ask(old.client, tostring(i)))
      end
    end
    for _, old in ipairs(open) do old.client:close() end
    server:stop()
  end)

  describe("of examples/chat.lua", function()
    local expect_line = helper.expect_line

    local function nick_in(welcome, room_name)
      local nick = welcome:match("^%* welcome to the " .. room_name .. ", (%S+)!")
      assert(nick, "unexpected welcome line: " .. welcome)
      return nick
    end

    it("keeps the room in luasock.state: old members stay, new ones get the new code", function()
      local source = helper.read_file("examples/chat.lua")
      assert.is_truthy(source:find("welcome to the chat", 1, true))
      local copy = helper.script(source, "chat.lua")
      local server = helper.start(copy, { args = { "--watch" } })
      local a, a_welcome = greet(server)
      local b, b_welcome = greet(server)
      local a_nick, b_nick = nick_in(a_welcome, "chat"), nick_in(b_welcome, "chat")
      expect_line(a, "* " .. b_nick .. " joined")

      local edited = source:gsub("welcome to the chat", "welcome to the reloaded chat")
      assert.equal("changed: " .. copy, edit(server, copy, edited))

      local c, c_welcome = greet(server)
      local c_nick = nick_in(c_welcome, "reloaded chat")
      assert.are_not.equal(a_nick, c_nick)
      assert.are_not.equal(b_nick, c_nick)
      expect_line(a, "* " .. c_nick .. " joined")
      expect_line(b, "* " .. c_nick .. " joined")

      local everyone = { a_nick, b_nick, c_nick }
      table.sort(everyone)
      assert.equal("* here: " .. table.concat(everyone, ", "), ask(c, "/who"))
      assert.equal("* here: " .. table.concat(everyone, ", "), ask(a, "/who"))

      c:send("hello from the new code\n")
      expect_line(a, "<" .. c_nick .. "> hello from the new code")
      expect_line(b, "<" .. c_nick .. "> hello from the new code")
      a:send("hello from the old code\n")
      expect_line(b, "<" .. a_nick .. "> hello from the old code")
      expect_line(c, "<" .. a_nick .. "> hello from the old code")

      a:send("/quit\n")
      expect_line(a, "* bye")
      expect_line(b, "* " .. a_nick .. " left")
      expect_line(c, "* " .. a_nick .. " left")
      local left = { b_nick, c_nick }
      table.sort(left)
      assert.equal("* here: " .. table.concat(left, ", "), ask(b, "/who"))
      a:close()
      b:close()
      c:close()
      server:stop()
    end)
  end)
end)
