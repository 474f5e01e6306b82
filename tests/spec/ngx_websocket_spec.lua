-- ngx_websocket_spec.lua -- issue 15 acceptance: Debian's lua-nginx-websocket client
-- (resty.websocket.client, unmodified: its handshake uses ngx.encode_base64, receiveuntil and
-- ngx.re.match; its masked frames are built in ffi byte buffers with bit) from a `luasock run`
-- script, against examples/ws_chat.lua, whose server side is the same library's protocol.lua
-- on ngx.socket.wrap. Two members: a UTF-8 line over 125 bytes (16-bit length, mask bytes over
-- 127) reaches the other, a ping is answered with its pong, a 70000-byte message (64-bit
-- length) is refused with close 1009, and a close frame is answered with close 1000 and
-- announced as a leave.
local helper = require "helper"

local CLIENT = [[
local ngx = require "luasock.ngx"
local client = require "resty.websocket.client"
local function member()
  local wb = assert(client:new { timeout = 5000, max_payload_len = 100000 })
  assert(wb:connect("ws://127.0.0.1:${PORT}/chat"))
  local welcome = assert(wb:recv_frame())
  return wb, welcome:match("^%* welcome, (%S+)$")
end
-- Reads frames until one of type `kind` (and text `text`, if given); returns its data and err.
local function until_frame(wb, kind, text)
  while true do
    local data, typ, err = wb:recv_frame()
    if not data then return nil, err end
    if typ == kind and (text == nil or data == text) then return data, err end
  end
end
local alice, alice_nick = member()
local bob, bob_nick = member()
assert(until_frame(alice, "text", "* " .. bob_nick .. " joined"))
local line = "hello from resty.websocket.client " .. string.rep("é", 100)
assert(alice:send_text(line))
local heard = until_frame(bob, "text", "<" .. alice_nick .. "> " .. line)
assert(bob:send_ping("are you there"))
local pong = until_frame(bob, "pong")
local carol = member()
assert(carol:send_text(string.rep("x", 70000)))
local _, too_big = until_frame(carol, "close")
assert(alice:send_close(1000, "bye"))
local _, closed = until_frame(alice, "close")
local left = until_frame(bob, "text", "* " .. alice_nick .. " left")
report(stdout, heard ~= nil, pong, too_big, closed, left ~= nil)
]]

describe("lua-nginx-websocket's client against examples/ws_chat.lua", function()
  after_each(helper.cleanup)

  it("joins, talks, pings, is refused a message too big and closes", function()
    local server = helper.start("examples/ws_chat.lua")
    local got = helper.run_reports(helper.fill(CLIENT, { PORT = server.port }))[1]
    assert.same({ true, "are you there", 1009, 1000, true }, { table.unpack(got, 1, 5) })
    server:stop()
  end)
end)
