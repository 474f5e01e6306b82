-- ws_chat.lua: a WebSocket chat room for browsers, on OpenResty's own WebSocket framing
-- (Debian's lua-nginx-websocket, unmodified) through `require "luasock.ngx"`.
-- GET / answers ws_chat.html (beside this file), a page that joins the room; a GET with
-- `Upgrade: websocket` joins it: the handler does the HTTP handshake itself (Sec-WebSocket-Accept
-- from ngx.sha1_bin and ngx.encode_base64), then hands `ngx.socket.wrap(conn)` to
-- nginx.websocket.protocol's recv_frame and send_frame. Every text message a member sends is
-- broadcast to the whole room, the sender included, as "<guestN> text"; joins and leaves are
-- announced. A protocol error, a binary message or a text that is not UTF-8 closes only that
-- member's connection (close codes 1002, 1003, 1007, 1009). The room pings every member each
-- PING_INTERVAL seconds, so a live browser answers within READ_TIMEOUT and a vanished one is
-- dropped.
--   luasock serve examples/ws_chat.lua     then open http://127.0.0.1:9096/
local luasock = require "luasock"
local ngx = require "luasock.ngx"
local protocol = require "nginx.websocket.protocol"

local M = {
  listen = "127.0.0.1:9096",
  idle_timeout = 10, -- for the HTTP request; members get READ_TIMEOUT below
  max_line = 8192,
}

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" -- RFC 6455, section 1.3
local MAX_MESSAGE = 65536 -- bytes of one message, fragments joined
local MAX_HEADERS = 64
local PING_INTERVAL = 30 -- seconds
local READ_TIMEOUT = 75000 -- milliseconds (ngx's unit) without any frame from a member
local OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xa

local members = {} -- conn -> nick
local guests = 0

-- The page, read once from beside this script.
local function read_page()
  local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
  local file = assert(io.open(dir .. "ws_chat.html", "rb"))
  local page = file:read("a")
  file:close()
  return page
end
local PAGE = read_page()

local function respond(conn, status, headers, body)
  conn:send("HTTP/1.1 ", status, "\r\n", headers, "Content-Length: ", #body,
    "\r\nConnection: close\r\n\r\n", body)
end

-- Reads the request line and headers; returns {method, target, headers (lower-case names)},
-- or nil when the peer left or sent something that is not an HTTP/1.1 request.
local function read_request(conn)
  local line = conn:receive("*l")
  local method, target = (line or ""):match("^(%u+) (%S+) HTTP/1%.1$")
  local headers = {}
  for _ = 1, MAX_HEADERS do
    local header = conn:receive("*l")
    if not header then
      return nil
    elseif header == "" then
      return method and { method = method, target = target, headers = headers }
    end
    local name, value = header:match("^([%w%-]+):%s*(.-)%s*$")
    if name then
      headers[name:lower()] = value
    end
  end
end

-- Whether the request asks for a WebSocket: nil, or true, or false and why not.
local function check_upgrade(request)
  local h = request.headers
  if (h.upgrade or ""):lower() ~= "websocket" then
    return nil
  elseif h["sec-websocket-version"] ~= "13" then
    return false, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"
  elseif request.method ~= "GET" or not (h.connection or ""):lower():find("upgrade", 1, true)
      or #(h["sec-websocket-key"] or "") ~= 24 then
    return false, "400 Bad Request", ""
  end
  return true
end

local function accept_key(key)
  return ngx.encode_base64(ngx.sha1_bin(key .. GUID))
end

local function text_frame(text)
  return protocol.build_frame(true, OP_TEXT, #text, text, false)
end

-- Posts a line to every member (the sender included): post never waits for a slow reader.
local function broadcast(text)
  local frame = text_frame(text)
  for conn in pairs(members) do
    conn:post(frame)
  end
end

local function send_close(sock, code, reason)
  local payload = code and string.pack(">I2", code) .. (reason or "") or ""
  protocol.send_frame(sock, true, OP_CLOSE, payload:sub(1, 125), 125)
end

-- A frame error: the peer is gone (nothing to send), or it broke the protocol (close it).
local function frame_error(sock, err)
  if err:find("^failed to") then
    return
  end
  local too_big = err:find("exceeding") or err:find("too large")
  send_close(sock, too_big and 1009 or 1002, err)
end

-- Broadcasts a member's finished text message; returns false when the member must go.
local function say(conn, sock, text)
  if not utf8.len(text) then
    send_close(sock, 1007, "text is not UTF-8")
    return false
  end
  text = text:gsub("%c", "") -- no control characters for the others' screens
  if text ~= "" then
    broadcast("<" .. members[conn] .. "> " .. text)
  end
  return true
end

-- Adds a data frame to the message being received (member.parts); returns false when the
-- member must go.
local function collect(conn, sock, member, data, kind, more)
  if (kind == "continuation") ~= (member.parts ~= nil) then
    send_close(sock, 1002, "unexpected " .. kind .. " frame")
    return false
  elseif kind == "binary" then
    send_close(sock, 1003, "this room speaks text")
    return false
  end
  member.parts = member.parts or {}
  member.parts[#member.parts + 1] = data
  member.size = (member.size or 0) + #data
  if member.size > MAX_MESSAGE then
    send_close(sock, 1009, "message too big")
    return false
  elseif more then
    return true
  end
  local text = table.concat(member.parts)
  member.parts, member.size = nil, 0
  return say(conn, sock, text)
end

-- Serves a member's frames until it leaves or breaks the protocol.
local function serve_member(conn, sock)
  local member = {}
  while true do
    local data, kind, extra = protocol.recv_frame(sock, MAX_MESSAGE, true)
    if not data then
      return frame_error(sock, extra)
    elseif kind == "close" then
      return send_close(sock, extra)
    elseif kind == "ping" then
      protocol.send_frame(sock, true, OP_PONG, data, 125)
    elseif kind ~= "pong" and not collect(conn, sock, member, data, kind, extra == "again") then
      return
    end
  end
end

local function join(conn)
  guests = guests + 1
  local nick = "guest" .. guests
  members[conn] = nick
  conn:post(text_frame("* welcome, " .. nick))
  broadcast("* " .. nick .. " joined")
end

local function upgrade(conn, request)
  conn:send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    "Sec-WebSocket-Accept: ", accept_key(request.headers["sec-websocket-key"]), "\r\n\r\n")
  local sock = ngx.socket.wrap(conn)
  sock:settimeout(READ_TIMEOUT)
  join(conn)
  serve_member(conn, sock)
end

function M.handle(conn)
  local request = read_request(conn)
  if not request then
    return respond(conn, "400 Bad Request", "", "")
  end
  local wanted, status, headers = check_upgrade(request)
  if wanted then
    return upgrade(conn, request)
  elseif wanted == false then
    return respond(conn, status, headers, "")
  elseif request.method == "GET" and request.target:match("^[^?]*") == "/" then
    return respond(conn, "200 OK", "Content-Type: text/html; charset=utf-8\r\n", PAGE)
  end
  respond(conn, "404 Not Found", "Content-Type: text/plain\r\n", "not found\n")
end

function M.on_close(conn)
  local nick = members[conn]
  if nick then
    members[conn] = nil
    broadcast("* " .. nick .. " left")
  end
end

-- Pings every member, so that browsers (which send nothing while idle) answer with a pong.
luasock.spawn(function()
  local ping = protocol.build_frame(true, OP_PING, 0, "", false)
  while true do
    luasock.sleep(PING_INTERVAL)
    for conn in pairs(members) do
      conn:post(ping)
    end
  end
end)

return M
