-- chat_spec.lua -- examples/chat.lua through real LuaSocket clients: commands, announcements,
-- a member that never reads (dropped, without holding up the others), an abrupt reset, members
-- leaving from the middle of the room, and a broadcast to 500 members.
local socket = require "socket"
local helper = require "helper"

local CHAT = "examples/chat.lua"

-- Connects a member and returns the client and the nick from the welcome line.
local function join(server, before)
  local client = server:connect(1, before)
  local welcome = assert(client:receive("*l"))
  local nick = welcome:match("^%* welcome to the chat, (%S+)!")
  assert(nick, "unexpected welcome line: " .. welcome)
  return client, nick
end

local expect_line = helper.expect_line

describe("examples/chat.lua", function()
  after_each(helper.cleanup)

  it("lets three members chat with nicknames, /who, /me and /quit", function()
    local server = helper.start(CHAT)
    local a, a_nick = join(server)
    local b, b_nick = join(server)
    expect_line(a, "* " .. b_nick .. " joined")
    local c, c_nick = join(server)
    expect_line(a, "* " .. c_nick .. " joined")
    expect_line(b, "* " .. c_nick .. " joined")

    a:send("/nick alice\n")
    expect_line(a, "* you are now alice")
    expect_line(b, "* " .. a_nick .. " is now alice")
    expect_line(c, "* " .. a_nick .. " is now alice")

    b:send("/nick alice\n")
    expect_line(b, "* alice is taken")
    b:send("/nick no spaces allowed\n")
    expect_line(b, "* names are 1 to 20 letters, digits, _ or -")

    b:send("hello there\n")
    expect_line(a, "<" .. b_nick .. "> hello there")
    expect_line(c, "<" .. b_nick .. "> hello there")
    a:send("/me waves\n")
    expect_line(b, "* alice waves")
    expect_line(c, "* alice waves")

    c:send("/who\n")
    local here = assert(c:receive("*l"))
    local names = {}
    for name in here:gsub("^%* here: ", ""):gmatch("[^, ]+") do names[#names + 1] = name end
    table.sort(names)
    local expected = { "alice", b_nick, c_nick }
    table.sort(expected)
    assert.same(expected, names)

    -- The sender never gets its own message back: the next thing b sees is c's line.
    c:send("from c\n")
    assert.equal("<" .. c_nick .. "> from c", b:receive("*l"))

    c:send("/quit\n")
    expect_line(c, "* bye")
    local _, err = c:receive("*l")
    assert.equal("closed", err)
    expect_line(a, "* " .. c_nick .. " left")
    expect_line(b, "* " .. c_nick .. " left")
    server:stop()
  end)

  it("answers an over-long line with an error and keeps the member", function()
    local server = helper.start(CHAT)
    local a = join(server)
    local b, b_nick = join(server)
    b:send(string.rep("x", 5000) .. "\nstill here\n")
    expect_line(b, "* line too long (at most 1024 bytes)")
    local skipped = expect_line(a, "<" .. b_nick .. "> still here")
    for _, line in ipairs(skipped) do assert.is_nil(line:find("xxxx", 1, true)) end
    server:stop()
  end)

  it("drops a member that never reads, while the others get every message in order", function()
    -- Flood control pauses the sender while the stalled member is behind, until the core drops
    -- it after soft_queue_seconds: 1 s here instead of chat.lua's 10, within the clients' timeout.
    local server = helper.start(helper.script(helper.fill([[
      local M = dofile("${CHAT}")
      M.soft_queue_seconds = 1
      return M]], { CHAT = CHAT })))
    local sender, sender_nick = join(server)
    local reader, reader_nick = join(server)
    local stalled, stalled_nick = join(server, function(client)
      client:setoption("recv-buffer-size", 4096)
    end)
    expect_line(reader, "* " .. stalled_nick .. " joined")

    -- 6 MB in all: more than the stalled member's kernel buffers plus max_queue (256 KiB).
    local body = string.rep("m", 580)
    local total, batch = 10000, 50
    local got, announcements = 0, {}
    for first = 1, total, batch do
      local lines = {}
      for i = first, first + batch - 1 do lines[#lines + 1] = i .. " " .. body .. "\n" end
      assert(sender:send(table.concat(lines)))
      while got < first + batch - 1 do
        local line = assert(reader:receive("*l"))
        local n = line:match("^<[^>]+> (%d+) ")
        if n then
          got = got + 1
          assert.equal(got, tonumber(n))
        else
          announcements[#announcements + 1] = line
        end
      end
    end
    assert.equal(total, got)
    assert.same({ "* " .. stalled_nick .. " left (overflow)" }, announcements)
    server:wait_log("conn %d+: disconnected: the peer is not reading")

    -- The stalled member's connection is gone: reading it ends in closed or reset.
    stalled:settimeout(5)
    local _, err = helper.read_all(stalled)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    reader:send("/who\n")
    local names = { sender_nick, reader_nick }
    table.sort(names)
    expect_line(reader, "* here: " .. table.concat(names, ", "))
    server:stop()
  end)

  it("announces a member whose connection is reset as left", function()
    local server = helper.start(CHAT)
    local a = join(server)
    local b, b_nick = join(server)
    expect_line(a, "* " .. b_nick .. " joined")
    b:setoption("linger", { on = true, timeout = 0 })
    b:close()
    expect_line(a, "* " .. b_nick .. " left (reset)")
    a:send("/who\n")
    local here = assert(a:receive("*l"))
    assert.is_nil(here:find(b_nick, 1, true))
    server:stop()
  end)

  it("delivers each line once to everyone after members leave from the middle and others join",
    function()
    local server = helper.start(CHAT)
    local m = {}
    for i = 1, 5 do
      m[i] = { join(server) }
      for j = 1, i - 1 do expect_line(m[j][1], "* " .. m[i][2] .. " joined") end
    end
    for _, gone in ipairs({ 2, 4 }) do
      m[gone][1]:send("/quit\n")
      expect_line(m[gone][1], "* bye")
      for _, i in ipairs({ 1, 3, 5 }) do expect_line(m[i][1], "* " .. m[gone][2] .. " left") end
    end
    local f, f_nick = join(server)
    for _, i in ipairs({ 1, 3, 5 }) do expect_line(m[i][1], "* " .. f_nick .. " joined") end
    local present = { m[1], m[3], m[5], { f, f_nick } }
    for _, speaker in ipairs(present) do
      speaker[1]:send("line from " .. speaker[2] .. "\n")
      for _, member in ipairs(present) do
        if member ~= speaker then
          assert.equal("<" .. speaker[2] .. "> line from " .. speaker[2], member[1]:receive("*l"))
        end
      end
    end
    server:stop()
  end)

  it("delivers one broadcast to all 500 members", function()
    local server = helper.start(CHAT)
    local members = {}
    for i = 1, 500 do
      members[i] = { join(server) }
    end
    local speaker, speaker_nick = members[1][1], members[1][2]
    speaker:send("hello, all 500\n")
    local want = "<" .. speaker_nick .. "> hello, all 500"
    local received = 0
    for i = 2, 500 do
      expect_line(members[i][1], want)
      received = received + 1
    end
    assert.equal(499, received)
    for _, member in ipairs(members) do member[1]:close() end
    server:stop()
  end)
end)
